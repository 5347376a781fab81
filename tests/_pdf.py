"""Small, valid PDFs built with pyHanko's writer, for tests that need a document to seal."""

from __future__ import annotations

import io

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.writer import PdfFileWriter

A4 = (595, 842)


def simple_pdf(pages: int = 1, text: str = "Yinxin test document") -> bytes:
    """An A4 PDF of *pages* pages, each with one line of Helvetica text."""
    writer = PdfFileWriter(stream_xrefs=False)
    font = writer.add_object(
        generic.DictionaryObject(
            {
                pdf_name("/Type"): pdf_name("/Font"),
                pdf_name("/Subtype"): pdf_name("/Type1"),
                pdf_name("/BaseFont"): pdf_name("/Helvetica"),
            }
        )
    )
    for number in range(1, pages + 1):
        content = f"BT /F1 18 Tf 72 760 Td ({text}, page {number}) Tj ET".encode("ascii")
        stream = writer.add_object(generic.StreamObject(stream_data=content))
        page = generic.DictionaryObject(
            {
                pdf_name("/Type"): pdf_name("/Page"),
                pdf_name("/MediaBox"): generic.ArrayObject(generic.NumberObject(v) for v in (0, 0, *A4)),
                pdf_name("/Contents"): stream,
                pdf_name("/Resources"): generic.DictionaryObject(
                    {pdf_name("/Font"): generic.DictionaryObject({pdf_name("/F1"): font})}
                ),
            }
        )
        writer.insert_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
