"""``yinxin ca …``, ``yinxin seal …`` and ``yinxin licence pdf``: the CA, e-seals and sealed PDFs."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from hsm import SignatureAlgorithm
from schemas.errors import InputTooLarge, InvalidInput
from signing import (
    MAX_PDF_BYTES,
    MAX_SEAL_IMAGE_BYTES,
    MAX_SEALED_PDF_BYTES,
    REVOCATION_REASONS,
    PdfVerdict,
    StampPlacement,
)
from vault import Role, Seal, licence_pdf
from verify_api._cli_keys import officer_argument, resolve_officer, run_dual_control
from verify_api.cli import _actor, _emit, _read_limited
from verify_api.settings import Settings
from verify_api.wiring import open_vault

__all__ = ["add_seal_commands"]


def _write_file(path: str, data: bytes) -> None:
    """Write atomically (temp file + rename): a failed run never leaves half a PDF behind."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".yinxin-", suffix=".part", dir=target.parent or Path("."))
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from exc


def _read_pdf(path: str, limit: int = MAX_PDF_BYTES) -> bytes:
    try:
        return _read_limited(path, limit, "PDF")
    except InputTooLarge:
        raise InputTooLarge(f"PDF {path} is larger than {limit // 2**20} MiB: split it first") from None


def _seal_table(seals: Sequence[Seal]) -> str:
    if not seals:
        return "no seals: create one with `yinxin seal create --dept USCC --name NAME`"
    rows = [f"{'SEAL':<16} {'STATE':<10} {'DEPARTMENT':<18} {'VALID UNTIL':<11} NAME"]
    rows += [
        f"{s.seal_id:<16} {s.state:<10} {s.department_code:<18} {s.not_after:%Y-%m-%d}  {s.name}"
        for s in seals
    ]
    return "\n".join(rows)


def _seal_human(s: Seal) -> str:
    lines = [
        f"seal        {s.seal_id}  ({s.state})",
        f"name        {s.name}",
        f"department  {s.department_code} {s.department_name}",
        f"key         {s.kid} ({s.algorithm})",
        f"serial      {s.certificate_serial} (seal certificate)",
        f"SHA-256     {s.fingerprint}",
        f"valid       {s.not_before:%Y-%m-%d %H:%M} to {s.not_after:%Y-%m-%d %H:%M} UTC",
        f"image       {'generated' if s.image_generated else 'supplied'}",
    ]
    if s.state_reason:
        lines.append(f"reason      {s.state_reason} ({s.state_changed_at:%Y-%m-%d %H:%M} UTC)")
    return "\n".join(lines)


def _verdict_human(verdict: PdfVerdict) -> str:
    if not verdict.signatures:
        return "INVALID\n  " + "\n  ".join(verdict.reasons)
    lines = ["VALID" if verdict.valid else "INVALID"]
    for sig in verdict.signatures:
        lines.append(
            f"  {sig.field_name}: {sig.seal_name or '?'} — {sig.department_name or '?'} "
            f"({sig.department_code or '?'}), certificate {sig.certificate_serial or '?'}"
        )
        if sig.signing_time:
            lines.append(f"    signed at {sig.signing_time:%Y-%m-%d %H:%M:%S} UTC (claimed by the signer)")
        if sig.timestamp:
            lines.append(f"    timestamp {sig.timestamp:%Y-%m-%d %H:%M:%S} UTC (TSA)")
        lines.extend(f"    ✗ {r}" for r in sig.reasons)
    return "\n".join(lines)


# ---- commands ---------------------------------------------------------------------------


def cmd_ca_init(args: argparse.Namespace, settings: Settings) -> int:
    algorithm = SignatureAlgorithm.parse(args.alg)
    with open_vault(settings) as v:
        if args.officer or not v.setup_mode():
            # Once security officers are enrolled, a CA key is made only under dual control.
            return run_dual_control(args, settings, v, "ca.init", {"algorithm": algorithm.value})
        ca = v.seals.init_ca(algorithm, actor=_actor())
    document = {
        "ca_id": ca.ca_id,
        "kid": ca.kid,
        "algorithm": ca.algorithm,
        "subject": ca.certificate.subject.rfc4514_string(),
        "not_after": ca.not_after.isoformat(),
    }
    _emit(args, document, lambda: f"CA {ca.ca_id} created: {document['subject']}, key {ca.kid}")
    return 0


def cmd_ca_cert(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        ca = v.seals.ca()
    sys.stdout.write(ca.pem.decode("ascii"))
    return 0


def cmd_ca_crl(args: argparse.Namespace, settings: Settings) -> int:
    from cryptography import x509

    with open_vault(settings) as v:
        der = v.seals.crl()
    if args.out:
        _write_file(args.out, der)
        return 0
    sys.stdout.write(x509.load_der_x509_crl(der).public_bytes(Encoding.PEM).decode("ascii"))
    return 0


def cmd_seal_create(args: argparse.Namespace, settings: Settings) -> int:
    image = _read_limited(args.image, MAX_SEAL_IMAGE_BYTES, "seal image") if args.image else None
    with open_vault(settings) as v:
        who = v.acting(resolve_officer(args, settings, v), (Role.SECURITY_OFFICER,), "create seals", _actor())
        seal = v.seals.create(
            args.dept, args.name, image=image, algorithm=SignatureAlgorithm.parse(args.alg), actor=who
        )
    if args.image_out:
        _write_file(args.image_out, seal.image_png)
    _emit(args, seal.summary(), lambda: f"seal {seal.seal_id} created\n{_seal_human(seal)}")
    return 0


def cmd_seal_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        seals = v.seals.list(args.dept)
    _emit(args, [s.summary() for s in seals], lambda: _seal_table(seals))
    return 0


def cmd_seal_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        seal = v.seals.get(args.seal_id)
    if args.image_out:
        _write_file(args.image_out, seal.image_png)
    if args.cert_out:
        _write_file(args.cert_out, seal.certificate.public_bytes(Encoding.PEM))
    _emit(args, seal.summary(), lambda: _seal_human(seal))
    return 0


def _seal_state_command(action: str) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        with open_vault(settings) as v:
            if action == "revoke":
                # Revocation is final: dual control (四眼原则).
                params = {"seal_id": args.seal_id, "reason": args.reason, "crl_reason": args.crl_reason}
                return run_dual_control(args, settings, v, "seal.revoke", params)
            who = v.acting(
                resolve_officer(args, settings, v), (Role.SECURITY_OFFICER,), f"{action} seals", _actor()
            )
            if action == "suspend":
                seal = v.seals.suspend(args.seal_id, args.reason, actor=who)
            else:
                seal = v.seals.reinstate(args.seal_id, args.reason, actor=who)
        _emit(args, seal.summary(), lambda: f"seal {seal.seal_id}: now {seal.state}")
        return 0

    return run


def cmd_seal_pdf(args: argparse.Namespace, settings: Settings) -> int:
    pdf = _read_pdf(args.input)
    placement = StampPlacement.parse(args.page, args.box)
    with open_vault(settings) as v:
        sealed = v.seals.seal_document(
            args.seal, pdf, placement=placement, reason=args.reason, location=args.location, actor=_actor()
        )
    _write_file(args.output, sealed.pdf)
    document = {
        "seal_id": sealed.seal_id,
        "output": args.output,
        "bytes": len(sealed.pdf),
        "sha256": sealed.sha256,
    }
    if args.output == "-":
        return 0
    _emit(args, document, lambda: f"sealed {args.output} with {sealed.seal_id} ({len(sealed.pdf)} bytes)")
    return 0


def cmd_seal_verify(args: argparse.Namespace, settings: Settings) -> int:
    # A sealed document may be up to the sealing limit plus the signature's room (22 MiB).
    pdf = _read_pdf(args.file, MAX_SEALED_PDF_BYTES)
    with open_vault(settings) as v:
        verdict = v.seals.verify_document(pdf)
    _emit(args, verdict.to_dict(), lambda: _verdict_human(verdict))
    return 0 if verdict.valid else 1


def cmd_licence_pdf(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        sealed = licence_pdf(v, args.identifier, actor=_actor())
    _write_file(args.output, sealed.pdf)
    if args.output != "-":
        document = {"identifier": args.identifier, "seal_id": sealed.seal_id, "output": args.output}
        _emit(
            args,
            document,
            lambda: f"printed {args.identifier} to {args.output}, sealed with {sealed.seal_id}",
        )
    return 0


def add_seal_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON document on stdout")

    ca = sub.add_parser(
        "ca", help="Yinxin's certificate authority (issues seal certificates)", parents=[common]
    )
    csub = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION", parser_class=ca.__class__)
    sp = add(
        "init",
        cmd_ca_init,
        "create the root CA key and certificate (dual control once officers are enrolled)",
        csub,
    )
    sp.add_argument("--alg", default="ES256", help="ES256 (default) or PS256")
    officer_argument(sp)
    add("cert", cmd_ca_cert, "print the root certificate (PEM)", csub)
    sp = add("crl", cmd_ca_crl, "print the current CRL (PEM), or write it as DER with --out", csub)
    sp.add_argument("--out", help="write the DER CRL to this file")

    seal = sub.add_parser("seal", help="department e-seals (电子印章) and sealed PDFs", parents=[common])
    ssub = seal.add_subparsers(
        dest="seal_command", required=True, metavar="ACTION", parser_class=seal.__class__
    )
    sp = add("create", cmd_seal_create, "create a seal: key, certificate and stamp image", ssub)
    sp.add_argument("--dept", required=True, help="the department's USCC")
    sp.add_argument("--name", required=True, help='the seal name, e.g. "XX市市场监督管理局行政审批专用章"')
    sp.add_argument("--image", help="the stamp image (PNG or JPEG); generated from the name when absent")
    sp.add_argument("--alg", default="ES256", help="ES256 (default), PS256 or EdDSA")
    sp.add_argument("--image-out", help="also write the stamp image (PNG) here")
    officer_argument(sp)
    sp = add("list", cmd_seal_list, "list seals", ssub)
    sp.add_argument("--dept", help="only this department's seals")
    sp = add("show", cmd_seal_show, "show a seal", ssub)
    sp.add_argument("seal_id")
    sp.add_argument("--image-out", help="write the stamp image (PNG) here")
    sp.add_argument("--cert-out", help="write the seal certificate (PEM) here")
    for action, help_ in (
        ("suspend", "suspend a seal (listed on the CRL as on hold; it cannot seal)"),
        ("reinstate", "reinstate a suspended seal"),
        ("revoke", "revoke a seal (final; listed on the CRL; dual control)"),
    ):
        sp = add(action, _seal_state_command(action), help_, ssub)
        sp.add_argument("seal_id")
        sp.add_argument("--reason", required=True, help="why (recorded in the audit log)")
        officer_argument(sp, required=action == "revoke")
        if action == "revoke":
            sp.add_argument(
                "--crl-reason",
                default="unspecified",
                choices=[r for r in REVOCATION_REASONS if r != "certificateHold"],
                help="the RFC 5280 reason code on the CRL (default unspecified)",
            )
    sp = add("pdf", cmd_seal_pdf, "seal a PDF (PAdES certification signature with a visible stamp)", ssub)
    sp.add_argument("--seal", required=True, help="the seal ID")
    sp.add_argument("input", help="the PDF to seal (- for stdin)")
    sp.add_argument("output", help="where to write the sealed PDF (- for stdout)")
    sp.add_argument("--page", type=int, default=1, help="page for the stamp, from 1 (default 1)")
    sp.add_argument(
        "--box", help="stamp box x1,y1,x2,y2 in points from the lower left (default: lower right)"
    )
    sp.add_argument("--reason", help="the signature's /Reason")
    sp.add_argument("--location", help="the signature's /Location")
    sp = add("verify", cmd_seal_verify, "verify the seals of a PDF", ssub)
    sp.add_argument("file", help="the PDF (- for stdin)")

    lic = sub.add_parser("licence", help="printable licences", parents=[common])
    lsub = lic.add_subparsers(
        dest="licence_command", required=True, metavar="ACTION", parser_class=lic.__class__
    )
    sp = add("pdf", cmd_licence_pdf, "print a licence face (照面) as a PDF sealed by its issuer", lsub)
    sp.add_argument("identifier")
    sp.add_argument("output", help="where to write the PDF (- for stdout)")
