"""Finding a CJK font for seal images and licence faces, and making it usable.

Seal images (Pillow) and licence faces (pyHanko) draw Chinese text with real
glyphs from an OpenType font. Debian's ``fonts-noto-cjk`` ships the Noto CJK
families as TrueType/OpenType Collections (``.ttc``, one face per region: JP,
KR, SC, TC, HK), but pyHanko's ``GlyphAccumulatorFactory`` opens a single
OTF/TTF. :func:`standalone_font` therefore copies the Simplified Chinese face
out of a collection into a cache directory the caller owns, once; Pillow and
pyHanko then read the same file.

This module never reads the environment: the configured font path (the
``YINXIN_CJK_FONT`` setting) and the cache directory come in as arguments; only
discovery looks at well-known system paths and asks ``fc-match``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final, Literal

from fontTools.ttLib import TTCollection, TTFont, TTLibError  # type: ignore[import-untyped]

from schemas.errors import ConfigurationError

__all__ = [
    "CJK_FONT_DIRS",
    "FontStyle",
    "find_cjk_font",
    "font_missing_chars",
    "prepare_cjk_font",
    "standalone_font",
]

FontStyle = Literal["serif", "sans"]

# Where distributions put Noto CJK (Debian/Ubuntu fonts-noto-cjk, Fedora
# google-noto-*-cjk-fonts, Arch noto-fonts-cjk, Alpine font-noto-cjk).
CJK_FONT_DIRS: Final[tuple[Path, ...]] = (
    Path("/usr/share/fonts/opentype/noto"),
    Path("/usr/share/fonts/noto-cjk"),
    Path("/usr/share/fonts/google-noto-serif-cjk-fonts"),
    Path("/usr/share/fonts/google-noto-sans-cjk-fonts"),
    Path("/usr/share/fonts/google-noto-cjk"),
    Path("/usr/share/fonts/noto"),
)

_FAMILY_FILES: Final[dict[FontStyle, tuple[str, ...]]] = {
    # Collections first (what Debian ships), then the single-face SC builds.
    "serif": ("NotoSerifCJK-{w}.ttc", "NotoSerifCJKsc-{w}.otf", "NotoSerifSC-{w}.otf"),
    "sans": ("NotoSansCJK-{w}.ttc", "NotoSansCJKsc-{w}.otf", "NotoSansSC-{w}.otf"),
}
_FC_FAMILIES: Final[dict[FontStyle, str]] = {"serif": "serif", "sans": "sans-serif"}

_SUFFIXES: Final = frozenset({".otf", ".ttf", ".ttc", ".otc"})
_COLLECTION_SUFFIXES: Final = frozenset({".ttc", ".otc"})
# Characters every seal and licence face uses; a font lacking them would draw
# tofu boxes (fc-match happily answers DejaVu when no CJK font is installed).
_PROBE: Final = "印信电子证照营业执照市场监督管理局专用章"
_HINT: Final = "install fonts-noto-cjk or set YINXIN_CJK_FONT to an OpenType font with Chinese glyphs"


def find_cjk_font(preferred: Path | None = None, *, style: FontStyle = "serif", bold: bool = False) -> Path:
    """The font file to draw Chinese with: *preferred* if given, else a system CJK font.

    *preferred* (the configured font) must exist and cover Chinese; it is never
    silently replaced by another font. Otherwise the Noto CJK family of the
    *style* asked for is looked up in :data:`CJK_FONT_DIRS`, then the other
    style, then ``fc-match`` for a font supporting ``zh-cn``. The result may be
    a collection (``.ttc``); pass it through :func:`standalone_font` for pyHanko.

    Raises ConfigurationError when no usable font is found.
    """
    if preferred is not None:
        _check_font_file(preferred)
        if font_missing_chars(preferred, _PROBE):
            raise ConfigurationError(f"CJK font {preferred} has no Chinese glyphs: {_HINT}")
        return preferred
    weight = "Bold" if bold else "Regular"
    other: FontStyle = "sans" if style == "serif" else "serif"
    for family_style in (style, other):
        for pattern in _FAMILY_FILES[family_style]:
            for directory in CJK_FONT_DIRS:
                candidate = directory / pattern.format(w=weight)
                if candidate.is_file():
                    return candidate
    found = _fc_match(style, bold)
    if found is not None:
        return found
    raise ConfigurationError(f"no CJK font found: {_HINT}")


def standalone_font(font: Path, cache_dir: Path, *, face: str = "SC") -> Path:
    """*font* as a single-face OTF/TTF file, extracting the *face* member of a collection.

    A plain ``.otf``/``.ttf`` is returned as is. From a ``.ttc``/``.otc`` the
    face whose family name ends in *face* (``"SC"``: Simplified Chinese, the
    glyph forms of GB 18030) is copied to *cache_dir*, named after the source
    file, its size and modification time, so a font package upgrade makes a
    new copy. A collection without such a face (WenQuanYi, say) gives its
    first face that covers Chinese. The copy is written to a temporary file
    and moved into place (``os.replace``), so concurrent callers never see a
    half-written font.
    """
    _check_font_file(font)
    if font.suffix.lower() not in _COLLECTION_SUFFIXES:
        return font
    stat = font.stat()
    fingerprint = hashlib.sha256(f"{font.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    target_stem = f"{font.stem}-{face}-{fingerprint[:12]}"
    for suffix in (".otf", ".ttf"):
        cached = cache_dir / f"{target_stem}{suffix}"
        if cached.is_file():
            return cached
    try:
        collection = TTCollection(str(font), lazy=True)
    except (OSError, TTLibError) as exc:
        raise ConfigurationError(f"cannot read font collection {font}: {exc}; {_HINT}") from exc
    member = _pick_face(collection, face)
    if member is None:
        raise ConfigurationError(f"font collection {font} has no face covering Chinese: {_HINT}")
    # CFF-flavoured faces are OpenType (.otf); glyf-flavoured ones TrueType.
    target = cache_dir / f"{target_stem}{'.otf' if 'CFF ' in member else '.ttf'}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{target_stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                member.save(out)
                out.flush()
                os.fsync(out.fileno())
            # mkstemp creates 0600; the copy is public font data other service users may read.
            os.chmod(temp_name, 0o644)
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
    except (OSError, TTLibError) as exc:
        raise ConfigurationError(f"cannot write the extracted font to {cache_dir}: {exc}") from exc
    finally:
        collection.close()
    return target


def prepare_cjk_font(
    cache_dir: Path, preferred: Path | None = None, *, style: FontStyle = "serif", bold: bool = False
) -> Path:
    """:func:`find_cjk_font`, then :func:`standalone_font`: one font file Pillow and pyHanko both open."""
    return standalone_font(find_cjk_font(preferred, style=style, bold=bold), cache_dir)


def font_missing_chars(font: Path, text: str) -> str:
    """The characters of *text* (whitespace aside) that *font* has no glyph for, in order, once each.

    For a collection, the first face is asked (all Noto CJK faces cover the
    same Unicode ranges; only glyph forms differ).
    """
    cmap = _cmap(font, font.stat().st_mtime_ns)
    missing: dict[str, None] = {}
    for char in text:
        if not char.isspace() and ord(char) not in cmap:
            missing[char] = None
    return "".join(missing)


@functools.lru_cache(maxsize=8)
def _cmap(font: Path, _mtime_ns: int) -> frozenset[int]:
    # The modification time is part of the cache key so a replaced font file is re-read.
    try:
        if font.suffix.lower() in _COLLECTION_SUFFIXES:
            collection = TTCollection(str(font), lazy=True)
            try:
                return frozenset(collection.fonts[0].getBestCmap() or {})
            finally:
                collection.close()
        with TTFont(str(font), lazy=True) as single:
            return frozenset(single.getBestCmap() or {})
    except (OSError, TTLibError, IndexError) as exc:
        raise ConfigurationError(f"cannot read font {font}: {exc}; {_HINT}") from exc


def _check_font_file(font: Path) -> None:
    if not font.is_file():
        raise ConfigurationError(f"CJK font {font} does not exist: {_HINT}")
    if font.suffix.lower() not in _SUFFIXES:
        raise ConfigurationError(
            f"CJK font {font} is not an OpenType/TrueType file (.otf, .ttf, .ttc or .otc): {_HINT}"
        )


def _pick_face(collection: TTCollection, face: str) -> TTFont | None:
    suffix = f" {face}".lower()
    fallback: TTFont | None = None
    for member in collection.fonts:
        family = (member["name"].getDebugName(1) or "").lower()
        if family.endswith(suffix):
            return member
        if fallback is None and all(ord(c) in (member.getBestCmap() or {}) for c in _PROBE):
            fallback = member
    return fallback


def _fc_match(style: FontStyle, bold: bool) -> Path | None:
    """Ask fontconfig for a Chinese font; None when fc-match is missing or answers a non-CJK font."""
    executable = shutil.which("fc-match")
    if executable is None:
        return None
    pattern = f"{_FC_FAMILIES[style]}:lang=zh-cn{':weight=bold' if bold else ''}"
    try:
        result = subprocess.run(
            [executable, "--format=%{file}", pattern], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    candidate = Path(result.stdout.strip())
    if result.returncode != 0 or not result.stdout.strip() or candidate.suffix.lower() not in _SUFFIXES:
        return None
    try:
        if not candidate.is_file() or font_missing_chars(candidate, _PROBE):
            return None
    except ConfigurationError:
        return None
    return candidate
