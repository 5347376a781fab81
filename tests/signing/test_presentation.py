"""Presentation tokens (the QR code's signed pointer): round trips and every strict check.

Round trips run over both key backends (software keystore and SoftHSM2); joserfc,
holding only our published JWKS, is the independent verifier (DESIGN §5.2).
"""

from __future__ import annotations

import json
import warnings
from datetime import timedelta
from typing import Any

import pytest
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet

from hsm import KeyBackend, SignatureAlgorithm
from schemas import LicenceIdentifier
from schemas.errors import InvalidIdentifier, InvalidInput
from signing import TrustedKey, TrustStore, jwks_document, sign_licence_token, verify_token
from signing._presentation import (
    MAX_PRESENTATION_BYTES,
    PRESENTATION_TYP,
    sign_presentation,
    sign_presentations,
    verify_presentation,
)
from tests.signing._support import NOW, NOW_TS, Forge, b64, compact, licence_claims, unb64, with_signature

IDENTIFIER = str(LicenceIdentifier("11100000000013101Q001", "11110101000000123B", 2026, 1))
EXP = NOW_TS + 365 * 86400


def claims(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"sub": IDENTIFIER, "iat": NOW_TS - 60, "exp": EXP}
    for name, change in changes.items():
        if change is None:
            value.pop(name, None)
        else:
            value[name] = change
    return value


def header(forge: Forge, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256, **changes: Any) -> Any:
    return forge.header(algorithm, **{"typ": PRESENTATION_TYP, **changes})


def presentation(forge: Forge, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256) -> str:
    return sign_presentation(forge.backend, forge.key(algorithm), IDENTIFIER, iat=NOW_TS - 60, exp=EXP)


def code_of(token: str | bytes, trust: TrustStore, **kwargs: Any) -> str:
    verdict = verify_presentation(token, trust, now=kwargs.pop("now", NOW), **kwargs)
    assert not verdict.valid, verdict
    assert len(verdict.codes) == len(verdict.reasons) >= 1, verdict
    for reason in verdict.reasons:
        assert reason.endswith(".") and "\n" not in reason and len(reason) < 400, reason
    return verdict.codes[0]


def joserfc_verify(token: str, key: TrustedKey) -> tuple[dict[str, Any], dict[str, Any]]:
    key_set = KeySet.import_key_set(jwks_document([key]))  # type: ignore[arg-type]  # JWKS is a Mapping
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # "EdDSA" is superseded by "Ed25519" (RFC 9864)
        result = jws.deserialize_compact(token, key_set, algorithms=[key.algorithm.value])
    return dict(result.protected), json.loads(result.payload)


# --- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA], ids=str)
def test_round_trip_over_backend(backend: KeyBackend, algorithm: SignatureAlgorithm) -> None:
    key = backend.generate_key(algorithm)
    trusted = TrustedKey(key.kid, key.algorithm, backend.public_key(key))

    token = sign_presentation(backend, key, IDENTIFIER, iat=NOW, exp=NOW + timedelta(days=30))

    verdict = verify_presentation(token, TrustStore([trusted]), now=NOW)
    assert verdict.valid, verdict.reasons
    assert dict(verdict.claims or {}) == {
        "sub": IDENTIFIER,
        "iat": NOW_TS,
        "exp": NOW_TS + 30 * 86400,
    }
    assert dict(verdict.header or {}) == {"alg": algorithm.value, "kid": key.kid, "typ": PRESENTATION_TYP}
    assert (verdict.kid, verdict.algorithm) == (key.kid, algorithm.value)
    assert joserfc_verify(token, trusted) == (dict(verdict.header or {}), dict(verdict.claims or {}))


def test_ps256_round_trip_and_size(forge: Forge, trust: TrustStore, trusted_keys: list[TrustedKey]) -> None:
    token = presentation(forge, SignatureAlgorithm.PS256)
    assert verify_presentation(token, trust, now=NOW).valid
    key = next(k for k in trusted_keys if k.algorithm is SignatureAlgorithm.PS256)
    assert joserfc_verify(token, key)[1]["sub"] == IDENTIFIER
    # 384-byte signature: 512 characters, still well under the 1 KiB limit.
    assert 700 < len(token) < MAX_PRESENTATION_BYTES


def test_bytes_are_the_documented_minimal_form(forge: Forge) -> None:
    token = presentation(forge)
    head, payload, signature = token.split(".")
    kid = forge.key().kid
    assert unb64(head) == f'{{"alg":"ES256","kid":"{kid}","typ":"licence-presentation+jwt"}}'.encode()
    assert unb64(payload) == f'{{"sub":"{IDENTIFIER}","iat":{NOW_TS - 60},"exp":{EXP}}}'.encode()
    assert len(unb64(signature)) == 64
    # Nothing personal, nothing but the pointer: about 300-400 characters with a 42-character kid.
    print(f"ES256 presentation token: {len(token)} characters (kid {len(kid)})")
    assert len(token) < 400


def test_licence_without_expiry_has_no_exp(forge: Forge, trust: TrustStore) -> None:
    token = sign_presentation(forge.backend, forge.key(), IDENTIFIER, iat=NOW, exp=None)
    verdict = verify_presentation(token, trust, now=NOW + timedelta(days=3650))
    assert verdict.valid
    assert "exp" not in (verdict.claims or {})


def test_signing_refuses_bad_input(forge: Forge) -> None:
    with pytest.raises(InvalidIdentifier):
        sign_presentation(forge.backend, forge.key(), "1.2.156.3005.2.garbage", iat=NOW, exp=None)
    with pytest.raises(InvalidInput):
        sign_presentation(forge.backend, forge.key(), IDENTIFIER, iat=NOW.replace(tzinfo=None), exp=None)
    with pytest.raises(InvalidInput):
        sign_presentation(forge.backend, forge.key(), IDENTIFIER, iat=NOW, exp=NOW)  # already over


def test_a_batch_signs_each_item_as_one_at_a_time_would(forge: Forge, trust: TrustStore) -> None:
    other = str(LicenceIdentifier("11100000000013101Q001", "11110101000000123B", 2026, 2))
    batch = [
        (forge.key(SignatureAlgorithm.ES256), IDENTIFIER, NOW_TS - 60, EXP),
        (forge.key(SignatureAlgorithm.EDDSA), other, NOW, None),
        (forge.key(SignatureAlgorithm.ES256), other, NOW_TS - 60, EXP),
        (forge.key(SignatureAlgorithm.PS256), IDENTIFIER, NOW_TS - 60, EXP),
    ]
    tokens = sign_presentations(forge.backend, batch)
    assert len(tokens) == 4
    for (key, identifier, iat, exp), token in zip(batch, tokens, strict=True):
        verdict = verify_presentation(token, trust, now=NOW)
        assert verdict.valid, verdict.reasons
        assert verdict.kid == key.kid and verdict.claims is not None and verdict.claims["sub"] == identifier
        alone = sign_presentation(forge.backend, key, identifier, iat=iat, exp=exp)
        assert token.rpartition(".")[0] == alone.rpartition(".")[0]  # the same header and payload
    # All or nothing: one bad item and nothing is signed.
    signed: list[int] = []
    real = forge.backend.sign_many

    def counted(key: Any, messages: Any) -> Any:
        signed.append(len(messages))
        return real(key, messages)

    forge.backend.sign_many = counted  # type: ignore[method-assign]
    try:
        with pytest.raises(InvalidIdentifier):
            sign_presentations(forge.backend, [batch[0], (forge.key(), "garbage", NOW, None)])
        assert signed == []
        assert sign_presentations(forge.backend, []) == []
    finally:
        forge.backend.sign_many = real  # type: ignore[method-assign]


# --- what is refused ----------------------------------------------------------------


def test_expired_is_authentic_but_not_valid(forge: Forge, trust: TrustStore) -> None:
    verdict = verify_presentation(presentation(forge), trust, now=NOW + timedelta(days=400))
    assert verdict.codes == ("expired",)
    assert verdict.claims is not None and verdict.claims["sub"] == IDENTIFIER  # the signature held


def test_tampered_payload_and_signature(forge: Forge, trust: TrustStore) -> None:
    token = presentation(forge)
    head, _, signature = token.split(".")
    other = str(LicenceIdentifier("11100000000013101Q001", "11110101000000123B", 2026, 2))
    assert code_of(f"{head}.{b64(compact(claims(sub=other)))}.{signature}", trust) == "signature_invalid"
    flipped = bytearray(unb64(signature))
    flipped[10] ^= 1
    assert code_of(with_signature(token, bytes(flipped)), trust) == "signature_invalid"


def test_algorithm_comes_from_the_key_not_the_header(forge: Forge, trust: TrustStore) -> None:
    # Header claims EdDSA for the ES256 key, and really is signed by the EdDSA key.
    swapped = forge.token(header(forge, alg="EdDSA"), compact(claims()), signer=SignatureAlgorithm.EDDSA)
    assert code_of(swapped, trust) == "algorithm_mismatch"
    for alg in ("none", "HS256", "RS256", "es256"):
        assert (
            code_of(forge.token(header(forge, alg=alg), compact(claims())), trust) == "unsupported_algorithm"
        )


def test_typ_is_required_and_distinct_from_licence_tokens(forge: Forge, trust: TrustStore) -> None:
    assert code_of(forge.token(header(forge, typ=None), compact(claims())), trust) == "typ_invalid"
    assert code_of(forge.token(header(forge, typ="JWT"), compact(claims())), trust) == "typ_invalid"
    licence_token = sign_licence_token(forge.backend, forge.key(), licence_claims())
    assert code_of(licence_token, trust) == "typ_invalid"
    # ... and the other way round: a presentation token is no licence token.
    assert verify_token(presentation(forge), trust, now=NOW).codes == ("typ_invalid",)
    # RFC 7515 §4.1.9: the media type compares case-insensitively, application/ implied.
    spelled = forge.token(header(forge, typ="application/Licence-Presentation+JWT"), compact(claims()))
    assert verify_presentation(spelled, trust, now=NOW).valid


def test_only_alg_kid_typ_in_the_header(forge: Forge, trust: TrustStore) -> None:
    for extra in ({"jku": "https://evil.example/jwks"}, {"x5u": "https://evil.example"}, {"cty": "JWT"}):
        assert (
            code_of(forge.token(header(forge, SignatureAlgorithm.ES256, **extra), compact(claims())), trust)
            == "forbidden_header"
        )
    assert code_of(forge.token(header(forge, crit=["exp"]), compact(claims())), trust) == "crit_unsupported"
    assert code_of(forge.token(header(forge, kid="nobody"), compact(claims())), trust) == "unknown_key"


def test_claims_are_minimal(forge: Forge, trust: TrustStore) -> None:
    for bad in (
        claims(holder="陈静"),  # nothing personal, nothing extra
        claims(sub=None),
        claims(sub=""),
        claims(iat=None),
        claims(iat=True),
        claims(exp="2030-01-01"),
        claims(iat=1.5),
    ):
        assert code_of(forge.token(header(forge), compact(bad)), trust) == "claims_invalid", bad


def test_strict_encoding(forge: Forge, trust: TrustStore) -> None:
    token = presentation(forge)
    head, payload, signature = token.split(".")
    assert code_of(head + "=." + payload + "." + signature, trust) == "malformed"
    assert code_of(f"{head}.{payload}", trust) == "malformed"
    assert code_of(token + ".", trust) == "malformed"
    assert code_of("ünïcode" + token, trust) == "malformed"
    assert code_of(b"\xff" + token.encode(), trust) == "malformed"
    duplicate = b'{"sub":"' + IDENTIFIER.encode() + b'","iat":1,"iat":2}'
    assert code_of(forge.token(header(forge), duplicate), trust) == "malformed"
    dup_header = (
        b'{"alg":"ES256","kid":"x","kid":"'
        + forge.key().kid.encode()
        + b'","typ":"'
        + (PRESENTATION_TYP.encode() + b'"}')
    )
    assert code_of(forge.token(dup_header, compact(claims())), trust) == "malformed"


def test_size_is_checked_before_decoding(forge: Forge, trust: TrustStore) -> None:
    big = "A" * (MAX_PRESENTATION_BYTES + 1)
    assert code_of(big, trust) == "too_large"
    assert code_of(big.encode(), trust) == "too_large"
    padded = forge.token(header(forge), compact(claims(sub=IDENTIFIER + " " * 600)))
    assert len(padded) > MAX_PRESENTATION_BYTES
    assert code_of(padded, trust) == "too_large"


def test_caller_mistakes_raise(trust: TrustStore) -> None:
    with pytest.raises(InvalidInput):
        verify_presentation("a.b.c", trust, now=NOW.replace(tzinfo=None))
    with pytest.raises(InvalidInput):
        verify_presentation("a.b.c", trust, now=NOW, leeway=-1)
