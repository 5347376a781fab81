"""The PKCS#11 backend: keys live in an HSM (SoftHSM2 in tests).

Sessions. The user logs in once, on the first session; every further session
of the process shares that login (PKCS#11 v2.40 §5.6). A small pool of R/W
sessions lets concurrent threads sign at the same time, each on its own
session, and every pooled session caches the object handles it has found
(kid → private key) so a signature costs one ``C_Sign`` and no
``C_FindObjects``.

Recovery. When a call fails because the session, the login, the token or the
module is gone (see :func:`hsm._pkcs11_module.is_device_failure`), the backend
takes every session back, re-initialises the module, opens the token, logs in
again and retries the call once; if that fails too the caller gets
``BackendUnavailable``. ``C_Finalize`` must not run while another thread is
inside the module, which is why recovery first waits for the sessions in use.

Errors. Every python-pkcs11 exception is translated here into
``schemas.errors``; messages name the token and the key, never the PIN.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import ClassVar, Concatenate, ParamSpec, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from pkcs11 import Attribute, GCMParams, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    AnotherUserAlreadyLoggedIn,
    DataLenRange,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
    KeyHandleInvalid,
    MultipleTokensReturned,
    NoSuchToken,
    ObjectHandleInvalid,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    UserAlreadyLoggedIn,
    UserPinNotInitialized,
)
from pkcs11.types import DecryptMixin, EncryptMixin, Object, Session, SignMixin, Token

from hsm._backend import KeyBackend, KeyRef, SecretPurpose, SignatureAlgorithm, validate_label
from hsm._kid import new_kid
from hsm._pkcs11_keys import (
    Signer,
    algorithm_of,
    keypair_spec,
    make_signer,
    private_template,
    public_key_of,
    public_template,
    purpose_of,
    secret_spec,
)
from hsm._pkcs11_module import SharedModule, acquire_module, is_device_failure, release_module
from schemas.errors import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidInput,
    KeyNotFound,
)

__all__ = ["PKCS11Backend"]

_log = logging.getLogger("yinxin.hsm")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_NONCE_BYTES = 12  # NIST SP 800-38D §8.2.2: 96-bit random IVs
_TAG_BITS = 128
_TAG_BYTES = _TAG_BITS // 8
# How long a caller waits for a free session, and recovery for busy ones.
_WAIT_SECONDS = 30.0


class _PooledSession:
    """A session of the pool with the handles it has looked up."""

    __slots__ = ("generation", "secrets", "session", "signers")

    def __init__(self, session: Session, generation: int) -> None:
        self.session = session
        self.generation = generation
        self.signers: dict[str, tuple[SignatureAlgorithm, Signer]] = {}
        self.secrets: dict[str, tuple[SecretPurpose, Object]] = {}


def _wrong_algorithm(kid: str, bound: SignatureAlgorithm, asked: object) -> InvalidInput:
    asked = getattr(asked, "value", asked)
    return InvalidInput(f"key {kid!r} is bound to {bound.value}, not {asked}")


class _StaleHandle(Exception):
    """A cached object handle no longer names an object (destroyed elsewhere)."""


class PKCS11Backend(KeyBackend):
    """Keys generated and used inside a PKCS#11 token; see the module docstring."""

    name: ClassVar[str] = "pkcs11"

    def __init__(self, module_path: str, token_label: str, pin: str, *, sessions: int = 4) -> None:
        if sessions < 1:
            raise ConfigurationError(f"YINXIN_PKCS11_SESSIONS must be at least 1, not {sessions}")
        self._module_path = module_path
        self._token_label = token_label
        self._pin = pin  # needed again to log in after recovery; never logged or shown
        self._size = sessions
        self._lock = threading.Lock()  # recovery and close
        self._admin_lock = threading.Lock()  # key generation and destruction
        # None in the queue means "no sessions": the backend is closed or broken.
        self._idle: queue.SimpleQueue[_PooledSession | None] = queue.SimpleQueue()
        self._sessions: list[_PooledSession] = []  # the current generation's sessions
        self._generation = 0
        self._closed = False
        self._public_keys: dict[str, tuple[SignatureAlgorithm, PublicKeyTypes]] = {}

        self._module: SharedModule = acquire_module(module_path)
        try:
            with self._module.lock:
                self._module_generation = self._module.generation
                self._fill_pool(self._open_sessions(self._find_token(refresh=True)))
        except BaseException:
            release_module(self._module)
            raise
        _log.info("PKCS#11 token %r opened through %s with %d sessions", token_label, module_path, sessions)

    def __repr__(self) -> str:
        return f"PKCS11Backend(module={self._module_path!r}, token={self._token_label!r})"

    # -- sessions ---------------------------------------------------------------

    def _find_token(self, *, refresh: bool) -> Token:
        lib = self._module.lib
        try:
            try:
                return lib.get_token(token_label=self._token_label)
            except NoSuchToken:
                # The token may have been created after C_Initialize.
                if not (refresh and self._module.refresh_slots(self._module_generation)):
                    raise
                self._module_generation = self._module.generation
                return lib.get_token(token_label=self._token_label)
        except NoSuchToken as exc:
            raise BackendUnavailable(
                f"PKCS#11 token {self._token_label!r} not found in module {self._module_path!r}: "
                "check YINXIN_PKCS11_TOKEN_LABEL, or create the token (SoftHSM2: softhsm2-util "
                "--init-token --free --label <label>); a token created after the service started "
                "needs a restart"
            ) from exc
        except MultipleTokensReturned as exc:
            raise BackendUnavailable(
                f"more than one PKCS#11 token is labelled {self._token_label!r} in module "
                f"{self._module_path!r}: give each token its own label"
            ) from exc
        except PKCS11Error as exc:
            raise BackendUnavailable(
                f"PKCS#11 module {self._module_path!r} did not list its tokens ({type(exc).__name__})"
            ) from exc

    def _login_failed(self, reason: str) -> BackendError:
        return BackendError(f"PKCS#11 login to token {self._token_label!r} failed: {reason}")

    def _open_sessions(self, token: Token) -> list[Session]:
        """The login session first, then sessions sharing its login."""
        try:
            first = token.open(rw=True, user_pin=self._pin)
        except UserAlreadyLoggedIn:
            # Another backend of this process is logged in to the token already;
            # the login belongs to the application, so we share it (§5.6).
            first = self._open_plain(token)
        except (PinIncorrect, PinInvalid, PinLenRange) as exc:
            raise self._login_failed("PIN incorrect") from exc
        except PinLocked as exc:
            raise self._login_failed("PIN locked; the security officer must unlock it") from exc
        except PinExpired as exc:
            raise self._login_failed("PIN expired; set a new user PIN") from exc
        except UserPinNotInitialized as exc:
            raise self._login_failed("the user PIN has not been initialised") from exc
        except AnotherUserAlreadyLoggedIn as exc:
            raise self._login_failed("the security officer is logged in to the token") from exc
        except PKCS11Error as exc:
            raise self._login_failed(type(exc).__name__) from exc
        sessions = [first]
        try:
            for _ in range(self._size - 1):
                sessions.append(self._open_plain(token))
        except BaseException:
            self._close_sessions(sessions)
            raise
        return sessions

    def _open_plain(self, token: Token) -> Session:
        try:
            return token.open(rw=True)
        except PKCS11Error as exc:
            raise BackendUnavailable(
                f"PKCS#11 token {self._token_label!r}: cannot open a session ({type(exc).__name__})"
            ) from exc

    @staticmethod
    def _close_sessions(sessions: list[Session]) -> None:
        # The login session goes last: closing it logs the application out.
        for session in reversed(sessions):
            with contextlib.suppress(PKCS11Error):
                session.close()

    def _fill_pool(self, sessions: list[Session]) -> None:
        self._generation += 1
        self._sessions = [_PooledSession(s, self._generation) for s in sessions]
        for pooled in self._sessions:
            self._idle.put(pooled)

    def _take_all(self) -> list[_PooledSession]:
        """Take every session of the current generation back (waits for busy ones)."""
        taken: list[_PooledSession] = []
        wanted = {id(p) for p in self._sessions}
        while wanted:
            try:
                item = self._idle.get(timeout=_WAIT_SECONDS)
            except queue.Empty:
                for pooled in taken:
                    self._idle.put(pooled)
                raise BackendUnavailable(
                    f"PKCS#11 token {self._token_label!r}: sessions still busy after "
                    f"{_WAIT_SECONDS:.0f} s; the HSM is not answering"
                ) from None
            if item is not None and id(item) in wanted:
                wanted.discard(id(item))
                taken.append(item)
        # Drop any "no sessions" markers left behind.
        while True:
            try:
                if self._idle.get_nowait() is not None:
                    continue
            except queue.Empty:
                break
        return taken

    def _acquire(self) -> _PooledSession:
        try:
            pooled = self._idle.get(timeout=_WAIT_SECONDS)
        except queue.Empty:
            raise self._all_busy() from None
        if pooled is not None and pooled.generation == self._generation:
            return pooled
        return self._acquire_slow(pooled)

    def _all_busy(self) -> BackendUnavailable:
        return BackendUnavailable(
            f"PKCS#11 token {self._token_label!r}: all {self._size} sessions stayed busy for "
            f"{_WAIT_SECONDS:.0f} s; raise YINXIN_PKCS11_SESSIONS or check the HSM"
        )

    def _acquire_slow(self, pooled: _PooledSession | None) -> _PooledSession:
        for _attempt in range(2):
            if pooled is None:
                self._idle.put(None)  # let the other waiters see it too
                if self._closed:
                    raise BackendUnavailable("the PKCS#11 backend is closed")
                self._recover(self._generation, None)
            elif pooled.generation == self._generation:
                return pooled
            # else: a session from before a recovery; it is dropped.
            try:
                pooled = self._idle.get(timeout=_WAIT_SECONDS)
            except queue.Empty:
                raise self._all_busy() from None
        raise BackendUnavailable(f"PKCS#11 token {self._token_label!r}: no session available")

    def _release(self, pooled: _PooledSession) -> None:
        if pooled.generation == self._generation:
            self._idle.put(pooled)

    def _recover(self, failed_generation: int, cause: PKCS11Error | None) -> None:
        """Bring the sessions back after a device-level failure (see module docstring)."""
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the PKCS#11 backend is closed")
            if self._generation != failed_generation:
                return  # another thread has recovered already
            what = type(cause).__name__ if cause is not None else "no usable session"
            _log.warning("PKCS#11 token %r failed (%s); recovering", self._token_label, what)
            self._take_all()
            self._sessions = []
            try:
                with self._module.lock:
                    self._module_generation = self._module.reinitialize(self._module_generation)
                    self._fill_pool(self._open_sessions(self._find_token(refresh=False)))
            except BackendError as exc:
                self._generation += 1  # nothing of before is usable
                self._idle.put(None)
                _log.error("PKCS#11 token %r did not recover: %s", self._token_label, exc)
                raise BackendUnavailable(
                    f"PKCS#11 token {self._token_label!r} is unavailable and did not recover: {exc}"
                ) from exc
            _log.info("PKCS#11 token %r recovered: new sessions opened", self._token_label)

    def _call(
        self,
        what: str,
        op: Callable[Concatenate[_PooledSession, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run *op* on a pooled session; recover and retry once on device failure."""
        lock = self._module.lock  # see hsm._pkcs11_module: calls are serialised
        for attempt in (1, 2):
            pooled = self._acquire()
            try:
                with lock:
                    return op(pooled, *args, **kwargs)
            except PKCS11Error as exc:
                if not is_device_failure(exc):
                    raise self._translate(exc, what) from exc
                if attempt == 2:
                    raise BackendUnavailable(
                        f"PKCS#11 {what} failed on token {self._token_label!r} after recovery "
                        f"({type(exc).__name__})"
                    ) from exc
                failure = exc
            except _StaleHandle:
                # The object behind a cached handle is gone: forget this
                # session's handles and look the key up again.
                pooled.signers.clear()
                pooled.secrets.clear()
                if attempt == 2:
                    raise BackendError(f"PKCS#11 {what}: object handles keep going stale") from None
                continue
            finally:
                self._release(pooled)
            self._recover(pooled.generation, failure)
        raise AssertionError("unreachable")  # pragma: no cover

    def _translate(self, exc: PKCS11Error, what: str) -> BackendError:
        _log.debug("PKCS#11 %s failed: %r", what, exc)
        return BackendError(f"PKCS#11 {what} failed on token {self._token_label!r} ({type(exc).__name__})")

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

    def _load_signer(self, pooled: _PooledSession, kid: str) -> tuple[SignatureAlgorithm, Signer]:
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
            self._call("key generation", self._generate_with, algorithm, kid)
        _log.info("generated %s key %r in PKCS#11 token %r", algorithm.value, kid, self._token_label)
        return KeyRef(kid, algorithm)

    def _generate_with(self, pooled: _PooledSession, algorithm: SignatureAlgorithm, kid: str) -> None:
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
        return self._call("signing", self._sign_with, key, data)

    def _sign_with(self, pooled: _PooledSession, key: KeyRef, data: bytes) -> bytes:
        entry = pooled.signers.get(key.kid)
        if entry is None:
            entry = self._load_signer(pooled, key.kid)
        if entry[0] != key.algorithm:
            raise _wrong_algorithm(key.kid, entry[0], key.algorithm)
        try:
            return entry[1](data)
        except (KeyHandleInvalid, ObjectHandleInvalid) as exc:
            raise _StaleHandle from exc

    def public_key(self, key: KeyRef | str) -> PublicKeyTypes:
        kid = validate_label(key.kid if isinstance(key, KeyRef) else key)
        cached = self._public_keys.get(kid)
        if cached is None:
            cached = self._call("public key export", self._public_with, kid)
            self._public_keys[kid] = cached
        if isinstance(key, KeyRef) and key.algorithm != cached[0]:
            raise _wrong_algorithm(kid, cached[0], key.algorithm)
        return cached[1]

    def _public_with(self, pooled: _PooledSession, kid: str) -> tuple[SignatureAlgorithm, PublicKeyTypes]:
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
        return self._call("key lookup", self._get_with, kid)

    def _get_with(self, pooled: _PooledSession, kid: str) -> KeyRef:
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
        return self._call("key listing", self._list_with)

    def _list_with(self, pooled: _PooledSession) -> list[KeyRef]:
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
            self._call("key destruction", self._destroy_with, kid)
            for pooled in list(self._sessions):
                pooled.signers.pop(kid, None)
        _log.info("destroyed private key %r in PKCS#11 token %r", kid, self._token_label)

    def _destroy_with(self, pooled: _PooledSession, kid: str) -> None:
        key = self._find(pooled.session, ObjectClass.PRIVATE_KEY, kid)
        if key is None:
            raise KeyNotFound(f"no private key {kid!r} in PKCS#11 token {self._token_label!r}")
        key.destroy()  # C_DestroyObject; the public key object stays

    # -- secrets -------------------------------------------------------------

    def generate_secret(self, label: str, purpose: SecretPurpose) -> None:
        validate_label(label)
        purpose = SecretPurpose(purpose)
        with self._admin_lock:
            self._call("secret generation", self._generate_secret_with, label, purpose)
        _log.info("generated %s secret %r in PKCS#11 token %r", purpose.value, label, self._token_label)

    def _generate_secret_with(self, pooled: _PooledSession, label: str, purpose: SecretPurpose) -> None:
        session = pooled.session
        if self._find(session, ObjectClass.SECRET_KEY, label) is not None:
            raise AlreadyExists(f"a secret labelled {label!r} already exists in token {self._token_label!r}")
        key_type, capabilities, template = secret_spec(label, purpose)
        session.generate_key(key_type, 256, store=True, capabilities=capabilities, template=template)

    def has_secret(self, label: str) -> bool:
        validate_label(label)
        return self._call("secret lookup", self._has_secret_with, label)

    def _has_secret_with(self, pooled: _PooledSession, label: str) -> bool:
        if label in pooled.secrets:
            return True
        return self._find(pooled.session, ObjectClass.SECRET_KEY, label) is not None

    def _secret(self, pooled: _PooledSession, label: str, purpose: SecretPurpose) -> Object:
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
        return self._call("encryption", self._encrypt_with, label, plaintext, aad)

    def _encrypt_with(self, pooled: _PooledSession, label: str, plaintext: bytes, aad: bytes) -> bytes:
        key = self._secret(pooled, label, SecretPurpose.ENCRYPTION)
        if not isinstance(key, EncryptMixin):
            raise KeyNotFound(f"secret {label!r} in token {self._token_label!r} cannot encrypt")
        nonce = os.urandom(_NONCE_BYTES)
        params = GCMParams(nonce, aad or None, _TAG_BITS)
        try:
            # bytes in, bytes out (an iterator only for iterator input)
            sealed = cast(bytes, key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params))
        except (KeyHandleInvalid, ObjectHandleInvalid) as exc:
            raise _StaleHandle from exc
        return nonce + sealed

    def decrypt(self, label: str, blob: bytes, aad: bytes = b"") -> bytes:
        return self._call("decryption", self._decrypt_with, label, blob, aad)

    def _decrypt_with(self, pooled: _PooledSession, label: str, blob: bytes, aad: bytes) -> bytes:
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
            raise _StaleHandle from exc
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
        return self._call("MAC", self._mac_with, label, data)

    def _mac_with(self, pooled: _PooledSession, label: str, data: bytes) -> bytes:
        key = self._secret(pooled, label, SecretPurpose.MAC)
        if not isinstance(key, SignMixin):
            raise KeyNotFound(f"secret {label!r} in token {self._token_label!r} cannot compute a MAC")
        try:
            return key.sign(data, mechanism=Mechanism.SHA256_HMAC)
        except (KeyHandleInvalid, ObjectHandleInvalid) as exc:
            raise _StaleHandle from exc

    # -- health and lifetime ------------------------------------------------------

    def ping(self) -> None:
        self._call("health check", self._ping_with)

    @staticmethod
    def _ping_with(pooled: _PooledSession) -> None:
        pooled.session.token.slot.get_token()  # C_GetTokenInfo: the token is present
        pooled.session.generate_random(64)  # C_GenerateRandom: the session is alive

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                taken = self._take_all()
            except BackendUnavailable:
                taken = []  # some thread is stuck in the module; finalising covers it
            self._sessions = []
            self._generation += 1
            self._idle.put(None)
            if self._module.users > 1:
                # Other backends still use the module: close only our sessions.
                with self._module.lock:
                    self._close_sessions([p.session for p in taken])
            self._public_keys.clear()
            release_module(self._module)
        _log.info("PKCS#11 token %r closed", self._token_label)
