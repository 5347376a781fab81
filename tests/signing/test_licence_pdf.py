"""The printable licence face: extractable text, embedded fonts, a QR code that scans, room for a seal.

Checked with independent tools: poppler (pdftotext, pdffonts, pdftoppm) reads
the PDF, zxing-cpp decodes the QR code from the rendered page, and pyHanko's
incremental writer opens it as the sealing step will.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from schemas.errors import ConfigurationError, InputTooLarge, InvalidInput
from signing._fonts import find_cjk_font, prepare_cjk_font
from signing._licence_pdf import (
    MAX_FACE_FIELDS,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    LicenceFace,
    RenderedLicence,
    render_licence_pdf,
)
from signing._qr import qr_png
from tests._pdf import SAMPLE_FACE, SAMPLE_IDENTIFIER, SAMPLE_SCOPE

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
URL = (
    "https://zz.example.gov.cn/v/eyJhbGciOiJFUzI1NiIsImtpZCI6Imlzc3Vlci0yMDI2IiwidHlwIjoicHJlc2VudGF0aW9uK2p3dCJ9."
    + "eyJpZCI6IjEuMi4xNTYuMzAwNS4yIiwiZXhwIjoxNzgwMDAwMDAwfQ" * 4
    + "."
    + "S" * 86
)


def _require(condition: bool, message: str) -> None:
    """Skip when a system tool is missing, except under CI=true where that fails the run."""
    if not condition:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true requires it)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def fonts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cache = tmp_path_factory.mktemp("fonts")
    try:
        return prepare_cjk_font(cache), prepare_cjk_font(cache, bold=True)
    except ConfigurationError as exc:
        _require(False, str(exc))
        raise


@pytest.fixture(scope="module")
def poppler() -> None:
    missing = [tool for tool in ("pdftotext", "pdffonts", "pdftoppm") if shutil.which(tool) is None]
    _require(not missing, f"poppler-utils is not installed ({', '.join(missing)} missing)")


def _render(face: LicenceFace, fonts: tuple[Path, Path]) -> RenderedLicence:
    return render_licence_pdf(face, font=fonts[0], bold_font=fonts[1], qr_png=qr_png(URL).data)


@pytest.fixture(scope="module")
def licence(fonts: tuple[Path, Path]) -> RenderedLicence:
    rendered = _render(SAMPLE_FACE, fonts)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "licence_sample.pdf").write_bytes(rendered.pdf)
    return rendered


@pytest.fixture(scope="module")
def pdf_path(licence: RenderedLicence, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("licence") / "licence.pdf"
    path.write_bytes(licence.pdf)
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def _text(path: Path) -> str:
    return _run("pdftotext", "-enc", "UTF-8", path, "-").stdout


def _words(path: Path) -> list[tuple[str, float, float, float, float]]:
    """Words with their boxes in PDF points, origin bottom left (pdftotext -bbox counts from the top)."""
    html = _run("pdftotext", "-bbox", "-enc", "UTF-8", path, "-").stdout
    words = []
    for line in html.splitlines():
        line = line.strip()
        if not line.startswith("<word "):
            continue
        attrs = dict(part.split("=", 1) for part in line[6 : line.index(">")].split())
        box = [float(attrs[k].strip('"')) for k in ("xMin", "yMin", "xMax", "yMax")]
        text = line[line.index(">") + 1 : line.rindex("</word>")]
        words.append((text, box[0], PAGE_HEIGHT - box[3], box[2], PAGE_HEIGHT - box[1]))
    return words


def _render_png(path: Path, dpi: int, out: Path) -> Image.Image:
    result = _run("pdftoppm", "-r", str(dpi), "-png", "-singlefile", path, out)
    assert result.stderr == ""
    return Image.open(f"{out}.png")


def test_text_is_extractable(poppler: None, pdf_path: Path) -> None:
    text = _text(pdf_path)
    for expected in (
        "个体工商户营业执照",
        "北京市东城区张三小吃店",
        SAMPLE_IDENTIFIER,
        "92110101MA01****3Q",
        "扫码核验",
    ):
        assert expected in text
    # Long values are wrapped over several lines, and nothing of them is lost.
    assert SAMPLE_SCOPE in "".join(text.split())
    assert "2026年1月15日 至 长期" in text
    assert "北京市东城区市场监督管理局" in text


def test_cjk_font_is_embedded_as_a_subset(poppler: None, pdf_path: Path) -> None:
    rows = _run("pdffonts", pdf_path).stdout.splitlines()[2:]
    assert len(rows) == 2  # regular and bold
    for row in rows:
        assert "NotoSerifCJKsc" in row
        assert "CID Type 0C" in row
        # Columns emb, sub, uni: embedded, subset, with a ToUnicode map.
        assert row.split()[-5:-2] == ["yes", "yes", "yes"]


def test_page_renders_as_a4_without_errors(poppler: None, pdf_path: Path, tmp_path: Path) -> None:
    page = _render_png(pdf_path, 80, tmp_path / "page")
    assert page.size == (662, 936)  # A4 at 80 dpi
    (ARTIFACTS / "licence_sample.png").write_bytes((tmp_path / "page.png").read_bytes())


def test_qr_code_on_the_page_scans_back(poppler: None, pdf_path: Path, tmp_path: Path) -> None:
    page = _render_png(pdf_path, 200, tmp_path / "page")
    found = zxingcpp.read_barcodes(page, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode))
    assert [code.text for code in found] == [URL]
    # Bottom left, as laid out.
    position = found[0].position
    assert position.top_left.x < page.width / 3
    assert position.top_left.y > page.height * 2 / 3


def test_seal_box_covers_issuer_and_date_only(
    poppler: None, licence: RenderedLicence, pdf_path: Path
) -> None:
    page_index, x1, y1, x2, y2 = licence.seal_box
    assert page_index == 0
    # 42 mm square, the diameter of an organ seal.
    assert x2 - x1 == pytest.approx(42 * 72 / 25.4) == y2 - y1
    assert 0 < x1 < x2 < PAGE_WIDTH
    assert 0 < y1 < y2 < PAGE_HEIGHT / 3  # bottom of the page
    assert x1 > PAGE_WIDTH / 2  # right half

    covered = {
        text
        for text, wx1, wy1, wx2, wy2 in _words(pdf_path)
        if wx1 < x2 and wx2 > x1 and wy1 < y2 and wy2 > y1
    }
    assert covered == {"北京市东城区市场监督管理局", "2026年1月15日"}


def test_text_stays_inside_the_border(poppler: None, pdf_path: Path) -> None:
    words = _words(pdf_path)
    assert len(words) > 30
    for text, x1, y1, x2, y2 in words:
        assert 34 < x1 < x2 < PAGE_WIDTH - 34, text
        assert 34 < y1 < y2 < PAGE_HEIGHT - 34, text


def test_pdf_is_plain_and_opens_for_incremental_signing(licence: RenderedLicence) -> None:
    pdf = licence.pdf
    assert pdf.startswith(b"%PDF-1.7")
    # A classic cross-reference table, no xref or object streams, no encryption.
    assert b"\nxref\n" in pdf
    assert b"/XRef" not in pdf
    assert b"/ObjStm" not in pdf
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    assert writer.prev.encrypted is False
    assert int(writer.root["/Pages"]["/Count"]) == 1


def test_sixty_short_fields_fit_on_the_page(poppler: None, fonts: tuple[Path, Path], tmp_path: Path) -> None:
    fields = tuple((f"字段{i}", f"值{i}-ABC") for i in range(MAX_FACE_FIELDS))
    rendered = _render(dataclasses.replace(SAMPLE_FACE, fields=fields), fonts)
    path = tmp_path / "sixty.pdf"
    path.write_bytes(rendered.pdf)
    text = _text(path)
    assert "字段0" in text
    assert "值59-ABC" in text


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"fields": (("名称", "x"),) * (MAX_FACE_FIELDS + 1)}, InputTooLarge, "61 fields; at most 60"),
        ({"fields": (("经营范围", "营" * 501),)}, InputTooLarge, "501 characters; at most 500"),
        ({"fields": (("", "值"),)}, InvalidInput, "label 3 is empty"),
        ({"title": "  "}, InvalidInput, "title is empty"),
        ({"holder_name": "张\x00三"}, InvalidInput, "control characters"),
        ({"fields": (("备注", "印\U0001f600"),)}, InvalidInput, "font cannot draw: \U0001f600"),
        ({"fields": (("经营范围", "营" * 500),) * 6}, InputTooLarge, "does not fit on one A4 page"),
    ],
)
def test_absurd_faces_are_refused(
    fonts: tuple[Path, Path], change: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        _render(dataclasses.replace(SAMPLE_FACE, **change), fonts)  # type: ignore[arg-type]


def test_qr_must_be_a_png(fonts: tuple[Path, Path]) -> None:
    with pytest.raises(InvalidInput, match="QR code must be a PNG"):
        render_licence_pdf(SAMPLE_FACE, font=fonts[0], qr_png=b"GIF89a")
    truncated = qr_png(URL).data[:200]
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        render_licence_pdf(SAMPLE_FACE, font=fonts[0], qr_png=truncated)


def test_font_collection_must_be_extracted_first(fonts: tuple[Path, Path]) -> None:
    collection = find_cjk_font()
    assert collection.suffix == ".ttc"
    with pytest.raises(ConfigurationError, match=r"single-face \.otf/\.ttf"):
        render_licence_pdf(SAMPLE_FACE, font=collection, qr_png=qr_png(URL).data)


def test_closing_punctuation_takes_the_character_before_it_to_the_next_line(fonts: tuple[Path, Path]) -> None:
    from pyhanko.pdf_utils.writer import PdfFileWriter

    from signing._licence_pdf import _Font

    font = _Font(PdfFileWriter(), fonts[0], "/F1")
    width = font.width("甲" * 10, 10)  # exactly ten ideographs fit a line
    assert font.wrap("甲" * 10 + "。", 10, width) == ["甲" * 9, "甲。"]
    assert font.wrap("甲" * 10 + "）。", 10, width) == ["甲" * 9, "甲）。"]
    for line in font.wrap("甲" * 25 + "，乙" * 8, 10, width):
        assert font.width(line, 10) <= width and line[0] not in "，。）"
