"""PDF seals, licence faces and QR codes, each beside its baseline where one exists.

* pdf-seal-BACKEND-ES256: ``signing.seal_pdf`` (PAdES B-B certification seal, visible stamp, no
  timestamp) on a one-page PDF with the seal key in the backend vs pyHanko's own ``PdfSigner`` +
  ``SimpleSigner`` with an in-memory ``cryptography`` key: a certificate from the same CA, same
  stamp, metadata, field and ``bytes_reserved``. The ratio is the cost of our adapter (input
  checks, PNG decode, ``BackendSigner``, the backend's sign) on top of pyHanko. Goal (the issue):
  at least 60 sealed PDFs a second per core with SoftHSM.
* pdf-verify-ES256: ``signing.verify_sealed_pdf`` (our policy: trust, key usage, registry look-up,
  coverage) vs pyHanko's plain ``validate_pdf_signature`` with a ``ValidationContext`` trusting the
  same root, both from the PDF's bytes. Verification does not depend on the backend that sealed,
  so it is measured once. Goal: at least 100 PDFs a second per core.
* pdf-render-licence, qr-render, qr-decode: absolute figures (no baseline): the printable licence
  face, ``signing.qr_png`` of a 380-character presentation URL, and zxing-cpp reading it back.

Rates land in ``extra_info["pdfs_per_second"]`` (best time), next to the ratio report.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from PIL import Image
from pyhanko.pdf_utils import layout
from pyhanko.pdf_utils.images import PdfImage
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.stamp import StaticStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from schemas.errors import ConfigurationError
from schemas.uscc import make_uscc
from signing import (
    SealCertificateStatus,
    SealCredentials,
    StampPlacement,
    issue_root_certificate,
    issue_seal_certificate,
    prepare_cjk_font,
    qr_png,
    random_serial,
    render_licence_pdf,
    render_seal_image,
    seal_pdf,
    verify_sealed_pdf,
)
from tests._pdf import SAMPLE_FACE, simple_pdf

ES256 = SignatureAlgorithm.ES256
SEALED_AT = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
NOW = SEALED_AT + timedelta(hours=1)
SEAL_NAME = "北京市东城区市场监督管理局公章"
BOX = (400.0, 60.0, 520.0, 180.0)
# The CMS room seal_pdf reserves for ES256 without a timestamp: certificates + 2 048 + 72, hex ×2.
_SIGNATURE_RESERVE = 2_048 + 72
# A presentation URL of 380 characters, the length of a demo licence's (an ES256 token behind a
# short public URL): protected header, claims, 86-character signature.
_URL_HEAD = "https://zz.example.gov.cn/v/eyJhbGciOiJFUzI1NiIsImtpZCI6Imlzc3Vlci0yMDI2IiwidHlwIjoicHJlc2VudGF0aW9uK2p3dCJ9."
URL = (
    _URL_HEAD
    + ("eyJpZCI6IjEuMi4xNTYuMzAwNS4yIiwiZXhwIjoxNzgwMDAwMDAwfQ" * 5)[: 380 - len(_URL_HEAD) - 87]
    + "."
    + "S" * 86
)
BACKENDS = ["software", pytest.param("pkcs11", marks=pytest.mark.softhsm)]


@dataclass(frozen=True)
class _PdfSetup:
    pdf: bytes
    root: x509.Certificate
    issue: Callable[[Any], x509.Certificate]  # a seal certificate for a public key, from the root
    image_png: bytes


def _rate(benchmark: Any) -> None:
    benchmark.extra_info["pdfs_per_second"] = 1 / benchmark.stats.stats.min


@pytest.fixture(scope="module")
def fonts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cache = tmp_path_factory.mktemp("fonts")
    try:
        return prepare_cjk_font(cache), prepare_cjk_font(cache, bold=True)
    except ConfigurationError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def setup(software_backend: KeyBackend, fonts: tuple[Path, Path]) -> _PdfSetup:
    ca_key = software_backend.generate_key(ES256)
    root = issue_root_certificate(
        software_backend,
        ca_key,
        common_name="印信电子印章根证书",
        organisation="印信数字证书中心",
        serial=random_serial(),
        not_before=SEALED_AT - timedelta(days=30),
        not_after=SEALED_AT + timedelta(days=20 * 365),
    )

    def issue(public_key: Any) -> x509.Certificate:
        return issue_seal_certificate(
            software_backend,
            ca_key,
            root,
            public_key,
            seal_name=SEAL_NAME,
            department_name="北京市东城区市场监督管理局",
            department_code=make_uscc("11110101000000456"),
            serial=random_serial(),
            not_before=SEALED_AT - timedelta(hours=1),
            not_after=SEALED_AT + timedelta(days=5 * 365),
            crl_url="http://ca.yinxin.example/seal-root.crl",
        )

    # The seal image the service draws for a new seal (600 px RGBA PNG).
    return _PdfSetup(simple_pdf(), root, issue, render_seal_image(SEAL_NAME, font=fonts[0]))


def _backend(request: pytest.FixtureRequest, name: str) -> KeyBackend:
    backend: KeyBackend = request.getfixturevalue(f"{name}_backend")
    return backend


def _credentials(setup: _PdfSetup, backend: KeyBackend) -> SealCredentials:
    key: KeyRef = backend.generate_key(ES256)
    certificate = setup.issue(backend.public_key(key))
    return SealCredentials(key, certificate, (setup.root,), setup.image_png, SEAL_NAME)


# -- sealing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_seal_pdf_pyhanko_simple_signer(benchmark: Any, backend_name: str, setup: _PdfSetup) -> None:
    benchmark.group = f"pdf-seal-{backend_name}-ES256"
    benchmark.extra_info["role"] = "baseline"
    private_key = ec.generate_private_key(ec.SECP256R1())
    certificate = setup.issue(private_key.public_key())
    chain = [asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in (certificate, setup.root)]
    signer = signers.SimpleSigner(
        signing_cert=chain[0],
        signing_key=asn1_keys.PrivateKeyInfo.load(
            private_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        ),
        cert_registry=SimpleCertificateStore.from_certs(chain),  # type: ignore[no-untyped-call]
        embed_roots=True,
    )
    meta = signers.PdfSignatureMetadata(
        field_name="YinxinSeal",
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        certify=True,
        docmdp_permissions=fields.MDPPerm.NO_CHANGES,
        name=SEAL_NAME,
    )
    with Image.open(io.BytesIO(setup.image_png)) as opened:
        image = opened.convert("RGBA")
    stamp = StaticStampStyle(
        background=PdfImage(image),
        background_opacity=1.0,
        border_width=0,
        background_layout=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MID,
            y_align=layout.AxisAlignment.ALIGN_MID,
            margins=layout.Margins.uniform(0),  # type: ignore[no-untyped-call]
            inner_content_scaling=layout.InnerScaling.SHRINK_TO_FIT,
        ),
    )
    spec = fields.SigFieldSpec(
        "YinxinSeal", on_page=0, box=(400, 60, 520, 180), readable_field_name=SEAL_NAME
    )
    reserve = 2 * (sum(len(c.dump()) for c in chain) + _SIGNATURE_RESERVE)

    def seal() -> bytes:
        out = io.BytesIO()
        pdf_signer = signers.PdfSigner(meta, signer=signer, stamp_style=stamp, new_field_spec=spec)
        writer = IncrementalPdfFileWriter(io.BytesIO(setup.pdf), strict=False)
        pdf_signer.sign_pdf(writer, bytes_reserved=reserve, output=out)
        return out.getvalue()

    sealed = seal()
    assert verify_sealed_pdf(
        sealed,
        trust_roots=[setup.root],
        certificate_status=lambda _: SealCertificateStatus("active"),
        now=NOW,
    ).valid
    benchmark(seal)
    _rate(benchmark)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_seal_pdf_ours(
    benchmark: Any, backend_name: str, setup: _PdfSetup, request: pytest.FixtureRequest
) -> None:
    benchmark.group = f"pdf-seal-{backend_name}-ES256"
    benchmark.extra_info["role"] = "ours"
    backend = _backend(request, backend_name)
    credentials = _credentials(setup, backend)
    placement = StampPlacement(1, BOX)

    def seal() -> bytes:
        return seal_pdf(setup.pdf, backend, credentials, signing_time=SEALED_AT, placement=placement)

    sealed = seal()
    assert verify_sealed_pdf(
        sealed,
        trust_roots=[setup.root],
        certificate_status=lambda _: SealCertificateStatus("active"),
        now=NOW,
    ).valid
    benchmark(seal)
    _rate(benchmark)


# -- verification -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed(setup: _PdfSetup, software_backend: KeyBackend) -> tuple[bytes, x509.Certificate]:
    credentials = _credentials(setup, software_backend)
    pdf = seal_pdf(
        setup.pdf, software_backend, credentials, signing_time=SEALED_AT, placement=StampPlacement(1, BOX)
    )
    return pdf, credentials.certificate


def test_verify_pdf_pyhanko_validate(benchmark: Any, setup: _PdfSetup, sealed: tuple[bytes, Any]) -> None:
    benchmark.group = "pdf-verify-ES256"
    benchmark.extra_info["role"] = "baseline"
    pdf = sealed[0]
    root = asn1_x509.Certificate.load(setup.root.public_bytes(Encoding.DER))

    def verify() -> Any:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        context = ValidationContext(trust_roots=[root], moment=NOW, allow_fetching=False)
        return validate_pdf_signature(reader.embedded_signatures[0], signer_validation_context=context)

    status = verify()
    assert status.intact and status.valid and status.trusted
    benchmark(verify)
    _rate(benchmark)


def test_verify_pdf_ours(benchmark: Any, setup: _PdfSetup, sealed: tuple[bytes, Any]) -> None:
    benchmark.group = "pdf-verify-ES256"
    benchmark.extra_info["role"] = "ours"
    pdf, certificate = sealed
    registry = {certificate.serial_number: SealCertificateStatus("active", seal_id="seal-0001")}

    def verify() -> Any:
        return verify_sealed_pdf(
            pdf, trust_roots=[setup.root], certificate_status=lambda c: registry.get(c.serial_number), now=NOW
        )

    assert verify().valid
    benchmark(verify)
    _rate(benchmark)


# -- licence face and QR codes (absolute figures) ---------------------------------------------


def test_render_licence_pdf(benchmark: Any, fonts: tuple[Path, Path]) -> None:
    benchmark.group = "pdf-render-licence"
    qr = qr_png(URL).data
    rendered = render_licence_pdf(SAMPLE_FACE, font=fonts[0], bold_font=fonts[1], qr_png=qr)
    benchmark.extra_info["pdf_bytes"] = len(rendered.pdf)
    benchmark(render_licence_pdf, SAMPLE_FACE, font=fonts[0], bold_font=fonts[1], qr_png=qr)
    _rate(benchmark)


def test_qr_render(benchmark: Any) -> None:
    benchmark.group = "qr-render"
    assert len(URL) == 380
    image = qr_png(URL)
    benchmark.extra_info["qr_version"] = image.version
    benchmark.extra_info["png_bytes"] = len(image.data)
    benchmark(qr_png, URL)
    _rate(benchmark)


def test_qr_decode(benchmark: Any) -> None:
    benchmark.group = "qr-decode"
    # zxing-cpp reading the PNG qr_png writes (8 px a module), PNG decode included.
    png = qr_png(URL).data
    formats = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)

    def decode() -> str:
        with Image.open(io.BytesIO(png)) as image:
            found = zxingcpp.read_barcodes(image.convert("L"), formats=formats)
        return str(found[0].text)

    assert decode() == URL
    benchmark(decode)
    _rate(benchmark)
