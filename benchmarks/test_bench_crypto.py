"""Sign and verify per algorithm and backend, each beside its raw baseline.

* sign-software-ALG: ``SoftwareBackend.sign`` vs the raw ``cryptography`` sign with a key in memory;
* sign-pkcs11-ALG: ``PKCS11Backend.sign`` vs a raw python-pkcs11 ``sign`` on the same token key;
* verify-ALG: ``signing.verify_token`` (strict parse + bound algorithm + claims) vs the raw
  ``cryptography`` verify of the same signature over the same signing input.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hsm import KeyBackend, SignatureAlgorithm
from schemas import load_licence_types
from signing import TrustedKey, TrustStore, sign_licence_token, verify_token
from verify_api._demo import DEMO_TYPE

DATA = b"eyJhbGciOiJFUzI1NiJ9." + b"x" * 600  # about the size of a licence token's signing input
ALGS = [SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA, SignatureAlgorithm.PS256]
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def _raw_software_signer(alg: SignatureAlgorithm) -> Any:
    if alg is SignatureAlgorithm.ES256:
        k = ec.generate_private_key(ec.SECP256R1())
        return lambda: k.sign(DATA, ec.ECDSA(hashes.SHA256()))
    if alg is SignatureAlgorithm.EDDSA:
        e = ed25519.Ed25519PrivateKey.generate()
        return lambda: e.sign(DATA)
    r = rsa.generate_private_key(65537, 3072)
    return lambda: r.sign(DATA, PSS, hashes.SHA256())


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_sign_software_raw(benchmark: Any, alg: SignatureAlgorithm) -> None:
    benchmark.group = f"sign-software-{alg.value}"
    benchmark.extra_info["role"] = "baseline"
    benchmark(_raw_software_signer(alg))


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_sign_software_ours(benchmark: Any, alg: SignatureAlgorithm, software_backend: KeyBackend) -> None:
    benchmark.group = f"sign-software-{alg.value}"
    benchmark.extra_info["role"] = "ours"
    key = software_backend.generate_key(alg)
    software_backend.sign(key, DATA)  # warm the decrypted-key cache
    benchmark(software_backend.sign, key, DATA)


def _raw_pkcs11_signer(softhsm: dict[str, str], kid: str, alg: SignatureAlgorithm) -> Any:
    lib = pkcs11.lib(softhsm["module"])
    token = lib.get_token(token_label=softhsm["label"])
    # The backend already logged this process in; PKCS#11 login state is per application
    # (v2.40 §5.6), so a second raw session shares it.
    session = token.open()
    priv = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=kid)
    if alg is SignatureAlgorithm.ES256:
        return session, lambda: priv.sign(hashlib.sha256(DATA).digest(), mechanism=pkcs11.Mechanism.ECDSA)
    if alg is SignatureAlgorithm.EDDSA:
        return session, lambda: priv.sign(DATA, mechanism=pkcs11.Mechanism.EDDSA)
    param = (pkcs11.Mechanism.SHA256, pkcs11.MGF.SHA256, 32)
    return session, lambda: priv.sign(
        DATA, mechanism=pkcs11.Mechanism.SHA256_RSA_PKCS_PSS, mechanism_param=param
    )


@pytest.mark.softhsm
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_sign_pkcs11_raw(
    benchmark: Any, alg: SignatureAlgorithm, pkcs11_backend: KeyBackend, softhsm: dict[str, str]
) -> None:
    benchmark.group = f"sign-pkcs11-{alg.value}"
    benchmark.extra_info["role"] = "baseline"
    key = pkcs11_backend.generate_key(alg)
    session, sign = _raw_pkcs11_signer(softhsm, key.kid, alg)
    try:
        benchmark(sign)
    finally:
        session.close()


@pytest.mark.softhsm
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_sign_pkcs11_ours(benchmark: Any, alg: SignatureAlgorithm, pkcs11_backend: KeyBackend) -> None:
    benchmark.group = f"sign-pkcs11-{alg.value}"
    benchmark.extra_info["role"] = "ours"
    key = pkcs11_backend.generate_key(alg)
    pkcs11_backend.sign(key, DATA)
    benchmark(pkcs11_backend.sign, key, DATA)


def _token_and_trust(backend: KeyBackend, alg: SignatureAlgorithm) -> tuple[str, TrustStore, TrustedKey]:
    key = backend.generate_key(alg)
    # A real licence's claims (the demo type's example), as the vault builds them.
    example = load_licence_types().get(DEMO_TYPE).example
    ident = "1.2.156.3005.2.11100000000013101Q001.11110101000000123B.20260000001.001.B"
    claims = {
        "iss": example["issuer"],
        "sub": ident,
        "jti": ident,
        "iat": 1_790_000_000,
        "nbf": 1_709_222_400,
        "licence_type": DEMO_TYPE,
        "licence_type_name": "个体工商户营业执照",
        "issuer_name": "北京市东城区市场监督管理局",
        "holder": {**example["holder"], "id_masked": example["holder"]["id"]},
        "valid_from": example["valid_from"],
        "valid_until": None,
        "ver": "001",
        "data": example["data"],
    }
    token = sign_licence_token(backend, key, claims)
    trusted = TrustedKey(key.kid, alg, backend.public_key(key))
    return token, TrustStore([trusted]), trusted


_VERIFY_CASES: dict[SignatureAlgorithm, tuple[str, TrustStore, TrustedKey]] = {}


# role inside alg: each baseline runs right before its own path on the same key and token, so
# a slow spell on this shared machine is less likely to fall on one side of a ratio only.
@pytest.mark.parametrize("role", ["baseline", "ours"])
@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.value)
def test_verify(benchmark: Any, alg: SignatureAlgorithm, role: str, software_backend: KeyBackend) -> None:
    benchmark.group = f"verify-{alg.value}"
    benchmark.extra_info["role"] = role
    if alg not in _VERIFY_CASES:
        _VERIFY_CASES[alg] = _token_and_trust(software_backend, alg)
    token, trust, trusted = _VERIFY_CASES[alg]
    if role == "ours":
        now = datetime(2026, 11, 23, tzinfo=UTC)
        assert verify_token(token, trust, now=now).valid
        benchmark(verify_token, token, trust, now=now)
        return
    head, payload, sig_b64 = token.split(".")
    signing_input = f"{head}.{payload}".encode()
    sig = base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))
    pub: Any = trusted.public_key
    if alg is SignatureAlgorithm.ES256:
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        benchmark(pub.verify, der, signing_input, ec.ECDSA(hashes.SHA256()))
    elif alg is SignatureAlgorithm.EDDSA:
        benchmark(pub.verify, sig, signing_input)
    else:
        benchmark(pub.verify, sig, signing_input, PSS, hashes.SHA256())
