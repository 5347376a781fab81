"""Tokens refused before their signature is looked at: too large or malformed.

Size comes first, before any decoding; then the compact form (RFC 7515 §7.1),
canonical unpadded base64url (RFC 7515 §2, RFC 4648 §3.5) and strict JSON
(unique names, UTF-8, objects only). Ends with two properties: any input is an
answer, and no one-character edit of a valid token verifies.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signing import MAX_TOKEN_BYTES, TrustStore, sign_licence_token, verify_token
from tests.signing._support import (
    NOW,
    NOW_TS,
    Forge,
    code_of,
    compact,
    licence_claims,
    rejected,
    unb64,
)

# --- too_large ------------------------------------------------------------------


def test_a_token_over_8_kib_is_not_read(good: str, trust: TrustStore) -> None:
    header, payload, signature = good.split(".")
    padding = MAX_TOKEN_BYTES + 1 - len(good)
    oversized = f"{header}.{payload}{'A' * padding}.{signature}"
    assert len(oversized) == MAX_TOKEN_BYTES + 1
    assert code_of(oversized, trust) == "too_large"
    assert code_of(oversized.encode(), trust) == "too_large"
    # Size comes before any decoding: even non-text garbage of that size.
    assert code_of(b"\xff" * (MAX_TOKEN_BYTES + 1), trust) == "too_large"
    assert code_of("漢" * (MAX_TOKEN_BYTES + 1), trust) == "too_large"
    # At the limit the token is read (and here fails on its altered payload).
    at_limit = f"{header}.{payload}{'A' * (padding - 1)}.{signature}"
    assert code_of(at_limit, trust) != "too_large"


def test_a_ten_thousand_character_kid_is_too_large(forge: Forge, trust: TrustStore) -> None:
    token = forge.token(forge.header(kid="k" * 10_000))
    assert code_of(token, trust) == "too_large"


# --- malformed: structure and base64url -------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "...",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",  # JWE compact has five parts
        "not a token at all",
    ],
)
def test_not_three_base64url_parts(token: str, trust: TrustStore) -> None:
    assert code_of(token, trust) == "malformed"


def test_truncated_token(good: str, trust: TrustStore) -> None:
    assert code_of(good[: len(good) // 2], trust) == "malformed"  # the signature is gone
    assert code_of(good[:-1], trust) == "malformed"  # 85 characters cannot be base64url
    assert code_of(good[:-2], trust) == "signature_invalid"  # 84 characters: 63 bytes, not 64
    assert code_of(good.rpartition(".")[0] + ".", trust) == "signature_invalid"  # empty signature


@pytest.mark.parametrize("part", [0, 1, 2])
@pytest.mark.parametrize("suffix", ["=", "==", " ", "\n", "+", "/", "*"])
def test_base64url_padding_and_foreign_characters(
    good: str, trust: TrustStore, part: int, suffix: str
) -> None:
    parts = good.split(".")
    parts[part] = parts[part] + suffix
    assert code_of(".".join(parts), trust) == "malformed"


@pytest.mark.parametrize("part", [1, 2], ids=["payload", "signature"])
def test_standard_base64_alphabet_is_not_base64url(forge: Forge, trust: TrustStore, part: int) -> None:
    # ECDSA signatures are random: sign until the segment has a - or _ to swap.
    for _ in range(50):
        parts = sign_licence_token(forge.backend, forge.key(), licence_claims()).split(".")
        if "-" in parts[part] or "_" in parts[part]:
            break
    standard = base64.b64encode(unb64(parts[part])).decode().rstrip("=")
    assert standard != parts[part]
    parts[part] = standard
    assert code_of(".".join(parts), trust) == "malformed"


def test_non_canonical_last_character(good: str, trust: TrustStore) -> None:
    """Unused bits set in the last character (RFC 4648 §3.5) are refused.

    A lax decoder reads the same bytes, so without this check one signature
    would have several spellings; the 86-character ES256 signature has four
    unused bits.
    """
    header, payload, signature = good.split(".")
    assert len(signature) % 4 == 2
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(signature[-1])
    for unused in range(1, 16):
        variant = signature[:-1] + alphabet[index | unused]
        assert unb64(variant) == unb64(signature)  # same bytes to a lax decoder
        assert code_of(f"{header}.{payload}.{variant}", trust) == "malformed"
    # Same for the payload and header when they end on a partial group.
    for part in (0, 1):
        parts = good.split(".")
        if len(parts[part]) % 4 in (2, 3):
            last = alphabet.index(parts[part][-1])
            parts[part] = parts[part][:-1] + alphabet[last | 1]
            assert code_of(".".join(parts), trust) == "malformed"


def test_segment_of_impossible_length(good: str, trust: TrustStore) -> None:
    # A base64url segment is never 1 character past a multiple of 4 (RFC 4648 §4).
    header, payload, signature = good.split(".")
    cut = payload[: len(payload) - (len(payload) - 1) % 4]
    assert len(cut) % 4 == 1
    assert code_of(f"{header}.{cut}.{signature}", trust) == "malformed"


def test_non_ascii_text_and_bytes(good: str, trust: TrustStore) -> None:
    assert code_of(good + "é", trust) == "malformed"
    assert code_of(good.encode() + b"\xff", trust) == "malformed"
    assert code_of(good.replace(".", "。", 1), trust) == "malformed"


@pytest.mark.parametrize("value", [None, 42, ["a", "b", "c"], {"token": "x"}])
def test_a_token_that_is_not_text(value: Any, trust: TrustStore) -> None:
    assert code_of(value, trust) == "malformed"


# --- malformed: JSON -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_header",
    [
        b"not json",
        b'["alg","ES256"]',
        b'"ES256"',
        b"null",
        b"",
        b'{"alg":"ES256",}',
        b"\xff\xfe{}",  # not UTF-8
        b'\xef\xbb\xbf{"alg":"ES256","kid":"test-es256-2026","typ":"licence+jwt"}',  # BOM
        b'{"alg":"ES256","kid":"test-es256-2026","typ":"licence+jwt"} x',
        b'{"alg":NaN}',
    ],
)
def test_header_that_is_not_a_json_object(forge: Forge, trust: TrustStore, raw_header: bytes) -> None:
    assert code_of(forge.token(raw_header), trust) == "malformed"


def test_duplicate_names_in_the_header(forge: Forge, trust: TrustStore) -> None:
    # Last-one-wins parsers would read alg=ES256; first-one-wins would read none.
    raw = b'{"alg":"none","alg":"ES256","kid":"test-es256-2026","typ":"licence+jwt"}'
    assert code_of(forge.token(raw), trust) == "malformed"
    raw = b'{"alg":"ES256","kid":"test-es256-2026","kid":"other","typ":"licence+jwt"}'
    assert code_of(forge.token(raw), trust) == "malformed"


def test_duplicate_names_in_the_payload(forge: Forge, trust: TrustStore) -> None:
    # Correctly signed, so only the duplicate check can catch it.
    payload = compact(licence_claims())[:-1] + b',"exp":' + str(NOW_TS + 10**6).encode() + b"}"
    assert payload.count(b'"exp"') == 2
    verdict = rejected(forge.token(payload=payload), trust)
    assert verdict.codes == ("malformed",)
    assert "'exp'" in verdict.reasons[0]
    nested = compact(licence_claims(holder={"name": "a"}))
    nested = nested.replace(b'"name":"a"', b'"name":"a","name":"b"')
    assert code_of(forge.token(payload=nested), trust) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b"foo",
        b"[]",
        b'"licence"',
        b"12345",
        b"\xff\xfe",
        b'{"iss":"x","ratio":NaN}',
        b'{"iss":"x","big":Infinity}',
        b'{"iss":"\\ud800"}',  # lone surrogate (RFC 7493 §2.1)
        b"[" * 2500 + b"]" * 2500,  # deeper than the parser recurses
    ],
)
def test_payload_that_is_not_a_licence_claims_object(forge: Forge, trust: TrustStore, payload: bytes) -> None:
    verdict = rejected(forge.token(payload=payload), trust)
    assert verdict.codes == ("malformed",)
    assert verdict.claims is None


def test_a_nested_token_is_not_a_claims_set(forge: Forge, trust: TrustStore, good: str) -> None:
    # RFC 7519 §5.2 nesting: the payload is itself a JWS. Without cty it is
    # just malformed; with cty it is refused for the header.
    assert code_of(forge.token(payload=good.encode()), trust) == "malformed"
    assert code_of(forge.token(forge.header(cty="JWT"), payload=good.encode()), trust) == "forbidden_header"


def test_a_correct_surrogate_pair_is_fine(forge: Forge, trust: TrustStore) -> None:
    payload = compact(licence_claims())[:-1] + b',"seal":"\\ud83d\\udd8b"}'
    verdict = verify_token(forge.token(payload=payload), trust, now=NOW)
    assert verdict.valid, verdict.reasons
    assert verdict.claims is not None and verdict.claims["seal"] == "\U0001f58b"


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_is_an_answer_not_an_exception(trust: TrustStore, token: str | bytes) -> None:
    assert not verify_token(token, trust, now=NOW).valid


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), replacement=st.characters(codec="ascii"))
def test_any_one_character_change_invalidates_the_token(
    good: str, trust: TrustStore, position: int, replacement: str
) -> None:
    """One token, one spelling: no edit of a valid token still verifies."""
    position %= len(good)
    if good[position] == replacement:
        return
    edited = good[:position] + replacement + good[position + 1 :]
    verdict = verify_token(edited, trust, now=NOW)
    assert not verdict.valid
    assert len(verdict.codes) >= 1
