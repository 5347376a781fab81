"""Finding a CJK font and extracting one face from a collection for Pillow and pyHanko."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]
from PIL import Image, ImageDraw, ImageFont

from schemas.errors import ConfigurationError
from signing import _fonts
from signing._fonts import find_cjk_font, font_missing_chars, prepare_cjk_font, standalone_font

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@pytest.fixture(scope="module")
def system_font() -> Path:
    """The system's CJK font; skips without fonts-noto-cjk (fails under CI=true)."""
    try:
        return find_cjk_font()
    except ConfigurationError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc} (CI=true requires it)")
        pytest.skip(str(exc))


def test_finds_the_noto_serif_collection_by_default(system_font: Path) -> None:
    assert system_font.is_file()
    assert "Serif" in system_font.name
    assert "Regular" in system_font.name


def test_style_and_weight_pick_other_files(system_font: Path) -> None:
    sans_bold = find_cjk_font(style="sans", bold=True)
    assert sans_bold != system_font
    assert "Sans" in sans_bold.name
    assert "Bold" in sans_bold.name


def test_preferred_font_is_used_as_given(system_font: Path) -> None:
    assert find_cjk_font(system_font, style="sans", bold=True) == system_font


def test_missing_preferred_font_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigurationError, match="does not exist: install fonts-noto-cjk or set YINXIN_CJK_FONT"
    ):
        find_cjk_font(tmp_path / "nope.otf")


def test_preferred_file_that_is_not_a_font_is_refused(tmp_path: Path) -> None:
    not_a_font = tmp_path / "font.txt"
    not_a_font.write_text("hello")
    with pytest.raises(ConfigurationError, match="not an OpenType/TrueType file"):
        find_cjk_font(not_a_font)


@pytest.mark.skipif(not DEJAVU.is_file(), reason="DejaVu Sans (a font without Chinese) is not installed")
def test_preferred_font_without_chinese_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="has no Chinese glyphs"):
        find_cjk_font(DEJAVU)


def test_no_font_anywhere_says_how_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty font directory and no fc-match on PATH: a host without fonts-noto-cjk.
    monkeypatch.setattr(_fonts, "CJK_FONT_DIRS", (tmp_path,))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError) as caught:
        find_cjk_font()
    assert "install fonts-noto-cjk or set YINXIN_CJK_FONT" in str(caught.value)


def test_collection_face_is_extracted_once(system_font: Path, tmp_path: Path) -> None:
    cache = tmp_path / "fonts"
    extracted = standalone_font(system_font, cache)

    assert extracted.parent == cache
    assert extracted.suffix == ".otf"
    with TTFont(str(extracted), lazy=True) as face:
        # The Simplified Chinese member, not JP (the collection's first face).
        assert face["name"].getDebugName(1).endswith(" SC")
        assert "CFF " in face
    first_write = extracted.stat().st_mtime_ns

    again = standalone_font(system_font, cache)
    assert again == extracted
    assert again.stat().st_mtime_ns == first_write
    # Written through a temporary file and os.replace: nothing else is left behind.
    assert sorted(p.name for p in cache.iterdir()) == [extracted.name]


def test_extracted_face_draws_chinese_with_pillow(system_font: Path, tmp_path: Path) -> None:
    font = ImageFont.truetype(str(prepare_cjk_font(tmp_path)), 64)
    assert font.getname() == ("Noto Serif CJK SC", "Regular")
    image = Image.new("L", (80, 80), 0)
    ImageDraw.Draw(image).text((40, 40), "印", font=font, fill=255, anchor="mm")
    inked = sum(image.histogram()[129:])
    # A real ideograph, not an empty box: 印 covers a good share of its em square.
    assert 500 < inked < 3000


def test_single_face_font_is_returned_unchanged(system_font: Path, tmp_path: Path) -> None:
    extracted = standalone_font(system_font, tmp_path / "a")
    assert standalone_font(extracted, tmp_path / "b") == extracted
    assert not (tmp_path / "b").exists()


def test_missing_characters_are_reported_once_in_order(system_font: Path) -> None:
    assert font_missing_chars(system_font, "印信 电子证照 ABC １２３") == ""
    assert font_missing_chars(system_font, "印\U0001f600信\U0001f600\U0001fae0") == "\U0001f600\U0001fae0"
