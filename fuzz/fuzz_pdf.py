"""Fuzz the PDF verification intake: ``signing.verify_sealed_pdf`` on untrusted bytes.

At start-up the harness makes a real CA and seal (software keystore, certificates issued by
``signing._x509``) and seals a small one-page PDF with ``signing.seal_pdf``: the seed corpus
is that sealed PDF, the unsigned original, and a few minimal hand-written PDFs. Nothing is
stored: the PDFs are a few KB and made afresh each run.

Modes (first input byte):

0. raw bytes (libFuzzer mutates the seeds directly);
1. the sealed PDF with a few bytes overwritten in place: when one lands inside the signed
   byte ranges the verdict must be invalid;
2. the sealed PDF with fuzzed bytes appended (a forged incremental update);
3. the sealed PDF with a slice replaced by fuzzed bytes (lengths change);
4. the sealed PDF truncated.

Crashes: any exception (an unreadable file is a verdict, ``valid: false``, never an
exception), an inconsistent verdict (``valid`` with codes, unknown codes, multi-line
reasons, ``to_dict`` failing), and a valid verdict for bytes that differ from the sealed
PDF inside its signed byte ranges.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from datetime import timedelta
from typing import Any

import atheris

with atheris.instrument_imports(include=["signing", "pyhanko", "pyhanko_certvalidator", "asn1crypto"]):
    from signing import PDF_VERDICT_CODES, PdfVerdict, SealCredentials, StampPlacement, verify_sealed_pdf
    from signing._pdf_seal import seal_pdf
    from signing._pdf_verify import SealCertificateStatus
    from signing._x509 import issue_root_certificate, issue_seal_certificate, random_serial

# Everything below is imported after the instrumented block (see _common's docstring).
import _common
from _common import NOW, attempt, finding
from cryptography import x509
from PIL import Image, ImageDraw

MODES = 5
# pyHanko warns about every odd structure it skips; the verdict is what is judged here.
logging.disable(logging.CRITICAL)
SEALED_AT = NOW - timedelta(hours=1)


def minimal_pdf(content: bytes = b"BT /F1 12 Tf 72 720 Td (Yinxin) Tj ET") -> bytes:
    """A one-page PDF written by hand, with a correct cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def seal_image_png(size: int = 48) -> bytes:
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((2, 2, size - 3, size - 3), outline=(220, 0, 0, 255), width=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def make_world() -> tuple[bytes, x509.Certificate, Any]:
    """A CA, a seal certified by it, and a PDF sealed with it (all real, made now)."""
    from hsm import SignatureAlgorithm
    from schemas.uscc import make_uscc

    keys = _common.make_keys(with_rsa=False)
    backend = keys.backend
    ca_key = backend.generate_key(SignatureAlgorithm.ES256, "fuzz-ca")
    root = issue_root_certificate(
        backend,
        ca_key,
        common_name="印信模糊测试根证书",
        organisation="印信模糊测试",
        serial=random_serial(),
        not_before=SEALED_AT - timedelta(days=30),
        not_after=SEALED_AT + timedelta(days=3650),
    )
    seal_key = backend.generate_key(SignatureAlgorithm.ES256, "fuzz-seal")
    certificate = issue_seal_certificate(
        backend,
        ca_key,
        root,
        backend.public_key(seal_key),
        seal_name="模糊测试专用章",
        department_name="模糊测试局",
        department_code=make_uscc("11110000000013338"),
        serial=random_serial(),
        not_before=SEALED_AT - timedelta(hours=1),
        not_after=SEALED_AT + timedelta(days=365),
        crl_url="http://ca.yinxin.example/fuzz.crl",
    )
    credentials = SealCredentials(seal_key, certificate, (root,), seal_image_png(), "模糊测试专用章")
    sealed = seal_pdf(
        minimal_pdf(),
        backend,
        credentials,
        signing_time=SEALED_AT,
        placement=StampPlacement(1, (400.0, 60.0, 460.0, 120.0)),
    )
    serial = certificate.serial_number

    def registry(cert: x509.Certificate) -> SealCertificateStatus | None:
        return SealCertificateStatus("active", seal_id="seal-fuzz") if cert.serial_number == serial else None

    return sealed, root, registry


SEALED, ROOT, REGISTRY = make_world()
UNSIGNED = minimal_pdf()


def _signed_ranges(pdf: bytes) -> list[tuple[int, int]]:
    match = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", pdf)
    assert match is not None, "the sealed PDF has no /ByteRange"
    a, b, c, d = (int(group) for group in match.groups())
    return [(a, a + b), (c, c + d)]


SIGNED_RANGES = _signed_ranges(SEALED)


def judge(pdf: bytes) -> PdfVerdict:
    def run() -> PdfVerdict:
        return verify_sealed_pdf(pdf, trust_roots=[ROOT], certificate_status=REGISTRY, now=NOW)

    verdict = attempt("verify_sealed_pdf", pdf, run, ())
    assert verdict is not None
    if not isinstance(verdict, PdfVerdict):
        finding("verify_sealed_pdf", pdf, f"not a PdfVerdict: {verdict!r:.200}")
    if verdict.valid != (not verdict.codes) or len(verdict.codes) > len(verdict.reasons):
        finding("verify_sealed_pdf", pdf, f"inconsistent verdict: {verdict!r:.300}")
    _common.check_reasons("verify_sealed_pdf", pdf, verdict.codes, verdict.reasons, PDF_VERDICT_CODES)
    for signature in verdict.signatures:
        if signature.valid != (not signature.codes) or len(signature.codes) != len(signature.reasons):
            finding("verify_sealed_pdf", pdf, f"inconsistent signature verdict: {signature!r:.300}")
    attempt("PdfVerdict.to_dict", pdf, verdict.to_dict, ())
    return verdict


def run_overwrite(fdp: atheris.FuzzedDataProvider) -> None:
    pdf = bytearray(SEALED)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        at = fdp.ConsumeIntInRange(0, len(pdf) - 1)
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8))
        pdf[at : at + len(chunk)] = chunk
        del pdf[len(SEALED) :]
    data = bytes(pdf)
    verdict = judge(data)
    touched = [i for i in range(len(data)) if data[i] != SEALED[i]] if data != SEALED else []
    signed = any(start <= i < end for i in touched for start, end in SIGNED_RANGES)
    if verdict.valid and signed:
        finding("verify_sealed_pdf", data, "a PDF changed inside its signed byte ranges was accepted")


def run_append(fdp: atheris.FuzzedDataProvider) -> None:
    tail = fdp.ConsumeBytes(fdp.remaining_bytes())
    judge(SEALED + tail)


def run_splice(fdp: atheris.FuzzedDataProvider) -> None:
    start = fdp.ConsumeIntInRange(0, len(SEALED))
    end = fdp.ConsumeIntInRange(start, min(len(SEALED), start + 512))
    judge(SEALED[:start] + fdp.ConsumeBytes(fdp.remaining_bytes()) + SEALED[end:])


def run_truncate(fdp: atheris.FuzzedDataProvider) -> None:
    judge(SEALED[: fdp.ConsumeIntInRange(0, len(SEALED))])


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % MODES, data[1:]
    if mode == 0:
        verdict = judge(body)
        if verdict.valid and body != SEALED:
            # Only the sealed file itself, or an LTV update of it (never made here), may verify.
            touched = len(body) != len(SEALED) or any(
                body[i] != SEALED[i] for start, end in SIGNED_RANGES for i in range(start, end)
            )
            if touched and not body.startswith(SEALED):
                finding("verify_sealed_pdf", body, "a PDF other than the sealed one was accepted")
        return
    fdp = atheris.FuzzedDataProvider(body)
    (run_overwrite, run_append, run_splice, run_truncate)[mode - 1](fdp)


def seeds() -> list[bytes]:
    out = [bytes([0]) + SEALED, bytes([0]) + UNSIGNED, bytes([0]) + minimal_pdf(b"")]
    out.append(bytes([0]) + b"%PDF-1.7\n%%EOF\n")
    out.append(
        bytes([2]) + b"\n9 0 obj\n<< /Type /Annot >>\nendobj\nxref\n9 1\n0000000000 00000 n \ntrailer\n<<>>\n"
    )
    for mode in range(1, MODES):
        out += [bytes([mode]) + bytes([i]) * 16 for i in (0, 1, 0x41, 0xFF)]
    return out


if __name__ == "__main__":
    _common.main("pdf", test_one_input, seeds)
    sys.exit(0)
