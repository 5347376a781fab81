"""Shadow attacks on sealed PDFs: each is refused, with the change it made named.

Mainka, Mladenov, Rohlmann, Schwenk, "Shadow Attacks: Hiding and Replacing Content in Signed
PDFs" (NDSS 2021): the forger prepares the document before it is sealed, and after sealing
appends an incremental update that hides content, replaces it, or only flips which of two
prepared (and so signed) versions a reader sees. The signature stays cryptographically valid:
poppler's ``pdfsig`` says "Signature is Valid." for every file here, and the rendering changes.
Two older classics from Mladenov et al., "1 Trillion Dollar Refund" (NDSS 2019), are here too:
the incremental saving attack (ISA) in the variants the seals tests do not have, and signature
wrapping (SWA). Plus updates that carry genuine long-term-validation data *and* a shadow change,
since LTV revisions are the only ones Yinxin's policy admits (docs/seals.md), and two malformed
page trees that must end in a verdict, not in a hang or an exception, and a page attribute
changed where the page inherits it from.

The prepared licence and the update writers are in :mod:`tests.security._pdf_attacks`; the
updates are hand-written bytes (exactly the objects given) or pyHanko's incremental writer.
Every case asserts the verdict's code and the words of its reason, and (but for the structural
ones) that poppler renders the page differently from the sealed original, so each is a real
attack on what a person reads.

=====================  =====
category               cases
=====================  =====
hide                       6
replace                    7
hide-and-replace           8
other (ISA, SWA, LTV)     10
=====================  =====

Positive controls: the prepared licence itself verifies (hiding content *before* sealing is the
premise, not something a verifier can see), and so do its LTV updates — a DSS, a document
timestamp, both, an LTA renewal (validation data for the timestamp), a DSS written twice.

Already covered in tests/signing/test_pdf_verify.py, not repeated: an overlay appended to the page
content, a content stream rewritten in place, a page's inline font swapped, an added page or
annotation, a second signature, a DSS revision that also overlays the page.
"""

# pyHanko's PDF object model (pdf_utils.generic, the writers) has no annotations.
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from PIL import Image, ImageChops
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko.sign.validation.dss import DocumentSecurityStore, async_add_validation_info
from pyhanko_certvalidator import ValidationContext

from signing._pdf_verify import PdfVerdict
from signing._x509 import issue_crl
from tests.security import _pdf_attacks as shadow
from tests.signing._pdf_support import (
    CA,
    NOW,
    SEALED_AT,
    Registry,
    Seal,
    object_source,
    render_page,
    timestamp_authority,
    verify,
)
from tests.signing.test_pdf_seal import pdfsig_check, pyhanko_validate

# -- the world: a CA, a seal, the prepared licence sealed, LTV tools -----------------------------


def asn1(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))


@dataclass(frozen=True)
class World:
    """The sealed prepared licence and what building attacks on it needs."""

    sealed: bytes
    ca: CA
    seal_validation: ValidationContext  # our root and a CRL: the seal's DSS content
    timestamper: DummyTimeStamper
    tsa_validation: ValidationContext  # the TSA's root: the document timestamp's DSS content

    def source(self, number: int, pdf: bytes | None = None) -> bytes:
        return object_source(pdf or self.sealed, number)

    def rewrite(self, number: int, old: bytes, new: bytes) -> dict[int, bytes]:
        """Object *number* of the sealed file with *old* replaced by *new* (which must be there)."""
        source = self.source(number)
        assert old in source, (number, old, source)
        return {number: source.replace(old, new)}

    def reader(self, pdf: bytes | None = None) -> PdfFileReader:
        return PdfFileReader(io.BytesIO(pdf or self.sealed), strict=False)

    @property
    def signature(self) -> int:
        """Object number of the seal's signature dictionary."""
        (sig,) = self.reader().embedded_signatures
        return int(sig.sig_field.raw_get("/V").idnum)

    def stamp_objects(self) -> tuple[int, int]:
        """Object numbers of the seal widget's appearance stream and of the stamp image it draws."""
        (sig,) = self.reader().embedded_signatures
        appearance = sig.sig_field["/AP"].raw_get("/N")
        (image,) = (v for v in appearance.get_object()["/Resources"]["/XObject"].values())
        return int(appearance.idnum), int(image.idnum)

    def with_dss(self, pdf: bytes, *, timestamp: bool = False) -> bytes:
        reader = self.reader(pdf)
        sig = reader.embedded_timestamp_signatures[-1] if timestamp else reader.embedded_signatures[0]
        context = self.tsa_validation if timestamp else self.seal_validation
        out = io.BytesIO()
        asyncio.run(async_add_validation_info(sig, context, output=out))
        return out.getvalue()

    def with_timestamp(self, pdf: bytes) -> bytes:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
        out = io.BytesIO()
        asyncio.run(
            signers.PdfTimeStamper(self.timestamper).async_timestamp_pdf(writer, "sha256", output=out)
        )
        return out.getvalue()


@pytest.fixture(scope="module")
def world(seal: Seal, ca: CA) -> World:
    crl = issue_crl(
        ca.backend, ca.key, ca.certificate, revoked=[], crl_number=1,
        this_update=SEALED_AT, next_update=SEALED_AT + timedelta(days=7),
    )  # fmt: skip
    seal_validation = ValidationContext(
        trust_roots=[asn1(ca.certificate)],
        crls=[crl.public_bytes(Encoding.DER)],
        allow_fetching=False,
        revocation_mode="hard-fail",
        moment=NOW,
    )
    stamper, tsa = timestamp_authority("Yinxin shadow-test TSA")
    tsa_validation = ValidationContext(trust_roots=[asn1(tsa)], allow_fetching=False, moment=NOW)
    return World(seal.seal(shadow.prepared_licence()), ca, seal_validation, stamper, tsa_validation)


@pytest.fixture(scope="module")
def registry(seal: Seal) -> Registry:
    return Registry().add(seal.certificate)


def judge(pdf: bytes, world: World, registry: Registry) -> PdfVerdict:
    return verify(pdf, world.ca, registry)


# -- the attacks ---------------------------------------------------------------------------------

S = shadow
OVERLAY_NUMBER = 70  # beyond every object the sealed file has


def update(world: World, objects: dict[int, bytes], **kwargs: Any) -> bytes:
    return S.append_update(world.sealed, objects, **kwargs)


# hide


def overlay_annotation(w: World) -> bytes:
    # An opaque white Square annotation over "Status: VALID", registered on the page.
    annotation = (
        b"<< /Type /Annot /Subtype /Square /Rect [60 720 540 760] /F 4 /IC [1 1 1] /C [1 1 1] "
        b"/AP << /N %d 0 R >> >>" % (OVERLAY_NUMBER + 1)
    )
    annots = w.source(S.ANNOTS)
    assert annots.endswith(b"]")
    return update(
        w,
        {
            OVERLAY_NUMBER: annotation,
            OVERLAY_NUMBER + 1: S.appearance(S.white_box(0, 0, 480, 40), 480, 40),
            S.ANNOTS: annots[:-1] + b" %d 0 R ]" % OVERLAY_NUMBER,
        },
    )


def conditions_layer_off(w: World) -> bytes:
    # "Valid only with the original seal" is in the ocNote layer: the default configuration turns it off.
    switched = w.rewrite(
        S.OC_PROPERTIES, b"/ON [ 21 0 R 23 0 R ]\n/OFF [ 22 0 R ]", b"/ON [ 21 0 R ]\n/OFF [ 22 0 R 23 0 R ]"
    )
    return update(w, switched)


def note_flagged_hidden(w: World) -> bytes:
    return update(w, w.rewrite(S.NOTE, b"/F %d" % S.PRINT, b"/F %d" % (S.PRINT | S.HIDDEN)))


def fee_form_emptied(w: World) -> bytes:
    return update(w, {S.FEE_FORM: S.form_xobject(b"", 400, 30)})


def page_cropped(w: World) -> bytes:
    # The page ends below the status line: the title and "Status: VALID" are cut off.
    return update(w, w.rewrite(S.PAGE, b"/MediaBox [ 0 0 595 842 ]", b"/MediaBox [ 0 0 595 700 ]"))


def stamp_emptied(w: World) -> bytes:
    appearance, _ = w.stamp_objects()
    return update(w, {appearance: S.form_xobject(b"", 120, 120)})


# replace


def contents_pointer_swapped(w: World) -> bytes:
    forged = S.stream(S.shadow_content())
    return update(w, {OVERLAY_NUMBER: forged, **w.rewrite(S.PAGE, b"5 0 R ]", b"%d 0 R ]" % OVERLAY_NUMBER)})


def fee_form_replaced(w: World) -> bytes:
    return update(w, {S.FEE_FORM: S.fee_form("Fee paid: 900 CNY")})


def font_encoding_changed(w: World) -> bytes:
    # Same bytes "1000" in the content stream; the font now maps code 49 ("1") to the glyph "nine".
    encoding = b"<< /Type /Encoding /BaseEncoding /WinAnsiEncoding /Differences [49 /nine] >>"
    return update(w, {S.COURIER_ENCODING: encoding})


def font_widths_changed(w: World) -> bytes:
    return update(w, {S.COURIER_WIDTHS: b"[" + b" ".join([b"1400"] * 95) + b"]"})


def field_appearance_replaced(w: World) -> bytes:
    return update(w, {S.DECISION_APPEARANCE: S.decision_appearance("Decision: Rejected")})


def field_appearance_swapped(w: World) -> bytes:
    swapped = w.rewrite(S.DECISION_FIELD, b"/N 32 0 R", b"/N %d 0 R" % OVERLAY_NUMBER)
    return update(w, {OVERLAY_NUMBER: S.decision_appearance("Decision: Rejected"), **swapped})


def stamp_image_replaced(w: World) -> bytes:
    # Another department's stamp, as it were: a blue square where the red seal was.
    _, image = w.stamp_objects()
    blue = b"/Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceRGB /BitsPerComponent 8 "
    return update(w, {image: S.stream(b"\x00\x00\xcc", blue)})


# hide and replace: the update only chooses between versions the seal already covers


def status_layers_swapped(w: World) -> bytes:
    return update(
        w,
        w.rewrite(
            S.OC_PROPERTIES,
            b"/ON [ 21 0 R 23 0 R ]\n/OFF [ 22 0 R ]",
            b"/ON [ 22 0 R 23 0 R ]\n/OFF [ 21 0 R ]",
        ),
    )


def fee_resource_swapped(w: World) -> bytes:
    return update(w, w.rewrite(S.RESOURCES, b"/Fm1 10 0 R", b"/Fm1 11 0 R"))


def prepared_stamp_unhidden(w: World) -> bytes:
    return update(w, w.rewrite(S.HIDDEN_STAMP, b"/F %d" % S.HIDDEN, b"/F %d" % S.PRINT))


def content_streams_reordered(w: World) -> bytes:
    # "5,000,000 CNY" was drawn first and covered; now it is drawn last, on top.
    return update(w, w.rewrite(S.PAGE, b"[ 6 0 R 5 0 R ]", b"[ 5 0 R 6 0 R ]"))


def root_switched(w: World) -> bytes:
    # No object at all: an empty xref section and a trailer whose /Root is the prepared catalog.
    return update(w, {}, root=S.SHADOW_CATALOG)


def catalog_pages_switched(w: World) -> bytes:
    return update(w, w.rewrite(S.CATALOG, b"/Pages 2 0 R", b"/Pages %d 0 R" % S.SHADOW_PAGES))


def page_tree_kids_switched(w: World) -> bytes:
    return update(w, w.rewrite(S.PAGES, b"[ 3 0 R ]", b"[ %d 0 R ]" % S.SHADOW_PAGE))


def xref_pointed_at_dead_bytes(w: World) -> bytes:
    # No object written: the xref moves the content stream's number to its prepared second definition.
    return update(w, {}, pointing={S.CONTENT: S.dead_definition_offset(w.sealed)})


# other: ISA and SWA variants, shadows inside LTV updates, a malformed tree


def whole_document_rewritten(w: World) -> bytes:
    return S.rewritten_whole(w.sealed, {S.CONTENT: S.stream(S.shadow_content())})


def objects_without_xref(w: World) -> bytes:
    return update(w, {S.CONTENT: S.stream(S.shadow_content())}, xref=False)


def trailer_without_xref(w: World) -> bytes:
    # A trailer naming the shadow catalog, and a startxref back to the sealed xref section.
    startxref = int(w.sealed[w.sealed.rindex(b"startxref") + 9 :].split()[0])
    size = int(w.reader().trailer["/Size"])
    tail = S.trailer(w.sealed, size=size, prev=startxref, root=S.SHADOW_CATALOG)
    return w.sealed + b"\n" + tail + b"startxref\n%d\n%%%%EOF\n" % startxref


def signature_wrapped(w: World) -> bytes:
    return S.wrapped(w.sealed, w.signature, {S.CONTENT: S.stream(S.shadow_content())})


def layers_swapped_with_dss(w: World) -> bytes:
    # Genuine validation data for the seal, and in the same revision the status layers swapped.
    def swap(writer: IncrementalPdfFileWriter) -> None:
        properties = writer.get_object(generic.Reference(S.OC_PROPERTIES, 0, writer.prev))
        revoked, valid, note = (
            generic.IndirectObject(n, 0, writer) for n in (S.OCG_REVOKED, S.OCG_VALID, S.OCG_NOTE)
        )
        properties["/D"][generic.pdf_name("/ON")] = generic.ArrayObject([revoked, note])
        properties["/D"][generic.pdf_name("/OFF")] = generic.ArrayObject([valid])
        writer.update_container(properties)

    return with_dss_and(w, swap)


def with_dss_and(w: World, change: Callable[[IncrementalPdfFileWriter], None]) -> bytes:
    """One revision with genuine validation data for the seal, and *change* made beside it."""
    writer = IncrementalPdfFileWriter(io.BytesIO(w.sealed), strict=False)
    (sig,) = w.reader().embedded_signatures
    DocumentSecurityStore.supply_dss_in_writer(
        writer, sig.pkcs7_content, certs=[asn1(w.ca.certificate)], crls=list(w.seal_validation.crls)
    )
    change(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def font_changed_inside_dss(w: World) -> bytes:
    # The Courier encoding rewritten ("1000" reads "9000") and listed in the DSS as if it were a certificate.
    def remap(writer: IncrementalPdfFileWriter) -> None:
        encoding = writer.get_object(generic.Reference(S.COURIER_ENCODING, 0, writer.prev))
        encoding["/Differences"] = generic.ArrayObject([generic.NumberObject(49), generic.pdf_name("/nine")])
        writer.update_container(encoding)
        writer.root["/DSS"]["/Certs"].append(generic.IndirectObject(S.COURIER_ENCODING, 0, writer))

    return with_dss_and(w, remap)


def page_tree_node_rotated(w: World) -> bytes:
    # /Rotate on the page tree's root node is inherited by the page (ISO 32000-2 §7.7.3.4).
    return update(w, w.rewrite(S.PAGES, b"/Count 1", b"/Count 1\n/Rotate 180"))


def timestamp_with_visible_widget(w: World) -> bytes:
    # A real document timestamp, in a field prepared with an opaque "REVOKED" appearance over the status.
    writer = IncrementalPdfFileWriter(io.BytesIO(w.sealed), strict=False)
    fields.append_signature_field(
        writer, fields.SigFieldSpec("Timestamp", on_page=0, box=(60, 720, 540, 760))
    )
    page = writer.find_page_for_modification(0)[0].get_object()
    (widget,) = (a.get_object() for a in page["/Annots"] if a.get_object().get("/T") == "Timestamp")
    font = generic.DictionaryObject({generic.pdf_name("/F1"): generic.IndirectObject(S.HELVETICA, 0, writer)})
    drawing = S.white_box(0, 0, 480, 40) + S.text(12, 10, "Status: REVOKED - do not accept", rgb=b"0.8 0 0")
    appearance = generic.StreamObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/XObject"),
            generic.pdf_name("/Subtype"): generic.pdf_name("/Form"),
            generic.pdf_name("/BBox"): generic.ArrayObject(map(generic.NumberObject, (0, 0, 480, 40))),
            generic.pdf_name("/Resources"): generic.DictionaryObject({generic.pdf_name("/Font"): font}),
        },
        stream_data=drawing,
    )
    widget[generic.pdf_name("/AP")] = generic.DictionaryObject(
        {generic.pdf_name("/N"): writer.add_object(appearance)}
    )
    out = io.BytesIO()
    timestamper = signers.PdfTimeStamper(w.timestamper, field_name="Timestamp")
    asyncio.run(timestamper.async_timestamp_pdf(writer, "sha256", output=out))
    return out.getvalue()


def page_tree_loop(w: World) -> bytes:
    # A page tree node that is its own kid: a verifier walking it naively never returns.
    return update(w, {S.PAGES: b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"})


def page_tree_node_without_kids(w: World) -> bytes:
    # Malformed on purpose: the verdict must still be a verdict, not an exception (a 500 on the API).
    return update(w, {S.PAGES: b"<< /Type /Pages /Count 1 >>"})


@dataclass(frozen=True)
class Attack:
    build: Callable[[World], bytes]
    category: str
    code: str
    words: str
    visible: bool | None  # does poppler render the page differently? (None: not asked)

    @property
    def name(self) -> str:
        return self.build.__name__.replace("_", "-")


MODIFIED = "the document was changed after sealing: "

ATTACKS = (
    Attack(overlay_annotation, "hide", "modified", "annotations were added or changed", True),
    Attack(
        conditions_layer_off,
        "hide",
        "modified",
        "the visibility of optional content (layers) was changed",
        True,
    ),
    Attack(note_flagged_hidden, "hide", "modified", "hidden or shown (their /F flags changed)", True),
    Attack(
        fee_form_emptied,
        "hide",
        "modified",
        "content drawn on a page (a form XObject or image) was replaced",
        True,
    ),
    Attack(page_cropped, "hide", "modified", "page properties or resources were changed", True),
    Attack(stamp_emptied, "hide", "modified", "the seal's visible stamp was replaced", True),
    Attack(contents_pointer_swapped, "replace", "modified", "page content was replaced or overlaid", True),
    Attack(fee_form_replaced, "replace", "modified", "a form XObject or image) was replaced", True),
    Attack(font_encoding_changed, "replace", "modified", "fonts the page draws with were changed", True),
    Attack(font_widths_changed, "replace", "modified", "fonts the page draws with were changed", True),
    Attack(
        field_appearance_replaced,
        "replace",
        "modified",
        "the appearance of an annotation or form field",
        True,
    ),
    Attack(field_appearance_swapped, "replace", "modified", "form fields were filled in or changed", True),
    Attack(stamp_image_replaced, "replace", "modified", "the seal's visible stamp was replaced", True),
    Attack(
        status_layers_swapped, "hide-and-replace", "modified", "visibility of optional content (layers)", True
    ),
    Attack(
        fee_resource_swapped,
        "hide-and-replace",
        "modified",
        "page properties or resources were changed",
        True,
    ),
    Attack(
        prepared_stamp_unhidden,
        "hide-and-replace",
        "modified",
        "hidden or shown (their /F flags changed)",
        True,
    ),
    Attack(
        content_streams_reordered,
        "hide-and-replace",
        "modified",
        "page content was replaced or overlaid",
        True,
    ),
    Attack(
        root_switched, "hide-and-replace", "modified", "catalog (/Root) was switched to another object", True
    ),
    Attack(
        catalog_pages_switched, "hide-and-replace", "modified", "pages were added, removed or replaced", True
    ),
    Attack(
        page_tree_kids_switched, "hide-and-replace", "modified", "pages were added, removed or replaced", True
    ),
    Attack(
        xref_pointed_at_dead_bytes,
        "hide-and-replace",
        "modified",
        "page content was replaced or overlaid",
        True,
    ),
    Attack(whole_document_rewritten, "other", "partial_coverage", "rewritten around the signed bytes", True),
    Attack(
        objects_without_xref,
        "other",
        "modified",
        "data was appended after the last incremental update",
        False,
    ),
    Attack(trailer_without_xref, "other", "modified", "not a complete incremental update", False),
    Attack(signature_wrapped, "other", "partial_coverage", "leaves out more than the signature value", True),
    Attack(layers_swapped_with_dss, "other", "modified", "visibility of optional content (layers)", True),
    Attack(
        timestamp_with_visible_widget,
        "other",
        "modified",
        "a document timestamp was given a visible widget",
        True,
    ),
    Attack(font_changed_inside_dss, "other", "modified", "fonts the page draws with were changed", True),
    Attack(page_tree_node_rotated, "other", "modified", "page properties or resources were changed", True),
    Attack(page_tree_loop, "other", "modified", "updates were appended that cannot be analysed", None),
    Attack(
        page_tree_node_without_kids,
        "other",
        "modified",
        "updates were appended that cannot be analysed",
        None,
    ),
)


def test_the_corpus_matches_the_table_in_the_docstring() -> None:
    counts: dict[str, int] = {}
    for attack in ATTACKS:
        counts[attack.category] = counts.get(attack.category, 0) + 1
    assert counts == {"hide": 6, "replace": 7, "hide-and-replace": 8, "other": 10}
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)


@pytest.fixture(scope="module")
def built(world: World) -> dict[str, bytes]:
    return {attack.name: attack.build(world) for attack in ATTACKS}


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_attack_is_refused_with_its_reason(
    attack: Attack, built: dict[str, bytes], world: World, registry: Registry
) -> None:
    forged = built[attack.name]
    assert forged[: len(world.sealed)] == world.sealed or attack.code == "partial_coverage"
    verdict = judge(forged, world, registry)
    assert not verdict.valid, attack.name
    assert verdict.codes == (attack.code,), verdict
    (reason,) = verdict.reasons
    assert reason.startswith("YinxinSeal: ")
    assert attack.words in reason, (attack.words, reason)
    if attack.code == "modified":
        assert MODIFIED in reason
    # The seal itself is intact: the refusal is about what was done to the document, not the signature.
    assert verdict.seal is not None and verdict.seal.certificate_fingerprint is not None


@pytest.fixture(scope="module")
def sealed_rendering(world: World, tmp_path_factory: pytest.TempPathFactory) -> Image.Image:
    return render_page(world.sealed, 1, tmp_path_factory.mktemp("sealed-rendering"))


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a.visible is not None], ids=lambda a: a.name)
def test_attack_changes_what_a_reader_sees(
    attack: Attack, built: dict[str, bytes], sealed_rendering: Image.Image, tmp_path: Path
) -> None:
    """Poppler renders the forged page differently, or (ISA without xref) just as sealed."""
    forged = render_page(built[attack.name], 1, tmp_path)
    differs = (
        forged.size != sealed_rendering.size or ImageChops.difference(forged, sealed_rendering).getbbox()
    )
    assert bool(differs) == attack.visible, attack.name


def status_line(image: Image.Image) -> Image.Image:
    """The status line's strip (y 730 pt from the bottom of an A4 page, 72 dpi)."""
    return image.crop((60, 842 - 760, 540, 842 - 720))


def redness(image: Image.Image) -> int:
    """How many pixels are strongly red (the "REVOKED" text is drawn in 0.8 0 0)."""
    data = image.convert("RGB").tobytes()
    return sum(1 for i in range(0, len(data), 3) if data[i] > 150 and data[i + 1] < 90 and data[i + 2] < 90)


@pytest.mark.parametrize(
    "build",
    [
        status_layers_swapped,
        prepared_stamp_unhidden,
        root_switched,
        signature_wrapped,
        timestamp_with_visible_widget,
    ],
    ids=lambda b: b.__name__,
)
def test_the_status_line_now_reads_revoked(
    build: Callable[[World], bytes], built: dict[str, bytes], sealed_rendering: Image.Image, tmp_path: Path
) -> None:
    # The sealed page says "Status: VALID" in black; each forgery turns that line red.
    assert redness(status_line(sealed_rendering)) == 0
    name = build.__name__.replace("_", "-")
    assert redness(status_line(render_page(built[name], 1, tmp_path))) > 100


def test_independent_validators_call_the_signature_valid(
    world: World, built: dict[str, bytes], registry: Registry, tmp_path: Path
) -> None:
    """pdfsig and pyHanko's CLI: the signature checks out, what changed is another question."""
    for name in ("status-layers-swapped", "signature-wrapped", "whole-document-rewritten"):
        pdfsig = pdfsig_check(built[name], world.ca, tmp_path)
        assert "Signature is Valid." in pdfsig, (name, pdfsig)
        returncode, pyhanko = pyhanko_validate(built[name], world.ca, tmp_path)
        assert ":INTACT:" in pyhanko and returncode != 0, (name, pyhanko)
        assert "ILLEGAL_MODIFICATIONS" in pyhanko or "NONSTANDARD_COVERAGE" in pyhanko, (name, pyhanko)
        assert not judge(built[name], world, registry).valid
    # poppler says so about the wrapped signature, in so many words.
    assert "Not total document signed" in pdfsig_check(built["signature-wrapped"], world.ca, tmp_path)


# -- positive controls: what the policy admits -------------------------------------------------------


LTV_UPDATES: dict[str, Callable[[World], bytes]] = {
    "as-sealed": lambda w: w.sealed,
    "dss": lambda w: w.with_dss(w.sealed),
    "document-timestamp": lambda w: w.with_timestamp(w.sealed),
    "dss-then-timestamp": lambda w: w.with_timestamp(w.with_dss(w.sealed)),
    # PAdES B-LTA renewal: the timestamp's own validation data in a second DSS update.
    "lta-renewal": lambda w: w.with_dss(w.with_timestamp(w.with_dss(w.sealed)), timestamp=True),
    # The same validation data written again: the DSS dictionary rewritten, nothing new in it.
    "dss-written-twice": lambda w: w.with_dss(w.with_dss(w.sealed)),
}


@pytest.mark.parametrize("name", LTV_UPDATES)
def test_long_term_validation_updates_keep_the_prepared_licence_valid(
    name: str, world: World, registry: Registry
) -> None:
    pdf = LTV_UPDATES[name](world)
    verdict = judge(pdf, world, registry)
    assert verdict.valid, (name, verdict.reasons)
    assert len(verdict.signatures) == 1  # document timestamps are not seals
    revisions = world.reader(pdf).xrefs.total_revisions
    assert revisions == {"as-sealed": 2, "lta-renewal": 5, "dss-written-twice": 4}.get(name, revisions)
