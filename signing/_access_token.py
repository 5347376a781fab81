"""OAuth 2.0 access tokens: JWTs in the RFC 9068 profile, signed through the key backend.

The token endpoint (RFC 6749 §4.4) hands clients a JWS compact serialisation
(RFC 7515 §7.1) whose protected header is exactly ``{"alg", "kid", "typ":
"at+jwt"}`` (RFC 9068 §2.1) and whose claims are those of RFC 9068 §2.2 plus
our ``dept``::

    {"iss": "yinxin", "sub": CLIENT_ID, "client_id": CLIENT_ID, "aud": "yinxin-api",
     "iat": ..., "exp": ..., "jti": RANDOM, "scope": "licence:read licence:verify",
     "dept": ISSUING_OR_VERIFYING_DEPARTMENT_USCC}

Verification (RFC 9068 §4) follows the licence verifier's rules: hard size
limit before any decoding, strict base64url and JSON, no header parameter
beyond ``alg``/``kid``/``typ``, the key found by ``kid`` in a trust store that
holds only service-token keys, and the algorithm bound to that key — never the
one the header claims (RFC 8725 §3.1). Unlike a licence verdict, an access
token is either good or refused: every failure raises :class:`InvalidAccessToken`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Final

import orjson

from hsm import KeyBackend, KeyRef
from schemas.errors import InvalidInput, YinxinError

from ._jws import (
    UNKNOWN_KEY,
    Rejected,
    b64url_decode,
    check_header,
    parse_json_object,
    shown,
    sign_compact,
)
from ._trust import TrustStore

__all__ = [
    "ACCESS_TOKEN_AUDIENCE",
    "ACCESS_TOKEN_ISSUER",
    "ACCESS_TOKEN_TYP",
    "MAX_ACCESS_TOKEN_BYTES",
    "InvalidAccessToken",
    "check_access_token_times",
    "new_token_id",
    "sign_access_token",
    "verify_access_token",
]

ACCESS_TOKEN_TYP: Final = "at+jwt"  # noqa: S105 - a media type (RFC 9068 §2.1), not a password
ACCESS_TOKEN_ISSUER: Final = "yinxin"  # noqa: S105 - the iss claim (RFC 9068 §2.2)
ACCESS_TOKEN_AUDIENCE: Final = "yinxin-api"  # noqa: S105 - the aud claim (RFC 9068 §2.2)
# An access token is a few hundred bytes (PS256 adds 512 characters of signature); it travels in
# every request's Authorization header, so anything over 4 KiB is refused before decoding.
MAX_ACCESS_TOKEN_BYTES: Final = 4096

_REQUIRED_STRINGS: Final = ("iss", "sub", "client_id", "jti", "scope", "dept")
_REQUIRED_TIMES: Final = ("iat", "exp")
_MAX_NUMERIC_DATE: Final = 253402300799  # 9999-12-31T23:59:59Z (RFC 7519 §2 NumericDate)


class InvalidAccessToken(YinxinError):
    """The bearer token is missing, malformed, expired, not ours or not for this audience.

    ``details["reason"]`` is a stable code (``malformed``, ``unknown_key``, ``expired`` …);
    the message says what is wrong in one sentence. Neither ever carries the token.
    """

    code: ClassVar[str] = "invalid_token"
    http_status: ClassVar[int] = 401
    exit_code: ClassVar[int] = 1


_REASONS: Final = {
    "malformed": "the access token is not a well-formed JWS (RFC 7515 §7.1)",
    "unsupported_algorithm": "the access token names an algorithm Yinxin never signs with",
    "crit_unsupported": "the access token header carries parameters access tokens never use",
    "forbidden_header": "the access token header carries parameters access tokens never use",
    "typ_invalid": "the token is not an access token: its typ must be at+jwt (RFC 9068 §4)",
}


def _invalid(reason: str, message: str, **details: Any) -> InvalidAccessToken:
    return InvalidAccessToken(message, reason=reason, **details)


def new_token_id() -> str:
    """A random ``jti`` (RFC 7519 §4.1.7): 128 bits, base64url."""
    return secrets.token_urlsafe(16)


def _is_numeric_date(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_NUMERIC_DATE


def _claims_problem(claims: Mapping[str, Any]) -> str | None:
    """Why *claims* is not an access-token claims set (None when it is)."""
    for name in _REQUIRED_STRINGS:
        value = claims.get(name)
        if not isinstance(value, str) or not value:
            return f"the access token has no {name!r} claim as a non-empty string (RFC 9068 §2.2)"
    aud = claims.get("aud")
    if not (isinstance(aud, str) and aud) and not (
        isinstance(aud, list) and aud and all(isinstance(a, str) and a for a in aud)
    ):
        return "the access token has no 'aud' claim (RFC 9068 §2.2)"
    for name in (*_REQUIRED_TIMES, *(["nbf"] if "nbf" in claims else [])):
        if not _is_numeric_date(claims.get(name)):
            return f"the access token's {name!r} claim is not a NumericDate in whole seconds (RFC 7519 §2)"
    if claims["sub"] != claims["client_id"]:
        # RFC 9068 §2.2: with no resource owner (client credentials), sub is the client's id.
        return "the access token's 'sub' and 'client_id' differ"
    if claims["exp"] <= claims["iat"]:
        return "the access token expires before it was issued"
    return None


def sign_access_token(backend: KeyBackend, key: KeyRef, claims: Mapping[str, Any]) -> str:
    """Sign *claims* with service key *key* in *backend*; return the JWS compact token.

    Raises ``InvalidInput`` for claims :func:`verify_access_token` would refuse, and whatever
    the backend raises (``KeyNotFound``, ``BackendError``).
    """
    if not isinstance(claims, Mapping):
        raise InvalidInput(f"access-token claims are a mapping, not {type(claims).__name__}")
    problem = _claims_problem(claims)
    if problem is not None:
        raise InvalidInput(problem)
    try:
        payload = orjson.dumps(dict(claims))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"the access-token claims are not JSON: {exc}") from exc
    return sign_compact(
        backend, key, payload, typ=ACCESS_TOKEN_TYP, max_bytes=MAX_ACCESS_TOKEN_BYTES, what="access token"
    )


def _split(token: str | bytes) -> tuple[str, str, str, str]:
    """Size, ASCII and the three segments, before any decoding (RFC 7515 §7.1)."""
    if isinstance(token, bytes | bytearray):
        if len(token) > MAX_ACCESS_TOKEN_BYTES:
            raise _invalid("too_large", f"the access token is over {MAX_ACCESS_TOKEN_BYTES} bytes")
        try:
            text = bytes(token).decode("ascii")
        except UnicodeDecodeError:
            raise _invalid("malformed", "the access token is not ASCII") from None
    elif isinstance(token, str):
        if len(token) > MAX_ACCESS_TOKEN_BYTES:
            raise _invalid("too_large", f"the access token is over {MAX_ACCESS_TOKEN_BYTES} bytes")
        if not token.isascii():
            raise _invalid("malformed", "the access token is not ASCII")
        text = token
    else:
        raise _invalid("malformed", f"an access token is text, not {type(token).__name__}")
    parts = text.split(".")
    if len(parts) != 3:
        raise _invalid("malformed", "the access token is not a signed JWT (header.payload.signature)")
    return text, parts[0], parts[1], parts[2]


def _audience_matches(aud: object, audience: str) -> bool:
    return aud == audience or (isinstance(aud, list) and audience in aud)


def verify_access_token(
    token: str | bytes,
    trust: TrustStore,
    *,
    now: datetime,
    audience: str = ACCESS_TOKEN_AUDIENCE,
    issuer: str = ACCESS_TOKEN_ISSUER,
    leeway: int = 0,
) -> dict[str, Any]:
    """Verify an access token against *trust* (service-token keys only); return its claims.

    Raises :class:`InvalidAccessToken` for every problem with the token, and ``InvalidInput``
    only for a caller's mistake (a naive *now*, a negative *leeway*).
    """
    if now.utcoffset() is None:
        raise InvalidInput("now must be a timezone-aware datetime (use the injected clock)")
    if type(leeway) is not int or leeway < 0:
        raise InvalidInput(f"leeway must be a whole number of seconds >= 0, not {leeway!r}")
    text, encoded_header, encoded_payload, encoded_signature = _split(token)
    kid: str | None = None
    try:
        raw_header = b64url_decode(encoded_header)
        if raw_header is None:
            raise Rejected("malformed", "the access token's header is not canonical base64url")
        # RFC 9068 §4: typ must be at+jwt (application/at+jwt); alg one we implement; no crit,
        # no jwk/jku/x5c (keys come from the trust store, RFC 8725 §3.10).
        alg, kid = check_header(parse_json_object(raw_header, "header"), ACCESS_TOKEN_TYP)
        entry = trust._by_kid.get(kid)
        if entry is None:
            raise Rejected(UNKNOWN_KEY, f"the access token was signed by key {shown(kid)}, which is not ours")
        if alg != entry.alg:
            raise Rejected(
                "algorithm_mismatch",
                f"the access token says {alg} but key {shown(kid)} is bound to {entry.alg}",
            )
        signature = b64url_decode(encoded_signature)
        payload = b64url_decode(encoded_payload)
        if signature is None or payload is None:
            raise Rejected("malformed", "the access token is not canonical base64url")
        if not entry.check(text.rpartition(".")[0].encode("ascii"), signature):
            raise Rejected("signature_invalid", "the access token's signature does not verify")
        claims = parse_json_object(payload, "payload")
    except Rejected as exc:
        # The shared header checks word their reasons for licence tokens: say it for access tokens.
        raise _invalid(exc.code, _REASONS.get(exc.code, exc.reason.rstrip(".")), kid=kid) from None

    problem = _claims_problem(claims)
    if problem is not None:
        raise _invalid("claims_invalid", problem)
    if claims["iss"] != issuer:
        raise _invalid("wrong_issuer", f"the access token was not issued by {issuer!r}")
    if not _audience_matches(claims["aud"], audience):
        raise _invalid("wrong_audience", f"the access token is not meant for {audience!r}")
    check_access_token_times(claims, now=now, leeway=leeway)
    return claims


def check_access_token_times(claims: Mapping[str, Any], *, now: datetime, leeway: int = 0) -> None:
    """Raise :class:`InvalidAccessToken` unless *now* is within the token's ``iat``/``nbf``/``exp``.

    The last step of :func:`verify_access_token`, the only one whose answer changes with time: a
    caller that keeps the claims of a token verified earlier (``verify_api.auth``) runs it again
    on each use. *claims* must come from :func:`verify_access_token`.
    """
    instant = now.timestamp()
    if instant >= claims["exp"] + leeway:
        raise _invalid("expired", "the access token has expired: request a new one")
    if "nbf" in claims and instant < claims["nbf"] - leeway:
        raise _invalid("not_yet_valid", "the access token is not valid yet")
    if claims["iat"] > instant + leeway:
        raise _invalid("not_yet_valid", "the access token was issued in the future: check the clocks")
