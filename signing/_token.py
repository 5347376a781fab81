"""Licence tokens: JWS compact serialisation (RFC 7515 §7.1) of a JWT claims set.

Signing asks the key backend for the signature and never sees a private key.
Verification is an answer, not an exception: :func:`verify_token` returns a
:class:`TokenVerdict` for every token, however broken.

The order of checks, stopping at the first failure up to the signature:

1. size (before any decoding), ASCII, three segments;
2. protected header: canonical base64url, UTF-8 JSON object without duplicate
   names; ``alg`` one of ES256/EdDSA/PS256; no ``crit``; nothing but ``alg``,
   ``kid``, ``typ``; ``typ``; ``kid``;
3. the key: ``kid`` in the trust store, header ``alg`` equal to the algorithm
   bound to that key (the key's algorithm is what is used, RFC 8725 §3.1);
4. the signature, with ``cryptography``;
5. only then the payload is parsed (an unauthenticated payload is never
   interpreted); every problem with the claims is reported, and a sound
   claims set gets the time checks (``exp``, ``nbf``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import orjson

from hsm import KeyBackend, KeyRef
from schemas.errors import InvalidInput

from ._jws import (
    CLAIMS_INVALID,
    EXPIRED,
    MALFORMED,
    MAX_TOKEN_BYTES,
    NOT_YET_VALID,
    SIGNATURE_INVALID,
    TOKEN_TYP,
    TOO_LARGE,
    Rejected,
    b64url_decode,
    parse_json_object,
    shown,
    sign_compact,
    sign_compact_many,
)
from ._trust import TrustStore, resolve_key

__all__ = [
    "MAX_TOKEN_BYTES",
    "TOKEN_TYP",
    "TokenVerdict",
    "sign_licence_token",
    "sign_licence_tokens",
    "verify_token",
]

# Claims every licence token carries (RFC 7519 §4.1): the issuer's USCC, the
# licence identifier as both subject and token id (GB/T 36904), issue time.
_REQUIRED_STRING_CLAIMS: Final = ("iss", "sub", "jti")
_TIME_CLAIMS: Final = ("iat", "nbf", "exp")
# NumericDate (RFC 7519 §2) in whole seconds, 1970-01-01 .. 9999-12-31.
_MAX_NUMERIC_DATE: Final = 253402300799
# Signature lengths in base64url characters, for the size check before signing.


class TokenVerdict(NamedTuple):
    """What :func:`verify_token` concluded (immutable; a named tuple because it is built on
    every verification and costs a quarter of a frozen dataclass to make).

    ``reasons`` are sentences for a person; ``codes`` are stable machine codes,
    one per reason (``signing.VERDICT_CODES``). A valid token has neither.
    ``header`` is set once the header has been read, ``kid`` and ``algorithm``
    once they are known; ``claims`` only once the signature has verified, so
    an unauthenticated payload is never handed out.
    """

    valid: bool
    reasons: tuple[str, ...]
    codes: tuple[str, ...]
    header: Mapping[str, Any] | None
    claims: Mapping[str, Any] | None
    kid: str | None
    algorithm: str | None


# --- signing ------------------------------------------------------------------


def _is_numeric_date(value: object) -> bool:
    # bool is an int in Python but not a number in JSON.
    return type(value) is int and 0 <= value <= _MAX_NUMERIC_DATE


def _claims_problems(claims: Mapping[str, Any]) -> list[str]:
    """Why *claims* is not a licence claims set (empty when it is)."""
    # The common case, answered without building anything (or calling anything: this runs
    # on every verification).
    get = claims.get
    sub, iss, iat, nbf, exp = get("sub"), get("iss"), get("iat"), get("nbf", 0), get("exp", 0)
    if (
        type(sub) is str
        and sub
        and get("jti") == sub
        and type(iss) is str
        and iss
        and type(iat) is int
        and 0 <= iat <= _MAX_NUMERIC_DATE
        and type(nbf) is int
        and 0 <= nbf <= _MAX_NUMERIC_DATE
        and type(exp) is int
        and 0 <= exp <= _MAX_NUMERIC_DATE
    ):
        return []
    problems: list[str] = []
    for name in _REQUIRED_STRING_CLAIMS:
        value = claims.get(name)
        if not isinstance(value, str) or not value:
            problems.append(
                f"The token has no '{name}' claim as a non-empty string; every licence token names its "
                "issuer (iss) and its licence identifier (sub and jti)."
            )
    for name in _TIME_CLAIMS:
        if name not in claims:
            if name == "iat":
                problems.append(
                    "The token has no 'iat' (issued at) claim, which every licence token carries."
                )
            continue
        value = claims[name]
        if not _is_numeric_date(value):
            problems.append(
                f"The token's '{name}' claim is {shown(value)}, not a NumericDate in whole seconds since "
                "1970 (RFC 7519 §2)."
            )
    sub, jti = claims.get("sub"), claims.get("jti")
    if isinstance(sub, str) and isinstance(jti, str) and sub and jti and sub != jti:
        problems.append(
            "The token's 'sub' and 'jti' claims differ; in a licence token both are the licence "
            "identifier (GB/T 36904)."
        )
    return problems


def _has_non_finite(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        # Exact types first: this walks every claims set signed, and isinstance against the
        # Mapping ABC is ten times slower than a type comparison.
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is dict:
            pending.extend(item.values())
        elif kind is list or kind is tuple:
            pending.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


def _licence_payload(claims: Mapping[str, Any]) -> bytes:
    if not isinstance(claims, Mapping):
        raise InvalidInput(f"licence claims are a mapping, not {type(claims).__name__}")
    problems = _claims_problems(claims)
    if problems:
        raise InvalidInput("the claims would not verify: " + " ".join(problems))
    try:
        # orjson: compact UTF-8 JSON (RFC 8259), the exact form the verifier's fast path
        # recognises; it refuses non-string keys and integers beyond 64 bits, but writes NaN
        # and infinities as null, which must be refused (RFC 8259 §6). Only a payload that
        # holds a null can hide one, so the claims are walked only then.
        payload = orjson.dumps(claims)
        if b"null" in payload and _has_non_finite(claims):
            raise ValueError("NaN and infinities are not JSON numbers")
        return payload
    except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"the licence claims are not JSON: {exc}") from exc


_TOKEN_LIMITS: Final[dict[str, Any]] = {
    "max_bytes": MAX_TOKEN_BYTES,
    "what": "licence token",
    "hint": "keep face data short or move documents out of the token",
}


def sign_licence_token(backend: KeyBackend, key: KeyRef, claims: Mapping[str, Any]) -> str:
    """Sign *claims* with *key* in *backend*; return the JWS compact token.

    The protected header is exactly ``{"alg", "kid", "typ": "licence+jwt"}``;
    header and payload are compact UTF-8 JSON. Raises ``InvalidInput`` for
    claims :func:`verify_token` would reject or that are not JSON,
    ``InputTooLarge`` for a token over ``MAX_TOKEN_BYTES``, and whatever the
    backend raises (``KeyNotFound``, ``BackendError``).
    """
    return sign_compact(backend, key, _licence_payload(claims), typ=TOKEN_TYP, **_TOKEN_LIMITS)


def sign_licence_tokens(backend: KeyBackend, batch: Sequence[tuple[KeyRef, Mapping[str, Any]]]) -> list[str]:
    """:func:`sign_licence_token` for each ``(key, claims)`` of *batch*, in order.

    All or nothing: the first bad claims set raises before anything is signed. Each key's
    signatures are asked for in one ``KeyBackend.sign_many`` call, which may sign on
    several threads.
    """
    payloads = [(key, _licence_payload(claims)) for key, claims in batch]
    return sign_compact_many(backend, payloads, typ=TOKEN_TYP, **_TOKEN_LIMITS)


# --- verification -------------------------------------------------------------


def _rejected(
    code: str,
    reason: str,
    header: Mapping[str, Any] | None = None,
    kid: str | None = None,
    algorithm: str | None = None,
) -> TokenVerdict:
    return TokenVerdict(False, (reason,), (code,), header, None, kid, algorithm)


def _when(numeric_date: int) -> str:
    return datetime.fromtimestamp(numeric_date, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def verify_token(
    token: str | bytes,
    trust: TrustStore,
    *,
    now: datetime,
    leeway: int = 0,
    expected_typ: str | None = TOKEN_TYP,
) -> TokenVerdict:
    """Verify a licence token against *trust* at time *now*.

    Never raises for a bad token: every failure is a verdict with reasons and
    codes. Raises ``InvalidInput`` only for a caller's mistake (a naive *now*,
    a negative *leeway*). *leeway* (seconds) widens ``exp`` and ``nbf`` for
    clock skew. ``expected_typ=None`` skips the ``typ`` check; it exists for
    generic JWS test vectors, not for licences.
    """
    if now.tzinfo is not UTC and now.utcoffset() is None:
        raise InvalidInput("now must be a timezone-aware datetime (use the injected clock)")
    if type(leeway) is not int or leeway < 0:
        raise InvalidInput(f"leeway must be a whole number of seconds >= 0, not {leeway!r}")

    # 1. Size before any decoding; then ASCII (RFC 7515 §7.1 uses only
    # base64url characters and '.'). A str of more than MAX characters is more
    # than MAX bytes; one within it is checked to be ASCII, so byte length =
    # character length.
    if isinstance(token, str):
        if len(token) > MAX_TOKEN_BYTES:
            return _rejected(TOO_LARGE, _too_large(len(token)))
        if not token.isascii():
            return _rejected(MALFORMED, _NOT_ASCII)
        text = token
    elif isinstance(token, bytes | bytearray):
        if len(token) > MAX_TOKEN_BYTES:
            return _rejected(TOO_LARGE, _too_large(len(token)))
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            return _rejected(MALFORMED, _NOT_ASCII)
    else:
        return _rejected(MALFORMED, f"A token is text, not {type(token).__name__}.")

    # Find the two dots instead of split(): no copy of the 1-2 KB payload segment.
    first = text.find(".")
    second = text.find(".", first + 1) if first >= 0 else -1
    if second < 0 or text.find(".", second + 1) >= 0:
        return _rejected(
            MALFORMED,
            f"The token has {text.count('.') + 1} dot-separated parts; a signed licence token has "
            "exactly 3 (header.payload.signature, RFC 7515 §7.1). It may be truncated or encrypted.",
        )
    encoded_header = text[:first]
    encoded_payload = text[first + 1 : second]
    encoded_signature = text[second + 1 :]

    header: Mapping[str, Any] | None = None
    kid: str | None = None
    alg: str | None = None
    try:
        # 2-3. Header and key. A header byte-identical to the one we sign with
        # for a trusted key needs no decoding (TrustStore precomputes it).
        entry = trust._by_header.get(encoded_header)
        if entry is None or (expected_typ is not None and expected_typ != TOKEN_TYP):
            header, alg, kid, entry = resolve_key(encoded_header, trust, expected_typ, "token")
        else:
            header = entry.header
            kid = entry.key.kid
            alg = entry.alg

        # 4. Signature, with the algorithm bound to the key.
        signature = b64url_decode(encoded_signature)
        if signature is None:
            raise Rejected(MALFORMED, _not_b64("signature"))
        payload = b64url_decode(encoded_payload)
        if payload is None:
            raise Rejected(MALFORMED, _not_b64("payload"))
        signing_input = text[:second].encode("ascii")
        if not entry.check(signing_input, signature):
            raise Rejected(
                SIGNATURE_INVALID,
                f"The token's signature does not verify with key {kid!r}: the token was altered, "
                "damaged in transit, or not made by that key.",
            )

        # 5. Only an authenticated payload is parsed.
        claims = parse_json_object(payload, "payload")
    except Rejected as exc:
        return _rejected(exc.code, exc.reason, header, kid, alg)

    codes: list[str] = []
    reasons = _claims_problems(claims)
    if reasons:
        codes = [CLAIMS_INVALID] * len(reasons)
    else:
        instant = now.timestamp()
        exp = claims.get("exp")
        if exp is not None and instant >= exp + leeway:
            reasons.append(
                f"The licence token expired at {_when(exp)} (exp); ask the issuer for a current licence."
            )
            codes.append(EXPIRED)
        nbf = claims.get("nbf")
        if nbf is not None and instant < nbf - leeway:
            reasons.append(
                f"The licence token is not valid before {_when(nbf)} (nbf); present it then, or check the "
                "verifier's clock."
            )
            codes.append(NOT_YET_VALID)
    if not reasons:
        return TokenVerdict(True, (), (), header, MappingProxyType(claims), kid, alg)
    return TokenVerdict(False, tuple(reasons), tuple(codes), header, MappingProxyType(claims), kid, alg)


_NOT_ASCII: Final = (
    "The token contains characters other than base64url letters and dots, so it is not a licence "
    "token (RFC 7515 §7.1)."
)


def _too_large(size: int) -> str:
    return (
        f"The token is {size} bytes, over the {MAX_TOKEN_BYTES}-byte limit for licence tokens, so it was "
        "not read."
    )


def _not_b64(part: str) -> str:
    return (
        f"The token's {part} is not canonical base64url without padding (RFC 7515 §2): it has characters "
        "outside A-Z a-z 0-9 - _, '=' padding, or stray bits in its last character."
    )
