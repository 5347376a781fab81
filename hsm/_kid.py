"""Labels for keys created without one."""

from __future__ import annotations

import secrets

__all__ = ["new_kid"]


def new_kid() -> str:
    """A fresh random key label: 32 lower-case hex digits (128 bits).

    It satisfies :func:`hsm.validate_label`, is safe as a file name and as a
    PKCS#11 ``CKA_LABEL``, and says nothing about the key (RFC 7517 §4.5: the
    ``kid`` is opaque).
    """
    return secrets.token_hex(16)
