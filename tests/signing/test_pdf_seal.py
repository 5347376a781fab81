"""Sealing a PDF (签章): a PAdES certification seal made in the key backend.

Each sealed PDF is checked by ``verify_sealed_pdf`` and, independently, by pyHanko's
command line (a separate process with only our root as trust anchor) and poppler's
``pdfsig`` over an NSS database trusting our root; the stamp is checked on the page
rendered by poppler's ``pdftoppm``. The structure (DocMDP, /SubFilter, /M) is read
back with pyHanko's reader.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from PIL import Image
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import MDPPerm

from hsm import KeyBackend, KeyProvenance, KeyRef, SecretPurpose, SignatureAlgorithm, SoftwareBackend
from schemas.errors import BackendUnavailable, InvalidInput
from signing import prepare_cjk_font, qr_png, render_licence_pdf, render_seal_image
from signing._pdf_seal import MAX_PDF_BYTES, SEAL_FIELD_NAME, StampPlacement, seal_pdf
from tests._pdf import (
    A4,
    SAMPLE_FACE,
    pdf_of_size,
    simple_pdf,
)
from tests._tsa import local_tsa
from tests.signing._pdf_support import (
    BOX,
    CA,
    EDDSA,
    ES256,
    NOW,
    PS256,
    SEALED_AT,
    Registry,
    Seal,
    make_ca,
    make_seal,
    render_page,
    run,
    tool,
    verify,
)

SEAL_ALGORITHMS = (ES256, PS256, EDDSA)


class CountingBackend(KeyBackend):
    """The real backend, counting the signatures asked of it (nothing else is changed)."""

    name: ClassVar[str] = "counting"

    def __init__(self, inner: KeyBackend) -> None:
        self.inner = inner
        self.signatures = 0

    def sign(self, key: KeyRef, data: bytes) -> bytes:
        self.signatures += 1
        return self.inner.sign(key, data)

    def generate_key(self, algorithm: SignatureAlgorithm = ES256, kid: str | None = None) -> KeyRef:
        return self.inner.generate_key(algorithm, kid)

    def public_key(self, key: KeyRef | str) -> PublicKeyTypes:
        return self.inner.public_key(key)

    def get_key(self, kid: str) -> KeyRef:
        return self.inner.get_key(kid)

    def list_keys(self) -> list[KeyRef]:
        return self.inner.list_keys()

    def destroy_key(self, kid: str) -> None:
        self.inner.destroy_key(kid)

    def describe_key(self, kid: str) -> KeyProvenance:
        return self.inner.describe_key(kid)

    def generate_secret(self, label: str, purpose: SecretPurpose) -> None:
        self.inner.generate_secret(label, purpose)

    def has_secret(self, label: str) -> bool:
        return self.inner.has_secret(label)

    def encrypt(self, label: str, plaintext: bytes, aad: bytes = b"") -> bytes:
        return self.inner.encrypt(label, plaintext, aad)

    def decrypt(self, label: str, blob: bytes, aad: bytes = b"") -> bytes:
        return self.inner.decrypt(label, blob, aad)

    def mac(self, label: str, data: bytes) -> bytes:
        return self.inner.mac(label, data)

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        """The inner backend belongs to its fixture."""


# -- independent validators -----------------------------------------------------------------------


def pyhanko_cli() -> str:
    """pyHanko's CLI (the ``pyhanko-cli`` package): beside our Python, or $PYHANKO_CLI, or on PATH."""
    candidates = [Path(sys.executable).with_name("pyhanko")]
    if os.environ.get("PYHANKO_CLI"):
        candidates.insert(0, Path(os.environ["PYHANKO_CLI"]))
    return tool("pyhanko", *candidates, hint=" (pip install pyhanko-cli, or set PYHANKO_CLI)")


def pyhanko_validate(
    pdf: bytes,
    root: CA,
    directory: Path,
    *,
    tsa_root: x509.Certificate | None = None,
    at: datetime = NOW,
) -> tuple[int, str]:
    path = directory / "sealed-for-pyhanko.pdf"
    path.write_bytes(pdf)
    trust = ["--trust", str(root.pem(directory, "pyhanko-root.pem"))]
    if tsa_root is not None:
        (directory / "tsa-root.pem").write_bytes(tsa_root.public_bytes(Encoding.PEM))
        trust += ["--trust", str(directory / "tsa-root.pem")]
    result = run(
        pyhanko_cli(),
        "sign",
        "validate",
        *trust,
        "--trust-replace",  # our root only, not the OS store
        "--no-revocation-check",  # the registry, not a CRL, is the status source here
        "--validation-time",
        at.isoformat(),
        path,
    )
    return result.returncode, result.stdout + result.stderr


def pdfsig_check(pdf: bytes, root: CA, directory: Path) -> str:
    """``pdfsig`` output for *pdf* with an NSS database that trusts *root* (and nothing else)."""
    pdfsig, certutil = tool("pdfsig"), tool("certutil")
    nss = directory / "nss"
    if not nss.exists():
        nss.mkdir()
        for args in (
            ("-N", "--empty-password"),
            ("-A", "-n", "yinxin-root", "-t", "C,C,C", "-i", str(root.pem(directory, "nss-root.pem"))),
        ):
            result = run(certutil, *args, "-d", f"sql:{nss}")
            assert result.returncode == 0, result.stderr
    path = directory / "sealed-for-pdfsig.pdf"
    path.write_bytes(pdf)
    result = run(pdfsig, "-nssdir", f"sql:{nss}", path)
    return result.stdout + result.stderr


# -- reading the structure back -------------------------------------------------------------------


def read_seal(pdf: bytes) -> tuple[PdfFileReader, Any]:
    reader = PdfFileReader(io.BytesIO(pdf))
    (signature,) = reader.embedded_signatures
    return reader, signature


def assert_certification_seal(pdf: bytes) -> None:
    reader, signature = read_seal(pdf)
    sig_object = signature.sig_object
    # ISO 32000-2 §12.8.2.2: the catalog's /Perms /DocMDP is the certification signature, and its
    # DocMDP transform parameters carry the permission level (1: no changes).
    docmdp = reader.root["/Perms"].raw_get("/DocMDP").reference
    assert docmdp == signature.sig_field.raw_get("/V").reference
    (reference,) = sig_object["/Reference"]
    assert reference["/TransformMethod"] == "/DocMDP"
    assert reference["/TransformParams"]["/P"] == 1
    assert reference["/TransformParams"]["/V"] == "/1.2"
    assert signature.docmdp_level is MDPPerm.NO_CHANGES
    assert sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert sig_object["/Filter"] == "/Adobe.PPKLite"
    assert signature.field_name == SEAL_FIELD_NAME
    # /M is the injected clock's time, to the second (ISO 32000-2 §7.9.4 date string), and so
    # are the modification times in /Info and XMP: nothing is read from the wall clock.
    assert str(sig_object["/M"]) == "D:20260601020000Z"
    assert str(reader.trailer["/Info"]["/ModDate"]) == "D:20260601020000Z"
    if "/Metadata" in reader.root:  # pyHanko writes XMP for PDF 2.0 output (ECDSA, EdDSA seals)
        assert 'xmp:ModifyDate="2026-06-01T02:00:00+00:00"' in reader.root["/Metadata"].data.decode()


# -- the two-backend matrix -----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", SEAL_ALGORITHMS, ids=str)
def test_seal_made_in_the_backend_verifies_everywhere(
    backend: KeyBackend, algorithm: SignatureAlgorithm, tmp_path: Path
) -> None:
    ca = make_ca(backend, ES256)
    counting = CountingBackend(backend)
    seal = make_seal(ca, algorithm, backend=counting)
    registry = Registry().add(seal.certificate)

    counting.signatures = 0
    sealed = seal.seal(simple_pdf())
    # One signature per seal: bytes_reserved spares pyHanko its measuring dry run.
    assert counting.signatures == 1

    verdict = verify(sealed, ca, registry)
    assert verdict.valid, verdict.reasons
    assert verdict.seal is not None
    assert verdict.seal.certified and verdict.seal.coverage == "entire_file"
    assert verdict.seal.signing_time == SEALED_AT
    assert verdict.seal.seal_name == "北京市测试局公章"
    assert_certification_seal(sealed)

    output = pdfsig_check(sealed, ca, tmp_path)
    assert "Signature Type: ETSI.CAdES.detached" in output, output
    assert "Total document signed" in output, output
    if algorithm is EDDSA:
        # NSS (poppler 22.12) cannot check Ed25519 CMS signatures; it says so rather than lie.
        assert "Signature is Valid." not in output, output
    else:
        assert "Signature Validation: Signature is Valid." in output, output
        assert "Certificate Validation: Certificate is Trusted." in output, output

    code, output = pyhanko_validate(sealed, ca, tmp_path)
    assert code == 0, output
    assert f"{SEAL_FIELD_NAME}:" in output and ":INTACT:TRUSTED,UNTOUCHED" in output, output


def test_seal_under_a_ps256_ca(backend: KeyBackend, tmp_path: Path) -> None:
    ca = make_ca(backend, PS256)
    seal = make_seal(ca, ES256)
    sealed = seal.seal(simple_pdf())

    verdict = verify(sealed, ca, Registry().add(seal.certificate))
    assert verdict.valid, verdict.reasons
    assert_certification_seal(sealed)
    output = pdfsig_check(sealed, ca, tmp_path)
    assert "Signature is Valid." in output and "Certificate is Trusted." in output, output
    code, output = pyhanko_validate(sealed, ca, tmp_path)
    assert code == 0 and ":INTACT:TRUSTED,UNTOUCHED" in output, output


# -- one software backend for the rest --------------------------------------------------------------


def test_independent_validators_refuse_a_seal_from_a_foreign_ca(
    soft: SoftwareBackend, ca: CA, tmp_path: Path
) -> None:
    foreign = make_ca(soft, ES256, common_name="别处的电子印章根证书")
    sealed = make_seal(foreign, ES256).seal(simple_pdf())

    output = pdfsig_check(sealed, ca, tmp_path)
    assert "Signature is Valid." in output, output  # the bytes are intact...
    assert "Certificate is Trusted." not in output, output  # ...but not from our CA
    assert "Certificate issuer isn't Trusted." in output, output
    code, output = pyhanko_validate(sealed, ca, tmp_path)
    assert code != 0, output
    assert ":INTACT:UNTRUSTED," in output, output


def red_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> tuple[int, int]:
    """Red pixels inside and outside *box* (image coordinates: x1, top, x2, bottom)."""
    inside = outside = 0
    x1, top, x2, bottom = box
    pixels: Any = image.convert("RGB").load()
    for y in range(image.height):
        for x in range(image.width):
            r, g, b = pixels[x, y]
            if r > 150 and g < 90 and b < 90:
                if x1 <= x <= x2 and top <= y <= bottom:
                    inside += 1
                else:
                    outside += 1
    return inside, outside


def test_stamp_is_drawn_in_its_box_on_the_chosen_page(seal: Seal, ca: CA, tmp_path: Path) -> None:
    box = (300.0, 500.0, 420.0, 620.0)
    sealed = seal.seal(simple_pdf(2), placement=StampPlacement(2, box))
    assert verify(sealed, ca, Registry().add(seal.certificate)).valid

    _, signature = read_seal(sealed)
    assert [int(v) for v in signature.sig_field["/Rect"]] == [300, 500, 420, 620]
    page_two = render_page(sealed, 2, tmp_path)
    assert page_two.size == A4
    # PDF y grows upwards, image rows downwards.
    inside, outside = red_pixels(page_two, (300, A4[1] - 620, 420, A4[1] - 500))
    assert inside > 1500, inside  # the ring and the star, about 120 × 120 points
    assert outside == 0
    page_one = render_page(sealed, 1, tmp_path)
    assert red_pixels(page_one, (0, 0, 0, 0)) == (0, 0)


def test_default_stamp_sits_at_the_lower_right(seal: Seal, tmp_path: Path) -> None:
    sealed = seal_pdf(simple_pdf(), seal.backend, seal.credentials, signing_time=SEALED_AT)

    _, signature = read_seal(sealed)
    x1, y1, x2, y2 = (int(v) for v in signature.sig_field["/Rect"])
    assert (x2 - x1, y2 - y1) == (119, 119)  # 42 mm
    assert x2 == A4[0] - 48 and y1 == 48
    inside, outside = red_pixels(render_page(sealed, 1, tmp_path), (x1, A4[1] - y2, x2, A4[1] - y1))
    assert inside > 1000 and outside == 0


@pytest.mark.parametrize(
    ("page", "box", "message"),
    [
        (0, BOX, "page 0 does not exist"),
        (3, BOX, "page 3 does not exist"),
        (-1, BOX, "page -1 does not exist"),
        (1, (500.0, 60.0, 700.0, 180.0), "outside page 1"),
        (1, (-10.0, 60.0, 100.0, 180.0), "outside page 1"),
        (2, (400.0, 780.0, 520.0, 900.0), "outside page 2"),
        (1, (400.0, 60.0, 410.0, 180.0), "smaller than 20×20"),
        (1, (400.0, 60.0, 520.0, 70.0), "smaller than 20×20"),
    ],
)
def test_page_and_box_out_of_range_are_refused(
    seal: Seal, page: int, box: tuple[float, float, float, float], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        seal.seal(simple_pdf(2), placement=StampPlacement(page, box))


def test_box_corners_in_any_order_mean_the_same_box(seal: Seal) -> None:
    sealed = seal.seal(simple_pdf(), placement=StampPlacement(1, (520.0, 180.0, 400.0, 60.0)))
    _, signature = read_seal(sealed)
    assert [int(v) for v in signature.sig_field["/Rect"]] == [400, 60, 520, 180]


@pytest.mark.parametrize(
    ("page", "box"),
    [(None, None), (2, "400,60,520,180"), (1, " 400 , 60,520,180.5")],
)
def test_placement_parses_cli_strings(page: int | None, box: str | None) -> None:
    placement = StampPlacement.parse(page, box)
    assert placement.page == (page or 1)
    assert placement.box == (None if box is None else (400.0, 60.0, 520.0, float(box.split(",")[-1])))


@pytest.mark.parametrize("box", ["400,60,520", "a,b,c,d", "1,2,3,4,5", "nan,1,2,3", "1e9,0,1,1", ""])
def test_placement_refuses_malformed_boxes(box: str) -> None:
    with pytest.raises(InvalidInput, match="four numbers"):
        StampPlacement.parse(1, box)


def test_refuses_what_is_not_a_pdf(seal: Seal) -> None:
    with pytest.raises(InvalidInput, match="not a PDF"):
        seal.seal(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(InvalidInput, match="not a readable PDF"):
        seal.seal(b"%PDF-1.7\n" + b"garbage " * 100)
    with pytest.raises(InvalidInput, match="not a readable PDF"):
        seal.seal(simple_pdf()[:400])  # truncated: no xref, no trailer


def test_refuses_an_encrypted_pdf(seal: Seal) -> None:
    with pytest.raises(InvalidInput, match="encrypted"):
        seal.seal(simple_pdf(encrypt_with="secret"))


def test_refuses_an_already_signed_pdf(seal: Seal) -> None:
    once = seal.seal(simple_pdf())
    with pytest.raises(InvalidInput, match="already carries 1 signature"):
        seal.seal(once)


def test_refuses_more_than_20_mib(seal: Seal, ca: CA) -> None:
    with pytest.raises(InvalidInput, match="limit is 20971520 bytes"):
        seal.seal(pdf_of_size(MAX_PDF_BYTES + 1))
    # Exactly at the limit is accepted, and the sealed file, a little larger, still verifies.
    sealed = seal.seal(pdf_of_size(MAX_PDF_BYTES))
    assert MAX_PDF_BYTES < len(sealed) < MAX_PDF_BYTES + 20_000
    assert verify(sealed, ca, Registry().add(seal.certificate)).valid


def test_refuses_a_naive_signing_time(seal: Seal) -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        seal.seal(simple_pdf(), signing_time=SEALED_AT.replace(tzinfo=None))


def test_seals_a_real_licence_with_a_real_seal_image(seal: Seal, ca: CA, tmp_path: Path) -> None:
    # Both made here (tests/artifacts is not in the repository and other tests' order is not ours).
    font_cache = tmp_path / "fonts"
    credentials = dataclasses.replace(
        seal.credentials,
        image_png=render_seal_image(
            "北京市测试局行政审批专用章", font=prepare_cjk_font(font_cache, bold=True)
        ),
    )
    licence = render_licence_pdf(
        SAMPLE_FACE,
        font=prepare_cjk_font(font_cache),
        qr_png=qr_png("http://127.0.0.1:8000/v/test").data,
    ).pdf
    sealed = seal_pdf(
        licence,
        seal.backend,
        credentials,
        signing_time=SEALED_AT,
        placement=StampPlacement(1, BOX),
        reason="电子证照签章",
        location="北京",
    )
    verdict = verify(sealed, ca, Registry().add(seal.certificate))
    assert verdict.valid, verdict.reasons
    _, signature = read_seal(sealed)
    assert signature.sig_object["/Reason"] == "电子证照签章"
    assert signature.sig_object["/Location"] == "北京"
    page = render_page(sealed, 1, tmp_path)
    height = page.height
    inside, _ = red_pixels(page, (400, height - 180, 520, height - 60))
    assert inside > 1000


def test_timestamped_seal_is_pades_b_t(seal: Seal, ca: CA, tmp_path: Path) -> None:
    counting = CountingBackend(seal.backend)
    with local_tsa() as tsa:
        sealed = seal_pdf(
            simple_pdf(), counting, seal.credentials, signing_time=SEALED_AT, timestamp_url=tsa.url
        )
        assert counting.signatures == 1 and len(tsa.requests) == 1
    # The TSA of tests/_tsa.py stamps with the wall clock and its certificate starts yesterday.
    now = datetime.now(UTC)
    registry = Registry().add(seal.certificate)
    trusted = verify(sealed, ca, registry, now=now, timestamp_roots=[tsa.root])
    assert trusted.valid, trusted.reasons
    assert trusted.seal is not None and trusted.seal.timestamp is not None
    assert abs((trusted.seal.timestamp - now).total_seconds()) < 300
    assert trusted.seal.signing_time == SEALED_AT  # claimed by the signer; the timestamp is attested
    # A TSA we do not trust gives no timestamp, and takes nothing from the seal.
    untrusted = verify(sealed, ca, registry, now=now)
    assert untrusted.valid and untrusted.seal is not None and untrusted.seal.timestamp is None
    _, signature = read_seal(sealed)
    unsigned = signature.signer_info["unsigned_attrs"].native
    assert [a["type"] for a in unsigned] == ["signature_time_stamp_token"]
    code, output = pyhanko_validate(sealed, ca, tmp_path, tsa_root=tsa.root, at=now)
    assert code == 0, output
    assert ":INTACT:TRUSTED,TIMESTAMP_TOKEN<INTACT:TRUSTED>,UNTOUCHED" in output, output


def test_unreachable_timestamp_authority_is_a_service_failure(seal: Seal) -> None:
    with pytest.raises(BackendUnavailable, match="timestamp authority"):
        seal.seal(simple_pdf(), timestamp_url="http://127.0.0.1:9/tsa")


def test_sealing_twice_gives_two_valid_different_files(seal: Seal, ca: CA) -> None:
    pdf = simple_pdf()
    first, second = seal.seal(pdf), seal.seal(pdf)
    registry = Registry().add(seal.certificate)
    assert verify(first, ca, registry).valid and verify(second, ca, registry).valid
    assert first.startswith(pdf)  # an incremental update: the original bytes are untouched
    assert second.startswith(pdf)
