"""The one plug-in point for keys: :class:`KeyBackend`.

Two real implementations live beside this module: the PKCS#11 backend
(python-pkcs11; SoftHSM2 in tests, a vendor module in production) and the
software keystore. One contract suite (``tests/hsm/test_contract.py``) runs
over both.

Signatures come back in the form JOSE uses (RFC 7518 §3.4: ECDSA as the
fixed-width ``r || s`` concatenation, not DER), so the JWS layer and the PDF
layer (which converts to DER itself) share one signing path.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from schemas.errors import InvalidInput, UnsupportedAlgorithm

__all__ = [
    "BackendConfig",
    "KeyBackend",
    "KeyProvenance",
    "KeyRef",
    "SecretPurpose",
    "SignatureAlgorithm",
    "validate_label",
]

# Labels become PKCS#11 CKA_LABEL values and keystore file names: keep them to
# a safe, printable alphabet so they can never be a path or an injection.
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_label(label: str) -> str:
    """Return *label* if it is a usable kid/secret label, else raise InvalidInput."""
    if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
        shown = label[:40] + "…" if isinstance(label, str) and len(label) > 40 else label
        raise InvalidInput(
            f"key label {shown!r} is not allowed: use 1-128 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    return label


class SignatureAlgorithm(StrEnum):
    """JWS algorithms (RFC 7518 / RFC 8037) a key can be bound to at creation.

    One algorithm per key, never chosen by a token header. SM2 with SM3
    (GB/T 32918, GB/T 32905) is planned; it will be added here as a new member
    and implemented by each backend.
    """

    ES256 = "ES256"  # ECDSA P-256 with SHA-256 (default)
    EDDSA = "EdDSA"  # Ed25519 (RFC 8037)
    PS256 = "PS256"  # RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt; RSA-3072

    @classmethod
    def parse(cls, value: str) -> SignatureAlgorithm:
        for member in cls:
            if member.value == value:
                return member
        supported = ", ".join(m.value for m in cls)
        raise UnsupportedAlgorithm(f"algorithm {value!r} is not supported: use one of {supported}")


class SecretPurpose(StrEnum):
    """Symmetric keys the backend keeps for data protection (holder ID numbers)."""

    ENCRYPTION = "encryption"  # AES-256-GCM
    MAC = "mac"  # HMAC-SHA-256


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A signing key in a backend: its label (the JWS ``kid``) and its bound algorithm."""

    kid: str
    algorithm: SignatureAlgorithm


@dataclass(frozen=True, slots=True)
class KeyProvenance:
    """Where a signing key lives and how the device says it is protected, read back from the device.

    For a key-generation ceremony record. ``attributes`` holds exactly
    :attr:`ATTRIBUTES`, as the PKCS#11 token reports them on the private key
    object (PKCS#11 v2.40 §4.4, §4.9; ``CKA_LOCAL`` true = generated on the
    token); None where the token refuses to say, or where the attribute does
    not apply (the software keystore).
    """

    ATTRIBUTES: ClassVar[tuple[str, ...]] = (
        "CKA_TOKEN",
        "CKA_PRIVATE",
        "CKA_SENSITIVE",
        "CKA_EXTRACTABLE",
        "CKA_ALWAYS_SENSITIVE",
        "CKA_NEVER_EXTRACTABLE",
        "CKA_SIGN",
        "CKA_LOCAL",
    )

    backend: str  # the backend's ``name``: "pkcs11" or "software"
    module: str  # PKCS#11 module path as configured, or the software keystore directory
    token_label: str | None  # CK_TOKEN_INFO label; None for software
    token_serial: str | None  # CK_TOKEN_INFO serialNumber
    token_manufacturer: str | None  # CK_TOKEN_INFO manufacturerID
    token_model: str | None  # CK_TOKEN_INFO model
    attributes: Mapping[str, bool | None]
    protection: str  # one human sentence: what really protects the private key

    def __post_init__(self) -> None:
        if set(self.attributes) != set(self.ATTRIBUTES):
            raise ValueError(f"key provenance attributes must be exactly {', '.join(self.ATTRIBUTES)}")
        # Frozen means frozen: a ceremony record must not change after it is read.
        frozen = MappingProxyType({name: self.attributes[name] for name in self.ATTRIBUTES})
        object.__setattr__(self, "attributes", frozen)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: plain types only, attributes in :attr:`ATTRIBUTES` order."""
        return {
            "backend": self.backend,
            "module": self.module,
            "token_label": self.token_label,
            "token_serial": self.token_serial,
            "token_manufacturer": self.token_manufacturer,
            "token_model": self.token_model,
            "attributes": dict(self.attributes),
            "protection": self.protection,
        }


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """What :func:`hsm.open_backend` needs; built by ``verify_api`` from settings.

    ``hsm`` never reads the environment itself (DESIGN §2).
    """

    kind: Literal["software", "pkcs11"] = "software"
    home: Path = Path("var")
    # software keystore
    keystore_passphrase: bytes | None = None
    development: bool = False
    # pkcs11
    pkcs11_module: str | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin: str | None = None
    pkcs11_sessions: int = 4

    def __repr__(self) -> str:  # never print the PIN or the passphrase
        return (
            f"BackendConfig(kind={self.kind!r}, home={str(self.home)!r}, "
            f"development={self.development}, pkcs11_module={self.pkcs11_module!r}, "
            f"pkcs11_token_label={self.pkcs11_token_label!r}, pin=<hidden>, passphrase=<hidden>)"
        )


class KeyBackend(ABC):
    """Keys that never leave their home: generate, sign, publish, list.

    Implementations are safe to call from several threads. Errors are ours
    (``schemas.errors``): ``KeyNotFound`` for an unknown label,
    ``BackendError``/``BackendUnavailable`` when the device fails.
    """

    name: ClassVar[str]

    @abstractmethod
    def generate_key(
        self, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256, kid: str | None = None
    ) -> KeyRef:
        """Create a key pair bound to *algorithm*, labelled *kid* (random when None)."""

    @abstractmethod
    def sign(self, key: KeyRef, data: bytes) -> bytes:
        """Sign *data* (the message, not a digest) with the algorithm bound to *key*.

        Returns the JWS-form signature: 64 bytes ``r || s`` for ES256, 64 bytes
        for EdDSA, 384 bytes for PS256.
        """

    def sign_many(self, key: KeyRef, messages: Sequence[bytes]) -> list[bytes]:
        """Sign each of *messages* with *key*, in order: :meth:`sign` for a batch.

        One call per batch lets a backend check the key once and spread the work over
        threads; this default signs one after another (through SoftHSM two threads signed
        slower than one: 16 000 against 19 500 ES256 signatures/s on a 2-core machine).
        Raises what :meth:`sign` raises; no signature is returned unless all were made.
        """
        return [self.sign(key, message) for message in messages]

    @abstractmethod
    def public_key(self, key: KeyRef | str) -> PublicKeyTypes:
        """The public key as a ``cryptography`` object."""

    @abstractmethod
    def get_key(self, kid: str) -> KeyRef:
        """Look a signing key up by label; raises ``KeyNotFound``."""

    @abstractmethod
    def list_keys(self) -> list[KeyRef]:
        """Every signing key in the backend, sorted by kid."""

    @abstractmethod
    def destroy_key(self, kid: str) -> None:
        """Delete the private key (PKCS#11 ``C_DestroyObject``); the public half may stay."""

    @abstractmethod
    def describe_key(self, kid: str) -> KeyProvenance:
        """Read back where the key *kid* lives and its protection attributes; KeyNotFound if absent.

        It describes the private key, so a destroyed key is ``KeyNotFound``
        even though its public half still resolves.
        """

    @abstractmethod
    def generate_secret(self, label: str, purpose: SecretPurpose) -> None:
        """Create a symmetric key for *purpose*; ``AlreadyExists`` if the label is taken."""

    @abstractmethod
    def has_secret(self, label: str) -> bool:
        """Whether a symmetric key with this label exists."""

    @abstractmethod
    def encrypt(self, label: str, plaintext: bytes, aad: bytes = b"") -> bytes:
        """AES-256-GCM; returns ``nonce(12) || ciphertext || tag(16)``."""

    @abstractmethod
    def decrypt(self, label: str, blob: bytes, aad: bytes = b"") -> bytes:
        """Inverse of :meth:`encrypt`; ``BackendError`` if the tag does not verify."""

    @abstractmethod
    def mac(self, label: str, data: bytes) -> bytes:
        """HMAC-SHA-256 of *data* (32 bytes)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the backend answers."""

    @abstractmethod
    def close(self) -> None:
        """Release sessions and handles; the object is unusable afterwards."""

    def __enter__(self) -> KeyBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
