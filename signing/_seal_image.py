"""Seal images (印章图像): drawing a round official stamp, and accepting an uploaded one.

:func:`render_seal_image` draws the usual look of a Chinese department seal
(公章, cf. GA 241-2000 and the State Council's 国发〔1999〕25号 rules on seals
of state organs): a red ring, the organisation's name set clockwise along the
upper arc with every character upright towards the centre, a five-pointed star
in the middle and, optionally, a short horizontal line (a seal's purpose such
as "合同专用章", or its code) below the star. Everything is red on a
transparent background, so the stamp overlays the issuer's name and date like
ink does.

:func:`load_seal_image` accepts a scanned or designed seal image from a
security officer instead: PNG or JPEG only, size-limited, decoded with Pillow
behind a decompression-bomb guard, re-encoded as an RGBA PNG so nothing but
pixels survives (no metadata, no trailing bytes).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Final

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from schemas.errors import InputTooLarge, InvalidInput
from signing._fonts import font_missing_chars

__all__ = [
    "MAX_SEAL_IMAGE_BYTES",
    "MAX_SEAL_IMAGE_SIDE",
    "MAX_SEAL_NAME_CHARS",
    "SEAL_RED",
    "load_seal_image",
    "render_seal_image",
]

# Seal red: the common "中国红" ink shade (CMYK 0/100/100/0 ≈ sRGB #E60012).
SEAL_RED: Final = (0xE6, 0x00, 0x12)
MAX_SEAL_NAME_CHARS: Final = 30
MAX_BOTTOM_TEXT_CHARS: Final = 16
MIN_SIZE_PX: Final = 64
MAX_SIZE_PX: Final = 2048
MAX_SEAL_IMAGE_BYTES: Final = 2 * 1024 * 1024
MAX_SEAL_IMAGE_SIDE: Final = 4096
MIN_SEAL_IMAGE_SIDE: Final = 32

# Drawn this many times larger, then downsampled: Pillow's primitives are not
# antialiased, a box-filtered 4x supersample is.
_SUPERSAMPLE: Final = 4
# Proportions of a 42 mm organ seal, as fractions of the canvas side: ring
# outer edge at 0.48 (a margin so the ring never touches the edge), ring width
# about 1.2 mm, star across about a third of the seal's diameter.
_RING_OUTER: Final = 0.48
_RING_WIDTH: Final = 0.03
_TEXT_GAP: Final = 0.02
_STAR_RADIUS: Final = 0.16
_STAR_INNER_RATIO: Final = 0.382  # inner/outer radius of a regular pentagram, (3 - √5) / 2
# Characters along the arc: as tall as a seal's 6.5 mm lettering when there
# is room, spread over at most 250° (leaving the bottom for the optional line),
# at most 32° apart so a short name does not fall apart, and compressed
# sideways to no less than 55 % of their height before they are made smaller.
_CHAR_HEIGHT: Final = 0.13
_MAX_SPAN_DEG: Final = 250.0
_MAX_STEP_DEG: Final = 32.0
_MIN_ASPECT: Final = 0.55
_CHAR_FILL: Final = 0.8  # share of each character's arc slot that is ink; the rest is spacing


def render_seal_image(name: str, *, font: Path, size_px: int = 600, bottom_text: str | None = None) -> bytes:
    """A round red seal image with *name* along the upper arc, as an RGBA PNG.

    *font* is a single-face OpenType/TrueType font with Chinese glyphs (see
    :func:`signing.prepare_cjk_font`; a bold serif looks most like a carved
    seal). *name* is 1-30 characters without whitespace; *bottom_text*, if
    given, is set horizontally below the star (up to 16 characters). The image
    is *size_px* square (64-2048) with a transparent background.

    Raises InvalidInput for an empty, overlong or unprintable name.
    """
    name = _check_text("seal name", name, MAX_SEAL_NAME_CHARS, font)
    bottom = _check_text("bottom text", bottom_text, MAX_BOTTOM_TEXT_CHARS, font) if bottom_text else ""
    if not MIN_SIZE_PX <= size_px <= MAX_SIZE_PX:
        raise InvalidInput(f"seal image size must be {MIN_SIZE_PX}-{MAX_SIZE_PX} pixels, not {size_px}")

    side = size_px * _SUPERSAMPLE
    # Everything is drawn as coverage on one greyscale mask, then coloured once:
    # overlapping shapes stay one flat ink colour and the edges downsample cleanly.
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    centre = side / 2
    ring_outer = side * _RING_OUTER
    ring_width = side * _RING_WIDTH
    draw.ellipse(
        (centre - ring_outer, centre - ring_outer, centre + ring_outer, centre + ring_outer),
        outline=255,
        width=round(ring_width),
    )
    _draw_star(draw, centre, side * _STAR_RADIUS)
    _draw_arc_text(mask, name, font, centre, ring_outer - ring_width - side * _TEXT_GAP)
    if bottom:
        _draw_bottom_text(mask, bottom, font, side)

    mask = mask.resize((size_px, size_px), Image.Resampling.BOX)
    image = Image.new("RGBA", (size_px, size_px), (*SEAL_RED, 0))
    image.putalpha(mask)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def load_seal_image(data: bytes) -> bytes:
    """Check an uploaded seal image and return it re-encoded as an RGBA PNG.

    Accepts PNG or JPEG of at most 2 MiB, 32-4096 pixels a side. The image is
    fully decoded (a truncated or corrupt file is refused, not half-read);
    decompression bombs are refused before decoding.

    Raises InvalidInput (InputTooLarge for size) saying what is wrong.
    """
    if len(data) > MAX_SEAL_IMAGE_BYTES:
        raise InputTooLarge(
            f"seal image is {len(data)} bytes; the limit is {MAX_SEAL_IMAGE_BYTES} (2 MiB)",
            limit=MAX_SEAL_IMAGE_BYTES,
        )
    # Sniff the signature ourselves rather than let Pillow try every format it knows.
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = "PNG"
    elif data.startswith(b"\xff\xd8\xff"):
        kind = "JPEG"
    else:
        raise InvalidInput("seal image must be a PNG or JPEG file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[kind]) as opened:
                width, height = opened.size
                # Checked from the header, before any pixel is decoded.
                if max(width, height) > MAX_SEAL_IMAGE_SIDE:
                    raise InputTooLarge(
                        f"seal image is {width}×{height} pixels; at most {MAX_SEAL_IMAGE_SIDE} a side",
                        limit=MAX_SEAL_IMAGE_SIDE,
                    )
                if min(width, height) < MIN_SEAL_IMAGE_SIDE:
                    raise InvalidInput(
                        f"seal image is {width}×{height} pixels; at least {MIN_SEAL_IMAGE_SIDE} a side"
                    )
                opened.load()
                # Palette images with a tRNS chunk, greyscale, CMYK JPEG: all become straight RGBA.
                rgba = opened.convert("RGBA")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputTooLarge("seal image decompresses to too many pixels") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError; the
        # detail stays in the chain (for the log), the message stays generic.
        raise InvalidInput(f"seal image is not a readable {kind} file (truncated or corrupt)") from exc
    out = io.BytesIO()
    rgba.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _check_text(what: str, text: str | None, limit: int, font: Path) -> str:
    text = (text or "").strip()
    if not text:
        raise InvalidInput(f"{what} is empty")
    if len(text) > limit:
        raise InvalidInput(f"{what} has {len(text)} characters; at most {limit} fit on a round seal")
    if any(char.isspace() or not char.isprintable() for char in text):
        raise InvalidInput(f"{what} must not contain spaces or control characters")
    missing = font_missing_chars(font, text)
    if missing:
        raise InvalidInput(f"{what} has characters the seal font cannot draw: {missing}")
    return text


def _draw_star(draw: ImageDraw.ImageDraw, centre: float, radius: float) -> None:
    points = []
    for k in range(10):
        # Start at the top point (-90°), alternate outer and inner vertices every 36°.
        angle = math.radians(-90 + 36 * k)
        r = radius if k % 2 == 0 else radius * _STAR_INNER_RATIO
        points.append((centre + r * math.cos(angle), centre + r * math.sin(angle)))
    draw.polygon(points, fill=255)


def _glyph(char: str, font: ImageFont.FreeTypeFont, width: int, height: int) -> Image.Image:
    """One character as a coverage mask, its em square squeezed to *width* × *height*."""
    em = round(font.size)
    cell = Image.new("L", (em, em), 0)
    # Anchored at the em square's middle ("mm"), so every character shares a
    # baseline and centre line, whatever its own ink box.
    ImageDraw.Draw(cell).text((em / 2, em / 2), char, font=font, fill=255, anchor="mm")
    return cell.resize((width, height), Image.Resampling.LANCZOS)


def _draw_arc_text(mask: Image.Image, name: str, font_path: Path, centre: float, outer: float) -> None:
    """Set *name* clockwise along the upper arc, just inside radius *outer*."""
    side = mask.width
    count = len(name)
    step = math.radians(min(_MAX_STEP_DEG, _MAX_SPAN_DEG / count))
    height = side * _CHAR_HEIGHT
    # Tangential room per character at the text's centre line; shrink the
    # height until the compressed width stays readable.
    for _ in range(4):
        slot = (outer - height / 2) * step * _CHAR_FILL
        width = min(height, slot)
        if width >= height * _MIN_ASPECT:
            break
        height = width / _MIN_ASPECT
    radius = outer - height / 2
    # Ideographs fill about 90 % of the em square; size the em so the ink is *height* tall.
    font = ImageFont.truetype(str(font_path), round(height / 0.92))
    start = -step * (count - 1) / 2  # symmetric about 12 o'clock
    for index, char in enumerate(name):
        theta = start + index * step  # clockwise from 12 o'clock
        glyph = _glyph(char, font, max(1, round(width / 0.92)), max(1, round(height / 0.92)))
        # PIL rotates counter-clockwise; turning the glyph clockwise by θ keeps its top pointing outward.
        rotated = glyph.rotate(-math.degrees(theta), resample=Image.Resampling.BICUBIC, expand=True)
        x = centre + radius * math.sin(theta) - rotated.width / 2
        y = centre - radius * math.cos(theta) - rotated.height / 2
        mask.paste(255, (round(x), round(y)), rotated)


def _draw_bottom_text(mask: Image.Image, text: str, font_path: Path, side: int) -> None:
    """*text* horizontally below the star, as wide as the chord there allows."""
    centre = side / 2
    line_y = centre + side * 0.27
    height = side * 0.06
    # Half-chord of the text area's inner circle at the line's lower edge.
    inner = side * (_RING_OUTER - _RING_WIDTH - _TEXT_GAP)
    half_chord = math.sqrt(max(inner**2 - (line_y - centre + height / 2) ** 2, 0.0))
    font = ImageFont.truetype(str(font_path), round(height / 0.92))
    left, _, right, _ = font.getbbox(text, anchor="mm")
    natural = right - left
    available = 2 * half_chord * 0.85
    cell_w, cell_h = round(natural) + 8, round(font.size * 1.2)
    cell = Image.new("L", (cell_w, cell_h), 0)
    ImageDraw.Draw(cell).text((cell_w / 2, cell_h / 2), text, font=font, fill=255, anchor="mm")
    if natural > available:
        # Squeeze sideways, as seal engravers do, rather than shrink the line.
        cell = cell.resize((max(1, round(cell_w * available / natural)), cell_h), Image.Resampling.LANCZOS)
    mask.paste(255, (round(centre - cell.width / 2), round(line_y - cell.height / 2)), cell)
