"""QR codes for licences (ISO/IEC 18004:2015), drawn with the ``qrcode`` library.

The code holds a URL, ``{public_url}/v/{presentation token}``: a phone camera
opens the verification page, and an offline verifier takes the token from the
last path segment and checks it against the trust list.

Choices, all for scanning at a glance from a phone screen or a printed page:

- error correction level M (15 % of codewords recoverable, ISO/IEC 18004 §7.5.1);
- byte mode for the whole text (§7.4.5). Alphanumeric mode (§7.4.4) would take
  5.5 bits a character instead of 8, but its alphabet is upper-case only and
  base64url is case-sensitive, so the token cannot be upper-cased; splitting
  off an upper-cased scheme and host would save about 5 bytes and make the
  URL look odd, so we do not;
- a quiet zone of 4 modules on every side (§9.1), white behind the SVG too,
  so the code reads on a dark page.

With ES256/EdDSA keys every demo licence fits in version 15 at level M (77×77
modules, 412 bytes) behind a public URL of up to 33 characters; PS256 needs
about version 23.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import qrcode  # type: ignore[import-untyped]
import qrcode.exceptions  # type: ignore[import-untyped]
import qrcode.image.pil  # type: ignore[import-untyped]
import qrcode.image.svg  # type: ignore[import-untyped]
from qrcode.util import MODE_8BIT_BYTE, QRData  # type: ignore[import-untyped]

from schemas.errors import InputTooLarge, InvalidInput

__all__ = [
    "QR_BORDER",
    "QR_ERROR_CORRECTION",
    "QRImage",
    "presentation_url",
    "qr_png",
    "qr_svg",
    "qr_version",
]

QR_ERROR_CORRECTION: Final = "M"
QR_BORDER: Final = 4  # modules of quiet zone, ISO/IEC 18004:2015 §9.1
# 8 pixels a module: a version-15 code is 85 × 8 = 680 pixels square, sharp on a
# phone screen and at 300 dpi about 58 mm printed.
PNG_BOX_SIZE: Final = 8
# qrcode's SVG unit is 1 mm per 10 "pixels": 5 gives 0.5 mm modules, a 42.5 mm
# version-15 code; the SVG has a viewBox, so it scales without loss.
SVG_BOX_SIZE: Final = 5
# base64url (RFC 4648 §5) and the dots of JWS compact serialisation.
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,2048}")


@dataclass(frozen=True, slots=True)
class QRImage:
    """A rendered QR code: the text it holds, its version (1-40) and the image bytes."""

    content: str
    version: int
    media_type: str
    data: bytes


def presentation_url(public_url: str, token: str) -> str:
    """The text a licence's QR code holds: ``{public_url}/v/{token}``.

    *public_url* is where this service is reached from outside: ``http`` or
    ``https``, ASCII (a Chinese domain name in its ``xn--`` form), an optional
    path prefix, no query or fragment; a trailing ``/`` is dropped.
    """
    base = public_url.rstrip("/")
    try:
        parts = urlsplit(base)
    except ValueError:  # an unbalanced '[' or ']' in the host: "Invalid IPv6 URL"
        parts = urlsplit("")
    if (
        # Printable ASCII only: a control character (DEL, NUL) would go into every QR code.
        not (base.isascii() and base.isprintable())
        or parts.scheme not in ("http", "https")
        or not parts.netloc
        # Not parts.query/parts.fragment: those are empty for "https://host?" and "https://host#",
        # whose QR URL would carry the token in a query or fragment the page never receives.
        or "?" in base
        or "#" in base
        or any(c.isspace() for c in base)
    ):
        raise InvalidInput(
            f"public URL {base[:60]!r} is not usable in a QR code: give http(s)://host[:port][/prefix] "
            "in ASCII, without query or fragment"
        )
    if _TOKEN_RE.fullmatch(token) is None:
        raise InvalidInput("a presentation token holds only base64url characters and dots")
    return f"{base}/v/{token}"


def _qr(content: str, box_size: int, image_factory: type | None) -> qrcode.QRCode:
    try:
        data = content.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidInput("QR content must be ASCII (a URL with its host in xn-- form)") from None
    code = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        box_size=box_size,
        border=QR_BORDER,
        image_factory=image_factory,
    )
    code.add_data(QRData(data, mode=MODE_8BIT_BYTE))
    try:
        code.make(fit=True)
    except qrcode.exceptions.DataOverflowError as exc:
        # Version 40-M holds 2331 bytes (ISO/IEC 18004:2015 Table 7).
        raise InputTooLarge(
            f"{len(data)} bytes do not fit in any QR code at error correction level M"
        ) from exc
    except ValueError as exc:
        # qrcode 8.2's Reed-Solomon step fails ("glog(0)") on a block of all-zero data codewords,
        # i.e. runs of NUL and other control bytes (lincolnloop/python-qrcode#330). Printable text,
        # such as every presentation URL, never makes one.
        raise InvalidInput("QR content of control characters cannot be encoded: give a URL") from exc
    return code


def qr_version(content: str) -> int:
    """The smallest QR version (1-40) holding *content* in byte mode at level M."""
    code = _qr(content, 1, None)
    return int(code.version)


def qr_png(content: str, *, box_size: int = PNG_BOX_SIZE) -> QRImage:
    """*content* as a black-on-white PNG QR code with a 4-module quiet zone."""
    code = _qr(content, box_size, qrcode.image.pil.PilImage)
    out = io.BytesIO()
    code.make_image().save(out)
    return QRImage(content, int(code.version), "image/png", out.getvalue())


def qr_svg(content: str) -> QRImage:
    """*content* as a standalone SVG document: one ``<path>`` on a white square, no external references."""
    code = _qr(content, SVG_BOX_SIZE, qrcode.image.svg.SvgPathFillImage)
    out = io.BytesIO()
    code.make_image().save(out)
    return QRImage(content, int(code.version), "image/svg+xml", out.getvalue())
