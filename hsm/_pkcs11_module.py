"""The loaded PKCS#11 module, shared by every :class:`PKCS11Backend` of a process.

``C_Initialize`` and ``C_Finalize`` act on the whole application, not on one
caller (PKCS#11 v2.40 §5.4), and python-pkcs11 keeps a single ``lib`` object
per module path. Backends over the same module therefore agree here on who
initialises the module (the first), who finalises it (the last to close) and
when it is re-initialised during recovery (once per failure, not once per
backend: :meth:`SharedModule.reinitialize` takes the generation the caller saw).

Calls are serialised. python-pkcs11 initialises every module with
``C_Initialize(NULL)``, which tells the module that the application will not
call it from several threads at once (PKCS#11 v2.40 §5.4, no
``CKF_OS_LOCKING_OK``, no mutex callbacks); SoftHSM2 then switches its own
locking off, and concurrent calls crash the process. So every call into the
module happens under :attr:`SharedModule.lock`. Threads still get a session
each, so no operation state is ever shared.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

import pkcs11
from pkcs11.exceptions import (
    DeviceError,
    DeviceMemory,
    DeviceRemoved,
    GeneralError,
    PKCS11Error,
    SessionClosed,
    SessionHandleInvalid,
    SlotIDInvalid,
    TokenNotPresent,
    TokenNotRecognised,
    UserNotLoggedIn,
)

from schemas.errors import BackendUnavailable

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as PKCS11Library

__all__ = ["SharedModule", "acquire_module", "is_device_failure", "release_module"]

_log = logging.getLogger("yinxin.hsm")

# Failures of the session, the login state, the token or the library itself,
# as opposed to failures of one operation (bad data, bad key). After one of
# these the sessions are worthless and the module has to be brought up again.
_DEVICE_FAILURES: tuple[type[PKCS11Error], ...] = (
    SessionHandleInvalid,
    SessionClosed,
    DeviceRemoved,
    DeviceError,
    DeviceMemory,
    GeneralError,
    TokenNotPresent,
    TokenNotRecognised,
    SlotIDInvalid,
    UserNotLoggedIn,
)


def is_device_failure(exc: PKCS11Error) -> bool:
    """Whether *exc* means "reconnect", not "this operation was wrong"."""
    if isinstance(exc, _DEVICE_FAILURES):
        return True
    # python-pkcs11 maps CKR_CRYPTOKI_NOT_INITIALIZED to a bare PKCS11Error:
    # someone finalised the module under us.
    return type(exc) is PKCS11Error and "not initialized" in str(exc)


class SharedModule:
    """One PKCS#11 module (shared library) and the backends that use it."""

    def __init__(self, path: str, lib: PKCS11Library) -> None:
        self.path = path
        self.lib = lib
        self.users = 0
        # Bumped on every re-initialisation, so that backends noticing the same
        # failure re-initialise once between them.
        self.generation = 0
        # Held around every call into the module (see the module docstring).
        # Re-entrant because recovery nests lookups inside a re-initialisation.
        self.lock = threading.RLock()

    def reinitialize(self, seen_generation: int) -> int:
        """``C_Finalize`` + ``C_Initialize`` unless done since *seen_generation*.

        Returns the current generation. Sessions opened before it are invalid.
        """
        with self.lock:
            if self.generation == seen_generation:
                try:
                    self.lib.reinitialize()
                except PKCS11Error as exc:
                    raise BackendUnavailable(
                        f"PKCS#11 module {self.path!r} could not be re-initialised "
                        f"({type(exc).__name__}): check the HSM and restart the service"
                    ) from exc
                self.generation += 1
            return self.generation

    def refresh_slots(self, seen_generation: int) -> bool:
        """Re-initialise so that tokens created since ``C_Initialize`` appear.

        Many modules (SoftHSM2 among them) build their slot list once, in
        ``C_Initialize``. Only done when the caller is the module's sole user,
        because it invalidates every session of the process. Returns whether
        the slot list was refreshed.
        """
        with self.lock:
            if self.users != 1 or self.generation != seen_generation:
                return False
            self.reinitialize(seen_generation)
            return True


_modules: dict[str, SharedModule] = {}
_modules_lock = threading.Lock()


def acquire_module(path: str) -> SharedModule:
    """Load and initialise the module at *path* (once per process); count a user."""
    with _modules_lock:
        module = _modules.get(path)
        if module is None:
            if not os.path.isfile(path):
                raise BackendUnavailable(
                    f"PKCS#11 module {path!r} does not exist: set YINXIN_PKCS11_MODULE to the "
                    "HSM vendor's PKCS#11 library (for SoftHSM2 install the softhsm2 package; "
                    "the library is usually /usr/lib/softhsm/libsofthsm2.so)"
                )
            try:
                lib = pkcs11.lib(path)
            except PKCS11Error as exc:
                raise BackendUnavailable(
                    f"PKCS#11 module {path!r} could not be loaded ({exc}): set "
                    "YINXIN_PKCS11_MODULE to a PKCS#11 library built for this machine"
                ) from exc
            module = SharedModule(path, lib)
            _modules[path] = module
        elif not module.lib.initialized:
            try:
                with module.lock:
                    module.lib.initialize()
            except PKCS11Error as exc:
                raise BackendUnavailable(
                    f"PKCS#11 module {path!r} could not be initialised ({type(exc).__name__})"
                ) from exc
        module.users += 1
        return module


def release_module(module: SharedModule) -> None:
    """Forget one user; the last one finalises the module (PKCS#11 v2.40 §5.4)."""
    with _modules_lock:
        module.users -= 1
        if module.users > 0:
            return
        try:
            with module.lock:
                module.lib.finalize()
        except PKCS11Error as exc:
            # Nothing left to save: the sessions are gone either way.
            _log.warning("PKCS#11 module %s did not finalise cleanly: %s", module.path, type(exc).__name__)
