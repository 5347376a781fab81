"""Strict pieces of JWS compact serialisation (RFC 7515 §7.1) for licence tokens.

Everything here is deliberately narrower than the RFCs allow, because a licence
token is only ever produced by :func:`signing.sign_licence_token`:

- base64url without padding, and only the canonical encoding (RFC 7515 §2,
  RFC 4648 §3.5: the unused low bits of the last character must be zero), so
  one token has exactly one spelling;
- JSON that is an object, UTF-8, with unique member names (RFC 7515 §4,
  RFC 7519 §4, RFC 7493 §2.3), no NaN/Infinity and no lone surrogates
  (RFC 7493 §2.1);
- a protected header holding ``alg``, ``kid`` and ``typ`` and nothing else.

The verifier reports a failed check by raising :class:`Rejected`, which
:func:`signing.verify_token` turns into a verdict; it never leaves the package.
"""

from __future__ import annotations

import binascii
import functools
import json
import re
from collections.abc import Sequence
from typing import Any, Final

import orjson
import pybase64

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from schemas.errors import BackendError, InputTooLarge, InvalidInput, UnsupportedAlgorithm

__all__ = [
    "ALGORITHM_MISMATCH",
    "ALLOWED_HEADER_PARAMETERS",
    "CLAIMS_INVALID",
    "CRIT_UNSUPPORTED",
    "EXPIRED",
    "FORBIDDEN_HEADER",
    "KID_RE",
    "MALFORMED",
    "MAX_TOKEN_BYTES",
    "NOT_YET_VALID",
    "SIGNATURE_INVALID",
    "SUPPORTED_ALGORITHMS",
    "TOKEN_TYP",
    "TOO_LARGE",
    "TYP_INVALID",
    "UNKNOWN_KEY",
    "UNSUPPORTED_ALGORITHM",
    "VERDICT_CODES",
    "Rejected",
    "b64url_decode",
    "b64url_encode",
    "check_header",
    "compact_signing_input",
    "compact_token",
    "encode_header",
    "parse_json_object",
    "same_media_type",
    "shown",
    "sign_compact",
]

# Shortest signature in base64url characters (64 bytes: ES256, EdDSA), for early size checks.
_MIN_SIGNATURE_CHARS: Final = 86
TOKEN_TYP: Final = "licence+jwt"  # noqa: S105 - a media type, not a password
# Hard limit on a token before any decoding: a licence token is a few hundred
# bytes (PS256 with RSA-3072 adds 512 characters of signature); QR codes hold
# at most ~3 KB, so 8 KiB leaves room and caps the work an attacker can cause.
MAX_TOKEN_BYTES: Final = 8192

# Verdict codes: stable, one per reason (see TokenVerdict).
TOO_LARGE: Final = "too_large"
MALFORMED: Final = "malformed"
UNSUPPORTED_ALGORITHM: Final = "unsupported_algorithm"
UNKNOWN_KEY: Final = "unknown_key"
ALGORITHM_MISMATCH: Final = "algorithm_mismatch"
FORBIDDEN_HEADER: Final = "forbidden_header"
CRIT_UNSUPPORTED: Final = "crit_unsupported"
TYP_INVALID: Final = "typ_invalid"
SIGNATURE_INVALID: Final = "signature_invalid"
EXPIRED: Final = "expired"
NOT_YET_VALID: Final = "not_yet_valid"
CLAIMS_INVALID: Final = "claims_invalid"
VERDICT_CODES: Final = frozenset(
    {
        TOO_LARGE,
        MALFORMED,
        UNSUPPORTED_ALGORITHM,
        UNKNOWN_KEY,
        ALGORITHM_MISMATCH,
        FORBIDDEN_HEADER,
        CRIT_UNSUPPORTED,
        TYP_INVALID,
        SIGNATURE_INVALID,
        EXPIRED,
        NOT_YET_VALID,
        CLAIMS_INVALID,
    }
)

# The algorithms this package implements. Written out rather than derived from
# SignatureAlgorithm so that adding a member there (SM2 is planned) never makes
# the verifier accept a header it has no code for.
SUPPORTED_ALGORITHMS: Final = frozenset({"ES256", "EdDSA", "PS256"})

# Only these header parameters may appear. Keys come from the trust list, never
# from the token (jwk, jku, x5u, x5c, x5t: RFC 8725 §3.10); b64 (RFC 7797),
# zip and cty (nested tokens, RFC 7519 §5.2) change how the payload is read.
ALLOWED_HEADER_PARAMETERS: Final = frozenset({"alg", "kid", "typ"})

# A kid (RFC 7515 §4.1.4) we are prepared to look up or print: 1-128 visible
# ASCII characters. Our own kids are narrower still (hsm.validate_label).
KID_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")


class Rejected(Exception):
    """A check failed: *code* is a verdict code, *reason* a sentence for a person."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def shown(value: object, limit: int = 40) -> str:
    """A short, one-line, ASCII rendering of untrusted *value* for a reason."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- base64url (RFC 7515 §2, RFC 4648 §5) -------------------------------------

_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# With 2 characters left over the last one carries 4 unused bits, with 3 it
# carries 2 (RFC 4648 §3.5): only characters whose unused bits are zero are
# canonical. Accepting the others would give one token several spellings.
_LAST_OF_2: Final = frozenset(_ALPHABET[0::16])
_LAST_OF_3: Final = frozenset(_ALPHABET[0::4])
_PADDING: Final = ("", "", "==", "=")


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return pybase64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes | None:
    """Decode canonical unpadded base64url; None if *segment* is anything else."""
    # '+', '/' and '=' are base64 (RFC 4648 §4), not unpadded base64url; the
    # strict decoder below refuses every other character outside the alphabet.
    if "=" in segment or "+" in segment or "/" in segment:
        return None
    rest = len(segment) % 4
    if rest == 1:
        return None
    if rest == 2 and segment[-1] not in _LAST_OF_2:
        return None
    if rest == 3 and segment[-1] not in _LAST_OF_3:
        return None
    try:
        # pybase64 (SIMD) decodes a 1.3 KB payload in under 1 µs, against about 4.5 µs for
        # translate + binascii; validate=True refuses any character outside the alphabet. It
        # takes the ASCII str as it is (a non-ASCII one raises ValueError), saving a copy.
        # Positional arguments (altchars, validate): keyword parsing costs 0.2 µs a call.
        return pybase64.b64decode(segment + _PADDING[rest], b"-_", True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


# --- JSON (RFC 8259, RFC 7493) ------------------------------------------------


class _DuplicateMember(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §4 and RFC 7519 §4: names MUST be unique; a parser must reject
    # duplicates or keep only the last. We reject: two verifiers keeping
    # different duplicates would disagree about the same token.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateMember(name)
            seen.add(name)
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant
)


def _loads(text: str) -> Any:
    # raw_decode skips the two whitespace scans of decode(); our tokens have no
    # surrounding whitespace, and any other text takes the full path, which
    # allows it (RFC 8259 §2) or raises.
    try:
        value, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return _DECODER.decode(text)
    return value if end == len(text) else _DECODER.decode(text)


def _has_lone_surrogate(value: Any) -> bool:
    # json accepts "\ud800" escapes and returns a str that is not Unicode text;
    # I-JSON (RFC 7493 §2.1) forbids them. Iterative, so depth costs no stack.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse *data* as a UTF-8 JSON object with unique names, or raise Rejected.

    The fast path: orjson accepts only strict RFC 8259 UTF-8 JSON (no NaN, no lone
    surrogates) but keeps the last of duplicate names. When *data* is exactly its own compact
    serialisation, as our signer writes it, re-serialising and comparing byte for byte rules
    duplicates out (one would be dropped and the bytes would differ): about 2 µs for a
    licence's claims against 7 µs. Anything else takes the strict path, which gives the
    precise reason.
    """
    try:
        value = orjson.loads(data)
        if type(value) is dict and orjson.dumps(value) == data:
            return value
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, TypeError):
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(
            MALFORMED, f"The token's {what} is not UTF-8 text (RFC 8259 §8.1), so it cannot be read."
        ) from None
    try:
        value = _loads(text)
    except _DuplicateMember as exc:
        raise Rejected(
            MALFORMED,
            f"The token's {what} names the member {shown(exc.name)} twice; JSON member names must be "
            "unique (RFC 7515 §4, RFC 7519 §4), so the token was altered or badly made.",
        ) from None
    except (ValueError, RecursionError):
        raise Rejected(
            MALFORMED, f"The token's {what} is not valid JSON, so it is not a licence token."
        ) from None
    if not isinstance(value, dict):
        raise Rejected(
            MALFORMED,
            f"The token's {what} is JSON but not a JSON object (RFC 7515 §4, RFC 7519 §7.2), "
            "so it is not a licence token.",
        )
    if "\\u" in text and _has_lone_surrogate(value):
        raise Rejected(
            MALFORMED,
            f"The token's {what} escapes an unpaired UTF-16 surrogate, which is not text (RFC 7493 §2.1).",
        )
    return value


# --- the protected header -----------------------------------------------------


def same_media_type(typ: str, expected: str) -> bool:
    """Compare ``typ`` values as RFC 7515 §4.1.9 says: case-insensitively, with
    ``application/`` implied when the value has no ``/``."""
    return _full_media_type(typ) == _full_media_type(expected)


def _full_media_type(value: str) -> str:
    value = value.lower()
    return value if "/" in value else "application/" + value


@functools.lru_cache(maxsize=1024)
def encode_header(kid: str, alg: str, typ: str = TOKEN_TYP) -> str:
    """The base64url protected header ``{"alg", "kid", "typ"}`` of every token *kid* signs.

    Cached: bulk issuance signs thousands of tokens per key, and the header
    never changes for a key. One member order, one spelling.
    """
    if alg not in SUPPORTED_ALGORITHMS:
        raise UnsupportedAlgorithm(f"algorithm {alg!r} cannot sign tokens: use one of ES256, EdDSA, PS256")
    if not isinstance(kid, str) or KID_RE.fullmatch(kid) is None:
        raise InvalidInput(
            f"key id {shown(kid)} cannot go in a token header: use 1-128 visible ASCII characters"
        )
    header = {"alg": alg, "kid": kid, "typ": typ}
    return b64url_encode(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def sign_compact(
    backend: KeyBackend, key: KeyRef, payload: bytes, *, typ: str, max_bytes: int, what: str, hint: str = ""
) -> str:
    """JWS compact serialisation (RFC 7515 §7.1) of *payload*, signed in the key backend.

    Every token Yinxin makes goes through here or :func:`compact_signing_input` and
    :func:`compact_token` (the two halves, for batches): licence tokens, QR presentation
    tokens, access tokens and status lists. Too-large tokens are refused before the
    (possibly HSM) signature when the payload alone cannot fit.
    """
    signing_input = compact_signing_input(key, payload, typ=typ, max_bytes=max_bytes, what=what, hint=hint)
    signature = backend.sign(key, signing_input.encode("ascii"))
    return compact_token(key, signing_input, signature, max_bytes=max_bytes, what=what, hint=hint)


def sign_compact_many(
    backend: KeyBackend,
    batch: Sequence[tuple[KeyRef, bytes]],
    *,
    typ: str,
    max_bytes: int,
    what: str,
    hint: str = "",
) -> list[str]:
    """:func:`sign_compact` for each ``(key, payload)`` of *batch*, in order.

    All or nothing: a payload too large raises before anything is signed. Each key's signatures
    are asked for in one ``KeyBackend.sign_many`` call, which may sign on several threads.
    """
    limits: dict[str, Any] = {"max_bytes": max_bytes, "what": what, "hint": hint}
    inputs = [compact_signing_input(key, payload, typ=typ, **limits) for key, payload in batch]
    by_key: dict[KeyRef, list[int]] = {}
    for index, (key, _) in enumerate(batch):
        by_key.setdefault(key, []).append(index)
    signatures: list[bytes] = [b""] * len(batch)
    for key, indices in by_key.items():
        made = backend.sign_many(key, [inputs[i].encode("ascii") for i in indices])
        if len(made) != len(indices):
            raise BackendError(f"the key backend returned {len(made)} signatures for {len(indices)} inputs")
        for index, signature in zip(indices, made, strict=True):
            signatures[index] = signature
    return [
        compact_token(key, inputs[index], signatures[index], **limits) for index, (key, _) in enumerate(batch)
    ]


def compact_signing_input(
    key: KeyRef, payload: bytes, *, typ: str, max_bytes: int, what: str, hint: str = ""
) -> str:
    """``BASE64URL(header) '.' BASE64URL(payload)``; InputTooLarge when no signature could fit."""
    signing_input = encode_header(key.kid, key.algorithm.value, typ) + "." + b64url_encode(payload)
    if len(signing_input) + 1 + _MIN_SIGNATURE_CHARS > max_bytes:
        raise InputTooLarge(
            f"the {what} would be over {max_bytes} bytes ({len(payload)} bytes of payload)"
            + (f": {hint}" if hint else "")
        )
    return signing_input


def compact_token(
    key: KeyRef, signing_input: str, signature: bytes, *, max_bytes: int, what: str, hint: str = ""
) -> str:
    """The token from its signing input and the backend's signature, checked for form and size."""
    if key.algorithm is not SignatureAlgorithm.PS256 and len(signature) != 64:
        # RFC 7518 §3.4 / RFC 8037 §3.1: 64 bytes; a DER ECDSA signature here would make
        # tokens no JOSE library accepts.
        raise BackendError(
            f"the key backend returned a {len(signature)}-byte {key.algorithm.value} signature; "
            "JWS needs 64 bytes"
        )
    token = signing_input + "." + b64url_encode(signature)
    if len(token) > max_bytes:
        raise InputTooLarge(
            f"the {what} would be {len(token)} bytes, over the {max_bytes}-byte limit"
            + (f": {hint}" if hint else "")
        )
    return token


def check_header(header: dict[str, Any], expected_typ: str | None) -> tuple[str, str]:
    """Check a decoded protected header; return its ``(alg, kid)`` or raise Rejected.

    Order: algorithm, critical extensions, forbidden parameters, type, key id.
    The key lookup and the algorithm binding are the caller's (they need the
    trust store).
    """
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise Rejected(
            MALFORMED,
            "The token header has no 'alg' string (RFC 7515 §4.1.1), so it is not a licence token.",
        )
    if alg not in SUPPORTED_ALGORITHMS:
        # Exact, case-sensitive match (RFC 7515 §4.1.1): "none", "NONE", HS256,
        # RS256, ES512 ... are all refused before any key is looked at.
        raise Rejected(
            UNSUPPORTED_ALGORITHM,
            f"The token says it uses algorithm {shown(alg)}, which licence tokens never use: "
            "only ES256, EdDSA and PS256 are accepted.",
        )
    if "crit" in header:
        raise Rejected(
            CRIT_UNSUPPORTED,
            "The token header marks extensions as critical ('crit') and this verifier understands none, "
            "so it must reject the token (RFC 7515 §4.1.11).",
        )
    extra = sorted(name for name in header if name not in ALLOWED_HEADER_PARAMETERS)
    if extra:
        names = ", ".join(shown(name, 24) for name in extra[:5])
        raise Rejected(
            FORBIDDEN_HEADER,
            f"The token header carries {names}, which licence tokens never use: only alg, kid and typ "
            "are allowed, and keys come from the trust list, never from the token (RFC 8725 §3.10).",
        )
    if expected_typ is not None:
        typ = header.get("typ")
        if not isinstance(typ, str) or not same_media_type(typ, expected_typ):
            found = "no 'typ'" if typ is None else f"typ {shown(typ)}"
            raise Rejected(
                TYP_INVALID,
                f"The token has {found} where {expected_typ!r} is required, so it is some other kind of "
                "JWT and must not be taken for a licence (RFC 8725 §3.11).",
            )
    kid = header.get("kid")
    if not isinstance(kid, str) or KID_RE.fullmatch(kid) is None:
        raise Rejected(
            UNKNOWN_KEY,
            "The token's key id (kid) is missing or is not a short printable name, so no trusted key can "
            "match it (RFC 7515 §4.1.4).",
        )
    return alg, kid
