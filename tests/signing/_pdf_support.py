"""Helpers for PDF sealing and verification tests: a CA, seal credentials, small PDFs, tools.

Everything is real: certificates are issued by :mod:`signing._x509` through a key backend,
PDFs are written by pyHanko's writer, seal images by Pillow. The independent checkers
(pyHanko's command line, poppler's ``pdfsig`` and ``pdftoppm``, NSS ``certutil``) are found
with :func:`tool`, which skips locally and fails under ``CI=true`` when one is missing.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image, ImageDraw
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from schemas.uscc import make_uscc
from signing._pdf_seal import SealCredentials, StampPlacement, seal_pdf
from signing._pdf_verify import PDF_VERDICT_CODES, PdfVerdict, SealCertificateStatus, verify_sealed_pdf
from signing._x509 import issue_root_certificate, issue_seal_certificate, random_serial

# A fixed clock (DESIGN §5.5): sealed at 2026-06-01 10:00 Beijing time, verified an hour later.
SEALED_AT = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
NOW = SEALED_AT + timedelta(hours=1)
# Long enough that pdfsig (which checks at the real present) still trusts it for years.
SEAL_NOT_AFTER = SEALED_AT + timedelta(days=10 * 365)
DEPARTMENT_CODE = make_uscc("11110000000013338")
CRL_URL = "http://ca.yinxin.example/seal-root.crl"
# The default stamp box of these tests: lower right, well inside an A4 page.
BOX = (400.0, 60.0, 520.0, 180.0)

ES256 = SignatureAlgorithm.ES256
PS256 = SignatureAlgorithm.PS256
EDDSA = SignatureAlgorithm.EDDSA


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def tool(name: str, *candidates: Path, hint: str = "") -> str:
    """Path of an independent checker; skips locally (fails under CI=true) when it is missing."""
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed: it checks sealed PDFs independently of our code{hint}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=timeout
    )


# -- the CA and seals --------------------------------------------------------------------------


@dataclass(frozen=True)
class CA:
    backend: KeyBackend
    key: KeyRef
    certificate: x509.Certificate

    def pem(self, directory: Path, name: str = "root.pem") -> Path:
        path = directory / name
        path.write_bytes(self.certificate.public_bytes(Encoding.PEM))
        return path


def make_ca(
    backend: KeyBackend, algorithm: SignatureAlgorithm, common_name: str = "印信测试电子印章根证书"
) -> CA:
    key = backend.generate_key(algorithm)
    root = issue_root_certificate(
        backend,
        key,
        common_name=common_name,
        organisation="印信测试数字证书中心",
        serial=random_serial(),
        not_before=SEALED_AT - timedelta(days=30),
        not_after=SEALED_AT + timedelta(days=20 * 365),
    )
    return CA(backend, key, root)


def seal_image_png(size: int = 240) -> bytes:
    """A small round red seal on a transparent background (RGBA PNG)."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    width = max(4, size // 16)
    draw.ellipse((width, width, size - width, size - width), outline=(220, 0, 0, 255), width=width)
    centre, arm = size // 2, size // 6
    draw.regular_polygon((centre, centre, arm), 5, fill=(220, 0, 0, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass(frozen=True)
class Seal:
    """A seal key in *backend*, its certificate from *ca*, and what ``seal_pdf`` needs."""

    backend: KeyBackend
    ca: CA
    credentials: SealCredentials

    @property
    def certificate(self) -> x509.Certificate:
        return self.credentials.certificate

    def seal(self, pdf: bytes, **kwargs: Any) -> bytes:
        kwargs.setdefault("signing_time", SEALED_AT)
        kwargs.setdefault("placement", StampPlacement(1, BOX))
        return seal_pdf(pdf, self.backend, self.credentials, **kwargs)


def make_seal(
    ca: CA,
    algorithm: SignatureAlgorithm,
    *,
    backend: KeyBackend | None = None,
    certificate: x509.Certificate | None = None,
    key: KeyRef | None = None,
    name: str = "北京市测试局公章",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Seal:
    """A seal whose key lives in *backend* (the CA's by default), certified by *ca*."""
    backend = backend or ca.backend
    key = key or backend.generate_key(algorithm)
    if certificate is None:
        certificate = issue_seal_certificate(
            ca.backend,
            ca.key,
            ca.certificate,
            backend.public_key(key),
            seal_name=name,
            department_name="北京市测试局",
            department_code=DEPARTMENT_CODE,
            serial=random_serial(),
            not_before=not_before or SEALED_AT - timedelta(hours=1),
            not_after=not_after or SEAL_NOT_AFTER,
            crl_url=CRL_URL,
        )
    credentials = SealCredentials(key, certificate, (ca.certificate,), seal_image_png(), name)
    return Seal(backend, ca, credentials)


# -- the seal registry -------------------------------------------------------------------------


@dataclass
class Registry:
    """The seal registry look-up ``verify_sealed_pdf`` takes: serial → state (None = unknown)."""

    states: dict[int, SealCertificateStatus] = field(default_factory=dict)

    def add(self, certificate: x509.Certificate, state: str = "active", **kwargs: Any) -> Registry:
        self.states[certificate.serial_number] = SealCertificateStatus(
            state, seal_id=f"seal-{certificate.serial_number % 10_000:04d}", **kwargs
        )
        return self

    def __call__(self, certificate: x509.Certificate) -> SealCertificateStatus | None:
        return self.states.get(certificate.serial_number)


def verify(
    pdf: bytes,
    ca: CA | Sequence[CA],
    registry: Callable[[x509.Certificate], SealCertificateStatus | None],
    *,
    now: datetime = NOW,
    timestamp_roots: Sequence[x509.Certificate] = (),
) -> PdfVerdict:
    """``verify_sealed_pdf`` under our roots; checks the verdict's shape whatever it says."""
    cas = [ca] if isinstance(ca, CA) else list(ca)
    verdict = verify_sealed_pdf(
        pdf,
        trust_roots=[c.certificate for c in cas],
        certificate_status=registry,
        now=now,
        timestamp_roots=timestamp_roots,
    )
    assert len(verdict.codes) <= len(verdict.reasons), verdict
    assert set(verdict.codes) <= set(PDF_VERDICT_CODES), verdict.codes
    assert verdict.valid == (not verdict.codes), verdict
    for reason in verdict.reasons:
        assert reason and "\n" not in reason and len(reason) < 400, reason
    for signature in verdict.signatures:
        assert signature.valid == (not signature.codes), signature
        assert len(signature.codes) == len(signature.reasons), signature
    verdict.to_dict()  # serialisable whatever happened
    return verdict


def render_page(pdf: bytes, page: int, directory: Path) -> Image.Image:
    """Page *page* (1-based) rendered by poppler at 72 dpi: one pixel per PDF point."""
    pdftoppm = tool("pdftoppm")
    source = directory / "render.pdf"
    source.write_bytes(pdf)
    prefix = directory / f"page{page}"
    result = run(
        pdftoppm, "-r", "72", "-png", "-f", str(page), "-l", str(page), "-singlefile", source, prefix
    )
    assert result.returncode == 0, result.stderr
    with Image.open(prefix.with_suffix(".png")) as image:
        return image.convert("RGB")


def append_raw_update(pdf: bytes, objects: dict[int, bytes], *, info: int | None = None) -> bytes:
    """*pdf* plus a hand-written incremental update (ISO 32000-2 §7.5.6) holding *objects*.

    Written byte by byte, not through pyHanko's writer (which also refreshes /Info and the
    XMP stream): the update holds exactly the objects given, none at all when *objects* is
    empty. *info* points the new trailer's /Info at another object number.
    """
    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    trailer = reader.trailer_view
    previous = int(pdf[pdf.rindex(b"startxref") + 9 :].split()[0])
    body = bytearray(b"\n")
    offsets: dict[int, int] = {}
    for number, content in sorted(objects.items()):
        offsets[number] = len(pdf) + len(body)
        body += b"%d 0 obj\n" % number + content + b"\nendobj\n"
    xref_at = len(pdf) + len(body)
    body += b"xref\n" if offsets else b"xref\n0 0\n"
    for number, offset in sorted(offsets.items()):
        body += b"%d 1\n%010d 00000 n \n" % (number, offset)
    size = max([int(trailer["/Size"]), *(n + 1 for n in objects)])
    ids = b" ".join(b"<" + bytes(i.original_bytes).hex().encode() + b">" for i in trailer["/ID"])
    info_number = info if info is not None else trailer.raw_get("/Info").idnum
    body += (
        b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R /Prev %d /ID [%s] >>\nstartxref\n%d\n%%%%EOF\n"
        % (size, reader.root_ref.idnum, info_number, previous, ids, xref_at)
    )
    return pdf + bytes(body)


def object_number(pdf: bytes, path: Callable[[Any], Any]) -> int:
    """The object number of ``path(root)`` (an indirect reference) in *pdf*'s latest revision."""
    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    return int(path(reader.root).idnum)


def object_source(pdf: bytes, number: int) -> bytes:
    """The latest serialisation of object *number* (for tests that rewrite it)."""
    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    obj = reader.get_object(generic.Reference(number, 0))
    out = io.BytesIO()
    obj.write_to_stream(out)
    return out.getvalue()


def timestamp_authority(common_name: str) -> tuple[DummyTimeStamper, x509.Certificate]:
    """An RFC 3161 TSA of our own (pyHanko's test TSA signs with RSA only), with its certificate
    (a validation context's trust root); it stamps at :data:`NOW`."""
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(SEALED_AT - timedelta(days=1))
        .not_valid_after(SEAL_NOT_AFTER)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(key, hashes.SHA256())
    )
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = certificate.public_bytes(Encoding.DER)
    stamper = DummyTimeStamper(
        asn1_x509.Certificate.load(der), asn1_keys.PrivateKeyInfo.load(pkcs8), fixed_dt=NOW
    )
    return stamper, certificate
