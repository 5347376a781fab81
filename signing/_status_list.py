"""Token Status List (draft-ietf-oauth-status-list): the list, its encoding, the signed token.

A Status List is a byte array holding one status of ``bits`` bits per
Referenced Token (§4.1): the status of index ``i`` lives in byte
``i * bits // 8``, starting at bit ``i * bits % 8`` counted from the least
significant bit. The array is compressed with DEFLATE in the ZLIB format
(RFC 1951, RFC 1950) at the highest level and travels base64url-encoded
without padding as ``lst`` (§4.2). Yinxin uses ``bits = 2``: 0 VALID,
1 INVALID (revoked), 2 SUSPENDED (§7.1).

The Status List Token (§5.1) is a JWS compact serialisation signed through
``KeyBackend.sign`` like a licence token, with the protected header exactly
``{"alg", "kid", "typ": "statuslist+jwt"}`` and the claims ``sub`` (the list's
URI), ``iat``, ``exp``, ``ttl`` and ``status_list: {bits, lst}``.

:func:`verify_status_list_token` is for offline verifiers: the key is found by
``kid`` in a trust store holding status-list keys only, and the algorithm is the
one bound to that key (RFC 8725 §3.1). It refuses tokens over 1 MiB before any
decoding, and lists that inflate beyond the size the caller expects (a
decompression bomb), raising :class:`StatusListRejected`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any, ClassVar, Final

import orjson

from hsm import KeyBackend, KeyRef
from schemas.errors import InputTooLarge, InvalidInput

from ._jws import (
    ALGORITHM_MISMATCH,
    CLAIMS_INVALID,
    CRIT_UNSUPPORTED,
    EXPIRED,
    FORBIDDEN_HEADER,
    KID_RE,
    MALFORMED,
    SIGNATURE_INVALID,
    SUPPORTED_ALGORITHMS,
    TOO_LARGE,
    TYP_INVALID,
    UNKNOWN_KEY,
    UNSUPPORTED_ALGORITHM,
    Rejected,
    b64url_decode,
    b64url_encode,
    parse_json_object,
    same_media_type,
    shown,
    sign_compact,
)
from ._signature import verify_signature
from ._trust import TrustStore

__all__ = [
    "MAX_STATUS_LIST_BYTES",
    "MAX_STATUS_LIST_TOKEN_BYTES",
    "STATUS_LIST_MEDIA_TYPE",
    "STATUS_LIST_TYP",
    "StatusList",
    "StatusListRejected",
    "StatusType",
    "decode_status_list",
    "encode_status_list",
    "pack_statuses",
    "sign_status_list_token",
    "status_at",
    "verify_status_list_token",
]

STATUS_LIST_TYP: Final = "statuslist+jwt"  # §5.1
STATUS_LIST_MEDIA_TYPE: Final = "application/statuslist+jwt"  # §8.2, §14.6
# Hard limit on a token before any decoding (our lists of 131 072 entries are a few hundred bytes).
MAX_STATUS_LIST_TOKEN_BYTES: Final = 1 << 20
# Default limit on the inflated list when the caller does not say what it expects: 4 MiB,
# 16 777 216 entries of 2 bits (the draft's largest examples are 2**20 entries).
MAX_STATUS_LIST_BYTES: Final = 1 << 22
_ALLOWED_BITS: Final = (1, 2, 4, 8)  # §4.1 step 1
_MAX_NUMERIC_DATE: Final = 253402300799  # RFC 7519 §2, up to 9999-12-31


class StatusType(IntEnum):
    """Status Type values (§7.1); 3 is application-specific and unused by Yinxin."""

    VALID = 0x00
    INVALID = 0x01  # revoked: irreversible
    SUSPENDED = 0x02  # reversible


class StatusListRejected(InvalidInput):
    """A Status List Token did not verify; ``reason_code`` is one of ``signing.VERDICT_CODES``."""

    code: ClassVar[str] = "status_list_invalid"

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


# --- the list ------------------------------------------------------------------


def _check_bits(bits: object) -> int:
    if type(bits) is not int or bits not in _ALLOWED_BITS:
        raise InvalidInput(f"bits must be 1, 2, 4 or 8 (draft-ietf-oauth-status-list §4.1), not {bits!r}")
    return bits


def pack_statuses(
    size: int, statuses: Mapping[int, int] | Iterable[tuple[int, int]], *, bits: int = 2
) -> bytes:
    """The byte array of *size* entries, all VALID except the ``(index, status)`` pairs given (§4.1)."""
    bits = _check_bits(bits)
    if type(size) is not int or size <= 0 or (size * bits) % 8:
        raise InvalidInput(
            f"a status list of {bits}-bit entries needs a size that fills whole bytes, not {size!r}"
        )
    packed = bytearray(size * bits // 8)
    mask = (1 << bits) - 1
    pairs = statuses.items() if isinstance(statuses, Mapping) else statuses
    for index, status in pairs:
        if not 0 <= index < size:
            raise InvalidInput(f"status index {index} is outside the list (0-{size - 1})")
        if not 0 <= status <= mask:
            raise InvalidInput(f"status {status} does not fit in {bits} bits")
        position = index * bits
        shift = position % 8
        packed[position // 8] = (packed[position // 8] & ~(mask << shift)) | (status << shift)
    return bytes(packed)


def encode_status_list(packed: bytes) -> str:
    """``lst``: ZLIB (RFC 1950) at the best compression level, base64url without padding (§4.2)."""
    return b64url_encode(zlib.compress(packed, level=9))


def decode_status_list(lst: str, bits: int, *, max_bytes: int = MAX_STATUS_LIST_BYTES) -> bytes:
    """The byte array in *lst*; raises ``InvalidInput`` (``InputTooLarge`` past *max_bytes*).

    Inflation stops one byte past *max_bytes*, so a small ``lst`` that would
    inflate to gigabytes costs no more than *max_bytes* of memory.
    """
    _check_bits(bits)
    if not isinstance(lst, str) or not lst.isascii():
        raise InvalidInput("lst is not a base64url string (draft-ietf-oauth-status-list §4.2)")
    compressed = b64url_decode(lst)
    if compressed is None:
        raise InvalidInput("lst is not canonical base64url without padding (RFC 7515 §2)")
    inflater = zlib.decompressobj(wbits=15)  # the ZLIB format only: no raw DEFLATE, no gzip
    try:
        packed = inflater.decompress(compressed, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidInput(f"lst is not ZLIB-compressed data (RFC 1950): {exc}") from None
    if len(packed) > max_bytes:
        raise InputTooLarge(f"the status list inflates to more than the {max_bytes} bytes expected; refused")
    if not inflater.eof or inflater.unused_data:
        raise InvalidInput("lst is truncated or has data after the end of its ZLIB stream")
    if not packed:
        raise InvalidInput("the status list is empty")
    return packed


def status_at(decoded: bytes, idx: int, bits: int) -> int:
    """The status of index *idx* in a decoded list (§4.1); ``InvalidInput`` if it is outside."""
    _check_bits(bits)
    if type(idx) is not int or not 0 <= idx < len(decoded) * 8 // bits:
        raise InvalidInput(f"index {idx!r} is outside the status list ({len(decoded) * 8 // bits} entries)")
    position = idx * bits
    return (decoded[position // 8] >> (position % 8)) & ((1 << bits) - 1)


@dataclass(frozen=True, slots=True)
class StatusList:
    """A verified Status List Token: the list and the claims a consumer acts on."""

    uri: str
    bits: int
    statuses: bytes
    issued_at: int
    expires_at: int | None
    ttl: int | None  # seconds a consumer may cache it (§5.1)
    kid: str

    @property
    def size(self) -> int:
        return len(self.statuses) * 8 // self.bits

    def status(self, idx: int) -> int:
        return status_at(self.statuses, idx, self.bits)


# --- the token -------------------------------------------------------------------


def sign_status_list_token(
    backend: KeyBackend,
    key: KeyRef,
    *,
    uri: str,
    statuses: bytes,
    issued_at: datetime,
    bits: int = 2,
    ttl: int = 300,
    valid_for: timedelta = timedelta(days=1),
) -> str:
    """Sign the list *statuses* (packed, see :func:`pack_statuses`) published at *uri*."""
    _check_bits(bits)
    if not isinstance(uri, str) or not uri:
        raise InvalidInput("a status list token needs its URI as sub (§5.1)")
    if type(ttl) is not int or ttl <= 0:
        raise InvalidInput(f"ttl must be a positive number of seconds (§5.1), not {ttl!r}")
    if issued_at.utcoffset() is None:
        raise InvalidInput("issued_at must be a timezone-aware datetime (use the injected clock)")
    iat = int(issued_at.timestamp())
    claims = {
        "sub": uri,
        "iat": iat,
        "exp": iat + int(valid_for.total_seconds()),
        "ttl": ttl,
        "status_list": {"bits": bits, "lst": encode_status_list(statuses)},
    }
    return sign_compact(
        backend,
        key,
        orjson.dumps(claims),
        typ=STATUS_LIST_TYP,
        max_bytes=MAX_STATUS_LIST_TOKEN_BYTES,
        what="status list token",
    )


def _is_numeric_date(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_NUMERIC_DATE


def _segments(token: str | bytes) -> tuple[str, str, str]:
    # Size before any decoding; then ASCII and exactly three segments (RFC 7515 §7.1).
    if not isinstance(token, str | bytes | bytearray):
        raise StatusListRejected(MALFORMED, f"A status list token is text, not {type(token).__name__}.")
    if len(token) > MAX_STATUS_LIST_TOKEN_BYTES:
        raise StatusListRejected(
            TOO_LARGE,
            f"The status list token is over {MAX_STATUS_LIST_TOKEN_BYTES} bytes, so it was not read.",
        )
    malformed = StatusListRejected(
        MALFORMED, "The status list token is not a JWS compact serialisation of three base64url parts."
    )
    try:
        text = token if isinstance(token, str) else bytes(token).decode("ascii")
    except UnicodeDecodeError:
        raise malformed from None
    parts = text.split(".")
    if not text.isascii() or len(parts) != 3:
        raise malformed
    return parts[0], parts[1], parts[2]


def _check_header(header: dict[str, Any]) -> tuple[str, str]:
    """``(alg, kid)`` of a status list token's protected header, or StatusListRejected."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        # Exact match (RFC 7515 §4.1.1): none, HS256 (a MAC, refused by §5.1) and the rest.
        raise StatusListRejected(
            UNSUPPORTED_ALGORITHM,
            f"The status list token uses algorithm {shown(alg)}; only ES256, EdDSA, PS256.",
        )
    if "crit" in header:
        raise StatusListRejected(
            CRIT_UNSUPPORTED, "The status list token marks extensions critical ('crit'); none are understood."
        )
    extra = sorted(name for name in header if name not in ("alg", "kid", "typ"))
    if extra:
        raise StatusListRejected(
            FORBIDDEN_HEADER,
            f"The status list token header carries {shown(extra)}; keys come from the trust list, never "
            "from the token (RFC 8725 §3.10).",
        )
    typ = header.get("typ")
    if not isinstance(typ, str) or not same_media_type(typ, STATUS_LIST_TYP):
        # §5.1: typ MUST be statuslist+jwt, so no other JWT passes for a status list (RFC 8725 §3.11).
        raise StatusListRejected(
            TYP_INVALID, f"The token has typ {shown(typ)} where 'statuslist+jwt' is required (§5.1)."
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or KID_RE.fullmatch(kid) is None:
        raise StatusListRejected(UNKNOWN_KEY, "The status list token has no usable key id (kid).")
    return alg, kid


def _read_claims(claims: dict[str, Any], expected_uri: str, now: datetime, leeway: int) -> tuple[int, int]:
    """Check the claims (§5.1, RFC 7519); returns ``(bits, iat)``."""
    if claims.get("sub") != expected_uri:
        raise StatusListRejected(
            CLAIMS_INVALID,
            f"The status list token is for {shown(claims.get('sub'), 80)}, not {expected_uri!r}: its sub "
            "must equal the uri in the licence's status claim (§5.1).",
        )
    iat = claims.get("iat")
    if not _is_numeric_date(iat):
        raise StatusListRejected(CLAIMS_INVALID, "The status list token has no 'iat' NumericDate (§5.1).")
    exp = claims.get("exp")
    if exp is not None and not _is_numeric_date(exp):
        raise StatusListRejected(CLAIMS_INVALID, "The status list token's 'exp' is not a NumericDate.")
    ttl = claims.get("ttl")
    if ttl is not None and (type(ttl) is not int or ttl <= 0):
        raise StatusListRejected(CLAIMS_INVALID, "The status list token's 'ttl' is not a positive number.")
    if exp is not None and now.timestamp() >= exp + leeway:
        raise StatusListRejected(EXPIRED, "The status list token has expired (exp); fetch a fresh one.")
    status_list = claims.get("status_list")
    if not isinstance(status_list, dict) or not isinstance(status_list.get("lst"), str):
        raise StatusListRejected(CLAIMS_INVALID, "The token has no 'status_list' object with 'lst' (§4.2).")
    bits = status_list.get("bits")
    if type(bits) is not int or bits not in _ALLOWED_BITS:
        raise StatusListRejected(
            CLAIMS_INVALID, f"The status list's bits is {shown(bits)}, not 1, 2, 4 or 8."
        )
    assert isinstance(iat, int)
    return bits, iat


def verify_status_list_token(
    token: str | bytes,
    trust: TrustStore,
    *,
    now: datetime,
    expected_uri: str,
    max_bytes: int = MAX_STATUS_LIST_BYTES,
    leeway: int = 0,
) -> StatusList:
    """Verify a Status List Token fetched from *expected_uri*; raises :class:`StatusListRejected`.

    *trust* must hold the status-list keys only (never licence keys: a department's key
    must not be able to speak for every department's licences). *max_bytes* is the
    inflated size the caller expects at most (131 072 two-bit entries: 32 768 bytes).
    """
    if now.utcoffset() is None:
        raise InvalidInput("now must be a timezone-aware datetime (use the injected clock)")
    encoded_header, encoded_payload, encoded_signature = _segments(token)
    raw_header = b64url_decode(encoded_header)
    if raw_header is None:
        raise StatusListRejected(MALFORMED, "The status list token's header is not canonical base64url.")
    alg, kid = _check_header(_parse(raw_header, "header"))
    key = trust.get(kid)
    if key is None:
        raise StatusListRejected(
            UNKNOWN_KEY, f"Key {kid!r} is not a trusted status-list key; refresh the JWKS."
        )
    if alg != key.algorithm.value:
        raise StatusListRejected(
            ALGORITHM_MISMATCH, f"The header says {alg} but key {kid!r} is bound to {key.algorithm.value}."
        )
    signature = b64url_decode(encoded_signature)
    payload = b64url_decode(encoded_payload)
    if signature is None or payload is None:
        raise StatusListRejected(MALFORMED, "The status list token's payload or signature is not base64url.")
    signing_input = f"{encoded_header}.{encoded_payload}".encode("ascii")
    if not verify_signature(key.algorithm, key.public_key, signing_input, signature):
        raise StatusListRejected(
            SIGNATURE_INVALID, f"The status list token's signature does not verify with {kid!r}."
        )
    claims = _parse(payload, "payload")  # only an authenticated payload is parsed
    bits, iat = _read_claims(claims, expected_uri, now, leeway)
    try:
        statuses = decode_status_list(claims["status_list"]["lst"], bits, max_bytes=max_bytes)
    except InputTooLarge as exc:
        raise StatusListRejected(TOO_LARGE, str(exc)) from None
    except InvalidInput as exc:
        raise StatusListRejected(MALFORMED, str(exc)) from None
    return StatusList(expected_uri, bits, statuses, iat, claims.get("exp"), claims.get("ttl"), kid)


def _parse(data: bytes, what: str) -> dict[str, Any]:
    try:
        return parse_json_object(data, what)
    except Rejected as exc:
        raise StatusListRejected(exc.code, exc.reason) from None
