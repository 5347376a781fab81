"""Seal images: the drawn round stamp, and checking an uploaded one."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import pytest
from PIL import Image

from schemas.errors import ConfigurationError, InputTooLarge, InvalidInput
from signing._fonts import prepare_cjk_font
from signing._seal_image import MAX_SEAL_IMAGE_BYTES, SEAL_RED, load_seal_image, render_seal_image

NAME = "XX市市场监督管理局行政审批专用章"  # 17 characters
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def font(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Noto Serif CJK SC Bold, extracted once; skips without fonts-noto-cjk (fails under CI=true)."""
    try:
        return prepare_cjk_font(tmp_path_factory.mktemp("fonts"), bold=True)
    except ConfigurationError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc} (CI=true requires it)")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def seal(font: Path) -> Image.Image:
    data = render_seal_image(NAME, font=font, size_px=600)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "seal_sample.png").write_bytes(data)
    return Image.open(io.BytesIO(data))


def _px(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    pixel = image.getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel


def _is_red(pixel: tuple[int, ...]) -> bool:
    red, green, blue, alpha = pixel
    return alpha == 255 and (red, green, blue) == SEAL_RED


def _ink_angles(image: Image.Image, inner: float, outer: float) -> list[float]:
    """Angles (degrees, clockwise from 12 o'clock) of opaque pixels between two radii (fractions of side)."""
    side = image.width
    centre = side / 2
    alpha = image.getchannel("A").tobytes()
    angles = []
    for y in range(side):
        for x in range(side):
            r = math.hypot(x - centre, y - centre) / side
            if inner <= r <= outer and alpha[y * side + x] > 128:
                angles.append(math.degrees(math.atan2(x - centre, centre - y)))
    return angles


def test_seal_is_a_transparent_rgba_png(seal: Image.Image) -> None:
    assert seal.format == "PNG"
    assert seal.mode == "RGBA"
    assert seal.size == (600, 600)
    for corner in ((0, 0), (599, 0), (0, 599), (599, 599), (40, 40)):
        assert _px(seal, corner)[3] == 0


def test_ring_and_star_are_seal_red(seal: Image.Image) -> None:
    # Ring: outer edge at 0.48 of the side, 0.03 wide; its middle is at 0.465.
    ring = round(600 * 0.465)
    for x, y in ((300 + ring, 300), (300 - ring, 300), (300, 300 + ring), (300, 300 - ring)):
        assert _is_red(_px(seal, (x, y))), (x, y)
    assert _is_red(_px(seal, (300, 300)))
    # A star (outer radius 96 px), not a disc: 80 px out, the top point is ink and the notch
    # between it and the next point (36° round) is empty.
    assert _is_red(_px(seal, (300, 300 - 80)))
    notch = math.radians(-90 + 36)
    assert _px(seal, (round(300 + 80 * math.cos(notch)), round(300 + 80 * math.sin(notch))))[3] == 0


def test_name_runs_evenly_along_the_upper_arc(seal: Image.Image) -> None:
    # The text band lies between the star (0.16) and the ring (0.45).
    angles = _ink_angles(seal, 0.30, 0.44)
    assert len(angles) > 5000
    # Symmetric about 12 o'clock, spread over about 240°, nothing near 6 o'clock.
    assert -135 < min(angles) < -110
    assert 110 < max(angles) < 135
    assert abs(min(angles) + max(angles)) < 4
    assert not [a for a in angles if abs(a) > 150]
    # Evenly spread: each 30° sector of the arc holds some ink.
    for start in range(-120, 120, 30):
        assert any(start <= a < start + 30 for a in angles), start


def test_short_name_is_spaced_out_not_squeezed(font: Path) -> None:
    seal = Image.open(io.BytesIO(render_seal_image("北京市人民政府", font=font, size_px=300)))
    angles = _ink_angles(seal, 0.30, 0.44)
    # Seven characters at most 32° apart: the name spans under 230°, centred.
    assert -115 < min(angles) < -80
    assert abs(min(angles) + max(angles)) < 5


def test_bottom_text_is_drawn_below_the_star(font: Path, seal: Image.Image) -> None:
    with_code = Image.open(io.BytesIO(render_seal_image(NAME, font=font, bottom_text="3101150012345")))
    band = (150, 440, 450, 480)  # below the star, inside the ring
    assert seal.crop(band).getchannel("A").getextrema() == (0, 0)
    assert with_code.crop(band).getchannel("A").getextrema()[1] == 255


def test_different_names_give_different_images(font: Path) -> None:
    first = render_seal_image("甲市人民政府", font=font, size_px=200)
    second = render_seal_image("乙市人民政府", font=font, size_px=200)
    assert first != second
    assert render_seal_image("甲市人民政府", font=font, size_px=200) == first


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "seal name is empty"),
        ("   ", "seal name is empty"),
        ("章" * 31, "has 31 characters; at most 30"),
        ("市场 监督管理局", "must not contain spaces"),
        ("市场\n监督管理局", "must not contain spaces"),
        ("印章\U0001f600", "cannot draw: \U0001f600"),
    ],
)
def test_bad_names_are_refused(font: Path, name: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        render_seal_image(name, font=font)


def test_thirty_character_name_fits(font: Path) -> None:
    seal = Image.open(
        io.BytesIO(
            render_seal_image("上海市浦东新区市场监督管理局行政审批专用章测试一二三四五六七", font=font)
        )
    )
    angles = _ink_angles(seal, 0.30, 0.44)
    assert max(angles) < 135
    assert min(angles) > -135


def test_size_is_bounded(font: Path) -> None:
    with pytest.raises(InvalidInput, match="64-2048 pixels"):
        render_seal_image("公章", font=font, size_px=10_000)


# -- uploads ---------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_rendered_seal_round_trips_through_upload_check(font: Path) -> None:
    data = render_seal_image("公章测试", font=font, size_px=200)
    loaded = Image.open(io.BytesIO(load_seal_image(data)))
    assert (loaded.format, loaded.mode, loaded.size) == ("PNG", "RGBA", (200, 200))
    assert loaded.tobytes() == Image.open(io.BytesIO(data)).tobytes()


def test_jpeg_upload_becomes_opaque_rgba_png() -> None:
    jpeg = _encode(Image.new("RGB", (120, 80), (230, 0, 18)), "JPEG")
    loaded = Image.open(io.BytesIO(load_seal_image(jpeg)))
    assert (loaded.format, loaded.mode, loaded.size) == ("PNG", "RGBA", (120, 80))
    assert loaded.getchannel("A").getextrema() == (255, 255)


def test_palette_png_keeps_its_transparency() -> None:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([255, 255, 255, 230, 0, 18])
    image.paste(1, (16, 16, 48, 48))
    image.info["transparency"] = 0
    loaded = Image.open(io.BytesIO(load_seal_image(_encode(image, "PNG"))))
    assert _px(loaded, (0, 0))[3] == 0
    assert _px(loaded, (32, 32)) == (230, 0, 18, 255)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is a text file, not an image\n", "must be a PNG or JPEG"),
        (b"GIF89a" + b"\0" * 100, "must be a PNG or JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "not a readable PNG"),
    ],
)
def test_non_images_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_seal_image(data)


def test_truncated_png_is_refused(font: Path) -> None:
    data = render_seal_image(NAME, font=font, size_px=300)
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        load_seal_image(data[: len(data) // 2])


def test_huge_dimensions_are_refused_before_decoding() -> None:
    # A few kilobytes of PNG that would decode to 5000 × 40 pixels.
    wide = _encode(Image.new("L", (5000, 40), 0), "PNG")
    assert len(wide) < 10_000
    with pytest.raises(InputTooLarge, match="at most 4096 a side"):
        load_seal_image(wide)


def test_tiny_images_are_refused() -> None:
    with pytest.raises(InvalidInput, match="at least 32 a side"):
        load_seal_image(_encode(Image.new("RGB", (8, 8)), "PNG"))


def test_oversized_file_is_refused() -> None:
    with pytest.raises(InputTooLarge, match="2 MiB"):
        load_seal_image(b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_SEAL_IMAGE_BYTES)
