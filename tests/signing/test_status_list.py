"""Token Status List encoding and tokens (draft-ietf-oauth-status-list).

The encoding is checked against the draft's own worked examples (§4.1 with
1 bit, the 2-bit example, and the 2**20-entry test vectors of the appendix),
byte for byte and ``lst`` for ``lst``. Tokens we sign are verified by our
verifier and independently by joserfc; the verifier's refusals each get a test.
"""

from __future__ import annotations

import json
import warnings
import zlib
from datetime import timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet

from hsm import KeyBackend, SignatureAlgorithm
from schemas.errors import InputTooLarge, InvalidInput
from signing import VERDICT_CODES, TrustedKey, TrustStore, jwks_document, sign_licence_token
from signing._status_list import (
    MAX_STATUS_LIST_TOKEN_BYTES,
    STATUS_LIST_TYP,
    StatusListRejected,
    StatusType,
    decode_status_list,
    encode_status_list,
    pack_statuses,
    sign_status_list_token,
    status_at,
    verify_status_list_token,
)
from tests.signing._support import ALGORITHMS, NOW, NOW_TS, Forge, b64, licence_claims, unb64

URI = "https://yinxin.example.gov.cn/v1/status-lists/1"

# §4.1: 16 entries of 1 bit → 0xB9 0xA3.
ONE_BIT = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
ONE_BIT_LST = "eNrbuRgAAhcBXQ"
# The 2-bit example: 12 entries → 0xC9 0x44 0xF9.
TWO_BITS = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]
TWO_BITS_LST = "eNo76fITAAPfAgc"

# Appendix "Test vectors for Status List encoding": 2**20 entries, all 0 but these.
LONG_INDICES = (0, 1993, 25460, 159495, 495669, 554353, 645645, 723232, 854545, 934534, 1000345)
LONG_VECTORS = {
    1: (
        dict.fromkeys(LONG_INDICES, 1),
        # examples/status_list_encoding1_long_json, its line breaks kept
        "eNrt3AENwCAMAEGogklACtKQPg9LugC9k_ACvreiogE"
        "AAKkeCQAAAAAAAAAAAAAAAAAAAIBylgQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAXG9IAAAAAAAAAPwsJAAAAAAAAAAAAAAAvhsSAAAAAAAAAAA"
        "A7KpLAAAAAAAAAAAAAAAAAAAAAJsLCQAAAAAAAAAAADjelAAAAAAAAAAAKjDMAQAAA"
        "ACAZC8L2AEb",
    ),
    2: (
        dict(zip(LONG_INDICES, (1, 2, 1, 3, 1, 1, 2, 1, 1, 2, 3), strict=True)),
        # examples/status_list_encoding2_long_json, its line breaks kept
        "eNrt2zENACEQAEEuoaBABP5VIO01fCjIHTMStt9ovGV"
        "IAAAAAABAbiEBAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEB5WwIAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAID0ugQAAAAAAAAAAAAAAAAAQG12SgAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAOCSIQEAAAAAAAAAAAAAAAAAAAAAAAD8ExIAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAwJEuAQAAAAAAAAAAAAAAAAAAAAAAAMB9S"
        "wIAAAAAAAAAAAAAAAAAAACoYUoAAAAAAAAAAAAAAEBqH81gAQw",
    ),
}


def sign(
    forge: Forge, statuses: bytes, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256, **kw: Any
) -> str:
    return sign_status_list_token(
        forge.backend, forge.key(algorithm), uri=URI, statuses=statuses, issued_at=NOW, **kw
    )


def refusal(token: str | bytes, trust: TrustStore, **kwargs: Any) -> str:
    with pytest.raises(StatusListRejected) as caught:
        verify_status_list_token(token, trust, now=kwargs.pop("now", NOW), expected_uri=URI, **kwargs)
    assert caught.value.reason_code in VERDICT_CODES
    assert caught.value.code == "status_list_invalid" and str(caught.value)
    return caught.value.reason_code


# --- the draft's examples -----------------------------------------------------------------------


def test_one_bit_example_of_section_4_1() -> None:
    packed = pack_statuses(16, enumerate(ONE_BIT), bits=1)
    assert packed == bytes([0xB9, 0xA3])
    assert encode_status_list(packed) == ONE_BIT_LST
    decoded = decode_status_list(ONE_BIT_LST, 1)
    assert decoded == packed
    assert [status_at(decoded, i, 1) for i in range(16)] == ONE_BIT


def test_two_bit_example() -> None:
    packed = pack_statuses(12, enumerate(TWO_BITS), bits=2)
    assert packed == bytes([0xC9, 0x44, 0xF9])
    assert encode_status_list(packed) == TWO_BITS_LST
    decoded = decode_status_list(TWO_BITS_LST, 2)
    assert [status_at(decoded, i, 2) for i in range(12)] == TWO_BITS


@pytest.mark.parametrize("bits", [1, 2])
def test_appendix_test_vectors_of_2_to_the_20_entries(bits: int) -> None:
    expected, lst = LONG_VECTORS[bits]
    decoded = decode_status_list(lst, bits)
    assert len(decoded) == 2**20 * bits // 8
    nonzero = {
        byte * 8 // bits + k: (value >> (k * bits)) & ((1 << bits) - 1)
        for byte, value in enumerate(decoded)
        if value
        for k in range(8 // bits)
        if (value >> (k * bits)) & ((1 << bits) - 1)
    }
    assert nonzero == expected
    assert all(status_at(decoded, i, bits) == v for i, v in expected.items())
    assert encode_status_list(pack_statuses(2**20, expected, bits=bits)) == lst


def test_status_types_are_the_drafts() -> None:
    assert (StatusType.VALID, StatusType.INVALID, StatusType.SUSPENDED) == (0, 1, 2)


def test_setting_an_entry_twice_keeps_the_last_value() -> None:
    packed = pack_statuses(8, [(5, 3), (5, 2), (4, 1)])
    assert [status_at(packed, i, 2) for i in range(8)] == [0, 0, 0, 0, 1, 2, 0, 0]


@pytest.mark.parametrize(
    ("size", "pairs", "bits"),
    [(10, [], 2), (8, [(8, 1)], 2), (8, [(-1, 1)], 2), (8, [(0, 4)], 2), (8, [], 3)],
    ids=["partial-byte", "index-past-end", "negative-index", "value-too-wide", "bits-3"],
)
def test_packing_refuses_what_does_not_fit(size: int, pairs: list[tuple[int, int]], bits: int) -> None:
    with pytest.raises(InvalidInput):
        pack_statuses(size, pairs, bits=bits)


def test_lookup_outside_the_list_is_refused() -> None:
    decoded = decode_status_list(TWO_BITS_LST, 2)
    with pytest.raises(InvalidInput):
        status_at(decoded, 12, 2)
    with pytest.raises(InvalidInput):
        status_at(decoded, -1, 2)


# --- decoding refusals ----------------------------------------------------------------------------


def test_decompression_bomb_is_refused_without_inflating_it() -> None:
    bomb = b64(zlib.compress(bytes(64 << 20), 9))  # 64 MiB of zeros in ~64 KB
    assert len(bomb) < 100_000
    with pytest.raises(InputTooLarge):
        decode_status_list(bomb, 2, max_bytes=32768)
    with pytest.raises(InputTooLarge):
        decode_status_list(bomb, 2)  # the default limit (4 MiB) too
    exactly = b64(zlib.compress(bytes(32768), 9))
    assert decode_status_list(exactly, 2, max_bytes=32768) == bytes(32768)


@pytest.mark.parametrize(
    "lst",
    [
        ONE_BIT_LST + "=",  # padding
        "eNrbuRgAAhcBXQ+",  # base64, not base64url
        b64(zlib.compress(b"\xb9\xa3")[:-2]),  # truncated stream
        b64(zlib.compress(b"\xb9\xa3") + b"extra"),  # data after the stream
        b64(zlib.compress(b"\xb9\xa3", wbits=-15)),  # raw DEFLATE, not ZLIB
        b64(b"\x1f\x8b" + zlib.compress(b"\xb9\xa3")),  # not ZLIB at all
        b64(zlib.compress(b"")),  # empty list
        "é",
    ],
    ids=["padded", "base64", "truncated", "trailing", "raw-deflate", "garbage", "empty", "non-ascii"],
)
def test_malformed_lst_is_refused(lst: str) -> None:
    with pytest.raises(InvalidInput):
        decode_status_list(lst, 2)


# --- tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.value)
def test_token_round_trip_and_joserfc_agrees(
    forge: Forge, trusted_keys: list[TrustedKey], algorithm: SignatureAlgorithm
) -> None:
    statuses = pack_statuses(2**17, {7: 1, 99_999: 2})
    token = sign(forge, statuses, algorithm, ttl=600, valid_for=timedelta(hours=2))
    header = json.loads(unb64(token.split(".")[0]))
    assert header == {"alg": algorithm.value, "kid": forge.key(algorithm).kid, "typ": STATUS_LIST_TYP}

    verified = verify_status_list_token(token, TrustStore(trusted_keys), now=NOW, expected_uri=URI)
    assert (verified.uri, verified.bits, verified.size, verified.kid) == (
        URI,
        2,
        2**17,
        forge.key(algorithm).kid,
    )
    assert (verified.issued_at, verified.expires_at, verified.ttl) == (NOW_TS, NOW_TS + 7200, 600)
    assert (verified.status(7), verified.status(99_999), verified.status(8)) == (1, 2, 0)
    assert verified.statuses == statuses

    key_set = KeySet.import_key_set(jwks_document(trusted_keys))  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # "EdDSA" is now spelt "Ed25519" (RFC 9864)
        decoded = jwt.decode(token, key_set, algorithms=[algorithm.value])
    assert decoded.header["typ"] == "statuslist+jwt"
    assert decoded.claims["sub"] == URI and decoded.claims["status_list"]["bits"] == 2
    assert zlib.decompress(unb64(decoded.claims["status_list"]["lst"])) == statuses


def test_token_round_trip_over_backend(backend: KeyBackend) -> None:
    key = backend.generate_key(SignatureAlgorithm.ES256)
    trust = TrustStore([TrustedKey(key.kid, key.algorithm, backend.public_key(key))])
    token = sign_status_list_token(backend, key, uri=URI, statuses=pack_statuses(64, {3: 2}), issued_at=NOW)
    verified = verify_status_list_token(token, trust, now=NOW + timedelta(hours=23), expected_uri=URI)
    assert verified.status(3) == StatusType.SUSPENDED and verified.ttl == 300


def claims(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "sub": URI,
        "iat": NOW_TS,
        "exp": NOW_TS + 86400,
        "ttl": 300,
        "status_list": {"bits": 2, "lst": TWO_BITS_LST},
    }
    for name, change in changes.items():
        if change is None:
            value.pop(name, None)
        else:
            value[name] = change
    return value


def test_forged_token_with_our_claims_verifies(forge: Forge, trust: TrustStore) -> None:
    token = forge.token(forge.header(typ=STATUS_LIST_TYP), claims(exp=None, ttl=None))
    verified = verify_status_list_token(token, trust, now=NOW, expected_uri=URI)
    assert [verified.status(i) for i in range(12)] == TWO_BITS
    assert (verified.expires_at, verified.ttl) == (None, None)


@pytest.mark.parametrize(
    ("header_changes", "expected"),
    [
        ({"typ": None}, "typ_invalid"),
        ({"typ": "licence+jwt"}, "typ_invalid"),
        ({"typ": "JWT"}, "typ_invalid"),
        ({"alg": "PS256"}, "algorithm_mismatch"),
        ({"alg": "HS256"}, "unsupported_algorithm"),
        ({"alg": "none"}, "unsupported_algorithm"),
        ({"kid": "someone-else"}, "unknown_key"),
        ({"jku": "https://evil.example/jwks"}, "forbidden_header"),
        ({"crit": ["exp"]}, "crit_unsupported"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={v[k]}" for k in v),
)
def test_header_refusals(
    forge: Forge, trust: TrustStore, header_changes: dict[str, Any], expected: str
) -> None:
    header = forge.header(**{"typ": STATUS_LIST_TYP, **header_changes})
    assert refusal(forge.token(header, claims()), trust) == expected


def test_typ_compares_as_a_media_type(forge: Forge, trust: TrustStore) -> None:
    token = forge.token(forge.header(typ="application/StatusList+JWT"), claims())
    assert verify_status_list_token(token, trust, now=NOW, expected_uri=URI).bits == 2


def test_a_licence_token_is_not_a_status_list(forge: Forge, trust: TrustStore) -> None:
    licence = sign_licence_token(forge.backend, forge.key(), licence_claims())
    assert refusal(licence, trust) == "typ_invalid"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sub": "https://elsewhere.example/v1/status-lists/1"}, "claims_invalid"),
        ({"sub": None}, "claims_invalid"),
        ({"iat": None}, "claims_invalid"),
        ({"iat": "yesterday"}, "claims_invalid"),
        ({"exp": NOW_TS}, "expired"),
        ({"exp": 1.5}, "claims_invalid"),
        ({"ttl": 0}, "claims_invalid"),
        ({"ttl": True}, "claims_invalid"),
        ({"status_list": None}, "claims_invalid"),
        ({"status_list": {"bits": 3, "lst": TWO_BITS_LST}}, "claims_invalid"),
        ({"status_list": {"bits": 2}}, "claims_invalid"),
        ({"status_list": {"bits": 2, "lst": "not*base64"}}, "malformed"),
    ],
    ids=[
        "other-uri",
        "no-sub",
        "no-iat",
        "text-iat",
        "expired",
        "float-exp",
        "zero-ttl",
        "bool-ttl",
        "no-list",
        "bits-3",
        "no-lst",
        "bad-lst",
    ],
)
def test_claim_refusals(forge: Forge, trust: TrustStore, changes: dict[str, Any], expected: str) -> None:
    token = forge.token(forge.header(typ=STATUS_LIST_TYP), claims(**changes))
    assert refusal(token, trust) == expected


def test_tampered_list_fails_the_signature(forge: Forge, trust: TrustStore) -> None:
    token = sign(forge, pack_statuses(64, {1: 1}))
    header, payload, signature = token.split(".")
    forged = json.loads(unb64(payload))
    forged["status_list"]["lst"] = encode_status_list(pack_statuses(64, {}))  # "un-revoke" index 1
    assert refusal(f"{header}.{b64(json.dumps(forged).encode())}.{signature}", trust) == "signature_invalid"


def test_bomb_inside_a_signed_token_is_refused(forge: Forge, trust: TrustStore) -> None:
    bomb = b64(zlib.compress(bytes(8 << 20), 9))
    token = forge.token(forge.header(typ=STATUS_LIST_TYP), claims(status_list={"bits": 2, "lst": bomb}))
    assert refusal(token, trust) == "too_large"
    assert refusal(token, trust, max_bytes=32768) == "too_large"


def test_oversized_token_is_refused_before_decoding(trust: TrustStore) -> None:
    huge = "a" * (MAX_STATUS_LIST_TOKEN_BYTES + 1)
    assert refusal(huge, trust) == "too_large"
    assert refusal(huge.encode(), trust) == "too_large"


@pytest.mark.parametrize("token", ["a.b", "a.b.c.d", "é.b.c", b"\xff.b.c", "!!.b.c"])
def test_malformed_tokens_are_refused(trust: TrustStore, token: str | bytes) -> None:
    assert refusal(token, trust) == "malformed"


def test_signing_refuses_bad_arguments(forge: Forge) -> None:
    packed = pack_statuses(64, {})
    with pytest.raises(InvalidInput):
        sign(forge, packed, ttl=0)
    with pytest.raises(InvalidInput):
        sign_status_list_token(forge.backend, forge.key(), uri="", statuses=packed, issued_at=NOW)
    with pytest.raises(InvalidInput):
        sign_status_list_token(
            forge.backend, forge.key(), uri=URI, statuses=packed, issued_at=NOW.replace(tzinfo=None)
        )
