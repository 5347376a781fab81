"""Signed records: small JSON statements the service signs about itself.

Audit checkpoints (``audit-checkpoint+jwt``: the audit chain's sequence, head
hash and time) and key-generation records (``key-ceremony+jwt``) are compact
JWS (RFC 7515 §7.1) with the header ``{"alg", "kid", "typ"}``, signed through
the key backend like every other token. Anyone holding the audit key's public
JWK can check them with a standard JOSE library; :func:`verify_record` is ours,
with the algorithm bound to the key (RFC 8725 §3.1), never read from the header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from hsm import KeyBackend, KeyRef
from schemas.errors import InvalidInput

from ._jws import Rejected, b64url_decode, check_header, parse_json_object, sign_compact
from ._signature import verify_signature
from ._trust import TrustedKey

__all__ = [
    "CEREMONY_TYP",
    "CHECKPOINT_TYP",
    "MAX_RECORD_BYTES",
    "RecordRejected",
    "record_kid",
    "sign_record",
    "verify_record",
]

CHECKPOINT_TYP = "audit-checkpoint+jwt"
CEREMONY_TYP = "key-ceremony+jwt"
MAX_RECORD_BYTES = 16 * 1024


class RecordRejected(InvalidInput):
    """A signed record that does not verify: the message says why."""

    code = "record_rejected"


def sign_record(backend: KeyBackend, key: KeyRef, record: Mapping[str, Any], *, typ: str) -> str:
    """Sign *record* (a JSON object; sorted keys, no whitespace) as a compact JWS of type *typ*."""
    payload = orjson.dumps(dict(record), option=orjson.OPT_SORT_KEYS)
    return sign_compact(backend, key, payload, typ=typ, max_bytes=MAX_RECORD_BYTES, what=typ)


def _segments(token: str) -> tuple[str, str, str]:
    if not isinstance(token, str) or len(token) > MAX_RECORD_BYTES:
        raise RecordRejected(f"a signed record is a compact JWS string of at most {MAX_RECORD_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise RecordRejected("a signed record has three dot-separated parts (JWS compact serialisation)")
    return parts[0], parts[1], parts[2]


def record_kid(token: str) -> str:
    """The ``kid`` a record names (unverified: only to find the key that must verify it)."""
    header_b64, _, _ = _segments(token)
    raw = b64url_decode(header_b64)
    if raw is None:
        raise RecordRejected("the record's header is not base64url")
    try:
        header = parse_json_object(raw, "header")
    except Rejected as exc:
        raise RecordRejected(exc.reason) from None
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise RecordRejected("the record's header names no key ('kid')")
    return kid


def verify_record(token: str, key: TrustedKey, *, typ: str) -> dict[str, Any]:
    """The record's payload if *token* is a *typ* record signed by *key*; else ``RecordRejected``."""
    header_b64, payload_b64, signature_b64 = _segments(token)
    raw_header = b64url_decode(header_b64)
    payload = b64url_decode(payload_b64)
    signature = b64url_decode(signature_b64)
    if raw_header is None or payload is None or signature is None:
        raise RecordRejected("a part of the record is not canonical base64url")
    try:
        header = parse_json_object(raw_header, "header")
        alg, kid = check_header(header, typ)
    except Rejected as exc:
        raise RecordRejected(exc.reason) from None
    if kid != key.kid:
        raise RecordRejected(f"the record names key {kid!r}, not {key.kid!r}")
    if alg != key.algorithm.value:
        raise RecordRejected(f"the record says {alg}, but key {key.kid} is bound to {key.algorithm.value}")
    signing_input = (header_b64 + "." + payload_b64).encode("ascii")
    if not verify_signature(key.algorithm, key.public_key, signing_input, signature):
        raise RecordRejected(f"the record's signature does not verify under key {key.kid}")
    try:
        return parse_json_object(payload, "payload")
    except Rejected as exc:
        raise RecordRejected(exc.reason) from None
