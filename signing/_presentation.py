"""Presentation tokens: the short signed pointer a licence's QR code carries.

A licence token is about 1.5 KB, too much for a QR code a phone reads at a
glance. A presentation token says only "licence *sub*, shown at *iat*, good
until *exp*" and is signed by the key that issued the licence; the verifier
fetches everything else (face data, live status) from the vault::

    header  {"alg": "ES256", "kid": "<issuing key>", "typ": "licence-presentation+jwt"}
    payload {"sub": "<GB/T 36904 identifier>", "iat": 1795399200, "exp": 1842969600}

Nothing personal is in it: no holder name, no ID number, no face data.

It is a JWS compact serialisation (RFC 7515 §7.1) checked as strictly as a
licence token (``signing._jws``): size before decoding (1 KiB), canonical
base64url, UTF-8 JSON objects with unique names, only ``alg``/``kid``/``typ``
in the header, ``typ`` required and distinct from the licence token's (so
neither can be passed off as the other, RFC 8725 §3.11), the algorithm bound
to the key, never the header's (RFC 8725 §3.1). The payload holds ``sub``,
``iat`` and optionally ``exp``, and nothing else.

Sizes (ES256 or EdDSA, a 42-character kid, a 73-character identifier): header
99 bytes of JSON (132 characters), payload 117 bytes with ``exp`` (156
characters), signature 64 bytes (86 characters): 376 characters in all, 353
without ``exp``. A PS256 (RSA-3072) signature is 384 bytes (512 characters),
so a PS256 presentation token is about 800 characters: it still works, in a
bigger QR code (version 23 instead of 15 at level M).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from hsm import KeyBackend, KeyRef
from schemas import LicenceIdentifier
from schemas.errors import InvalidInput

from ._jws import (
    CLAIMS_INVALID,
    EXPIRED,
    MALFORMED,
    SIGNATURE_INVALID,
    TOO_LARGE,
    Rejected,
    b64url_decode,
    parse_json_object,
    shown,
    sign_compact,
    sign_compact_many,
)
from ._token import TokenVerdict
from ._trust import TrustStore, resolve_key

__all__ = [
    "MAX_PRESENTATION_BYTES",
    "PRESENTATION_TYP",
    "sign_presentation",
    "sign_presentations",
    "verify_presentation",
]

PRESENTATION_TYP: Final = "licence-presentation+jwt"
# Hard limit before any decoding. An ES256/EdDSA presentation token is under 400
# bytes and a PS256 one about 800; 1 KiB caps what a scanned URL can make us do.
MAX_PRESENTATION_BYTES: Final = 1024

_CLAIMS: Final = frozenset({"sub", "iat", "exp"})
# NumericDate (RFC 7519 §2) in whole seconds, 1970-01-01 .. 9999-12-31.
_MAX_NUMERIC_DATE: Final = 253402300799
_MAX_SUB_CHARS: Final = 128


# --- signing ------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _numeric_date(value: datetime | int, name: str) -> int:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidInput(f"{name} must be a timezone-aware datetime (use the injected clock)")
        value = int(value.timestamp())
    if type(value) is not int or not 0 <= value <= _MAX_NUMERIC_DATE:
        raise InvalidInput(f"{name} must be a NumericDate in whole seconds (RFC 7519 §2), not {value!r}")
    return value


def sign_presentation(
    backend: KeyBackend,
    key: KeyRef,
    identifier: str,
    *,
    iat: datetime | int,
    exp: datetime | int | None,
) -> str:
    """A presentation token for licence *identifier*, signed with *key* in *backend*.

    *key* must be the key that issued the licence (the verifier insists on it).
    *iat* and *exp* are aware datetimes or NumericDates; *exp* is the licence's
    own expiry (``None`` for 长期 licences). Raises ``InvalidIdentifier`` for a
    malformed identifier, ``InvalidInput`` for bad times, ``InputTooLarge``
    over ``MAX_PRESENTATION_BYTES``, and whatever the backend raises.
    """
    return sign_compact(backend, key, _payload(identifier, iat, exp), **_PRESENTATION_FORM)


def sign_presentations(
    backend: KeyBackend, batch: Sequence[tuple[KeyRef, str, datetime | int, datetime | int | None]]
) -> list[str]:
    """:func:`sign_presentation` for each ``(key, identifier, iat, exp)`` of *batch*, in order.

    All or nothing: the first bad item raises before anything is signed; each key's signatures
    are asked for in one ``KeyBackend.sign_many`` call (the group of licences an issuance
    transaction just stored, ``Vault._with_presentations``).
    """
    payloads = [(key, _payload(identifier, iat, exp)) for key, identifier, iat, exp in batch]
    return sign_compact_many(backend, payloads, **_PRESENTATION_FORM)


_PRESENTATION_FORM: Final[dict[str, Any]] = {
    "typ": PRESENTATION_TYP,
    "max_bytes": MAX_PRESENTATION_BYTES,
    "what": "presentation token",
    "hint": "use a shorter key id",
}


def _payload(identifier: str, iat: datetime | int, exp: datetime | int | None) -> bytes:
    sub = str(LicenceIdentifier.parse(identifier))
    claims: dict[str, Any] = {"sub": sub, "iat": _numeric_date(iat, "iat")}
    if exp is not None:
        claims["exp"] = _numeric_date(exp, "exp")
        if claims["exp"] <= claims["iat"]:
            raise InvalidInput("exp must be later than iat: the licence has already expired")
    return json.dumps(claims, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# --- verification -------------------------------------------------------------


def _is_numeric_date(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_NUMERIC_DATE  # bool is not a JSON number


def _claims_problems(claims: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 1 <= len(sub) <= _MAX_SUB_CHARS:
        problems.append("The presentation token has no 'sub' claim naming a licence identifier (GB/T 36904).")
    if not _is_numeric_date(claims.get("iat")):
        problems.append(
            "The presentation token's 'iat' claim is missing or not a NumericDate in whole seconds "
            "(RFC 7519 §2)."
        )
    if "exp" in claims and not _is_numeric_date(claims["exp"]):
        problems.append(
            f"The presentation token's 'exp' claim is {shown(claims['exp'])}, not a NumericDate in whole "
            "seconds (RFC 7519 §2)."
        )
    extra = sorted(name for name in claims if name not in _CLAIMS)
    if extra:
        names = ", ".join(shown(name, 24) for name in extra[:5])
        problems.append(
            f"The presentation token carries {names}; a presentation token holds only sub, iat and exp, "
            "so it was not made by Yinxin."
        )
    return problems


def _rejected(
    code: str,
    reason: str,
    header: Mapping[str, Any] | None = None,
    kid: str | None = None,
    algorithm: str | None = None,
) -> TokenVerdict:
    return TokenVerdict(False, (reason,), (code,), header, None, kid, algorithm)


def verify_presentation(
    token: str | bytes, trust: TrustStore, *, now: datetime, leeway: int = 0
) -> TokenVerdict:
    """Verify a presentation token against *trust* at *now*; never raises for a bad token.

    Same order and verdict codes as :func:`signing.verify_token`: size, ASCII,
    three segments; header (typ must be ``licence-presentation+jwt``); key by
    kid and its bound algorithm; signature; only then the payload, and the
    ``exp`` check. ``claims`` is set once the signature has verified. Raises
    ``InvalidInput`` only for a naive *now* or a negative *leeway*.
    """
    if now.utcoffset() is None:
        raise InvalidInput("now must be a timezone-aware datetime (use the injected clock)")
    if type(leeway) is not int or leeway < 0:
        raise InvalidInput(f"leeway must be a whole number of seconds >= 0, not {leeway!r}")

    if isinstance(token, bytes | bytearray):
        if len(token) > MAX_PRESENTATION_BYTES:
            return _rejected(TOO_LARGE, _too_large(len(token)))
        try:
            text = bytes(token).decode("ascii")
        except UnicodeDecodeError:
            return _rejected(MALFORMED, _NOT_ASCII)
    elif isinstance(token, str):
        if len(token) > MAX_PRESENTATION_BYTES:
            return _rejected(TOO_LARGE, _too_large(len(token)))
        if not token.isascii():
            return _rejected(MALFORMED, _NOT_ASCII)
        text = token
    else:
        return _rejected(MALFORMED, f"A presentation token is text, not {type(token).__name__}.")

    parts = text.split(".")
    if len(parts) != 3:
        return _rejected(
            MALFORMED,
            f"The presentation token has {len(parts)} dot-separated parts; a signed token has exactly 3 "
            "(header.payload.signature, RFC 7515 §7.1). It may be truncated.",
        )
    encoded_header, encoded_payload, encoded_signature = parts

    header: Mapping[str, Any] | None = None
    kid: str | None = None
    alg: str | None = None
    try:
        header, alg, kid, entry = resolve_key(encoded_header, trust, PRESENTATION_TYP, "presentation token")
        signature = b64url_decode(encoded_signature)
        if signature is None:
            raise Rejected(MALFORMED, _not_b64("signature"))
        payload = b64url_decode(encoded_payload)
        if payload is None:
            raise Rejected(MALFORMED, _not_b64("payload"))
        signing_input = (encoded_header + "." + encoded_payload).encode("ascii")
        if not entry.check(signing_input, signature):
            raise Rejected(
                SIGNATURE_INVALID,
                f"The presentation token's signature does not verify with key {kid!r}: it was altered, "
                "damaged in transit, or not made by that key.",
            )
        claims = parse_json_object(payload, "payload")  # only an authenticated payload is parsed
    except Rejected as exc:
        return _rejected(exc.code, exc.reason, header, kid, alg)

    reasons = _claims_problems(claims)
    codes = [CLAIMS_INVALID] * len(reasons)
    if not reasons:
        exp = claims.get("exp")
        if exp is not None and now.timestamp() >= exp + leeway:
            when = datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            reasons.append(f"The licence this code presents expired at {when} (exp).")
            codes.append(EXPIRED)
    return TokenVerdict(not reasons, tuple(reasons), tuple(codes), header, MappingProxyType(claims), kid, alg)


_NOT_ASCII: Final = (
    "The presentation token contains characters other than base64url letters and dots (RFC 7515 §7.1)."
)


def _too_large(size: int) -> str:
    return (
        f"The presentation token is {size} bytes, over the {MAX_PRESENTATION_BYTES}-byte limit, so it was "
        "not read."
    )


def _not_b64(part: str) -> str:
    return (
        f"The presentation token's {part} is not canonical base64url without padding (RFC 7515 §2): it "
        "has characters outside A-Z a-z 0-9 - _, '=' padding, or stray bits in its last character."
    )
