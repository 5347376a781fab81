"""Publishing keys as JWK/JWKS, reading trust lists, and binding keys to algorithms."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from hsm import SignatureAlgorithm
from schemas.errors import AlreadyExists, InvalidInput, UnsupportedAlgorithm
from signing import (
    TrustedKey,
    TrustStore,
    jwks_document,
    public_jwk,
    sign_licence_token,
    trusted_key_from_jwk,
    verify_signature,
    verify_token,
)
from tests.signing._support import ALGORITHMS, NOW, Forge, b64, licence_claims

ES256, EDDSA, PS256 = SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA, SignatureAlgorithm.PS256


def key_for(trusted_keys: list[TrustedKey], algorithm: SignatureAlgorithm) -> TrustedKey:
    return next(key for key in trusted_keys if key.algorithm is algorithm)


# --- public_jwk / jwks_document -------------------------------------------------------


def test_public_jwk_members(trusted_keys: list[TrustedKey]) -> None:
    es, ed, ps = (key_for(trusted_keys, alg) for alg in ALGORITHMS)
    assert set(public_jwk(es)) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert set(public_jwk(ed)) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert set(public_jwk(ps)) == {"kty", "n", "e", "kid", "alg", "use"}
    assert public_jwk(es)["crv"] == "P-256" and public_jwk(es)["kty"] == "EC"
    assert public_jwk(ed)["crv"] == "Ed25519" and public_jwk(ed)["kty"] == "OKP"
    assert public_jwk(ps)["e"] == "AQAB"
    for key in (es, ed, ps):
        jwk = public_jwk(key)
        assert (jwk["kid"], jwk["alg"], jwk["use"]) == (key.kid, key.algorithm.value, "sig")
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(jwk)
        json.dumps(jwk)  # plain JSON values only


def test_ec_coordinates_keep_their_leading_zeros() -> None:
    # RFC 7518 §6.2.1.2: x and y are always the full 32 bytes.
    for _ in range(200):
        private = ec.generate_private_key(ec.SECP256R1())
        numbers = private.public_key().public_numbers()
        if numbers.x < 2**248 or numbers.y < 2**248:
            break
    jwk = public_jwk(TrustedKey("short-coordinate", ES256, private.public_key()))
    assert len(jwk["x"]) == len(jwk["y"]) == 43


def test_joserfc_imports_our_jwks(trusted_keys: list[TrustedKey]) -> None:
    document: Any = jwks_document(trusted_keys)
    key_set = KeySet.import_key_set(document)
    kinds = {key.kid: type(key) for key in key_set.keys}
    assert kinds == {
        key_for(trusted_keys, ES256).kid: ECKey,
        key_for(trusted_keys, EDDSA).kid: OKPKey,
        key_for(trusted_keys, PS256).kid: RSAKey,
    }


def test_jwks_document_is_sorted_by_kid(trusted_keys: list[TrustedKey]) -> None:
    document = jwks_document(reversed(trusted_keys))
    kids = [jwk["kid"] for jwk in document["keys"]]
    assert kids == sorted(kids) and len(kids) == 3
    assert list(document) == ["keys"]


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.value)
def test_a_trust_list_round_trips(
    forge: Forge, trusted_keys: list[TrustedKey], algorithm: SignatureAlgorithm
) -> None:
    original = key_for(trusted_keys, algorithm)
    read_back = trusted_key_from_jwk(json.loads(json.dumps(public_jwk(original))), state="retired")
    assert (read_back.kid, read_back.algorithm, read_back.state) == (original.kid, algorithm, "retired")
    assert public_jwk(read_back) == public_jwk(original)
    token = sign_licence_token(forge.backend, forge.key(algorithm), licence_claims())
    assert verify_token(token, TrustStore([read_back]), now=NOW).valid


# --- trusted_key_from_jwk refusals ---------------------------------------------------------


def es256_jwk(trusted_keys: list[TrustedKey], **changes: Any) -> dict[str, Any]:
    jwk = public_jwk(key_for(trusted_keys, ES256))
    for name, value in changes.items():
        if value is None:
            jwk.pop(name, None)
        else:
            jwk[name] = value
    return jwk


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"d": "c2VjcmV0"}, "private key members"),
        ({"alg": None}, "no 'alg'"),
        ({"kid": None}, "no 'kid'"),
        ({"use": "enc"}, "use"),
        ({"key_ops": ["encrypt"]}, "key_ops"),
        ({"key_ops": "verify"}, "key_ops"),
        ({"crv": "P-384"}, "curve"),
        ({"kty": "oct"}, "key type"),
        ({"kty": None}, "key type"),
        ({"x": "AAAA"}, "32 bytes"),
        ({"x": None}, "'x'"),
        ({"y": b64(bytes(32))}, "valid public key"),  # not on the curve
        ({"alg": "EdDSA"}, "EdDSA"),  # an EC key cannot be bound to EdDSA
    ],
    ids=repr,
)
def test_trust_list_entries_that_are_refused(
    trusted_keys: list[TrustedKey], changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        trusted_key_from_jwk(es256_jwk(trusted_keys, **changes))


def test_padded_coordinates_are_refused(trusted_keys: list[TrustedKey]) -> None:
    jwk = es256_jwk(trusted_keys)
    jwk["x"] += "="
    with pytest.raises(InvalidInput, match="base64url"):
        trusted_key_from_jwk(jwk)


@pytest.mark.parametrize("alg", ["RS256", "HS256", "ES512", "none", "PS384"])
def test_trust_list_algorithms_we_do_not_use(trusted_keys: list[TrustedKey], alg: str) -> None:
    with pytest.raises(UnsupportedAlgorithm):
        trusted_key_from_jwk(es256_jwk(trusted_keys, alg=alg))


def test_symmetric_and_private_jwks_are_refused() -> None:
    with pytest.raises(InvalidInput, match="private key members"):
        trusted_key_from_jwk({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "mac"})
    with pytest.raises(InvalidInput, match="JSON object"):
        trusted_key_from_jwk([("kty", "EC")])  # type: ignore[arg-type]


# --- TrustedKey binds key and algorithm ------------------------------------------------------


def test_trusted_key_binds_the_right_kind_of_key() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    small_rsa = rsa.generate_private_key(65537, 1024).public_key()  # noqa: S505 - must be refused
    rsa2048 = rsa.generate_private_key(65537, 2048).public_key()

    assert TrustedKey("ok-es", ES256, p256).algorithm is ES256
    assert TrustedKey("ok-ed", EDDSA, ed).algorithm is EDDSA
    assert TrustedKey("ok-ps", PS256, rsa2048).algorithm is PS256
    wrong: list[tuple[SignatureAlgorithm, PublicKeyTypes]] = [
        (ES256, p384),
        (ES256, ed),
        (ES256, rsa2048),
        (EDDSA, p256),
        (EDDSA, ed448.Ed448PrivateKey.generate().public_key()),
        (PS256, p256),
        (PS256, small_rsa),
    ]
    for algorithm, key in wrong:
        with pytest.raises(InvalidInput):
            TrustedKey("bad", algorithm, key)


def test_trusted_key_algorithm_by_name() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert TrustedKey.from_public_key("named", "ES256", p256).algorithm is ES256
    assert TrustedKey("named", "ES256", p256).algorithm is ES256  # type: ignore[arg-type]
    for name in ("RS256", "HS256", "es256", "none"):
        with pytest.raises(UnsupportedAlgorithm):
            TrustedKey.from_public_key("named", name, p256)


@pytest.mark.parametrize("kid", ["", "a b", "k" * 129, "键", "tab\t"])
def test_trusted_key_kid_must_be_short_and_printable(kid: str) -> None:
    with pytest.raises(InvalidInput, match="key id"):
        TrustedKey(kid, ES256, ec.generate_private_key(ec.SECP256R1()).public_key())


def test_verify_signature_refuses_a_key_of_the_wrong_kind() -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    assert verify_signature(EDDSA, ed.public_key(), b"data", ed.sign(b"data"))
    assert not verify_signature(EDDSA, ed.public_key(), b"data!", ed.sign(b"data"))
    with pytest.raises(InvalidInput):
        verify_signature(ES256, ed.public_key(), b"data", ed.sign(b"data"))


# --- TrustStore ---------------------------------------------------------------------------------


def test_trust_store_basics(trusted_keys: list[TrustedKey]) -> None:
    store = TrustStore(trusted_keys[:2])
    assert len(store) == 2
    store.add(trusted_keys[2])
    assert len(store) == 3
    assert sorted(key.kid for key in store) == sorted(key.kid for key in trusted_keys)
    assert store.get(trusted_keys[0].kid) is trusted_keys[0]
    assert store.get("nobody") is None
    assert store.get(42) is None  # type: ignore[arg-type]
    assert trusted_keys[0].kid in store and "nobody" not in store
    assert trusted_keys[0].kid in repr(store)


def test_a_kid_names_exactly_one_key(trusted_keys: list[TrustedKey]) -> None:
    store = TrustStore(trusted_keys)
    with pytest.raises(AlreadyExists):
        store.add(trusted_keys[0])
    other = TrustedKey(trusted_keys[0].kid, ES256, ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(AlreadyExists):
        TrustStore([trusted_keys[0], other])


def test_a_key_added_later_verifies(forge: Forge, trusted_keys: list[TrustedKey]) -> None:
    token = sign_licence_token(forge.backend, forge.key(PS256), licence_claims())
    store = TrustStore([key_for(trusted_keys, ES256)])
    assert verify_token(token, store, now=NOW).codes == ("unknown_key",)
    store.add(key_for(trusted_keys, PS256))
    assert verify_token(token, store, now=NOW).valid
