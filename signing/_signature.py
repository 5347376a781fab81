"""Signature checks for the three licence-token algorithms, with ``cryptography``.

JWS carries signatures in the JOSE forms (RFC 7518 §3.4, §3.5; RFC 8037 §3.1),
and this module checks those forms strictly before handing anything to
OpenSSL:

- ES256: exactly 64 bytes ``r || s``, each 32 bytes big-endian, with
  ``1 <= r, s <= n - 1`` (SEC 1 v2 §4.1.4 step 1). The range check is what
  stops the all-zero signature of CVE-2022-21449 ("psychic signatures") even in
  a library that forgets it. ``r || s`` is converted to DER for ``cryptography``.
  High-S signatures (``s > n / 2``) are accepted: ECDSA is malleable, neither
  FIPS 186-5 nor RFC 7518 requires low-S, and Wycheproof counts them valid. A
  token is identified by its ``jti`` (the licence identifier), never by the
  hash of its bytes, so a second valid spelling of one signature changes
  nothing a verifier decides.
- EdDSA (Ed25519, RFC 8032 §5.1.7): exactly 64 bytes; OpenSSL rejects
  ``S >= L`` and non-canonical points.
- PS256: RSASSA-PSS with SHA-256, MGF1-SHA-256 and a salt of exactly 32 bytes
  (RFC 7518 §3.5 says the salt length equals the hash length); the signature
  must be exactly as long as the modulus (RFC 8017 §8.1.2 step 1).

Any exception ``cryptography`` raises on these inputs means "not verified".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from hsm import SignatureAlgorithm
from schemas.errors import InvalidInput, UnsupportedAlgorithm

__all__ = ["MIN_RSA_BITS", "check_key_for_algorithm", "signature_checker", "verify_signature"]

# NIST P-256 group order n (SEC 2 v2 §2.4.2).
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P256_ORDER_BYTES: Final = _P256_ORDER.to_bytes(32, "big")
_ZERO_32: Final = bytes(32)
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_SHA256: Final = hashes.SHA256()
_PSS_SHA256_32: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
# RFC 7518 §3.5: a key of 2048 bits or larger MUST be used with PS256.
MIN_RSA_BITS: Final = 2048


def _der_integer(value: bytes) -> bytes:
    # X.690 §8.3: minimal two's complement, so leading zero octets go and one comes back
    # when the top bit is set. *value* is 1 <= value < n, so never empty after the strip.
    value = value.lstrip(b"\0")
    if value[0] & 0x80:
        value = b"\0" + value
    return b"\x02" + bytes((len(value),)) + value


def _verify_es256(public_key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    r, s = signature[:32], signature[32:]
    # 1 <= r, s <= n - 1, compared as 32-byte big-endian strings (same order as the
    # integers); then the DER SEQUENCE of two INTEGERs that OpenSSL takes (at most 70 octets,
    # so short-form lengths). Both without converting to int: 0.3 µs of a 50 µs verify.
    if not (_ZERO_32 < r < _P256_ORDER_BYTES and _ZERO_32 < s < _P256_ORDER_BYTES):
        return False
    body = _der_integer(r) + _der_integer(s)
    try:
        public_key.verify(b"\x30" + bytes((len(body),)) + body, data, _ECDSA_SHA256)
    except Exception:  # InvalidSignature, or anything else OpenSSL objects to
        return False
    return True


def _verify_eddsa(public_key: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    try:
        public_key.verify(signature, data)
    except Exception:
        return False
    return True


def _verify_ps256(public_key: rsa.RSAPublicKey, size: int, data: bytes, signature: bytes) -> bool:
    if len(signature) != size:  # the modulus length in octets (RFC 8017 §8.1.2 step 1)
        return False
    try:
        public_key.verify(signature, data, _PSS_SHA256_32, _SHA256)
    except Exception:
        return False
    return True


def _describe(public_key: object) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"an EC {public_key.curve.name} key"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"an RSA-{public_key.key_size} key"
    if isinstance(public_key, Ed25519PublicKey):
        return "an Ed25519 key"
    return f"a {type(public_key).__name__}"


def check_key_for_algorithm(algorithm: SignatureAlgorithm, public_key: object, kid: str = "") -> None:
    """Raise unless *public_key* is the kind of key *algorithm* is defined for.

    ES256 ↔ EC P-256 (RFC 7518 §3.4), EdDSA ↔ Ed25519 (RFC 8037 §3.1; Ed448
    is not offered), PS256 ↔ RSA of at least 2048 bits (RFC 7518 §3.5).
    """
    name = f"key {kid!r}" if kid else "the key"
    if algorithm is SignatureAlgorithm.ES256:
        fits = isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
            public_key.curve, ec.SECP256R1
        )
    elif algorithm is SignatureAlgorithm.EDDSA:
        fits = isinstance(public_key, Ed25519PublicKey)
    elif algorithm is SignatureAlgorithm.PS256:
        if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < MIN_RSA_BITS:
            raise InvalidInput(
                f"{name} is an RSA-{public_key.key_size} key; PS256 needs at least {MIN_RSA_BITS} bits "
                "(RFC 7518 §3.5): use an RSA-3072 key"
            )
        fits = isinstance(public_key, rsa.RSAPublicKey)
    else:
        raise UnsupportedAlgorithm(
            f"algorithm {algorithm.value!r} is not supported for licence tokens: use ES256, EdDSA or PS256"
        )
    if not fits:
        raise InvalidInput(
            f"{name} is {_describe(public_key)} but is bound to {algorithm.value}: ES256 needs an EC P-256 "
            "key, EdDSA an Ed25519 key, PS256 an RSA key of at least 2048 bits"
        )


def signature_checker(
    algorithm: SignatureAlgorithm, public_key: PublicKeyTypes
) -> Callable[[bytes, bytes], bool]:
    """A ``check(data, signature) -> bool`` for one key, checked once up front.

    The trust store builds one per key, so the hot path of verification does
    no type dispatch.
    """
    check_key_for_algorithm(algorithm, public_key)
    if algorithm is SignatureAlgorithm.ES256:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        return functools.partial(_verify_es256, public_key)
    if algorithm is SignatureAlgorithm.EDDSA:
        assert isinstance(public_key, Ed25519PublicKey)
        return functools.partial(_verify_eddsa, public_key)
    assert isinstance(public_key, rsa.RSAPublicKey)
    return functools.partial(_verify_ps256, public_key, (public_key.key_size + 7) // 8)


def verify_signature(
    algorithm: SignatureAlgorithm, public_key: PublicKeyTypes, data: bytes, signature: bytes
) -> bool:
    """Whether *signature* (JOSE form) over *data* verifies under *public_key*.

    Returns False for any bad signature, including ones of the wrong length or
    out-of-range ECDSA values. Raises ``InvalidInput``/``UnsupportedAlgorithm``
    only for a caller's mistake: a key that does not fit *algorithm*.
    """
    return signature_checker(algorithm, public_key)(data, signature)
