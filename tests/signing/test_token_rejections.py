"""Every refusal after the structure is sound, each with a crafted token.

Each test makes a token that fails exactly one check (real signatures from the
session keys unless the signature is the point), and asserts the one code the
verifier must give. Invalid is an answer: nothing here expects an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from hsm import SignatureAlgorithm
from signing import TrustStore, public_jwk, sign_licence_token, verify_token
from tests.signing._support import (
    NOW,
    NOW_TS,
    P256_N,
    Forge,
    b64,
    code_of,
    compact,
    licence_claims,
    rejected,
    unb64,
    with_signature,
)

ES256, EDDSA, PS256 = SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA, SignatureAlgorithm.PS256


# --- unsupported_algorithm --------------------------------------------------------


def hs256_token(header: dict[str, Any], secret: bytes) -> str:
    signing_input = b64(compact(header)) + "." + b64(compact(licence_claims()))
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
def test_alg_none(forge: Forge, trust: TrustStore, alg: str) -> None:
    unsigned = b64(compact(forge.header(alg=alg))) + "." + b64(compact(licence_claims())) + "."
    assert code_of(unsigned, trust) == "unsupported_algorithm"
    assert code_of(forge.token(forge.header(alg=alg)), trust) == "unsupported_algorithm"


@pytest.mark.parametrize("form", ["pem", "der", "jwk", "raw-point"])
def test_hs256_keyed_with_the_public_key(forge: Forge, trust: TrustStore, form: str) -> None:
    """The classic key-confusion attack: HMAC with the verifier's public key as secret."""
    public_key = forge.public_key(ES256)
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    secrets = {
        "pem": public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "der": public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk": json.dumps(public_jwk(next(k for k in trust if k.algorithm is ES256))).encode(),
        "raw-point": public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ),
    }
    token = hs256_token(forge.header(alg="HS256"), secrets[form])
    verdict = rejected(token, trust)
    assert verdict.codes == ("unsupported_algorithm",)
    assert "HS256" in verdict.reasons[0]


@pytest.mark.parametrize(
    "alg",
    ["HS256", "HS512", "RS256", "RS512", "ES384", "ES512", "ES256K", "PS384", "PS512", "Ed25519", "es256"],
)
def test_algorithms_licence_tokens_never_use(forge: Forge, trust: TrustStore, alg: str) -> None:
    assert code_of(forge.token(forge.header(alg=alg)), trust) == "unsupported_algorithm"


def test_alg_missing_or_not_a_string(forge: Forge, trust: TrustStore) -> None:
    assert code_of(forge.token(forge.header(alg=None)), trust) == "malformed"
    assert code_of(forge.token(forge.header(alg=["ES256"])), trust) == "malformed"


# --- algorithm_mismatch -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key_alg", "header_alg"),
    [(ES256, EDDSA), (ES256, PS256), (EDDSA, ES256), (PS256, ES256), (PS256, EDDSA), (EDDSA, PS256)],
    ids=lambda a: a.value,
)
def test_header_alg_swapped_for_another_supported_one(
    forge: Forge, trust: TrustStore, key_alg: SignatureAlgorithm, header_alg: SignatureAlgorithm
) -> None:
    # The kid names a key bound to key_alg; the header claims header_alg.
    header = forge.header(key_alg, alg=header_alg.value)
    assert code_of(forge.token(header, signer=key_alg), trust) == "algorithm_mismatch"
    assert code_of(forge.token(header, signer=header_alg), trust) == "algorithm_mismatch"


# --- forbidden_header and crit_unsupported ---------------------------------------------


def test_embedded_jwk_with_an_attackers_key(forge: Forge, trust: TrustStore) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    numbers = attacker.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }
    header = forge.header(jwk=jwk)
    signing_input = b64(compact(header)) + "." + b64(compact(licence_claims()))
    r, s = decode_dss_signature(attacker.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    token = signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    assert code_of(token, trust) == "forbidden_header"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIB..."]),
        ("x5t", "dGh1bWJwcmludA"),
        ("x5t#S256", "dGh1bWJwcmludA"),
        ("b64", False),
        ("zip", "DEF"),
        ("cty", "JWT"),
        ("enc", "A256GCM"),
        ("url", "https://example.test/"),
        ("nonce", "n"),
        ("iss", "91110000000000000X"),
    ],
)
def test_header_parameters_licence_tokens_never_carry(
    forge: Forge, trust: TrustStore, name: str, value: Any
) -> None:
    verdict = rejected(forge.token(forge.header(**{name: value})), trust)
    assert verdict.codes == ("forbidden_header",)
    assert name in verdict.reasons[0]


def test_crit_is_refused_because_we_understand_no_extension(forge: Forge, trust: TrustStore) -> None:
    # RFC 7515 §4.1.11, and crit wins over the parameters it lists.
    assert code_of(forge.token(forge.header(crit=["exp"], exp=NOW_TS)), trust) == "crit_unsupported"
    assert code_of(forge.token(forge.header(crit=["b64"], b64=False)), trust) == "crit_unsupported"
    assert code_of(forge.token(forge.header(crit=[])), trust) == "crit_unsupported"


# --- typ_invalid ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typ", [None, "JWT", "jwt", "at+jwt", "application/jwt", "licence", "text/licence+jwt", 7]
)
def test_missing_or_wrong_typ(forge: Forge, trust: TrustStore, typ: Any) -> None:
    assert code_of(forge.token(forge.header(typ=typ)), trust) == "typ_invalid"


# --- unknown_key ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    [
        "retired-key-from-2019",
        "../../../../etc/passwd",
        "x' OR '1'='1",
        "'; DROP TABLE keys; --",
        "k" * 5000,
        "",
        "test-es256-2026\n",
        "test-es256-2026\x00",
        "键-2026",
        42,
        None,
        ["test-es256-2026"],
        {"kid": "test-es256-2026"},
    ],
    ids=lambda kid: repr(kid)[:30],
)
def test_unknown_or_absurd_kid(forge: Forge, trust: TrustStore, kid: Any) -> None:
    verdict = rejected(forge.token(forge.header(kid=kid)), trust)
    assert verdict.codes == ("unknown_key",)
    assert len(verdict.reasons[0]) < 300  # an absurd kid is never echoed whole


def test_an_empty_trust_store_knows_no_key(good: str) -> None:
    assert code_of(good, TrustStore()) == "unknown_key"


# --- signature_invalid ------------------------------------------------------------------


def test_zero_ecdsa_signature_is_refused(good: str, trust: TrustStore) -> None:
    """CVE-2022-21449: r = s = 0 "verifies" anything in a verifier without range checks."""
    assert code_of(with_signature(good, bytes(64)), trust) == "signature_invalid"


@pytest.mark.parametrize(
    ("r", "s"),
    [(0, 1), (1, 0), (P256_N, 1), (1, P256_N), (P256_N, P256_N), (2**256 - 1, 2**256 - 1)],
)
def test_ecdsa_values_out_of_range(good: str, trust: TrustStore, r: int, s: int) -> None:
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert code_of(with_signature(good, signature), trust) == "signature_invalid"


def test_ecdsa_r_plus_n_is_not_r(forge: Forge, good: str, trust: TrustStore) -> None:
    signature = unb64(good.split(".")[2])
    r = int.from_bytes(signature[:32], "big")
    if r + P256_N < 2**256:
        shifted = (r + P256_N).to_bytes(32, "big") + signature[32:]
        assert code_of(with_signature(good, shifted), trust) == "signature_invalid"


@pytest.mark.parametrize("length", [0, 1, 32, 63, 65, 66, 96, 128])
def test_signature_of_the_wrong_length(good: str, trust: TrustStore, length: int) -> None:
    signature = unb64(good.split(".")[2])
    wrong = (signature * 3)[:length]
    assert code_of(with_signature(good, wrong), trust) == "signature_invalid"


def test_der_ecdsa_signature_is_not_jws_form(good: str, trust: TrustStore) -> None:
    signature = unb64(good.split(".")[2])
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    der = encode_dss_signature(r, s)
    assert code_of(with_signature(good, der), trust) == "signature_invalid"


@pytest.mark.parametrize("algorithm", [ES256, EDDSA, PS256], ids=lambda a: a.value)
def test_flipped_bits_in_payload_or_signature(
    forge: Forge, trust: TrustStore, algorithm: SignatureAlgorithm
) -> None:
    token = sign_licence_token(forge.backend, forge.key(algorithm), licence_claims())
    header, payload, signature = token.split(".")
    raw_payload = bytearray(unb64(payload))
    raw_payload[raw_payload.index(b"2026000001")] ^= 0x01  # serial ...001 -> ...000 style change
    assert code_of(f"{header}.{b64(bytes(raw_payload))}.{signature}", trust) == "signature_invalid"
    raw_signature = bytearray(unb64(signature))
    for position in (0, len(raw_signature) // 2, len(raw_signature) - 1):
        flipped = bytearray(raw_signature)
        flipped[position] ^= 0x80
        assert code_of(f"{header}.{payload}.{b64(bytes(flipped))}", trust) == "signature_invalid"


def test_signature_from_another_key_with_the_same_kid(forge: Forge, trust: TrustStore) -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())
    token = sign_licence_token(forge.backend, forge.key(), licence_claims())
    signing_input = token.rpartition(".")[0]
    r, s = decode_dss_signature(impostor.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    forged = with_signature(token, r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    assert code_of(forged, trust) == "signature_invalid"


def test_high_s_ecdsa_signature_is_accepted(good: str, trust: TrustStore) -> None:
    """Our documented choice: (r, n - s) is as valid as (r, s) (RFC 7518 has no low-S rule).

    It does not let anyone change what the token says; the licence is
    identified by jti, not by the token's bytes.
    """
    signature = unb64(good.split(".")[2])
    r, s = signature[:32], int.from_bytes(signature[32:], "big")
    twin = with_signature(good, r + (P256_N - s).to_bytes(32, "big"))
    assert twin != good
    assert verify_token(twin, trust, now=NOW).valid


# --- expired, not_yet_valid ---------------------------------------------------------------


def test_expired_licence(forge: Forge, trust: TrustStore) -> None:
    token = sign_licence_token(forge.backend, forge.key(), licence_claims(exp=NOW_TS - 1))
    verdict = rejected(token, trust)
    assert verdict.codes == ("expired",)
    assert "expired at 2026-05-31 23:59:59 UTC" in verdict.reasons[0]
    assert verdict.claims is not None and verdict.claims["exp"] == NOW_TS - 1  # authenticated


def test_licence_not_yet_valid(forge: Forge, trust: TrustStore) -> None:
    token = sign_licence_token(forge.backend, forge.key(), licence_claims(nbf=NOW_TS + 86400))
    verdict = rejected(token, trust)
    assert verdict.codes == ("not_yet_valid",)
    assert "2026-06-02 00:00:00 UTC" in verdict.reasons[0]
    later = NOW + timedelta(days=2)
    assert verify_token(token, trust, now=later).valid


def test_time_is_checked_only_after_the_signature(forge: Forge, trust: TrustStore) -> None:
    token = sign_licence_token(forge.backend, forge.key(), licence_claims(exp=NOW_TS - 1))
    tampered = with_signature(token, bytes(32) + unb64(token.split(".")[2])[32:])
    verdict = rejected(tampered, trust)
    assert verdict.codes == ("signature_invalid",)
    assert verdict.claims is None  # an unauthenticated payload is never handed out


# --- claims_invalid ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": None},
        {"iss": ""},
        {"iss": 91110000},
        {"sub": None},
        {"jti": None},
        {"jti": "1.2.156.3005.2.other"},
        {"iat": None},
        {"iat": "1767225600"},
        {"iat": 1767225600.5},
        {"iat": True},
        {"exp": -1},
        {"exp": 10**20},
        {"nbf": "yesterday"},
        {"exp": None, "nbf": [1]},
    ],
    ids=repr,
)
def test_claims_that_are_not_a_licence(forge: Forge, trust: TrustStore, changes: dict[str, Any]) -> None:
    claims = licence_claims(**changes)
    claims = {name: value for name, value in claims.items() if value is not None}
    verdict = rejected(forge.token(payload=claims), trust)
    assert set(verdict.codes) == {"claims_invalid"}


def test_every_claims_problem_is_reported(forge: Forge, trust: TrustStore) -> None:
    claims = {"sub": "a", "jti": "b", "iat": "now", "exp": 1.5}
    verdict = rejected(forge.token(payload=claims), trust)
    assert verdict.codes == ("claims_invalid",) * 4  # iss, iat, exp, sub != jti
    assert any("'iss'" in reason for reason in verdict.reasons)
    assert any("differ" in reason for reason in verdict.reasons)
