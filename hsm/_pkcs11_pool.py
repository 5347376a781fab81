"""A pool of PKCS#11 sessions on one token, their shared login, and recovery.

Login. The user logs in once, on the first session; every further session
of the process shares that login (PKCS#11 v2.40 §5.6).

Pool. Each thread takes a session of its own from the pool for the length of
one operation, so no operation state is ever shared, and each pooled session
caches the object handles it has found (kid → key object) so a signature
costs one ``C_Sign`` and no ``C_FindObjects``. Calls into the module are
still made one at a time (see :mod:`hsm._pkcs11_module`).

Recovery. When a call fails because the session, the login, the token or the
module is gone (:func:`hsm._pkcs11_module.is_device_failure`), the pool takes
every session back (waiting for the ones in use: ``C_Finalize`` must not run
under another thread), re-initialises the module, opens the token, logs in
again and retries the call once; if that fails too the caller gets
``BackendUnavailable``. Several threads failing at once recover once: a
generation number tells them someone already did. A login the token refuses
because of the PIN (incorrect, locked, expired) is not tried again: the calls
fail at once, naming the reason, until the service restarts with the right
PIN, instead of every request and probe trying a wrong PIN until the token
locks it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from pkcs11.exceptions import (
    AnotherUserAlreadyLoggedIn,
    MultipleTokensReturned,
    NoSuchToken,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    UserAlreadyLoggedIn,
    UserPinNotInitialized,
)
from pkcs11.types import Object, Session, Token

from hsm._backend import SecretPurpose, SignatureAlgorithm
from hsm._pkcs11_keys import Signer
from hsm._pkcs11_module import SharedModule, acquire_module, is_device_failure, release_module
from schemas.errors import BackendError, BackendUnavailable, LoginRefused

__all__ = ["PooledSession", "SessionPool", "StaleHandle"]

_log = logging.getLogger("yinxin.hsm")

_P = ParamSpec("_P")
_T = TypeVar("_T")

# How long a caller waits for a free session, and recovery for busy ones.
_WAIT_SECONDS = 30.0


class PooledSession:
    """A session of the pool with the handles it has looked up."""

    __slots__ = ("generation", "secrets", "session", "signers")

    def __init__(self, session: Session, generation: int) -> None:
        self.session = session
        self.generation = generation
        self.signers: dict[str, tuple[SignatureAlgorithm, Signer]] = {}
        self.secrets: dict[str, tuple[SecretPurpose, Object]] = {}


class StaleHandle(Exception):
    """Raised by an operation when a cached handle no longer names an object."""


class SessionPool:
    """R/W sessions of one token; see the module docstring."""

    def __init__(self, module_path: str, token_label: str, pin: str, size: int) -> None:
        self._module_path = module_path
        self._token_label = token_label
        self._pin = pin  # needed again to log in after recovery; never logged or shown
        self._size = size
        self._lock = threading.Lock()  # recovery and close
        # None in the queue means "no sessions": the pool is closed or broken.
        self._idle: queue.SimpleQueue[PooledSession | None] = queue.SimpleQueue()
        self._sessions: list[PooledSession] = []  # the current generation's sessions
        self._generation = 0
        self._closed = False
        # Why the token refused the PIN, once it has: the PIN is not tried again (see _recover).
        self._pin_refused: str | None = None

        self._module: SharedModule = acquire_module(module_path)
        try:
            with self._module.lock:
                self._module_generation = self._module.generation
                self._fill_pool(self._open_sessions(self._find_token(refresh=True)))
        except BaseException:
            release_module(self._module)
            raise

    @property
    def sessions(self) -> list[PooledSession]:
        """The sessions of the current generation (in use or idle)."""
        return list(self._sessions)

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

    def _login_failed(self, reason: str, *, pin: bool = True) -> BackendError:
        """A refused login; *pin*: the PIN itself is the problem, and trying it again cannot help."""
        message = f"PKCS#11 login to token {self._token_label!r} failed: {reason}"
        cause = f"PKCS#11 login refused: {reason}"
        if pin:
            self._pin_refused = reason
            return LoginRefused(message, cause=cause)
        return BackendError(message, cause=cause)

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
            raise self._login_failed("the security officer is logged in to the token", pin=False) from exc
        except PKCS11Error as exc:
            raise self._login_failed(type(exc).__name__, pin=False) from exc
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
        self._sessions = [PooledSession(s, self._generation) for s in sessions]
        for pooled in self._sessions:
            self._idle.put(pooled)

    def _take_all(self) -> list[PooledSession]:
        """Take every session of the current generation back (waits for busy ones)."""
        taken: list[PooledSession] = []
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

    def _acquire(self) -> PooledSession:
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

    def _acquire_slow(self, pooled: PooledSession | None) -> PooledSession:
        for _attempt in range(2):
            if pooled is None:
                self._idle.put(None)  # let the other waiters see it too
                if self._closed:
                    raise BackendUnavailable(f"the PKCS#11 backend for token {self._token_label!r} is closed")
                self._recover(self._generation, None)
            elif pooled.generation == self._generation:
                return pooled
            # else: a session from before a recovery; it is dropped.
            try:
                pooled = self._idle.get(timeout=_WAIT_SECONDS)
            except queue.Empty:
                raise self._all_busy() from None
        raise BackendUnavailable(f"PKCS#11 token {self._token_label!r}: no session available")

    def _release(self, pooled: PooledSession) -> None:
        if pooled.generation == self._generation:
            self._idle.put(pooled)

    def _recover(self, failed_generation: int, cause: PKCS11Error | None) -> None:
        """Bring the sessions back after a device-level failure (see module docstring)."""
        with self._lock:
            if self._closed:
                raise BackendUnavailable(f"the PKCS#11 backend for token {self._token_label!r} is closed")
            if self._generation != failed_generation:
                return  # another thread has recovered already
            if self._pin_refused is not None:
                # HSMs lock the user PIN after a few wrong tries (SoftHSM2 does not count them, real
                # devices do): a PIN refused once is not tried again by every request and probe.
                # The PIN comes from the settings, so only a restart brings another one.
                raise BackendUnavailable(
                    f"PKCS#11 token {self._token_label!r} refused the user PIN ({self._pin_refused}); "
                    "it is not tried again, so that the token does not lock it: set the token's user "
                    "PIN in YINXIN_PKCS11_PIN and restart the service",
                    cause=f"PKCS#11 login refused: {self._pin_refused}",
                )
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
                    f"PKCS#11 token {self._token_label!r} is unavailable and did not recover: {exc}",
                    **exc.details,
                ) from exc
            _log.info("PKCS#11 token %r recovered: new sessions opened", self._token_label)

    def call(
        self,
        what: str,
        op: Callable[Concatenate[PooledSession, _P], _T],
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
            except StaleHandle:
                # The object behind a cached handle is gone (destroyed by another
                # process, say): forget every session's handles, look up again.
                for each in self._sessions:
                    each.signers.clear()
                    each.secrets.clear()
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

    def close(self) -> bool:
        """Take the sessions back and release the module (the last user finalises it).

        Returns False if the pool was closed already.
        """
        with self._lock:
            if self._closed:
                return False
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
            release_module(self._module)
            return True
