"""The PKCS#11 backend: keys live in an HSM (SoftHSM2 in tests).

Keys are generated on the token (``CKA_TOKEN``), private halves and secrets
``CKA_SENSITIVE`` and never ``CKA_EXTRACTABLE``, labelled with their kid
(DESIGN §4). The algorithm of a key is read back from the token, so a
restarted service sees what it created.

Every operation runs on a session of :class:`hsm._pkcs11_pool.SessionPool`,
which logs in once, caches object handles per session and recovers from
lost sessions or a restarted module by itself. The signing path is one dict
lookup and one ``C_Sign``: no logging, no ``C_FindObjects``, digests by hashlib.

Errors. Every python-pkcs11 exception is translated into ``schemas.errors``
here or in the pool; messages name the token and the key, never the PIN.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import ClassVar, cast

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from pkcs11 import Attribute, GCMParams, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    DataLenRange,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
    KeyHandleInvalid,
    ObjectHandleInvalid,
)
from pkcs11.types import DecryptMixin, EncryptMixin, Object, Session, SignMixin

from hsm._backend import (
    KeyBackend,
    KeyProvenance,
    KeyRef,
    SecretPurpose,
    SignatureAlgorithm,
    validate_label,
)
from hsm._kid import new_kid
from hsm._pkcs11_keys import (
    Signer,
    algorithm_of,
    keypair_spec,
    make_signer,
    private_template,
    protection_attributes,
    protection_sentence,
    public_key_of,
    public_template,
    purpose_of,
    secret_spec,
)
from hsm._pkcs11_pool import PooledSession, SessionPool, StaleHandle
from schemas.errors import (
    AlreadyExists,
    BackendError,
    ConfigurationError,
    InvalidInput,
    KeyNotFound,
)

__all__ = ["PKCS11Backend"]

_log = logging.getLogger("yinxin.hsm")

_NONCE_BYTES = 12  # NIST SP 800-38D §8.2.2: 96-bit random IVs
_TAG_BITS = 128
_TAG_BYTES = _TAG_BITS // 8


def _token_text(value: str | bytes) -> str | None:
    # CK_TOKEN_INFO fields are blank-padded (PKCS#11 v2.40 §3.2); an all-blank one says nothing.
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return text.strip() or None


def _wrong_algorithm(kid: str, bound: SignatureAlgorithm, asked: object) -> InvalidInput:
    asked = getattr(asked, "value", asked)
    return InvalidInput(f"key {kid!r} is bound to {bound.value}, not {asked}")


class PKCS11Backend(KeyBackend):
    """Keys generated and used inside a PKCS#11 token; see the module docstring."""

    name: ClassVar[str] = "pkcs11"

    def __init__(self, module_path: str, token_label: str, pin: str, *, sessions: int = 4) -> None:
        if sessions < 1:
            raise ConfigurationError(f"YINXIN_PKCS11_SESSIONS must be at least 1, not {sessions}")
        self._module_path = module_path
        self._token_label = token_label
        self._admin_lock = threading.Lock()  # key generation and destruction
        self._public_keys: dict[str, tuple[SignatureAlgorithm, PublicKeyTypes]] = {}
        self._pool = SessionPool(module_path, token_label, pin, sessions)
        _log.info("PKCS#11 token %r opened through %s with %d sessions", token_label, module_path, sessions)

    def __repr__(self) -> str:
        return f"PKCS11Backend(module={self._module_path!r}, token={self._token_label!r})"

    # -- object lookup -------------------------------------------------------------

    def _find(self, session: Session, object_class: ObjectClass, label: str) -> Object | None:
        # list() runs the search to the end so C_FindObjectsFinal is called.
        found = list(session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}))
        if len(found) > 1:
            raise BackendError(
                f"PKCS#11 token {self._token_label!r} holds {len(found)} {object_class.name.lower()} "
                f"objects labelled {label!r}; remove the duplicates"
            )
        return found[0] if found else None

    def _load_signer(self, pooled: PooledSession, kid: str) -> tuple[SignatureAlgorithm, Signer]:
        validate_label(kid)
        key = self._find(pooled.session, ObjectClass.PRIVATE_KEY, kid)
        if key is None:
            raise KeyNotFound(
                f"no private key {kid!r} in PKCS#11 token {self._token_label!r} (never created, or destroyed)"
            )
        algorithm = algorithm_of(key)
        if algorithm is None or not isinstance(key, SignMixin):
            raise KeyNotFound(f"key {kid!r} in token {self._token_label!r} is not a Yinxin signing key")
        entry = (algorithm, make_signer(key, algorithm))
        pooled.signers[kid] = entry
        return entry

    # -- signing keys ----------------------------------------------------------------

    def generate_key(
        self, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256, kid: str | None = None
    ) -> KeyRef:
        algorithm = SignatureAlgorithm.parse(algorithm)
        kid = new_kid() if kid is None else validate_label(kid)
        with self._admin_lock:
            self._pool.call("key generation", self._generate_with, algorithm, kid)
        _log.info("generated %s key %r in PKCS#11 token %r", algorithm.value, kid, self._token_label)
        return KeyRef(kid, algorithm)

    def _generate_with(self, pooled: PooledSession, algorithm: SignatureAlgorithm, kid: str) -> None:
        session = pooled.session
        for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            if self._find(session, object_class, kid) is not None:
                raise AlreadyExists(f"a key labelled {kid!r} already exists in token {self._token_label!r}")
        key_type, key_length, extra = keypair_spec(algorithm)
        session.generate_keypair(
            key_type,
            key_length,
            store=True,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template=public_template(kid, extra),
            private_template=private_template(kid),
        )

    def sign(self, key: KeyRef, data: bytes) -> bytes:
        return self._pool.call("signing", self._sign_with, key, data)

    def _sign_with(self, pooled: PooledSession, key: KeyRef, data: bytes) -> bytes:
        entry = pooled.signers.get(key.kid)
        if entry is None:
            entry = self._load_signer(pooled, key.kid)
        if entry[0] != key.algorithm:
            raise _wrong_algorithm(key.kid, entry[0], key.algorithm)
        try:
            return entry[1](data)
        except (KeyHandleInvalid, ObjectHandleInvalid) as exc:
            raise StaleHandle from exc

    def public_key(self, key: KeyRef | str) -> PublicKeyTypes:
        kid = validate_label(key.kid if isinstance(key, KeyRef) else key)
        cached = self._public_keys.get(kid)
        if cached is None:
            cached = self._pool.call("public key export", self._public_with, kid)
            self._public_keys[kid] = cached
        if isinstance(key, KeyRef) and key.algorithm != cached[0]:
            raise _wrong_algorithm(kid, cached[0], key.algorithm)
        return cached[1]

    def _public_with(self, pooled: PooledSession, kid: str) -> tuple[SignatureAlgorithm, PublicKeyTypes]:
        obj = self._find(pooled.session, ObjectClass.PUBLIC_KEY, kid)
        if obj is None:
            raise KeyNotFound(f"no public key {kid!r} in PKCS#11 token {self._token_label!r}")
        algorithm = algorithm_of(obj)
        if algorithm is None:
            raise KeyNotFound(f"key {kid!r} in token {self._token_label!r} is not a Yinxin signing key")
        try:
            return algorithm, public_key_of(obj, algorithm)
        except ValueError as exc:
            raise BackendError(f"public key {kid!r} in token {self._token_label!r} is malformed") from exc

    def get_key(self, kid: str) -> KeyRef:
        validate_label(kid)
        return self._pool.call("key lookup", self._get_with, kid)

    def _get_with(self, pooled: PooledSession, kid: str) -> KeyRef:
        # The public half outlives destroy_key(), so verification history still resolves.
        for object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY):
            obj = self._find(pooled.session, object_class, kid)
            if obj is not None:
                algorithm = algorithm_of(obj)
                if algorithm is None:
                    break
                return KeyRef(kid, algorithm)
        raise KeyNotFound(f"no key {kid!r} in PKCS#11 token {self._token_label!r}")

    def list_keys(self) -> list[KeyRef]:
        return self._pool.call("key listing", self._list_with)

    def _list_with(self, pooled: PooledSession) -> list[KeyRef]:
        keys: dict[str, KeyRef] = {}
        for obj in list(pooled.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})):
            label = obj[Attribute.LABEL]
            algorithm = algorithm_of(obj)
            if algorithm is None or not isinstance(label, str):
                continue
            try:
                validate_label(label)
            except InvalidInput:
                continue  # not a key this service created
            keys[label] = KeyRef(label, algorithm)
        return [keys[kid] for kid in sorted(keys)]

    def destroy_key(self, kid: str) -> None:
        validate_label(kid)
        with self._admin_lock:
            self._pool.call("key destruction", self._destroy_with, kid)
            for pooled in self._pool.sessions:
                pooled.signers.pop(kid, None)
        _log.info("destroyed private key %r in PKCS#11 token %r", kid, self._token_label)

    def _destroy_with(self, pooled: PooledSession, kid: str) -> None:
        key = self._find(pooled.session, ObjectClass.PRIVATE_KEY, kid)
        if key is None:
            raise KeyNotFound(f"no private key {kid!r} in PKCS#11 token {self._token_label!r}")
        key.destroy()  # C_DestroyObject; the public key object stays

    def describe_key(self, kid: str) -> KeyProvenance:
        validate_label(kid)
        return self._pool.call("key description", self._describe_with, kid)

    def _describe_with(self, pooled: PooledSession, kid: str) -> KeyProvenance:
        key = self._find(pooled.session, ObjectClass.PRIVATE_KEY, kid)
        if key is None:
            raise KeyNotFound(
                f"no private key {kid!r} in PKCS#11 token {self._token_label!r} (never created, or destroyed)"
            )
        if algorithm_of(key) is None:
            raise KeyNotFound(f"key {kid!r} in token {self._token_label!r} is not a Yinxin signing key")
        attributes = protection_attributes(key)
        token = pooled.session.token.slot.get_token()  # C_GetTokenInfo now, not as it was at login
        return KeyProvenance(
            backend=self.name,
            module=self._module_path,
            token_label=_token_text(token.label),
            token_serial=_token_text(token.serial),
            token_manufacturer=_token_text(token.manufacturer_id),
            token_model=_token_text(token.model),
            attributes=attributes,
            protection=protection_sentence(attributes),
        )

    # -- secrets -------------------------------------------------------------

    def generate_secret(self, label: str, purpose: SecretPurpose) -> None:
        validate_label(label)
        purpose = SecretPurpose(purpose)
        with self._admin_lock:
            self._pool.call("secret generation", self._generate_secret_with, label, purpose)
        _log.info("generated %s secret %r in PKCS#11 token %r", purpose.value, label, self._token_label)

    def _generate_secret_with(self, pooled: PooledSession, label: str, purpose: SecretPurpose) -> None:
        session = pooled.session
        if self._find(session, ObjectClass.SECRET_KEY, label) is not None:
            raise AlreadyExists(f"a secret labelled {label!r} already exists in token {self._token_label!r}")
        key_type, capabilities, template = secret_spec(label, purpose)
        session.generate_key(key_type, 256, store=True, capabilities=capabilities, template=template)

    def has_secret(self, label: str) -> bool:
        validate_label(label)
        return self._pool.call("secret lookup", self._has_secret_with, label)

    def _has_secret_with(self, pooled: PooledSession, label: str) -> bool:
        if label in pooled.secrets:
            return True
        return self._find(pooled.session, ObjectClass.SECRET_KEY, label) is not None

    def _secret(self, pooled: PooledSession, label: str, purpose: SecretPurpose) -> Object:
        entry = pooled.secrets.get(label)
        if entry is None:
            validate_label(label)
            obj = self._find(pooled.session, ObjectClass.SECRET_KEY, label)
            found = purpose_of(obj) if obj is not None else None
            if obj is None or found is None:
                raise KeyNotFound(f"no secret {label!r} in PKCS#11 token {self._token_label!r}")
            entry = pooled.secrets[label] = (found, obj)
        if entry[0] is not purpose:
            raise InvalidInput(f"secret {label!r} is a {entry[0].value} key, not an {purpose.value} key")
        return entry[1]

    def encrypt(self, label: str, plaintext: bytes, aad: bytes = b"") -> bytes:
        return self._pool.call("encryption", self._encrypt_with, label, plaintext, aad)

    def _encrypt_with(self, pooled: PooledSession, label: str, plaintext: bytes, aad: bytes) -> bytes:
        key = self._secret(pooled, label, SecretPurpose.ENCRYPTION)
        if not isinstance(key, EncryptMixin):
            raise KeyNotFound(f"secret {label!r} in token {self._token_label!r} cannot encrypt")
        nonce = os.urandom(_NONCE_BYTES)
        params = GCMParams(nonce, aad or None, _TAG_BITS)
        try:
            # bytes in, bytes out (an iterator only for iterator input)
            sealed = cast(bytes, key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params))
        except (KeyHandleInvalid, ObjectHandleInvalid) as exc:
            raise StaleHandle from exc
        return nonce + sealed

    def decrypt(self, label: str, blob: bytes, aad: bytes = b"") -> bytes:
        return self._pool.call("decryption", self._decrypt_with, label, blob, aad)

    def _decrypt_with(self, pooled: PooledSession, label: str, blob: bytes, aad: bytes) -> bytes:
        key = self._secret(pooled, label, SecretPurpose.ENCRYPTION)
        if not isinstance(key, DecryptMixin):
            raise KeyNotFound(f"secret {label!r} in token {self._token_label!r} cannot decrypt")
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise BackendError(f"decryption with secret {label!r} failed: the ciphertext is truncated")
        nonce, sealed = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        params = GCMParams(nonce, aad or None, _TAG_BITS)
        try:
            return cast(bytes, key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=params))
        except (KeyHandleInvalid, ObjectHandleInvalid) as exc:
            raise StaleHandle from exc
        except (
            EncryptedDataInvalid,
            EncryptedDataLenRange,
            DataLenRange,
            FunctionFailed,
            GeneralError,
        ) as exc:
            # SoftHSM2 reports a GCM tag mismatch as CKR_GENERAL_ERROR; here it
            # means "does not authenticate", not "the device is broken".
            raise BackendError(
                f"decryption with secret {label!r} failed: the ciphertext or its associated data "
                "was altered, or it was encrypted under another key"
            ) from exc

    def mac(self, label: str, data: bytes) -> bytes:
        return self._pool.call("MAC", self._mac_with, label, data)

    def _mac_with(self, pooled: PooledSession, label: str, data: bytes) -> bytes:
        key = self._secret(pooled, label, SecretPurpose.MAC)
        if not isinstance(key, SignMixin):
            raise KeyNotFound(f"secret {label!r} in token {self._token_label!r} cannot compute a MAC")
        try:
            return key.sign(data, mechanism=Mechanism.SHA256_HMAC)
        except (KeyHandleInvalid, ObjectHandleInvalid) as exc:
            raise StaleHandle from exc

    # -- health and lifetime ------------------------------------------------------

    def ping(self) -> None:
        self._pool.call("health check", self._ping_with)

    @staticmethod
    def _ping_with(pooled: PooledSession) -> None:
        pooled.session.token.slot.get_token()  # C_GetTokenInfo: the token is present
        pooled.session.generate_random(64)  # C_GenerateRandom: the session is alive

    def close(self) -> None:
        if self._pool.close():
            _log.info("PKCS#11 token %r closed", self._token_label)
        self._public_keys.clear()
