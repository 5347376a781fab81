"""The printable licence face (照面): a one-page A4 PDF, unsigned, with room for the seal.

Laid out like a Chinese certificate: a double red border with corner
ornaments, the licence type as a large centred title, the GB/T 36904
identifier, a label/value table of the face data, the QR code bottom left
("扫码核验 / Scan to verify") and the issuer's name and issue date bottom right.
:class:`RenderedLicence` tells where the seal goes: a 42 mm square over the
issuer's name and date (organ seals are 42 mm across, and a seal covers the
name and date it authenticates), which the sealing step fills through a
pyHanko signature field.

Built with pyHanko's own PDF toolkit, so sealing later needs nothing else:
text is shaped by HarfBuzz and embedded as a CID-keyed CFF subset
(``GlyphAccumulator``) with a ToUnicode map, so the Chinese is selectable and
searchable, not a picture. The file uses a classic cross-reference table and
no object streams, the most conservative base for incremental updates
(ISO 32000-1 §7.5.6).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final

from PIL import Image, UnidentifiedImageError
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.opentype import GlyphAccumulator, GlyphAccumulatorFactory
from pyhanko.pdf_utils.images import pil_image
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

from schemas.errors import ConfigurationError, InputTooLarge, InvalidInput
from signing._fonts import font_missing_chars

__all__ = [
    "MAX_FACE_FIELDS",
    "MAX_FACE_VALUE_CHARS",
    "SEAL_BOX_SIZE_PT",
    "LicenceFace",
    "RenderedLicence",
    "render_licence_pdf",
]

MAX_FACE_FIELDS: Final = 60
MAX_FACE_VALUE_CHARS: Final = 500
MAX_LABEL_CHARS: Final = 40
MAX_HEADER_CHARS: Final = 120  # title, names, identifier, licence number
MAX_ISSUER_CHARS: Final = 60  # two lines over the seal at a legible size
MAX_QR_PNG_BYTES: Final = 1024 * 1024

_MM: Final = 72 / 25.4
PAGE_WIDTH: Final = 210 * _MM  # A4, ISO 216
PAGE_HEIGHT: Final = 297 * _MM
SEAL_BOX_SIZE_PT: Final = 42 * _MM

_BORDER_RGB: Final = (0.70, 0.13, 0.11)
_TEXT_RGB: Final = (0.0, 0.0, 0.0)
_LABEL_RGB: Final = (0.22, 0.22, 0.22)
_MUTED_RGB: Final = (0.40, 0.40, 0.40)
_RULE_GREY: Final = 0.72
_LABEL_FILL: Final = (0.985, 0.955, 0.945)

_NO_LINE_START: Final = frozenset("，。、；：？！）》」』】〕”’…,.;:?!)]}%")
_LEFT: Final = 62.0
_RIGHT: Final = PAGE_WIDTH - 62.0
_TABLE_TOP: Final = PAGE_HEIGHT - 198.0
_TABLE_FLOOR: Final = 226.0  # the footer (QR code, issuer, seal box) starts below
_QR_SIZE: Final = 40 * _MM  # scans from a print and a phone screen; ~3.6 px a module at 200 dpi
_QR_BOTTOM: Final = 86.0
_ISSUER_CENTRE_X: Final = _RIGHT - 122.0
_ISSUER_NAME_Y: Final = 150.0
# Table layouts tried in turn until the face data fits: (label/value pairs per row, font size,
# cell padding in em). Roomy single column first; many short fields go two pairs to a row, so
# the 60 fields a type may define still fit.
_LAYOUTS: Final = (
    (1, 11.0, 0.55),
    (1, 10.0, 0.55),
    (1, 9.0, 0.5),
    (2, 9.0, 0.5),
    (2, 8.0, 0.45),
    (1, 8.0, 0.45),
    (2, 7.0, 0.4),
    (1, 7.0, 0.4),
    (2, 6.5, 0.35),
    (2, 6.0, 0.3),
)


@dataclass(frozen=True, slots=True)
class LicenceFace:
    """What the face of one licence shows; every string is printed as given.

    *fields* are the type's face data in schema order, as (label, value) pairs
    with the schema's Chinese titles as labels. *holder_id_masked* is already
    masked by the caller (DESIGN §5.10: full citizen ID numbers are never
    printed by us). *valid_until* None prints as 长期 (no expiry).
    """

    title: str
    identifier: str
    holder_name: str
    holder_id_type: str
    holder_id_masked: str
    issuer_name: str
    issuer_code: str
    valid_from: date
    valid_until: date | None
    issued_at: date
    fields: tuple[tuple[str, str], ...] = ()
    title_en: str | None = None
    licence_number: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedLicence:
    """The unsigned licence PDF and the square, in PDF points, reserved for the seal."""

    pdf: bytes
    seal_box: tuple[int, float, float, float, float]  # (page index, x1, y1, x2, y2)


def render_licence_pdf(
    face: LicenceFace, *, font: Path, qr_png: bytes, bold_font: Path | None = None
) -> RenderedLicence:
    """The face of *face* as a one-page A4 PDF, with *qr_png* as its QR code.

    *font* (and *bold_font*, for the title, labels and issuer, if given) is a
    single-face OTF/TTF with Chinese glyphs: pass a collection through
    :func:`signing.standalone_font` first. Raises InvalidInput for absurd or
    undrawable input (InputTooLarge when it cannot fit on one page) and
    ConfigurationError for an unusable font.
    """
    bold_path = bold_font or font
    for path in {font, bold_path}:
        if path.suffix.lower() not in (".otf", ".ttf") or not path.is_file():
            raise ConfigurationError(
                f"licence font {path} must be an existing single-face .otf/.ttf (extract a .ttc first)"
            )
    rows = _face_rows(face)
    _check_face(face, rows, font, bold_path)
    qr_image = _qr_image(qr_png)

    writer = PdfFileWriter(stream_xrefs=False)  # type: ignore[no-untyped-call]
    meta = writer.document_meta
    meta.title = face.title
    meta.author = face.issuer_name
    meta.creator = "Yinxin (印信)"
    regular = _Font(writer, font, "/F1")
    bold = regular if bold_path == font else _Font(writer, bold_path, "/F2")
    page = _Page(regular, bold)

    _draw_border(page)
    _draw_header(page, face)
    _draw_table(page, rows)
    seal_box = _draw_footer(page, face)
    page.ops.append(b"q %g 0 0 %g %g %g cm /Im1 Do Q" % (_QR_SIZE, _QR_SIZE, _LEFT, _QR_BOTTOM))

    # pyHanko's writer API is unannotated; the ignores below cover only that.
    fonts = {generic.NameObject(f.name): f.engine.as_resource() for f in {regular, bold}}
    images = {generic.NameObject("/Im1"): pil_image(qr_image, writer)}
    resources = generic.DictionaryObject(  # type: ignore[no-untyped-call]
        {
            generic.NameObject("/Font"): generic.DictionaryObject(fonts),  # type: ignore[no-untyped-call]
            generic.NameObject("/XObject"): generic.DictionaryObject(images),  # type: ignore[no-untyped-call]
        }
    )
    content = generic.StreamObject(stream_data=b"\n".join(page.ops))
    content.compress()  # type: ignore[no-untyped-call]
    page_object = PageObject(  # type: ignore[no-untyped-call]
        writer.add_object(content), (0, 0, PAGE_WIDTH, PAGE_HEIGHT), resources=resources
    )
    writer.insert_page(page_object)  # type: ignore[no-untyped-call]
    out = io.BytesIO()
    writer.write(out)  # type: ignore[no-untyped-call]
    return RenderedLicence(out.getvalue(), (0, *seal_box))


# -- input ------------------------------------------------------------------------------------


def _format_date(day: date) -> str:
    # Chinese certificates write dates as 2026年1月15日 (GB/T 15835 style numerals).
    return f"{day.year}年{day.month}月{day.day}日"


def _face_rows(face: LicenceFace) -> list[tuple[str, str]]:
    until = _format_date(face.valid_until) if face.valid_until is not None else "长期"
    return [
        ("持证主体", face.holder_name),
        (face.holder_id_type, face.holder_id_masked),
        *face.fields,
        ("有效期限", f"{_format_date(face.valid_from)} 至 {until}"),
    ]


def _check_text(what: str, text: str, limit: int, *, required: bool = True) -> None:
    if required and not text.strip():
        raise InvalidInput(f"licence face: {what} is empty")
    if len(text) > limit:
        raise InputTooLarge(f"licence face: {what} has {len(text)} characters; at most {limit}", limit=limit)
    if any(not char.isprintable() for char in text):
        raise InvalidInput(
            f"licence face: {what} contains control characters (line breaks are made by layout)"
        )


def _check_face(face: LicenceFace, rows: Sequence[tuple[str, str]], font: Path, bold: Path) -> None:
    if len(face.fields) > MAX_FACE_FIELDS:
        raise InputTooLarge(
            f"licence face has {len(face.fields)} fields; at most {MAX_FACE_FIELDS}", limit=MAX_FACE_FIELDS
        )
    for what, text in (
        ("title", face.title),
        ("identifier", face.identifier),
        ("holder name", face.holder_name),
        ("issuer code", face.issuer_code),
    ):
        _check_text(what, text, MAX_HEADER_CHARS)
    _check_text("issuer name", face.issuer_name, MAX_ISSUER_CHARS)
    _check_text("English title", face.title_en or "", MAX_HEADER_CHARS, required=False)
    _check_text("licence number", face.licence_number or "", MAX_HEADER_CHARS, required=False)
    for index, (label, value) in enumerate(rows):
        _check_text(f"label {index + 1}", label, MAX_LABEL_CHARS)
        _check_text(f"value of {label[:MAX_LABEL_CHARS]!r}", value, MAX_FACE_VALUE_CHARS, required=False)
    # A character the font lacks would print as an empty box (tofu); refuse rather than mislead.
    regular_text = "".join(value for _, value in rows) + face.identifier + (face.title_en or "")
    bold_text = (
        "".join(label for label, _ in rows) + face.title + face.issuer_name + (face.licence_number or "")
    )
    missing = font_missing_chars(font, regular_text + face.issuer_code) + font_missing_chars(bold, bold_text)
    if missing:
        raise InvalidInput(
            f"licence face has characters the font cannot draw: {''.join(dict.fromkeys(missing))}"
        )


def _qr_image(data: bytes) -> Image.Image:
    if len(data) > MAX_QR_PNG_BYTES or not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InvalidInput("the QR code must be a PNG image of at most 1 MiB (see signing.qr_png)")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as opened:
            if max(opened.size) > 4096:
                raise InvalidInput("the QR code image is larger than 4096 pixels a side")
            opened.load()
            # pyHanko embeds L/RGB(A) only; QR modules are pure black and white, so greyscale loses nothing.
            return opened.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput("the QR code PNG is truncated or corrupt") from exc


# -- drawing ----------------------------------------------------------------------------------


class _Font:
    """One embedded font: its pyHanko engine, resource name and cached advance widths."""

    def __init__(self, writer: PdfFileWriter, path: Path, name: str) -> None:
        factory = GlyphAccumulatorFactory(str(path), create_objstream_if_needed=False)
        self.engine: GlyphAccumulator = factory.create_font_engine(writer)
        self.name = name
        self._advances: dict[str, float] = {}

    def advance(self, char: str) -> float:
        """Advance of one character in em."""
        width = self._advances.get(char)
        if width is None:
            width = self._advances[char] = self.engine.shape(char, with_actual_text=False).x_advance
        return width

    def width(self, text: str, size: float) -> float:
        return sum(self.advance(char) for char in text) * size

    def wrap(self, text: str, size: float, max_width: float) -> list[str]:
        """Greedy line breaks: anywhere between ideographs, at a space inside Latin words."""
        lines: list[str] = []
        line = ""
        for char in text:
            if not line or self.width(line + char, size) <= max_width:
                line += char
                continue
            if char in _NO_LINE_START:
                # Closing punctuation never starts a line (GB/T 15834 line-breaking practice): the
                # character before it moves down with it (and any closing punctuation before that).
                keep = len(line) - 1
                while keep > 0 and line[keep] in _NO_LINE_START:
                    keep -= 1
                if keep > 0:
                    lines.append(line[:keep].rstrip())
                    line = line[keep:] + char
                else:
                    line += char  # a line of nothing but punctuation: let it hang
                continue
            cut = line.rfind(" ")
            if char == " ":
                lines.append(line.rstrip())
                line = ""
            elif cut > 0 and char.isascii() and char.isalnum() and line[-1].isascii() and line[-1].isalnum():
                lines.append(line[:cut])
                line = line[cut + 1 :] + char
            else:
                lines.append(line.rstrip())
                line = char
        lines.append(line)
        return lines


class _Page:
    """Accumulates content-stream operators for the one page."""

    def __init__(self, regular: _Font, bold: _Font) -> None:
        self.regular = regular
        self.bold = bold
        self.ops: list[bytes] = []

    def text(
        self,
        text: str,
        x: float,
        y: float,
        size: float,
        *,
        font: _Font | None = None,
        rgb: tuple[float, float, float] = _TEXT_RGB,
        align: str = "left",
        spacing: float = 0.0,
    ) -> float:
        """Draw one line with its baseline at *y*; *align* says what *x* is. Returns the width."""
        font = font or self.regular
        if not text:
            return 0.0
        width = font.width(text, size) + spacing * (len(text) - 1)
        if align == "centre":
            x -= width / 2
        elif align == "right":
            x -= width
        shaped = font.engine.shape(text)
        # Tc (character spacing, ISO 32000-1 §9.3.2) widens the title without breaking the text for search.
        self.ops.append(
            b"BT %s %g Tf %g Tc %g %g %g rg 1 0 0 1 %g %g Tm %s ET"
            % (font.name.encode(), size, spacing, *rgb, x, y, shaped.graphics_ops)
        )
        return width

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        *,
        stroke: tuple[float, float, float] | None = None,
        fill: tuple[float, float, float] | None = None,
        line_width: float = 0.5,
    ) -> None:
        paint = b"B" if stroke and fill else b"S" if stroke else b"f"
        colours = b""
        if stroke:
            colours += b"%g %g %g RG " % stroke
        if fill:
            colours += b"%g %g %g rg " % fill
        self.ops.append(b"q %s%g w %g %g %g %g re %s Q" % (colours, line_width, x, y, w, h, paint))

    def line(self, x1: float, y1: float, x2: float, y2: float, *, grey: float, width: float = 0.5) -> None:
        self.ops.append(b"q %g G %g w %g %g m %g %g l S Q" % (grey, width, x1, y1, x2, y2))


def _draw_border(page: _Page) -> None:
    outer, inner = 26.0, 34.0
    page.rect(
        outer, outer, PAGE_WIDTH - 2 * outer, PAGE_HEIGHT - 2 * outer, stroke=_BORDER_RGB, line_width=2.6
    )
    page.rect(
        inner, inner, PAGE_WIDTH - 2 * inner, PAGE_HEIGHT - 2 * inner, stroke=_BORDER_RGB, line_width=0.7
    )
    # A 回-shaped ornament in each corner, the fret motif of traditional certificate borders.
    for cx, cy in ((inner, inner), (PAGE_WIDTH - inner, inner), (inner, PAGE_HEIGHT - inner),
                   (PAGE_WIDTH - inner, PAGE_HEIGHT - inner)):  # fmt: skip
        for half, width in ((9.0, 1.4), (4.5, 0.9)):
            page.rect(
                cx - half, cy - half, 2 * half, 2 * half, stroke=_BORDER_RGB, fill=(1, 1, 1), line_width=width
            )


def _draw_header(page: _Page, face: LicenceFace) -> None:
    centre = PAGE_WIDTH / 2
    size = 28.0
    # Letter-spaced like a printed certificate title, as long as it fits between the borders.
    spacing = size * 0.25
    while page.bold.width(face.title, size) + spacing * (len(face.title) - 1) > _RIGHT - _LEFT and size > 12:
        size -= 1
        spacing = min(spacing, size * 0.1)
    page.text(face.title, centre, PAGE_HEIGHT - 108, size, font=page.bold, align="centre", spacing=spacing)
    if face.title_en:
        page.text(face.title_en, centre, PAGE_HEIGHT - 130, _fit(page.regular, face.title_en, 11.0),
                  rgb=_MUTED_RGB, align="centre")  # fmt: skip
    identifier = f"电子证照标识：{face.identifier}"
    page.text(identifier, centre, PAGE_HEIGHT - 156, _fit(page.regular, identifier, 9.5),
              rgb=_LABEL_RGB, align="centre")  # fmt: skip
    if face.licence_number:
        number = f"证照编号：{face.licence_number}"
        page.text(
            number, _RIGHT, PAGE_HEIGHT - 182, _fit(page.bold, number, 10.5), font=page.bold, align="right"
        )


def _fit(font: _Font, text: str, size: float, max_width: float = _RIGHT - _LEFT) -> float:
    """*size*, made smaller if *text* would not fit on one line of *max_width*."""
    width = font.width(text, size)
    return size if width <= max_width else math.floor(size * max_width / width * 10) / 10


@dataclass(frozen=True, slots=True)
class _Cell:
    label: list[str]
    value: list[str]


def _layout_table(
    page: _Page, rows: Sequence[tuple[str, str]], pairs: int, size: float, pad: float
) -> tuple[list[list[_Cell]], list[float], float] | None:
    """Cells, row heights and label-column width for one layout, or None if it does not fit."""
    pair_width = (_RIGHT - _LEFT) / pairs
    label_width = min(pair_width * 0.36, max(page.bold.width(label, size) for label, _ in rows) + 2.2 * size)
    leading = 1.45 * size
    grid: list[list[_Cell]] = []
    heights: list[float] = []
    total = 0.0
    for start in range(0, len(rows), pairs):
        cells = [
            _Cell(
                page.bold.wrap(label, size, label_width - 2 * pad),
                page.regular.wrap(value, size, pair_width - label_width - 2 * pad),
            )
            for label, value in rows[start : start + pairs]
        ]
        lines = max(max(len(cell.label), len(cell.value)) for cell in cells)
        height = lines * leading + 2 * pad - (leading - size) + 0.3 * size
        grid.append(cells)
        heights.append(height)
        total += height
        if _TABLE_TOP - total < _TABLE_FLOOR:
            return None
    return grid, heights, label_width


def _draw_table(page: _Page, rows: Sequence[tuple[str, str]]) -> None:
    for pairs, size, pad_em in _LAYOUTS:
        pad = pad_em * size
        laid_out = _layout_table(page, rows, pairs, size, pad)
        if laid_out is not None:
            break
    else:
        raise InputTooLarge("the face data does not fit on one A4 page: shorten the values or drop fields")
    grid, heights, label_width = laid_out
    pair_width = (_RIGHT - _LEFT) / pairs
    leading = 1.45 * size
    # Two passes: all label tints first, so no fill paints over a rule or text drawn earlier.
    placed: list[tuple[float, float, list[_Cell]]] = []
    top = _TABLE_TOP
    for cells, height in zip(grid, heights, strict=True):
        placed.append((top, top - height, cells))
        for column in range(len(cells)):
            page.rect(_LEFT + column * pair_width, top - height, label_width, height, fill=_LABEL_FILL)
        top -= height
    for top, bottom, cells in placed:
        for column, cell in enumerate(cells):
            x = _LEFT + column * pair_width
            # First baseline: top padding plus the ideographic ascent (~0.88 em in Noto CJK).
            baseline = top - pad - 0.88 * size
            for index, line in enumerate(cell.label):
                page.text(line, x + pad, baseline - index * leading, size, font=page.bold, rgb=_LABEL_RGB)
            for index, line in enumerate(cell.value):
                page.text(line, x + label_width + pad, baseline - index * leading, size)
            page.line(x + label_width, top, x + label_width, bottom, grey=_RULE_GREY)
            if column:
                page.line(x, top, x, bottom, grey=_RULE_GREY)
        page.line(_LEFT, bottom, _RIGHT, bottom, grey=_RULE_GREY)
    table_bottom = placed[-1][1]
    page.rect(
        _LEFT,
        table_bottom,
        _RIGHT - _LEFT,
        _TABLE_TOP - table_bottom,
        stroke=(0.35, 0.35, 0.35),
        line_width=0.9,
    )


def _draw_footer(page: _Page, face: LicenceFace) -> tuple[float, float, float, float]:
    """QR caption, issuer and date, footnote; returns the seal box (x1, y1, x2, y2)."""
    qr_centre = _LEFT + _QR_SIZE / 2
    page.text("扫码核验 / Scan to verify", qr_centre, _QR_BOTTOM - 12, 8.5, rgb=_LABEL_RGB, align="centre")

    size = 13.0
    name_lines = page.bold.wrap(face.issuer_name, size, 236)
    while len(name_lines) > 2:
        size -= 0.5
        name_lines = page.bold.wrap(face.issuer_name, size, 236)
    y = _ISSUER_NAME_Y + (len(name_lines) - 1) * size * 1.4
    first_line_y = y
    for line in name_lines:
        page.text(line, _ISSUER_CENTRE_X, y, size, font=page.bold, align="centre")
        y -= size * 1.4
    date_y = y - 4
    page.text(_format_date(face.issued_at), _ISSUER_CENTRE_X, date_y, 12.0, align="centre")

    footnote = f"发证机构代码：{face.issuer_code}　　本电子证照经发证机构电子印章签章，扫描二维码可核验真伪"
    page.text(footnote, PAGE_WIDTH / 2, 46, _fit(page.regular, footnote, 8.0), rgb=_MUTED_RGB, align="centre")

    # Centred on the issuer block, as a stamp is pressed over the name and date it vouches for.
    centre_y = (first_line_y + size * 0.4 + date_y) / 2
    half = SEAL_BOX_SIZE_PT / 2
    return (_ISSUER_CENTRE_X - half, centre_y - half, _ISSUER_CENTRE_X + half, centre_y + half)
