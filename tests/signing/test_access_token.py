"""OAuth access tokens (RFC 9068): signed through the key backend, verified strictly here and by joserfc.

Every rejection raises the one error type, ``InvalidAccessToken``, with a stable reason code.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet

from hsm import KeyBackend, SignatureAlgorithm
from schemas.errors import InvalidInput
from signing import TrustedKey, TrustStore, jwks_document, sign_licence_token
from signing._access_token import (
    MAX_ACCESS_TOKEN_BYTES,
    InvalidAccessToken,
    sign_access_token,
    verify_access_token,
)
from tests.signing._support import ALGORITHMS, NOW, NOW_TS, Forge, b64, compact, licence_claims

CLIENT = "yx_0123456789abcdef"


def access_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "yinxin",
        "sub": CLIENT,
        "client_id": CLIENT,
        "aud": "yinxin-api",
        "iat": NOW_TS - 60,
        "exp": NOW_TS + 540,
        "jti": "Jm2WgqZ3b1Bq7nS9_fXhYg",
        "scope": "licence:read licence:verify",
        "dept": "11110101000000123B",
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def at_header(forge: Forge, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256, **changes: Any) -> Any:
    return forge.header(algorithm, typ=changes.pop("typ", "at+jwt"), **changes)


def reason_of(token: str | bytes, trust: TrustStore, **kwargs: Any) -> str:
    with pytest.raises(InvalidAccessToken) as caught:
        verify_access_token(token, trust, now=kwargs.pop("now", NOW), **kwargs)
    error = caught.value
    assert (error.code, error.http_status) == ("invalid_token", 401)
    assert error.message and "\n" not in error.message and len(error.message) < 300
    if isinstance(token, str) and len(token) > 40:
        assert token not in error.message
    reason = error.details["reason"]
    assert isinstance(reason, str)
    return reason


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.value)
def test_round_trip_over_backend_and_joserfc(backend: KeyBackend, algorithm: SignatureAlgorithm) -> None:
    key = backend.generate_key(algorithm, f"service-{algorithm.value.lower()}-test")
    trusted = TrustedKey(key.kid, key.algorithm, backend.public_key(key))
    claims = access_claims()

    token = sign_access_token(backend, key, claims)

    assert verify_access_token(token, TrustStore([trusted]), now=NOW) == claims
    key_set = KeySet.import_key_set(jwks_document([trusted]))  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc: EdDSA → Ed25519 (RFC 9864)
        decoded = jwt.decode(token, key_set, algorithms=[algorithm.value])
    assert dict(decoded.header) == {"alg": algorithm.value, "kid": key.kid, "typ": "at+jwt"}
    assert dict(decoded.claims) == claims
    # joserfc's own claim validation agrees the token is current, for this issuer and audience.
    registry = jwt.JWTClaimsRegistry(
        now=NOW_TS, iss={"essential": True, "value": "yinxin"}, aud={"essential": True, "value": "yinxin-api"}
    )
    registry.validate(decoded.claims)


def test_audience_may_be_a_list_and_nbf_is_honoured(forge: Forge, trust: TrustStore) -> None:
    key = forge.key()
    token = sign_access_token(forge.backend, key, access_claims(aud=["other", "yinxin-api"], nbf=NOW_TS))
    assert verify_access_token(token, trust, now=NOW)["aud"] == ["other", "yinxin-api"]
    early = sign_access_token(forge.backend, key, access_claims(nbf=NOW_TS + 10))
    assert reason_of(early, trust) == "not_yet_valid"
    assert verify_access_token(early, trust, now=NOW, leeway=10)["nbf"] == NOW_TS + 10


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        (access_claims(exp=NOW_TS), "expired"),
        (access_claims(iat=NOW_TS + 30, exp=NOW_TS + 600), "not_yet_valid"),
        (access_claims(iss="someone-else"), "wrong_issuer"),
        (access_claims(aud="another-api"), "wrong_audience"),
        (access_claims(aud=["another-api"]), "wrong_audience"),
    ],
    ids=["expired", "iat-in-future", "issuer", "audience", "audience-list"],
)
def test_time_issuer_and_audience(
    forge: Forge, trust: TrustStore, claims: dict[str, Any], reason: str
) -> None:
    # Signed by our own signer, so only the claim check can refuse them.
    token = sign_access_token(forge.backend, forge.key(), claims)
    assert reason_of(token, trust) == reason


def test_expiry_follows_the_clock(forge: Forge, trust: TrustStore) -> None:
    token = sign_access_token(forge.backend, forge.key(), access_claims())
    assert verify_access_token(token, trust, now=NOW + timedelta(seconds=539))
    assert reason_of(token, trust, now=NOW + timedelta(seconds=540)) == "expired"


@pytest.mark.parametrize(
    "payload",
    [
        access_claims(sub="yx_ffffffffffffffff"),  # sub must be the client (RFC 9068 §2.2)
        access_claims(client_id=None),
        access_claims(scope=None),
        access_claims(dept=None),
        access_claims(jti=None),
        access_claims(aud=None),
        access_claims(exp=None),
        access_claims(iat="1700000000"),
        access_claims(exp=True),
        access_claims(iat=NOW_TS, exp=NOW_TS - 1),
        access_claims(aud=[]),
    ],
)
def test_forged_claims_sets_are_refused(forge: Forge, trust: TrustStore, payload: dict[str, Any]) -> None:
    token = forge.token(at_header(forge), payload)
    assert reason_of(token, trust) == "claims_invalid"
    with pytest.raises(InvalidInput):
        sign_access_token(forge.backend, forge.key(), payload)


def test_a_licence_token_is_not_an_access_token(forge: Forge, trust: TrustStore) -> None:
    licence = sign_licence_token(forge.backend, forge.key(), licence_claims())
    assert reason_of(licence, trust) == "typ_invalid"
    # Even with access-token claims, typ decides (RFC 9068 §4, RFC 8725 §3.11).
    assert reason_of(forge.token(forge.header(), access_claims()), trust) == "typ_invalid"
    assert reason_of(forge.token(at_header(forge, typ=None), access_claims()), trust) == "typ_invalid"
    # The media type may be written in full and in any case (RFC 7515 §4.1.9).
    full = forge.token(at_header(forge, typ="application/AT+JWT"), access_claims())
    assert verify_access_token(full, trust, now=NOW) == access_claims()


def test_algorithm_comes_from_the_key_never_the_header(forge: Forge, trust: TrustStore) -> None:
    es256 = forge.key(SignatureAlgorithm.ES256)
    # alg none, with and without a signature (RFC 8725 §3.1).
    unsigned = (
        b64(compact({"alg": "none", "kid": es256.kid, "typ": "at+jwt"})) + "." + b64(compact(access_claims()))
    )
    assert reason_of(unsigned + ".", trust) == "unsupported_algorithm"
    assert (
        reason_of(forge.token(at_header(forge, alg="none"), access_claims()), trust)
        == "unsupported_algorithm"
    )
    assert (
        reason_of(forge.token(at_header(forge, alg="HS256"), access_claims()), trust)
        == "unsupported_algorithm"
    )
    # The ES256 key's kid with a header claiming PS256, signed by the PS256 key.
    swapped = forge.token(at_header(forge, alg="PS256"), access_claims(), signer=SignatureAlgorithm.PS256)
    assert reason_of(swapped, trust) == "algorithm_mismatch"
    # Header claims EdDSA, signed by EdDSA, but names the ES256 key.
    swapped = forge.token(at_header(forge, alg="EdDSA"), access_claims(), signer=SignatureAlgorithm.EDDSA)
    assert reason_of(swapped, trust) == "algorithm_mismatch"


def test_keys_come_from_the_trust_store_only(forge: Forge, trust: TrustStore, backend: KeyBackend) -> None:
    stranger = backend.generate_key(SignatureAlgorithm.ES256, "service-es256-stranger")
    token = sign_access_token(backend, stranger, access_claims())
    assert reason_of(token, trust) == "unknown_key"
    with pytest.raises(InvalidAccessToken) as caught:
        verify_access_token(token, trust, now=NOW)
    assert caught.value.details["kid"] == "service-es256-stranger"
    # Same kid as a trusted key, other signer: the signature does not verify.
    impostor = backend.generate_key(SignatureAlgorithm.ES256)
    signing_input = forge.token(at_header(forge), access_claims()).rpartition(".")[0]
    forged = signing_input + "." + b64(backend.sign(impostor, signing_input.encode()))
    assert reason_of(forged, trust) == "signature_invalid"
    jwk = {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}
    assert reason_of(forge.token(at_header(forge, jwk=jwk), access_claims()), trust) == "forbidden_header"
    assert (
        reason_of(forge.token(at_header(forge, crit=["exp"]), access_claims()), trust) == "crit_unsupported"
    )
    assert reason_of(forge.token(at_header(forge, kid=None), access_claims()), trust) == "unknown_key"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "malformed"),
        ("garbage", "malformed"),
        ("a.b", "malformed"),
        ("a.b.c.d.e", "malformed"),
        ("eyJ.e30.AA", "malformed"),
        ("ééé.e30.AA", "malformed"),
        (b"\xff.e30.AA", "malformed"),
        ("A" * (MAX_ACCESS_TOKEN_BYTES + 1), "too_large"),
        (b"A" * (MAX_ACCESS_TOKEN_BYTES + 1), "too_large"),
    ],
)
def test_malformed_and_oversized(trust: TrustStore, token: str | bytes, reason: str) -> None:
    assert reason_of(token, trust) == reason


def test_tampered_payload_is_refused(forge: Forge, trust: TrustStore) -> None:
    token = sign_access_token(forge.backend, forge.key(), access_claims())
    header, _, signature = token.split(".")
    widened = b64(compact(access_claims(scope="licence:read licence:manage")))
    assert reason_of(f"{header}.{widened}.{signature}", trust) == "signature_invalid"


def test_size_limit_is_checked_before_decoding(forge: Forge, trust: TrustStore) -> None:
    padded = forge.token(at_header(forge), access_claims(pad="x" * MAX_ACCESS_TOKEN_BYTES))
    assert reason_of(padded, trust) == "too_large"
    with pytest.raises(InvalidInput, match="over 4096"):
        sign_access_token(forge.backend, forge.key(), access_claims(pad="x" * MAX_ACCESS_TOKEN_BYTES))


def test_callers_mistakes_are_not_token_errors(forge: Forge, trust: TrustStore) -> None:
    token = sign_access_token(forge.backend, forge.key(), access_claims())
    with pytest.raises(InvalidInput, match="timezone-aware"):
        verify_access_token(token, trust, now=NOW.replace(tzinfo=None))
    with pytest.raises(InvalidInput, match="leeway"):
        verify_access_token(token, trust, now=NOW, leeway=-1)
