"""The keys a verifier trusts: :class:`TrustedKey` and :class:`TrustStore`.

A trusted key is bound to one algorithm when it enters the store (DESIGN §4);
a token's ``alg`` header can only agree with that binding, never choose it
(RFC 8725 §3.1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from hsm import SignatureAlgorithm
from schemas.errors import AlreadyExists, InvalidInput, UnsupportedAlgorithm

from ._jws import (
    ALGORITHM_MISMATCH,
    KID_RE,
    MALFORMED,
    SUPPORTED_ALGORITHMS,
    TOKEN_TYP,
    UNKNOWN_KEY,
    Rejected,
    b64url_decode,
    check_header,
    encode_header,
    parse_json_object,
    shown,
)
from ._signature import check_key_for_algorithm, signature_checker

__all__ = ["TrustStore", "TrustedKey"]


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key that may sign licence tokens, bound to one algorithm.

    ``state`` is the key's lifecycle state as the key registry records it
    (``active``, ``retired`` …); it is informative here: whoever builds the
    :class:`TrustStore` leaves out keys whose tokens must no longer verify.

    Raises ``UnsupportedAlgorithm`` for an algorithm licence tokens do not use
    and ``InvalidInput`` for a key that does not fit its algorithm (ES256 needs
    EC P-256, EdDSA Ed25519, PS256 RSA of at least 2048 bits).
    """

    kid: str
    algorithm: SignatureAlgorithm
    public_key: PublicKeyTypes
    state: str = "active"

    def __post_init__(self) -> None:
        if not isinstance(self.kid, str) or KID_RE.fullmatch(self.kid) is None:
            raise InvalidInput(
                f"key id {shown(self.kid)} is not usable: use 1-128 visible ASCII characters "
                "(letters, digits and . _ - for keys we create)"
            )
        algorithm: object = self.algorithm
        if not isinstance(algorithm, SignatureAlgorithm):
            if not isinstance(algorithm, str):
                raise UnsupportedAlgorithm(f"algorithm {shown(algorithm)} is not an algorithm name")
            object.__setattr__(self, "algorithm", SignatureAlgorithm.parse(algorithm))
        if self.algorithm.value not in SUPPORTED_ALGORITHMS:
            raise UnsupportedAlgorithm(
                f"algorithm {self.algorithm.value!r} is not supported for licence tokens: "
                "use ES256, EdDSA or PS256"
            )
        check_key_for_algorithm(self.algorithm, self.public_key, self.kid)
        if not isinstance(self.state, str) or not self.state:
            raise InvalidInput(f"key state {shown(self.state)} is not usable: give the registry state")

    @classmethod
    def from_public_key(
        cls,
        kid: str,
        algorithm: SignatureAlgorithm | str,
        public_key: PublicKeyTypes,
        state: str = "active",
    ) -> TrustedKey:
        """Build a trusted key, accepting the algorithm by name (``"ES256"``)."""
        if not isinstance(algorithm, SignatureAlgorithm):
            algorithm = SignatureAlgorithm.parse(algorithm)
        return cls(kid, algorithm, public_key, state)


@dataclass(frozen=True, slots=True)
class _Entry:
    """What verification needs for one key, computed once when it is added."""

    key: TrustedKey
    alg: str  # key.algorithm.value, without the enum lookup
    header: Mapping[str, Any]  # the canonical header, read-only
    check: Callable[[bytes, bytes], bool]  # check(signing_input, signature)


class TrustStore:
    """Trusted keys by ``kid``.

    Adding a key precomputes its signature checker and the exact protected
    header :func:`signing.sign_licence_token` writes for it, so a token carrying
    that header skips header decoding altogether (the result is the same: the
    canonical header passes every header check). ``verify_token`` reads the two
    private indexes directly; they are the hot path.
    """

    __slots__ = ("_by_header", "_by_kid")

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        self._by_kid: dict[str, _Entry] = {}
        self._by_header: dict[str, _Entry] = {}
        for key in keys:
            self.add(key)

    def add(self, key: TrustedKey) -> None:
        """Trust *key*; ``AlreadyExists`` if its kid is already in the store."""
        if not isinstance(key, TrustedKey):
            raise InvalidInput(f"a trust store holds TrustedKey objects, not {type(key).__name__}")
        if key.kid in self._by_kid:
            raise AlreadyExists(f"key {key.kid!r} is already in the trust store: a kid names exactly one key")
        alg = key.algorithm.value
        entry = _Entry(
            key=key,
            alg=alg,
            header=MappingProxyType({"alg": alg, "kid": key.kid, "typ": TOKEN_TYP}),
            check=signature_checker(key.algorithm, key.public_key),
        )
        self._by_kid[key.kid] = entry
        self._by_header[encode_header(key.kid, alg)] = entry

    def get(self, kid: str) -> TrustedKey | None:
        """The key named *kid*, or None."""
        entry = self._by_kid.get(kid) if isinstance(kid, str) else None
        return None if entry is None else entry.key

    def __len__(self) -> int:
        return len(self._by_kid)

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter([entry.key for entry in self._by_kid.values()])

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, str) and kid in self._by_kid

    def __repr__(self) -> str:
        kids = ", ".join(sorted(self._by_kid))
        return f"TrustStore([{kids}])"


def resolve_key(
    encoded_header: str, trust: TrustStore, expected_typ: str | None, what: str
) -> tuple[Mapping[str, Any], str, str, _Entry]:
    """Decode and check a protected header, then find its key and hold it to its bound algorithm.

    Returns ``(header, alg, kid, entry)``; raises ``Rejected`` (malformed, header checks,
    unknown key, algorithm mismatch). The algorithm is the key's, never the header's
    (RFC 8725 §3.1): a header naming another one is refused, not obeyed.
    """
    raw_header = b64url_decode(encoded_header)
    if raw_header is None:
        raise Rejected(
            MALFORMED,
            f"The {what}'s header is not canonical base64url without padding (RFC 7515 §2): it has "
            "characters outside A-Z a-z 0-9 - _, '=' padding, or stray bits in its last character.",
        )
    parsed = parse_json_object(raw_header, "header")
    alg, kid = check_header(parsed, expected_typ)
    entry = trust._by_kid.get(kid)
    if entry is None:
        raise Rejected(
            UNKNOWN_KEY,
            f"The {what} was signed with key {kid!r}, which is not in the trust list: refresh the "
            "trust list (JWKS) or ask the issuer which key it used.",
        )
    if alg != entry.alg:
        raise Rejected(
            ALGORITHM_MISMATCH,
            f"The {what}'s header says {alg} but key {kid!r} is bound to {entry.alg}; "
            "a token cannot choose its algorithm (RFC 8725 §3.1).",
        )
    return MappingProxyType(parsed), alg, kid, entry
