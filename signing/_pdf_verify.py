"""Verifying a sealed PDF under Yinxin's acceptance policy.

pyHanko does the mechanics (ISO 32000-2 §12.8: byte ranges, CMS signature, certificate
path, difference analysis of later revisions); the policy on top is stricter than
pyHanko's bottom line:

* the signature must be intact and cryptographically valid;
* the seal certificate must chain to *our* root, carry digitalSignature +
  nonRepudiation, and be neither revoked nor suspended in the seal registry
  (the caller supplies the registry look-up: this package never reads a database);
* the signature must cover the whole file, or be followed only by long-term-validation
  updates (a DSS and document timestamps, ETSI EN 319 142-1 §5.4/§5.5). Anything else —
  a page added, an annotation or form field changed, an object replaced, a second
  incremental update of any kind — invalidates it, with the reason named.

An unreadable or unsigned file is a verdict (``valid: false`` with a reason), not an error.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, ObjectIdentifier
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import DiffResult, ModificationLevel, SuspiciousModification
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from signing._pdf_revisions import changes_after
from signing._pdf_seal import MAX_SEALED_PDF_BYTES

__all__ = [
    "PDF_VERDICT_CODES",
    "PdfSignatureVerdict",
    "PdfVerdict",
    "SealCertificateStatus",
    "verify_sealed_pdf",
]

log = logging.getLogger("yinxin.signing")

_ORGANIZATION_IDENTIFIER = ObjectIdentifier("2.5.4.97")

# Stable reason codes (the API documents them); the human reason beside each says what happened.
PDF_VERDICT_CODES = (
    "not_pdf",  # not a readable, unencrypted PDF
    "too_large",
    "no_signature",
    "signature_invalid",  # the signed bytes or the CMS signature do not verify
    "untrusted",  # the certificate does not chain to our root (or is outside its validity)
    "unknown_certificate",  # chains to our root, but the seal registry has no such certificate
    "key_usage",
    "revoked",
    "suspended",
    "modified",  # changes after sealing other than long-term-validation data
    "partial_coverage",  # the signature does not cover its whole revision
)


@dataclass(frozen=True, slots=True)
class SealCertificateStatus:
    """What the seal registry says about a certificate: ``active``, ``suspended`` or ``revoked``."""

    state: str
    seal_id: str | None = None
    changed_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PdfSignatureVerdict:
    field_name: str
    valid: bool
    codes: tuple[str, ...]
    reasons: tuple[str, ...]
    seal_name: str | None
    department_name: str | None
    department_code: str | None
    certificate_serial: str | None  # hex, as CRLs and `openssl x509 -serial` print it
    certificate_fingerprint: str | None  # SHA-256 hex
    seal_id: str | None
    signing_time: datetime | None  # claimed by the signer (/M); trusted only with a timestamp
    timestamp: datetime | None  # from a trusted RFC 3161 timestamp (PAdES B-T)
    certified: bool  # a certification (DocMDP) signature
    coverage: str
    modification_level: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "field_name": self.field_name,
            "valid": self.valid,
            "codes": list(self.codes),
            "reasons": list(self.reasons),
            "seal": {
                "seal_id": self.seal_id,
                "seal_name": self.seal_name,
                "department_name": self.department_name,
                "department_code": self.department_code,
                "certificate_serial": self.certificate_serial,
                "certificate_fingerprint": self.certificate_fingerprint,
            },
            "signing_time": self.signing_time.isoformat() if self.signing_time else None,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "certified": self.certified,
            "coverage": self.coverage,
            "modification_level": self.modification_level,
        }


@dataclass(frozen=True, slots=True)
class PdfVerdict:
    valid: bool
    codes: tuple[str, ...]
    reasons: tuple[str, ...]
    signatures: tuple[PdfSignatureVerdict, ...] = field(default=())

    @property
    def seal(self) -> PdfSignatureVerdict | None:
        return self.signatures[0] if self.signatures else None

    def to_dict(self) -> dict[str, Any]:
        first = self.seal
        return {
            "valid": self.valid,
            "codes": list(self.codes),
            "reasons": list(self.reasons),
            "seal": first.to_dict()["seal"] if first else None,
            "signing_time": first.to_dict()["signing_time"] if first else None,
            "timestamp": first.to_dict()["timestamp"] if first else None,
            "signatures": [s.to_dict() for s in self.signatures],
        }


CertificateLookup = Callable[[x509.Certificate], SealCertificateStatus | None]


def verify_sealed_pdf(
    pdf: bytes,
    *,
    trust_roots: Sequence[x509.Certificate],
    certificate_status: CertificateLookup,
    now: datetime,
    timestamp_roots: Sequence[x509.Certificate] = (),
) -> PdfVerdict:
    """Judge every signature in *pdf*; the document is valid when it has at least one and all hold.

    A signature timestamp (PAdES B-T) is reported only when its TSA chains to one of
    *timestamp_roots*; an untrusted or missing timestamp leaves the seal as it is (B-B).
    """
    if len(pdf) > MAX_SEALED_PDF_BYTES:
        return _refused(
            "too_large", f"the PDF is {len(pdf)} bytes; the limit is {MAX_SEALED_PDF_BYTES} bytes (22 MiB)"
        )
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        if reader.encrypted:
            return _refused("not_pdf", "the PDF is encrypted; Yinxin seals are never encrypted")
        embedded = list(reader.embedded_regular_signatures)
    except Exception as exc:  # any parser failure on untrusted input is a verdict
        log.info("unreadable PDF submitted for verification: %s", type(exc).__name__)
        return _refused("not_pdf", "the file is not a readable PDF")
    if not embedded:
        return _refused("no_signature", "the PDF carries no seal (no signature field is signed)")

    anchors = _Anchors(_asn1(trust_roots), _asn1(timestamp_roots))
    verdicts = tuple(asyncio.run(_judge_all(embedded, anchors, certificate_status, now)))
    codes = tuple(dict.fromkeys(c for v in verdicts for c in v.codes))
    reasons = tuple(f"{v.field_name}: {r}" for v in verdicts for r in v.reasons)
    return PdfVerdict(all(v.valid for v in verdicts), codes, reasons, verdicts)


@dataclass(frozen=True, slots=True)
class _Anchors:
    seals: list[asn1_x509.Certificate]
    timestamps: list[asn1_x509.Certificate]


def _asn1(certificates: Sequence[x509.Certificate]) -> list[asn1_x509.Certificate]:
    return [asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in certificates]


async def _judge_all(
    embedded: Sequence[EmbeddedPdfSignature],
    anchors: _Anchors,
    certificate_status: CertificateLookup,
    now: datetime,
) -> list[PdfSignatureVerdict]:
    return [await _judge(sig, anchors, certificate_status, now) for sig in embedded]


async def _judge(
    sig: EmbeddedPdfSignature,
    anchors: _Anchors,
    certificate_status: CertificateLookup,
    now: datetime,
) -> PdfSignatureVerdict:
    codes: list[str] = []
    reasons: list[str] = []

    def fail(code: str, reason: str) -> None:
        codes.append(code)
        reasons.append(reason)

    name = str(sig.field_name or "signature")
    try:
        cert = x509.load_der_x509_certificate(sig.signer_cert.dump())
    except Exception:
        return _broken_signature(name, "the signature carries no readable signer certificate")

    # An empty list is an empty trust store (None would mean the operating system's).
    context = ValidationContext(trust_roots=list(anchors.seals), moment=now, allow_fetching=False)
    ts_context = ValidationContext(trust_roots=list(anchors.timestamps), moment=now, allow_fetching=False)
    try:
        status = await async_validate_pdf_signature(
            sig, signer_validation_context=context, ts_validation_context=ts_context
        )
    except Exception as exc:
        log.info("signature %s could not be validated: %s", name, type(exc).__name__)
        return _broken_signature(name, "the signature is malformed and cannot be checked", cert)

    if not (status.intact and status.valid):
        fail(
            "signature_invalid",
            "the signature does not match the document: the signed bytes were altered"
            if not status.intact
            else "the CMS signature value does not verify with the seal certificate's key",
        )
    usage_problem = _key_usage_problem(cert)
    if usage_problem:
        fail("key_usage", usage_problem)
    # pyHanko validates the certificate path only for a signature that verifies: for a broken
    # one, "not trusted" says nothing about who issued the certificate.
    checked = status.intact and status.valid
    if checked and not status.trusted and not usage_problem:
        outside = not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc)
        fail(
            "untrusted",
            "the seal certificate is outside its validity period "
            f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"
            if outside
            else "the seal certificate was not issued by this service's root CA",
        )
    registry = certificate_status(cert) if status.trusted else None
    if status.trusted:
        if registry is None:
            fail("unknown_certificate", "the seal registry has no record of this seal certificate")
        elif registry.state == "revoked":
            when = f" on {registry.changed_at:%Y-%m-%d %H:%M} UTC" if registry.changed_at else ""
            why = f": {registry.reason}" if registry.reason else ""
            fail("revoked", f"the seal was revoked{when}{why}")
        elif registry.state == "suspended":
            why = f": {registry.reason}" if registry.reason else ""
            fail("suspended", f"the seal is suspended{why}")
        elif registry.state != "active":  # fail closed on a state this policy does not know
            fail("unknown_certificate", "the seal registry reports an unknown state for this seal")

    modification = _modification(status.diff_result)
    if status.coverage == SignatureCoverageLevel.ENTIRE_FILE:
        pass
    elif status.coverage == SignatureCoverageLevel.ENTIRE_REVISION:
        # pyHanko's diff policy tolerates some harmless-looking updates (a new /Info, unreferenced
        # objects, an empty update); ours admits only long-term-validation revisions, so each later
        # revision is checked for being one before pyHanko's verdict on their content is asked.
        changes = changes_after(sig)
        if changes:
            fail("modified", "the document was changed after sealing: " + ", ".join(changes))
        elif modification is None or modification.value > ModificationLevel.LTA_UPDATES.value:
            fail("modified", _modification_reason(status.diff_result, modification))
    elif status.coverage == SignatureCoverageLevel.CONTIGUOUS_BLOCK_FROM_START:
        # The signed bytes are a prefix of the file, but not a revision a reader reaches: the
        # incremental saving attack's update without /Prev rewrites the document around them.
        fail(
            "partial_coverage",
            "the signature does not cover its whole revision of the file: "
            "the document was rewritten around the signed bytes",
        )
    else:
        # The gap in /ByteRange is more than the signature value (signature wrapping, Mladenov
        # et al. 2019), or the range does not start at the file's first byte.
        fail(
            "partial_coverage",
            "the signature does not cover its whole revision of the file: "
            "its byte range leaves out more than the signature value",
        )

    timestamp = None
    tst = status.timestamp_validity
    if tst is not None and tst.valid and tst.intact and tst.trusted:
        timestamp = tst.timestamp
    return PdfSignatureVerdict(
        field_name=name,
        valid=not codes,
        codes=tuple(codes),
        reasons=tuple(reasons),
        **_certificate_fields(cert),
        seal_id=registry.seal_id if registry else None,
        signing_time=_aware(status.signer_reported_dt),
        timestamp=_aware(timestamp),
        certified=sig.docmdp_level is not None,
        coverage=status.coverage.name.lower() if status.coverage else "unclear",
        modification_level=modification.name.lower() if modification else None,
    )


def _modification(diff: DiffResult | SuspiciousModification | None) -> ModificationLevel | None:
    if diff is None:
        return None
    if isinstance(diff, DiffResult):
        return diff.modification_level
    return ModificationLevel.OTHER


def _modification_reason(
    diff: DiffResult | SuspiciousModification | None, level: ModificationLevel | None
) -> str:
    # pyHanko's own message names internal object numbers: logged, not shown.
    if isinstance(diff, SuspiciousModification):
        log.info("post-seal update refused by the diff policy: %s", str(diff)[:300])
    kind = (
        {
            ModificationLevel.FORM_FILLING: "form fields were filled in or changed",
            ModificationLevel.ANNOTATIONS: "annotations were added or changed",
        }.get(level)
        if level
        else None
    )
    return "the document was changed after sealing: " + (
        kind or "a long-term-validation update also changed the document's objects"
    )


def _key_usage_problem(cert: x509.Certificate) -> str | None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "the seal certificate has no keyUsage extension (digitalSignature + nonRepudiation needed)"
    if not (usage.digital_signature and usage.content_commitment):
        return "the seal certificate's keyUsage lacks digitalSignature or nonRepudiation"
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    if basic.ca:
        return "the document was signed with a CA certificate, not a seal certificate"
    return None


def _certificate_fields(cert: x509.Certificate | None) -> dict[str, Any]:
    if cert is None:
        return {
            "seal_name": None,
            "department_name": None,
            "department_code": None,
            "certificate_serial": None,
            "certificate_fingerprint": None,
        }

    def attribute(oid: ObjectIdentifier) -> str | None:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else None

    code = attribute(_ORGANIZATION_IDENTIFIER)
    return {
        "seal_name": attribute(NameOID.COMMON_NAME),
        "department_name": attribute(NameOID.ORGANIZATION_NAME),
        "department_code": code.removeprefix("NTRCN-") if code else None,
        "certificate_serial": format(cert.serial_number, "X"),
        "certificate_fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
    }


def _broken_signature(name: str, reason: str, cert: x509.Certificate | None = None) -> PdfSignatureVerdict:
    return PdfSignatureVerdict(
        field_name=name,
        valid=False,
        codes=("signature_invalid",),
        reasons=(reason,),
        **_certificate_fields(cert),
        seal_id=None,
        signing_time=None,
        timestamp=None,
        certified=False,
        coverage="unclear",
        modification_level=None,
    )


def _refused(code: str, reason: str) -> PdfVerdict:
    return PdfVerdict(False, (code,), (reason,), ())


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
