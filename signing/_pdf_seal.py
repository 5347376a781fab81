"""Sealing a PDF (签章): a PAdES certification signature made in the key backend.

pyHanko builds the document signature (ISO 32000-2 §12.8, ETSI EN 319 142-1 PAdES);
:class:`BackendSigner` is its ``Signer`` adapter over :class:`hsm.KeyBackend`, so the
PKCS#11 token that signs licence tokens also signs the CMS ``SignedAttributes`` of a
seal — the private key never leaves it.

A seal is a *certification* signature with DocMDP permission 1 ("no changes allowed",
ISO 32000-2 §12.8.2.2): whatever is appended to the file afterwards, other than
long-term-validation data, invalidates it. The visible stamp is the seal image drawn in
the signature widget on the chosen page.
"""

# pyHanko's PDF object model (pdf_utils.generic, layout) has no annotations.
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import asyncio
import functools
import io
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from PIL import Image
from pyhanko.pdf_utils import generic, layout
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.images import PdfImage
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.metadata.model import DocumentMetadata
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers, timestamps
from pyhanko.sign.general import SigningError
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.stamp import StaticStampStyle
from pyhanko_certvalidator.registry import SimpleCertificateStore

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from schemas.errors import BackendUnavailable, InvalidInput, YinxinError
from signing._x509 import sign_for_x509, x509_signature_algorithm

__all__ = [
    "MAX_PDF_BYTES",
    "MAX_SEALED_PDF_BYTES",
    "BackendSigner",
    "SealCredentials",
    "StampPlacement",
    "seal_pdf",
]

log = logging.getLogger("yinxin.signing")

# Upload limit for documents to seal or verify (the API enforces it before reading the body).
MAX_PDF_BYTES = 20 * 1024 * 1024
# Limit for documents to verify: a document sealed at the upload limit grows by the seal's own
# update (the reserved CMS room, ~10-40 KB) and later by LTV updates (DSS, document timestamps),
# and must still verify.
MAX_SEALED_PDF_BYTES = MAX_PDF_BYTES + 2 * 1024 * 1024
MAX_PAGES = 2000
SEAL_FIELD_NAME = "YinxinSeal"
# Stamp size when no box is given: 42 mm, the diameter of a department seal (GA 241-2000).
DEFAULT_STAMP_PT = 42 / 25.4 * 72
DEFAULT_MARGIN_PT = 48.0

# CMS digest per key algorithm. Ed25519 in CMS uses SHA-512 for the message digest (RFC 8419 §3).
_DIGEST = {
    SignatureAlgorithm.ES256: "sha256",
    SignatureAlgorithm.PS256: "sha256",
    SignatureAlgorithm.EDDSA: "sha512",
}
# Upper bounds of the raw signature value per algorithm (DER ECDSA P-256 ≤ 72 bytes).
_SIGNATURE_BYTES = {
    SignatureAlgorithm.ES256: 72,
    SignatureAlgorithm.PS256: 384,
    SignatureAlgorithm.EDDSA: 64,
}
# Reserved room for an RFC 3161 timestamp token (TSA certificate chain included).
_TIMESTAMP_RESERVE = 12_000


@dataclass(frozen=True, slots=True)
class SealCredentials:
    """What sealing needs: the backend key, its certificate, the CA chain and the stamp image."""

    key: KeyRef
    certificate: x509.Certificate
    chain: Sequence[x509.Certificate]
    image_png: bytes
    name: str  # the seal's name (印章名称), written as the signer name

    def __repr__(self) -> str:
        return f"SealCredentials(kid={self.key.kid!r}, name={self.name!r})"


@dataclass(frozen=True, slots=True)
class StampPlacement:
    """Where the visible stamp goes: a 1-based page number and a box in PDF points.

    ``box`` is ``(x1, y1, x2, y2)`` from the page's lower-left corner; ``None`` puts a
    42 mm stamp at the lower right of the page.
    """

    page: int = 1
    box: tuple[float, float, float, float] | None = None

    @classmethod
    def parse(cls, page: int | None, box: str | None) -> StampPlacement:
        """From the CLI/API strings: ``--page N --box x1,y1,x2,y2``."""
        parsed: tuple[float, float, float, float] | None = None
        if box is not None:
            parts = box.split(",")
            try:
                values = [float(p) for p in parts]
            except ValueError:
                values = []
            if len(values) != 4 or not all(v == v and abs(v) < 1e5 for v in values):
                raise InvalidInput(
                    f"box {box[:60]!r} is not four numbers x1,y1,x2,y2 in PDF points (1/72 inch), "
                    "e.g. 400,60,520,180"
                )
            parsed = (values[0], values[1], values[2], values[3])
        return cls(page=1 if page is None else page, box=parsed)


class BackendSigner(signers.Signer):
    """pyHanko ``Signer`` whose raw signature is made by a :class:`KeyBackend` key."""

    def __init__(
        self,
        backend: KeyBackend,
        key: KeyRef,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
    ) -> None:
        self._backend = backend
        self._key = key
        signing_cert = _to_asn1(certificate)
        registry = SimpleCertificateStore.from_certs([signing_cert, *(_to_asn1(c) for c in chain)])
        super().__init__(
            signing_cert=signing_cert,
            cert_registry=registry,
            signature_mechanism=x509_signature_algorithm(key.algorithm),
            prefer_pss=key.algorithm is SignatureAlgorithm.PS256,
            embed_roots=True,
        )

    @property
    def digest_algorithm(self) -> str:
        return _DIGEST[self._key.algorithm]

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if digest_algorithm != self.digest_algorithm:
            # The algorithm is bound to the key (DESIGN §4): never let a caller pick another digest.
            raise SigningError(
                f"key {self._key.kid} ({self._key.algorithm.value}) signs with {self.digest_algorithm}, "
                f"not {digest_algorithm}"
            )
        if dry_run:
            return bytes(_SIGNATURE_BYTES[self._key.algorithm])
        return sign_for_x509(self._backend, self._key, data)


class _ClockedPdfSigner(signers.PdfSigner):
    """A ``PdfSigner`` whose signing time (the signature dictionary's ``/M``) is our clock's."""

    def __init__(self, *args: Any, signing_time: datetime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._signing_time = signing_time

    def init_signing_session(self, *args: Any, **kwargs: Any) -> Any:
        session = super().init_signing_session(*args, **kwargs)
        session.system_time = self._signing_time
        return session


def seal_pdf(
    pdf: bytes,
    backend: KeyBackend,
    seal: SealCredentials,
    *,
    signing_time: datetime,
    placement: StampPlacement | None = None,
    reason: str | None = None,
    location: str | None = None,
    timestamp_url: str | None = None,
) -> bytes:
    """Return *pdf* with a PAdES certification seal (B-B, or B-T with a timestamp authority).

    Raises ``InvalidInput`` for a document that cannot carry a seal (not a PDF, encrypted,
    already signed, page or box out of range) and ``BackendError`` when the key fails.
    """
    if signing_time.tzinfo is None:
        raise InvalidInput("signing time must be timezone-aware")
    placement = placement or StampPlacement()
    writer = _open_for_sealing(pdf, signing_time)
    page_index, box = _stamp_box(writer, placement)

    meta = signers.PdfSignatureMetadata(
        field_name=SEAL_FIELD_NAME,
        md_algorithm=_DIGEST[seal.key.algorithm],
        subfilter=fields.SigSeedSubFilter.PADES,
        certify=True,
        docmdp_permissions=fields.MDPPerm.NO_CHANGES,
        name=seal.name,
        reason=reason,
        location=location,
    )
    stamp = StaticStampStyle(
        background=_StampImage(_encoded_stamp(seal.image_png)),
        background_opacity=1.0,
        border_width=0,
        background_layout=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MID,
            y_align=layout.AxisAlignment.ALIGN_MID,
            margins=layout.Margins.uniform(0),
            inner_content_scaling=layout.InnerScaling.SHRINK_TO_FIT,
        ),
    )
    field_spec = fields.SigFieldSpec(
        SEAL_FIELD_NAME, on_page=page_index, box=box, readable_field_name=seal.name[:60]
    )
    timestamper = timestamps.HTTPTimeStamper(timestamp_url, timeout=10) if timestamp_url else None
    signer = BackendSigner(backend, seal.key, seal.certificate, seal.chain)
    pdf_signer = _ClockedPdfSigner(
        meta,
        signer=signer,
        timestamper=timestamper,
        stamp_style=stamp,
        new_field_spec=field_spec,
        signing_time=signing_time,
    )
    # Reserve the CMS room up front (hex-encoded, hence ×2) so pyHanko does not sign twice
    # to measure it: certificates + signed attributes + signature (+ a timestamp token).
    certs = sum(len(c.public_bytes(Encoding.DER)) for c in (seal.certificate, *seal.chain))
    reserve = certs + 2_048 + _SIGNATURE_BYTES[seal.key.algorithm]
    if timestamper is not None:
        reserve += _TIMESTAMP_RESERVE
    out = io.BytesIO()
    try:
        _run(pdf_signer.async_sign_pdf(writer, bytes_reserved=2 * reserve, output=out))
    except YinxinError:
        raise
    except TimestampRequestError as exc:
        # The TSA is a service we depend on, like the HSM: its failure is not the caller's input.
        log.warning("timestamp authority %s failed: %s", timestamp_url, exc)
        raise BackendUnavailable(
            "the timestamp authority did not answer or refused the request: try again later"
        ) from exc
    except (SigningError, PdfError, OSError) as exc:
        # An oddly built PDF; the key backend's own errors are ours already.
        raise InvalidInput(f"the document could not be sealed: {exc}") from exc
    return out.getvalue()


def _run(coro: Any) -> Any:
    """Run pyHanko's async signing to completion from synchronous code (CLI or a worker thread)."""
    return asyncio.run(coro)


class _ClockedMetadata(DocumentMetadata):
    """Document metadata whose modification time stays the one it was given.

    pyHanko's writer sets ``last_modified`` to ``"now"`` on every write, which becomes the
    server's wall clock (in its local zone) in /Info /ModDate and the XMP ModifyDate; the
    modification time of a sealed document is the sealing time (DESIGN §5.5: time is injected).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "last_modified" and value == "now" and "last_modified" in self.__dict__:
            return
        super().__setattr__(name, value)


class _SealingWriter(IncrementalPdfFileWriter):
    def __init__(self, pdf: bytes, modified_at: datetime) -> None:
        super().__init__(io.BytesIO(pdf), strict=False)
        self._meta = _ClockedMetadata(last_modified=modified_at)


def _open_for_sealing(pdf: bytes, modified_at: datetime) -> IncrementalPdfFileWriter:
    if len(pdf) > MAX_PDF_BYTES:
        raise InvalidInput(
            f"the PDF is {len(pdf)} bytes; the limit is {MAX_PDF_BYTES} bytes (20 MiB): split it first"
        )
    if not pdf.lstrip()[:5] == b"%PDF-":
        raise InvalidInput("the file is not a PDF (it does not start with %PDF-)")
    try:
        writer = _SealingWriter(pdf, modified_at)
        reader = writer.prev
        if reader.encrypted:
            raise InvalidInput("the PDF is encrypted: seal the unencrypted document")
        pages = int(reader.root["/Pages"]["/Count"])
        existing = len(reader.embedded_signatures)
    except YinxinError:
        raise
    except Exception as exc:  # pyHanko raises a variety of parser errors on malformed input
        raise InvalidInput(f"the file is not a readable PDF: {str(exc)[:200]}") from exc
    if existing:
        raise InvalidInput(
            f"the PDF already carries {existing} signature(s): a certification seal must be the "
            "document's first signature; seal the unsigned original"
        )
    if not 1 <= pages <= MAX_PAGES:
        raise InvalidInput(f"the PDF has {pages} pages; Yinxin seals documents of 1 to {MAX_PAGES} pages")
    return writer


def _stamp_box(
    writer: IncrementalPdfFileWriter, placement: StampPlacement
) -> tuple[int, tuple[int, int, int, int]]:
    reader: PdfFileReader = writer.prev
    pages = int(reader.root["/Pages"]["/Count"])
    if not 1 <= placement.page <= pages:
        raise InvalidInput(f"page {placement.page} does not exist: the document has pages 1 to {pages}")
    page_index = placement.page - 1
    page = reader.find_page_for_modification(page_index)[0].get_object()
    x0, y0, x1, y1 = (float(v) for v in _media_box(reader, page_index, page))
    if placement.box is None:
        size = DEFAULT_STAMP_PT
        box = (
            x1 - DEFAULT_MARGIN_PT - size,
            y0 + DEFAULT_MARGIN_PT,
            x1 - DEFAULT_MARGIN_PT,
            y0 + DEFAULT_MARGIN_PT + size,
        )
    else:
        bx1, by1, bx2, by2 = placement.box
        box = (min(bx1, bx2), min(by1, by2), max(bx1, bx2), max(by1, by2))
        if box[2] - box[0] < 20 or box[3] - box[1] < 20:
            raise InvalidInput("the stamp box is smaller than 20×20 points: give a larger box")
        if box[0] < x0 or box[1] < y0 or box[2] > x1 or box[3] > y1:
            raise InvalidInput(
                f"the stamp box {placement.box} lies outside page {placement.page} "
                f"({x0:g},{y0:g},{x1:g},{y1:g})"
            )
    return page_index, (round(box[0]), round(box[1]), round(box[2]), round(box[3]))


def _media_box(reader: PdfFileReader, page_index: int, page: Any) -> Sequence[Any]:
    # /MediaBox is inheritable (ISO 32000-2 §7.7.3.4): walk up the page tree if needed.
    node = page
    while node is not None:
        if "/MediaBox" in node:
            return list(node["/MediaBox"])
        node = node.get("/Parent")
        node = node.get_object() if node is not None else None
    raise InvalidInput(f"page {page_index + 1} has no /MediaBox: the PDF is malformed")


@dataclass(frozen=True, slots=True)
class _EncodedStamp:
    """A seal image as PDF image data, Flate-compressed once: colour samples and alpha (SMask)."""

    width: int
    height: int
    rgb: bytes
    alpha: bytes


@functools.lru_cache(maxsize=64)
def _encoded_stamp(png: bytes) -> _EncodedStamp:
    # Decoding the PNG and deflating its samples costs ~10 ms, more than the rest of sealing
    # together; a department seals with the same image all day (keyed by the bytes themselves).
    image = Image.open(io.BytesIO(png))
    image.load()
    rgba = image.convert("RGBA")
    return _EncodedStamp(
        rgba.width,
        rgba.height,
        zlib.compress(rgba.convert("RGB").tobytes(), 6),
        zlib.compress(rgba.getchannel("A").tobytes(), 6),
    )


class _StampImage(PdfImage):
    """pyHanko's ``PdfImage`` over pre-compressed samples (ISO 32000-2 §8.9.5, §11.6.5.3 SMask)."""

    def __init__(self, encoded: _EncodedStamp) -> None:
        # The base class wants a PIL image only to size the box and for pil_image(), which
        # image_ref below replaces: a 1×1 placeholder and the real size as the box.
        super().__init__(Image.new("L", (1, 1)), box=layout.BoxConstraints(encoded.width, encoded.height))
        self._encoded = encoded

    @property
    def image_ref(self) -> generic.IndirectObject:
        assert self.writer is not None
        ref = self._image_ref
        if ref is None or ref.get_pdf_handler() is not self.writer:
            self._image_ref = ref = self._write(self.writer)
        return ref

    def _write(self, writer: Any) -> generic.IndirectObject:
        e = self._encoded

        def image(color_space: str, data: bytes, extra: dict[Any, Any]) -> generic.IndirectObject:
            entries = {
                pdf_name("/Type"): pdf_name("/XObject"),
                pdf_name("/Subtype"): pdf_name("/Image"),
                pdf_name("/Width"): generic.NumberObject(e.width),
                pdf_name("/Height"): generic.NumberObject(e.height),
                pdf_name("/ColorSpace"): pdf_name(color_space),
                pdf_name("/BitsPerComponent"): generic.NumberObject(8),
                pdf_name("/Filter"): pdf_name("/FlateDecode"),
                **extra,
            }
            ref: generic.IndirectObject = writer.add_object(
                generic.StreamObject(generic.DictionaryObject(entries), encoded_data=data)
            )
            return ref

        smask = image("/DeviceGray", e.alpha, {})
        return image("/DeviceRGB", e.rgb, {pdf_name("/SMask"): smask})


def _to_asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))
