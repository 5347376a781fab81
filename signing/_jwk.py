"""Public keys as JWK (RFC 7517) and JWKS documents, in and out.

Out: :func:`public_jwk` and :func:`jwks_document` publish our keys so that any
standard JOSE library can verify licence tokens (DESIGN §4). In:
:func:`trusted_key_from_jwk` reads an offline trust list, strictly: public
members only, an ``alg`` is required (the algorithm is bound to the key), and
each key type must fit that algorithm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hsm import SignatureAlgorithm
from schemas.errors import InvalidInput, UnsupportedAlgorithm

from ._jws import SUPPORTED_ALGORITHMS, b64url_decode, b64url_encode, shown
from ._trust import TrustedKey

__all__ = ["jwks_document", "public_jwk", "trusted_key_from_jwk"]

# Private-key members of EC/OKP (RFC 7518 §6.2.2, RFC 8037 §2), RSA (RFC 7518
# §6.3.2) and symmetric keys (RFC 7518 §6.4.1). None belongs in a trust list.
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _uint_bytes(value: int) -> bytes:
    # RFC 7518 §6.3.1.1: the minimal big-endian form, no leading zero octets.
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def public_jwk(key: TrustedKey) -> dict[str, Any]:
    """The public JWK of *key*, with ``kid``, ``alg`` and ``use: "sig"``.

    EC keys carry ``crv``, ``x``, ``y`` as 32-byte coordinates (RFC 7518
    §6.2.1); Ed25519 keys ``kty: OKP``, ``crv``, ``x`` (RFC 8037 §2); RSA keys
    ``n`` and ``e`` (RFC 7518 §6.3.1). ``key_ops`` is left out: RFC 7517 §4.3
    says it SHOULD NOT be used together with ``use``.
    """
    public_key = key.public_key
    jwk: dict[str, Any]
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        numbers = public_key.public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(numbers.x.to_bytes(32, "big")),
            "y": b64url_encode(numbers.y.to_bytes(32, "big")),
        }
    elif isinstance(public_key, Ed25519PublicKey):
        raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    elif isinstance(public_key, rsa.RSAPublicKey):
        rsa_numbers = public_key.public_numbers()
        jwk = {
            "kty": "RSA",
            "n": b64url_encode(_uint_bytes(rsa_numbers.n)),
            "e": b64url_encode(_uint_bytes(rsa_numbers.e)),
        }
    else:  # TrustedKey's own checks make this unreachable
        raise UnsupportedAlgorithm(f"cannot publish {type(public_key).__name__} as a JWK")
    jwk.update({"kid": key.kid, "alg": key.algorithm.value, "use": "sig"})
    return jwk


def jwks_document(keys: Iterable[TrustedKey]) -> dict[str, Any]:
    """A JWK Set (RFC 7517 §5): ``{"keys": [...]}``, sorted by kid."""
    return {"keys": [public_jwk(key) for key in sorted(keys, key=lambda key: key.kid)]}


def _member(jwk: Mapping[str, Any], name: str, kid: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise InvalidInput(f"JWK {kid} has no {name!r} string member")
    return value


def _b64_member(jwk: Mapping[str, Any], name: str, kid: str, size: int | None = None) -> bytes:
    raw = b64url_decode(_member(jwk, name, kid))
    if raw is None or not raw:
        raise InvalidInput(f"JWK {kid} member {name!r} is not canonical unpadded base64url (RFC 7515 §2)")
    if size is not None and len(raw) != size:
        raise InvalidInput(f"JWK {kid} member {name!r} must be {size} bytes, not {len(raw)}")
    return raw


def trusted_key_from_jwk(jwk: Mapping[str, Any], *, state: str = "active") -> TrustedKey:
    """Read one public JWK from a trust list into a :class:`TrustedKey`.

    Raises ``InvalidInput`` for private members, a missing ``kid`` or ``alg``, a
    ``use`` other than ``sig`` or ``key_ops`` without ``verify`` (RFC 7517 §4.2,
    §4.3), bad coordinates or a key that does not fit its algorithm, and
    ``UnsupportedAlgorithm`` for an ``alg`` other than ES256, EdDSA or PS256.
    """
    if not isinstance(jwk, Mapping):
        raise InvalidInput(f"a JWK is a JSON object, not {type(jwk).__name__}")
    kid_value = jwk.get("kid")
    kid = shown(kid_value) if kid_value is not None else "(no kid)"
    private = sorted(_PRIVATE_MEMBERS.intersection(jwk.keys()))
    if private:
        raise InvalidInput(
            f"JWK {kid} contains private key members ({', '.join(private)}): a trust list holds "
            "public keys only; publish the key with signing.public_jwk"
        )
    if not isinstance(kid_value, str):
        raise InvalidInput(f"JWK {kid} has no 'kid' string: every trusted key needs a key id")
    alg = jwk.get("alg")
    if not isinstance(alg, str):
        raise InvalidInput(
            f"JWK {kid} has no 'alg': a trusted key must be bound to one algorithm (RFC 7517 §4.4)"
        )
    if alg not in SUPPORTED_ALGORITHMS:
        raise UnsupportedAlgorithm(
            f"JWK {kid} is for algorithm {shown(alg)}; licence tokens use only ES256, EdDSA and PS256"
        )
    algorithm = SignatureAlgorithm.parse(alg)
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise InvalidInput(f"JWK {kid} has use {shown(use)}; a signature key must have use 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise InvalidInput(f"JWK {kid} has key_ops {shown(key_ops)}, which do not include 'verify'")

    kty = jwk.get("kty")
    public_key: PublicKeyTypes
    try:
        if kty == "EC":
            if jwk.get("crv") != "P-256":
                raise InvalidInput(f"JWK {kid} is on curve {shown(jwk.get('crv'))}; only P-256 is used")
            x = _b64_member(jwk, "x", kid, 32)
            y = _b64_member(jwk, "y", kid, 32)
            # from_encoded_point checks that (x, y) is on the curve (SEC 1 §3.2.2).
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
        elif kty == "OKP":
            if jwk.get("crv") != "Ed25519":
                raise InvalidInput(f"JWK {kid} is curve {shown(jwk.get('crv'))}; only Ed25519 is used")
            public_key = Ed25519PublicKey.from_public_bytes(_b64_member(jwk, "x", kid, 32))
        elif kty == "RSA":
            n = int.from_bytes(_b64_member(jwk, "n", kid), "big")
            e = int.from_bytes(_b64_member(jwk, "e", kid), "big")
            public_key = rsa.RSAPublicNumbers(e, n).public_key()
        else:
            raise InvalidInput(f"JWK {kid} has key type {shown(kty)}; use EC, OKP or RSA")
    except ValueError as exc:  # cryptography: not on the curve, bad RSA numbers
        raise InvalidInput(f"JWK {kid} does not hold a valid public key: {exc}") from exc
    return TrustedKey(kid_value, algorithm, public_key, state)
