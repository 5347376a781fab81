"""Licence tokens we sign verify here, in joserfc and in plain cryptography.

Round trips run over both key backends (software keystore and SoftHSM2) and
all three algorithms; joserfc, holding only our published JWKS, is the
independent verifier (DESIGN §4, §5.2).
"""

from __future__ import annotations

import json
import warnings
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws, jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet

from hsm import KeyBackend, SignatureAlgorithm
from schemas.errors import InputTooLarge, InvalidInput
from signing import (
    MAX_TOKEN_BYTES,
    TOKEN_TYP,
    TrustedKey,
    TrustStore,
    jwks_document,
    sign_licence_token,
    sign_licence_tokens,
    verify_token,
)
from tests.signing._support import ALGORITHMS, NOW, NOW_TS, Forge, compact, licence_claims, unb64


def joserfc_decode(
    token: str, keys: list[TrustedKey], algorithm: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify with joserfc, given only our JWKS and the one algorithm we expect."""
    document: Any = jwks_document(keys)
    key_set = KeySet.import_key_set(document)
    with warnings.catch_warnings():
        # joserfc flags "EdDSA" as superseded by "Ed25519" (RFC 9864); it still verifies it.
        warnings.simplefilter("ignore", SecurityWarning)
        decoded = jwt.decode(token, key_set, algorithms=[algorithm])
        compact_jws = jws.deserialize_compact(token, key_set, algorithms=[algorithm])
    assert compact_jws.payload == unb64(token.split(".")[1])
    return dict(decoded.header), dict(decoded.claims)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.value)
def test_round_trip_over_backend(backend: KeyBackend, algorithm: SignatureAlgorithm) -> None:
    key = backend.generate_key(algorithm)
    trusted = TrustedKey(key.kid, key.algorithm, backend.public_key(key))
    claims = licence_claims()

    token = sign_licence_token(backend, key, claims)

    verdict = verify_token(token, TrustStore([trusted]), now=NOW)
    assert verdict.valid, verdict.reasons
    assert (verdict.reasons, verdict.codes) == ((), ())
    assert dict(verdict.claims or {}) == claims
    assert dict(verdict.header or {}) == {"alg": algorithm.value, "kid": key.kid, "typ": TOKEN_TYP}
    assert (verdict.kid, verdict.algorithm) == (key.kid, algorithm.value)

    header, decoded_claims = joserfc_decode(token, [trusted], algorithm.value)
    assert header == {"alg": algorithm.value, "kid": key.kid, "typ": TOKEN_TYP}
    assert decoded_claims == claims


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.value)
def test_token_bytes_are_exactly_the_documented_form(forge: Forge, algorithm: SignatureAlgorithm) -> None:
    key = forge.key(algorithm)
    claims = licence_claims()
    token = sign_licence_token(forge.backend, key, claims)
    header_segment, payload_segment, signature_segment = token.split(".")
    # RFC 7515 §7.1 with our header, compact UTF-8 JSON, unpadded base64url.
    expected_header = f'{{"alg":"{algorithm.value}","kid":"{key.kid}","typ":"licence+jwt"}}'
    assert unb64(header_segment) == expected_header.encode()
    assert unb64(payload_segment) == compact(claims)
    assert "营业执照".encode() in unb64(payload_segment)  # ensure_ascii=False
    assert "=" not in token
    expected_length = 384 if algorithm is SignatureAlgorithm.PS256 else 64
    assert len(unb64(signature_segment)) == expected_length


def test_cryptography_verifies_our_signatures_directly(forge: Forge) -> None:
    """The third verifier: no JOSE library at all, only RFC 7518 by hand."""
    for algorithm in ALGORITHMS:
        token = sign_licence_token(forge.backend, forge.key(algorithm), licence_claims())
        signing_input, _, signature_segment = token.rpartition(".")
        data, signature = signing_input.encode(), unb64(signature_segment)
        public_key = forge.public_key(algorithm)
        if algorithm is SignatureAlgorithm.ES256:
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        elif algorithm is SignatureAlgorithm.EDDSA:
            assert isinstance(public_key, Ed25519PublicKey)
            public_key.verify(signature, data)
        else:
            assert isinstance(public_key, rsa.RSAPublicKey)
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            public_key.verify(signature, data, pss, hashes.SHA256())


def test_the_header_is_encoded_once_per_key(forge: Forge) -> None:
    first = sign_licence_token(forge.backend, forge.key(), licence_claims())
    second = sign_licence_token(forge.backend, forge.key(), licence_claims(iat=NOW_TS))
    other = sign_licence_token(forge.backend, forge.key(SignatureAlgorithm.EDDSA), licence_claims())
    assert first.split(".")[0] == second.split(".")[0] != other.split(".")[0]
    assert first.split(".")[1] != second.split(".")[1]


def test_bytes_tokens_verify_like_text(forge: Forge, trust: TrustStore) -> None:
    token = sign_licence_token(forge.backend, forge.key(), licence_claims())
    assert verify_token(token.encode("ascii"), trust, now=NOW).valid
    assert verify_token(bytearray(token.encode("ascii")), trust, now=NOW).valid  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "typ", ["licence+jwt", "application/licence+jwt", "Licence+JWT", "APPLICATION/LICENCE+JWT"]
)
def test_typ_is_compared_as_a_media_type(forge: Forge, trust: TrustStore, typ: str) -> None:
    # RFC 7515 §4.1.9: case-insensitive, "application/" may be omitted.
    token = forge.token(forge.header(typ=typ))
    verdict = verify_token(token, trust, now=NOW)
    assert verdict.valid, verdict.reasons
    assert verify_token(token, trust, now=NOW, expected_typ="application/licence+jwt").valid


def test_expected_typ_none_skips_the_typ_check(forge: Forge, trust: TrustStore) -> None:
    token = forge.token(forge.header(typ=None))
    assert verify_token(token, trust, now=NOW).codes == ("typ_invalid",)
    assert verify_token(token, trust, now=NOW, expected_typ=None).valid


def test_exp_and_nbf_follow_the_clock_and_leeway(forge: Forge, trust: TrustStore) -> None:
    exp, nbf = NOW_TS + 3600, NOW_TS - 3600
    token = sign_licence_token(forge.backend, forge.key(), licence_claims(nbf=nbf, exp=exp))

    def at(seconds: int, leeway: int = 0) -> tuple[str, ...]:
        instant = NOW + timedelta(seconds=seconds - NOW_TS)
        return verify_token(token, trust, now=instant, leeway=leeway).codes

    assert at(exp - 1) == ()
    assert at(exp) == ("expired",)  # RFC 7519 §4.1.4: valid only before exp
    assert at(exp + 29, leeway=30) == ()
    assert at(exp + 30, leeway=30) == ("expired",)
    assert at(nbf) == ()
    assert at(nbf - 1) == ("not_yet_valid",)
    assert at(nbf - 30, leeway=30) == ()
    assert at(nbf - 31, leeway=30) == ("not_yet_valid",)


def test_licence_without_expiry_verifies(forge: Forge, trust: TrustStore) -> None:
    claims = licence_claims()
    del claims["exp"], claims["nbf"]
    token = sign_licence_token(forge.backend, forge.key(), claims)
    assert verify_token(token, trust, now=NOW + timedelta(days=36500)).valid


def test_a_caller_must_pass_an_aware_clock(forge: Forge, trust: TrustStore) -> None:
    token = sign_licence_token(forge.backend, forge.key(), licence_claims())
    with pytest.raises(InvalidInput, match="timezone-aware"):
        verify_token(token, trust, now=NOW.replace(tzinfo=None))
    with pytest.raises(InvalidInput, match="leeway"):
        verify_token(token, trust, now=NOW, leeway=-1)


# --- what the signer refuses ----------------------------------------------------


def test_signer_refuses_a_token_over_the_size_limit(forge: Forge) -> None:
    claims = licence_claims(data={"notes": "x" * MAX_TOKEN_BYTES})
    with pytest.raises(InputTooLarge, match="8192"):
        sign_licence_token(forge.backend, forge.key(), claims)
    # Just under the limit is fine, for the largest signature (PS256, 512 characters).
    key = forge.key(SignatureAlgorithm.PS256)
    base = len(sign_licence_token(forge.backend, key, licence_claims(pad="")))
    room = MAX_TOKEN_BYTES - base
    fitting = room * 3 // 4 - 2  # base64url: 4 characters per 3 bytes
    assert len(sign_licence_token(forge.backend, key, licence_claims(pad="x" * fitting))) <= MAX_TOKEN_BYTES
    with pytest.raises(InputTooLarge):
        sign_licence_token(forge.backend, key, licence_claims(pad="x" * (fitting + 6)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"iss": None}, "'iss'"),
        ({"sub": ""}, "'sub'"),
        ({"jti": "1.2.156.other"}, "differ"),
        ({"iat": "1700000000"}, "'iat'"),
        ({"exp": 1.5}, "'exp'"),
        ({"nbf": True}, "'nbf'"),
    ],
)
def test_signer_refuses_claims_the_verifier_would_reject(
    forge: Forge, changes: dict[str, Any], message: str
) -> None:
    claims = {k: v for k, v in licence_claims(**changes).items() if v is not None}
    with pytest.raises(InvalidInput, match=message):
        sign_licence_token(forge.backend, forge.key(), claims)


@pytest.mark.parametrize(
    "bad",
    [
        {"when": {1, 2}},
        {"ratio": float("nan")},
        {"blob": b"bytes"},
        {"deep": [1.5, {"inner": (2, float("-inf"))}]},
        {"view": MappingProxyType({"x": float("inf")})},
    ],
)
def test_signer_refuses_claims_that_are_not_json(forge: Forge, bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="not JSON"):
        sign_licence_token(forge.backend, forge.key(), licence_claims(**bad))


def test_batch_signing_keeps_order_across_keys(backend: KeyBackend) -> None:
    keys = [backend.generate_key(SignatureAlgorithm.ES256), backend.generate_key(SignatureAlgorithm.EDDSA)]
    trust = TrustStore([TrustedKey(k.kid, k.algorithm, backend.public_key(k)) for k in keys])
    batch = [
        (keys[1 if i % 3 == 0 else 0], licence_claims(sub=f"licence-{i}", jti=f"licence-{i}"))
        for i in range(41)
    ]

    tokens = sign_licence_tokens(backend, batch)

    assert len(tokens) == len(batch)
    for (key, claims), token in zip(batch, tokens, strict=True):
        verdict = verify_token(token, trust, now=NOW)
        assert verdict.valid, verdict.reasons
        assert verdict.kid == key.kid
        assert dict(verdict.claims or {}) == claims
    assert sign_licence_tokens(backend, []) == []


def test_batch_signing_refuses_the_whole_batch_for_one_bad_claims_set(forge: Forge) -> None:
    batch = [(forge.key(), licence_claims(sub=f"l-{i}", jti=f"l-{i}")) for i in range(20)]
    batch[13] = (forge.key(), licence_claims(sub="l-13", jti="other"))
    with pytest.raises(InvalidInput, match="differ"):
        sign_licence_tokens(forge.backend, batch)


def test_payload_is_compact_utf8_json(forge: Forge) -> None:
    claims = licence_claims(data={"名称": "张三 & Sons", "note": 'quote " and \\ backslash'})
    token = sign_licence_token(forge.backend, forge.key(), claims)
    payload = unb64(token.split(".")[1])
    assert payload == json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
