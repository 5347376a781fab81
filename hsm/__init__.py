"""Keys that never leave their home: the :class:`KeyBackend` plug-in point.

Two implementations, chosen by :func:`open_backend` from a
:class:`BackendConfig` (``verify_api`` builds it from ``YINXIN_*`` settings;
this package never reads the environment)::

    KeyBackend                     name        keys live in
    ├── PKCS11Backend              "pkcs11"    an HSM token, through a PKCS#11 module
    └── SoftwareBackend            "software"  <YINXIN_HOME>/keystore, encrypted under a passphrase

Both sign with the algorithm bound to a key at creation (:class:`SignatureAlgorithm`),
return JWS-form signatures, and raise only ``schemas.errors``: ``KeyNotFound``,
``AlreadyExists``, ``InvalidInput``, ``BackendError`` / ``BackendUnavailable``.

Example::

    with open_backend(BackendConfig(kind="software", home=home, development=True)) as backend:
        key = backend.generate_key(SignatureAlgorithm.ES256)
        signature = backend.sign(key, b"payload")
"""

from __future__ import annotations

import logging
import os

from hsm._backend import (
    BackendConfig,
    KeyBackend,
    KeyProvenance,
    KeyRef,
    SecretPurpose,
    SignatureAlgorithm,
    validate_label,
)
from hsm._pkcs11 import PKCS11Backend
from hsm._software import SoftwareBackend
from schemas.errors import ConfigurationError

__all__ = [
    "DEVELOPMENT_PASSPHRASE",
    "BackendConfig",
    "KeyBackend",
    "KeyProvenance",
    "KeyRef",
    "PKCS11Backend",
    "SecretPurpose",
    "SignatureAlgorithm",
    "SoftwareBackend",
    "find_softhsm_module",
    "open_backend",
    "validate_label",
]

_log = logging.getLogger("yinxin.hsm")

#: Used by the software keystore when ``development`` is on and no passphrase is
#: set. Anyone can read it here: keys under it protect nothing.
DEVELOPMENT_PASSPHRASE = b"yinxin-development-only"

# Where distributions put SoftHSM2's PKCS#11 module: Debian/Ubuntu (two
# layouts), Fedora/RHEL, a source build, Homebrew on Apple silicon.
_SOFTHSM_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)


def find_softhsm_module() -> str | None:
    """The path of SoftHSM2's PKCS#11 module if it is installed in a usual place."""
    for path in _SOFTHSM_PATHS:
        if os.path.isfile(path):
            return path
    return None


def open_backend(config: BackendConfig) -> KeyBackend:
    """Open the key backend *config* describes; the caller closes it.

    Raises ``ConfigurationError`` when a setting is missing, ``BackendUnavailable``
    when the keystore or HSM cannot be reached, ``BackendError`` on a wrong PIN.
    """
    if config.kind == "software":
        passphrase = config.keystore_passphrase
        if passphrase is None:
            if not config.development:
                raise ConfigurationError(
                    "the software keystore needs a passphrase: set YINXIN_KEYSTORE_PASSPHRASE or "
                    "YINXIN_KEYSTORE_PASSPHRASE_FILE (or use YINXIN_HSM=pkcs11)"
                )
            _log.warning(
                "software keystore uses the development passphrase; set YINXIN_KEYSTORE_PASSPHRASE "
                "or YINXIN_KEYSTORE_PASSPHRASE_FILE for anything real"
            )
            passphrase = DEVELOPMENT_PASSPHRASE
        return SoftwareBackend(config.home / "keystore", passphrase)

    if config.kind == "pkcs11":
        if not config.pkcs11_module:
            found = find_softhsm_module()
            hint = f" (SoftHSM2 is installed at {found})" if found else ""
            raise ConfigurationError(
                f"YINXIN_HSM=pkcs11 needs YINXIN_PKCS11_MODULE: the path of the HSM's PKCS#11 library{hint}"
            )
        if not config.pkcs11_token_label:
            raise ConfigurationError("YINXIN_HSM=pkcs11 needs YINXIN_PKCS11_TOKEN_LABEL: the token's label")
        if config.pkcs11_pin is None:
            raise ConfigurationError(
                "YINXIN_HSM=pkcs11 needs the user PIN: set YINXIN_PKCS11_PIN or YINXIN_PKCS11_PIN_FILE"
            )
        return PKCS11Backend(
            config.pkcs11_module,
            config.pkcs11_token_label,
            config.pkcs11_pin,
            sessions=config.pkcs11_sessions,
        )

    raise ConfigurationError(f"YINXIN_HSM must be 'software' or 'pkcs11', not {config.kind!r}")
