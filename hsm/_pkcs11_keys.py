"""PKCS#11 key objects and Yinxin algorithms: templates, recognition, export.

Which algorithm a key is bound to is read back from the token (key type and
curve), never stored beside it, so a restarted service finds the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from pkcs11 import MGF, Attribute, KeyType, Mechanism, MechanismFlag
from pkcs11.exceptions import AttributeSensitive, AttributeTypeInvalid
from pkcs11.types import Object, SignMixin

from hsm._backend import SecretPurpose, SignatureAlgorithm

__all__ = [
    "KeyPairSpec",
    "Signer",
    "algorithm_of",
    "keypair_spec",
    "make_signer",
    "private_template",
    "protection_attributes",
    "protection_sentence",
    "public_key_of",
    "public_template",
    "purpose_of",
    "secret_spec",
]

# DER-encoded named-curve parameters (CKA_EC_PARAMS): P-256 is
# 1.2.840.10045.3.1.7 (RFC 5480 §2.1.1.1), Ed25519 is 1.3.101.112 (RFC 8410 §3).
_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")
_ED25519_PARAMS = bytes.fromhex("06032b6570")
# PKCS#11 v3.0 §2.3.10 also allows the curve name as a PrintableString.
_ED25519_NAME_PARAMS = b"\x13\x0cedwards25519"

RSA_BITS = 3072
_PSS_PARAMS = (Mechanism.SHA256, MGF.SHA256, 32)  # RFC 7518 §3.5: salt = hash length
_MIN_RSA_BITS = 2048

Signer = Callable[[bytes], bytes]
KeyPairSpec = tuple[KeyType, int | None, dict[Attribute, Any]]


def keypair_spec(algorithm: SignatureAlgorithm) -> KeyPairSpec:
    """Key type, length and extra public-key attributes for *algorithm*."""
    if algorithm is SignatureAlgorithm.ES256:
        return KeyType.EC, None, {Attribute.EC_PARAMS: _P256_PARAMS}
    if algorithm is SignatureAlgorithm.EDDSA:
        return KeyType.EC_EDWARDS, None, {Attribute.EC_PARAMS: _ED25519_PARAMS}
    if algorithm is SignatureAlgorithm.PS256:
        # python-pkcs11 adds CKA_PUBLIC_EXPONENT 65537 and CKA_MODULUS_BITS.
        return KeyType.RSA, RSA_BITS, {}
    raise AssertionError(f"no PKCS#11 key pair for {algorithm}")  # pragma: no cover


def _common(kid: str) -> dict[Attribute, Any]:
    # CKA_ID = kid on both halves ties the pair together for tools that pair by ID.
    return {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.LABEL: kid, Attribute.ID: kid.encode()}


def private_template(kid: str) -> dict[Attribute, Any]:
    """Private half: generated on the token, never readable or exportable."""
    return {
        **_common(kid),
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }


def public_template(kid: str, extra: dict[Attribute, Any]) -> dict[Attribute, Any]:
    """Public half: kept on the token so the key can be published and verified."""
    return {**_common(kid), Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False, **extra}


def secret_spec(label: str, purpose: SecretPurpose) -> tuple[KeyType, MechanismFlag, dict[Attribute, Any]]:
    """Key type, capabilities and template of a 256-bit secret for *purpose*."""
    template = {
        **_common(label),
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
    }
    if purpose is SecretPurpose.ENCRYPTION:
        return KeyType.AES, MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT, template
    return KeyType.GENERIC_SECRET, MechanismFlag.SIGN | MechanismFlag.VERIFY, template


def _attribute(obj: Object, attribute: Attribute) -> Any:
    try:
        return obj[attribute]
    except (AttributeTypeInvalid, AttributeSensitive):
        return None


# What a ceremony record reads back from a private key object (KeyProvenance.ATTRIBUTES).
_PROTECTION_ATTRIBUTES = {
    "CKA_TOKEN": Attribute.TOKEN,
    "CKA_PRIVATE": Attribute.PRIVATE,
    "CKA_SENSITIVE": Attribute.SENSITIVE,
    "CKA_EXTRACTABLE": Attribute.EXTRACTABLE,
    "CKA_ALWAYS_SENSITIVE": Attribute.ALWAYS_SENSITIVE,
    "CKA_NEVER_EXTRACTABLE": Attribute.NEVER_EXTRACTABLE,
    "CKA_SIGN": Attribute.SIGN,
    "CKA_LOCAL": Attribute.LOCAL,
}


def protection_attributes(obj: Object) -> dict[str, bool | None]:
    """The protection attributes of a key object as the token reports them.

    One ``C_GetAttributeValue`` per attribute, so a token refusing one
    (CKR_ATTRIBUTE_SENSITIVE / CKR_ATTRIBUTE_TYPE_INVALID, PKCS#11 v2.40 §5.7)
    costs only that one: it reads as None, never as an error.
    """
    values: dict[str, bool | None] = {}
    for name, attribute in _PROTECTION_ATTRIBUTES.items():
        value = _attribute(obj, attribute)
        values[name] = value if isinstance(value, bool) else None
    return values


def protection_sentence(attributes: dict[str, bool | None]) -> str:
    """One sentence saying what the token's answers mean for the private key.

    Built from the answers themselves, so a key imported or once exportable
    says so (PKCS#11 v2.40 §4.9: CKA_ALWAYS_SENSITIVE / CKA_NEVER_EXTRACTABLE
    tell whether it was ever otherwise; CKA_LOCAL whether the token generated it).
    """
    origin = {
        True: "generated on the token",
        False: "imported into the token, not generated there",
        None: "the token does not say where it was generated",
    }[attributes["CKA_LOCAL"]]

    sensitive = attributes["CKA_SENSITIVE"]
    if sensitive is True:
        always = attributes["CKA_ALWAYS_SENSITIVE"]
        sensitivity = "sensitive" if always is True else "sensitive (but not since its creation)"
    elif sensitive is False:
        sensitivity = "NOT sensitive (its value can be read)"
    else:
        sensitivity = "of unreported sensitivity"

    extractable, never = attributes["CKA_EXTRACTABLE"], attributes["CKA_NEVER_EXTRACTABLE"]
    if extractable is False and never is True:
        extraction = "never extractable"
    elif extractable is False:
        extraction = "not extractable (but it once was)" if never is False else "not extractable"
    elif extractable is True:
        extraction = "EXTRACTABLE (it can be wrapped out of the token)"
    else:
        extraction = "of unreported extractability"

    return f"{origin}; private key {sensitivity} and {extraction}"


def algorithm_of(obj: Object) -> SignatureAlgorithm | None:
    """The algorithm a private or public key object is bound to; None if foreign."""
    key_type = _attribute(obj, Attribute.KEY_TYPE)
    if key_type == KeyType.EC:
        return SignatureAlgorithm.ES256 if _attribute(obj, Attribute.EC_PARAMS) == _P256_PARAMS else None
    if key_type == KeyType.EC_EDWARDS:
        params = _attribute(obj, Attribute.EC_PARAMS)
        return SignatureAlgorithm.EDDSA if params in (_ED25519_PARAMS, _ED25519_NAME_PARAMS) else None
    if key_type == KeyType.RSA:
        modulus = _attribute(obj, Attribute.MODULUS)
        return SignatureAlgorithm.PS256 if modulus and len(modulus) * 8 >= _MIN_RSA_BITS else None
    return None


def purpose_of(obj: Object) -> SecretPurpose | None:
    """What a secret-key object is for; None if it is not one of ours."""
    key_type = _attribute(obj, Attribute.KEY_TYPE)
    if key_type == KeyType.AES:
        return SecretPurpose.ENCRYPTION
    if key_type == KeyType.GENERIC_SECRET:
        return SecretPurpose.MAC
    return None


def _unwrap_octet_string(point: bytes, size: int) -> bytes:
    # CKA_EC_POINT is a DER OCTET STRING (PKCS#11 v2.40 §2.3.3); some modules
    # return the bare point instead. Both are accepted.
    if len(point) == size:
        return point
    if len(point) == size + 2 and point[0] == 0x04 and point[1] == size:
        return point[2:]
    raise ValueError(f"unexpected CKA_EC_POINT of {len(point)} bytes")


def public_key_of(obj: Object, algorithm: SignatureAlgorithm) -> PublicKeyTypes:
    """The public key object as a ``cryptography`` key (raises ValueError if malformed)."""
    if algorithm is SignatureAlgorithm.ES256:
        point = _unwrap_octet_string(bytes(obj[Attribute.EC_POINT]), 65)
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    if algorithm is SignatureAlgorithm.EDDSA:
        raw = _unwrap_octet_string(bytes(obj[Attribute.EC_POINT]), 32)
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    modulus = int.from_bytes(obj[Attribute.MODULUS], "big")
    exponent = int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big")
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def make_signer(key: SignMixin, algorithm: SignatureAlgorithm) -> Signer:
    """A one-argument function signing a message with *key*, as JOSE wants it.

    This is the hot path: the closure binds everything it can up front.
    Digests are computed here with hashlib rather than on the token (cheaper,
    and the data never has to cross the PKCS#11 boundary).
    """
    sign = key.sign
    sha256 = hashlib.sha256

    if algorithm is SignatureAlgorithm.ES256:
        ecdsa = Mechanism.ECDSA

        def sign_es256(data: bytes) -> bytes:
            # CKM_ECDSA returns r || s, each padded to 32 bytes: already the
            # JWS form (RFC 7518 §3.4).
            return sign(sha256(data).digest(), mechanism=ecdsa)

        return sign_es256

    if algorithm is SignatureAlgorithm.EDDSA:
        eddsa = Mechanism.EDDSA

        def sign_eddsa(data: bytes) -> bytes:
            # PureEdDSA signs the message itself (RFC 8032 §5.1.6).
            return sign(data, mechanism=eddsa)

        return sign_eddsa

    pss = Mechanism.RSA_PKCS_PSS

    def sign_ps256(data: bytes) -> bytes:
        return sign(sha256(data).digest(), mechanism=pss, mechanism_param=_PSS_PARAMS)

    return sign_ps256
