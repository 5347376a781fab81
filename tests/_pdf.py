"""Small, valid PDFs and a sample licence face for tests and benchmarks that need a document.

PDFs are written by pyHanko's writer: text pages (black Helvetica and a thin grey frame, nothing
red, so a seal stamp is the only red on a page), optionally with a form field, a note, padding or
encryption.
"""

from __future__ import annotations

import io
from datetime import date

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.writer import PdfFileWriter

from signing import LicenceFace

A4 = (595, 842)


# -- small PDFs --------------------------------------------------------------------------------


def page_content(text: str, *, y: int = 760) -> bytes:
    """Black Helvetica text and a thin grey frame: nothing red, so the stamp is the only red."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return (
        b"0.5 0.5 0.5 RG 1 w 36 36 523 770 re S "
        b"BT /F1 18 Tf 0 0 0 rg 72 " + str(y).encode() + b" Td (" + escaped.encode("latin-1") + b") Tj ET"
    )


def page_object(writer: PdfFileWriter, text: str, size: tuple[int, int]) -> generic.DictionaryObject:
    font = generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Font"),
            generic.pdf_name("/Subtype"): generic.pdf_name("/Type1"),
            generic.pdf_name("/BaseFont"): generic.pdf_name("/Helvetica"),
        }
    )
    resources = generic.DictionaryObject(
        {generic.pdf_name("/Font"): generic.DictionaryObject({generic.pdf_name("/F1"): font})}
    )
    stream = writer.add_object(generic.StreamObject(stream_data=page_content(text)))
    return generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Page"),
            generic.pdf_name("/MediaBox"): generic.ArrayObject(
                [generic.NumberObject(0), generic.NumberObject(0), *map(generic.NumberObject, size)]
            ),
            generic.pdf_name("/Resources"): resources,
            generic.pdf_name("/Contents"): stream,
        }
    )


def simple_pdf(
    pages: int = 1,
    *,
    size: tuple[int, int] = A4,
    encrypt_with: str | None = None,
    form_field: bool = False,
    note: str | None = None,
    filler: int = 0,
) -> bytes:
    """A small text PDF of *pages* pages (optionally with a text form field, or encrypted).

    *filler* bytes of whitespace are added to page 1's content, to make large files.
    """
    writer = PdfFileWriter(stream_xrefs=False)
    for number in range(1, pages + 1):
        writer.insert_page(page_object(writer, f"Yinxin test document, page {number}", size))
    if filler:
        padding = writer.add_object(generic.StreamObject(stream_data=b" " * filler))
        writer.add_stream_to_page(0, padding)
    if form_field:
        add_text_field(writer, "remark", "original")
    if note is not None:
        add_note(writer, note)
    if encrypt_with is not None:
        writer.encrypt(encrypt_with, encrypt_with)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_of_size(size: int) -> bytes:
    """A valid one-page PDF of exactly *size* bytes."""
    base = len(simple_pdf(filler=1))
    pdf = simple_pdf(filler=1 + size - base)
    pdf = simple_pdf(filler=1 + size - base + size - len(pdf))  # the /Length digits may have grown
    assert len(pdf) == size, (len(pdf), size)
    return pdf


def add_note(writer: PdfFileWriter, text: str) -> None:
    """A FreeText annotation on page 1 (ISO 32000-2 §12.5.6.6), as a reviewer would add."""
    page_ref = writer.find_page_for_modification(0)[0]
    note = generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Annot"),
            generic.pdf_name("/Subtype"): generic.pdf_name("/FreeText"),
            generic.pdf_name("/Rect"): generic.ArrayObject(map(generic.NumberObject, (60, 700, 400, 740))),
            generic.pdf_name("/Contents"): generic.pdf_string(text),
            generic.pdf_name("/DA"): generic.pdf_string("/Helv 18 Tf 0 0 1 rg"),
        }
    )
    writer.register_annotation(page_ref, writer.add_object(note))


def add_text_field(writer: PdfFileWriter, name: str, value: str) -> None:
    """An AcroForm text field with a widget on page 1 (no appearance: viewers regenerate it)."""
    page_ref = writer.find_page_for_modification(0)[0]
    widget = generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Annot"),
            generic.pdf_name("/Subtype"): generic.pdf_name("/Widget"),
            generic.pdf_name("/FT"): generic.pdf_name("/Tx"),
            generic.pdf_name("/T"): generic.pdf_string(name),
            generic.pdf_name("/V"): generic.pdf_string(value),
            generic.pdf_name("/Rect"): generic.ArrayObject(map(generic.NumberObject, (72, 600, 300, 630))),
            generic.pdf_name("/F"): generic.NumberObject(4),
            generic.pdf_name("/P"): page_ref,
        }
    )
    widget_ref = writer.add_object(widget)
    writer.register_annotation(page_ref, widget_ref)
    form = generic.DictionaryObject({generic.pdf_name("/Fields"): generic.ArrayObject([widget_ref])})
    writer.root[generic.pdf_name("/AcroForm")] = writer.add_object(form)
    writer.update_root()


# -- a sample licence face (个体工商户营业执照 with a long business scope) --------------------------

SAMPLE_IDENTIFIER = "1.2.156.3005.2.11100000000013202H003.11110101000000456Q.20260000001.001.K"
SAMPLE_SCOPE = (
    "许可项目：餐饮服务；食品销售。（依法须经批准的项目，经相关部门批准后方可开展经营活动，具体经营项目以相关部门"
    "批准文件或许可证件为准）一般项目：日用百货销售；外卖递送服务。（除依法须经批准的项目外，凭营业执照依法自主开展经营活动）"
)
SAMPLE_FACE = LicenceFace(
    title="个体工商户营业执照",
    title_en="Business Licence of Individual Industrial and Commercial Household",
    identifier=SAMPLE_IDENTIFIER,
    licence_number="110101600123456",
    holder_name="北京市东城区张三小吃店",
    holder_id_type="统一社会信用代码",
    holder_id_masked="92110101MA01****3Q",
    fields=(
        ("名称", "北京市东城区张三小吃店"),
        ("类型", "个体工商户"),
        ("经营者", "张三"),
        ("组成形式", "个人经营"),
        ("注册日期", "2026年1月15日"),
        ("经营场所", "北京市东城区东直门南大街甲3号居然大厦一层101室（东直门地铁站C口向北200米）"),
        ("经营范围", SAMPLE_SCOPE),
    ),
    issuer_name="北京市东城区市场监督管理局",
    issuer_code="11110101000000456Q",
    valid_from=date(2026, 1, 15),
    valid_until=None,
    issued_at=date(2026, 1, 15),
)
