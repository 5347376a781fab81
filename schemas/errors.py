"""The Yinxin error tree.

Every package translates third-party exceptions into these where they enter
(``raise KeyNotFound(...) from exc``), so callers catch one small family::

    YinxinError                      code               HTTP  CLI exit
    ├── InvalidInput                 invalid_input       422   2
    │   ├── InvalidIdentifier        invalid_identifier
    │   ├── InvalidUSCC              invalid_uscc
    │   ├── InvalidCitizenID         invalid_citizen_id
    │   ├── UnknownLicenceType       unknown_licence_type
    │   ├── FaceDataInvalid          face_data_invalid
    │   ├── InputTooLarge            input_too_large     413
    │   └── UnsupportedAlgorithm     unsupported_algorithm
    ├── NotFound                     not_found           404   2
    │   ├── DepartmentNotFound       unknown_department
    │   ├── LicenceNotFound          licence_not_found
    │   ├── KeyNotFound              key_not_found
    │   ├── SealNotFound             seal_not_found
    │   └── ApprovalNotFound         approval_not_found
    ├── Conflict                     conflict            409   2
    │   ├── AlreadyExists            already_exists
    │   ├── IllegalTransition        illegal_transition
    │   ├── IdempotencyConflict      idempotency_conflict
    │   ├── NoActiveKey              no_active_key
    │   ├── CANotInitialised         ca_not_initialised
    │   ├── NoActiveSeal             no_active_seal
    │   ├── SealNotUsable            seal_not_usable
    │   └── KeyNotUsable             key_not_usable
    ├── AuthenticationFailed         authentication_failed 401 2
    ├── PermissionDenied             permission_denied   403   2
    ├── ConfigurationError           configuration_error 500   2
    └── BackendError                 backend_error       503   3
        └── BackendUnavailable       backend_unavailable

Messages say what is wrong and how to fix it. They never carry PINs, secrets,
private keys or full citizen ID numbers (DESIGN §5.10).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyExists",
    "ApprovalNotFound",
    "AuthenticationFailed",
    "BackendError",
    "BackendUnavailable",
    "CANotInitialised",
    "ConfigurationError",
    "Conflict",
    "DepartmentNotFound",
    "FaceDataInvalid",
    "IdempotencyConflict",
    "IllegalTransition",
    "InputTooLarge",
    "InvalidCitizenID",
    "InvalidIdentifier",
    "InvalidInput",
    "InvalidUSCC",
    "KeyNotFound",
    "KeyNotUsable",
    "LicenceNotFound",
    "LoginRefused",
    "NoActiveKey",
    "NoActiveSeal",
    "NotFound",
    "PermissionDenied",
    "SealNotFound",
    "SealNotUsable",
    "UnknownLicenceType",
    "UnsupportedAlgorithm",
    "YinxinError",
]


class YinxinError(Exception):
    """Base of every error Yinxin raises on purpose."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 2

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        # Machine-readable context (field names, positions); never secrets.
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        return self.message


class InvalidInput(YinxinError):
    code = "invalid_input"
    http_status = 422


class InvalidIdentifier(InvalidInput):
    code = "invalid_identifier"


class InvalidUSCC(InvalidInput):
    code = "invalid_uscc"


class InvalidCitizenID(InvalidInput):
    code = "invalid_citizen_id"


class UnknownLicenceType(InvalidInput):
    code = "unknown_licence_type"


class FaceDataInvalid(InvalidInput):
    code = "face_data_invalid"


class InputTooLarge(InvalidInput):
    code = "input_too_large"
    http_status = 413


class UnsupportedAlgorithm(InvalidInput):
    code = "unsupported_algorithm"


class NotFound(YinxinError):
    code = "not_found"
    http_status = 404


class DepartmentNotFound(NotFound):
    code = "unknown_department"


class LicenceNotFound(NotFound):
    code = "licence_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class SealNotFound(NotFound):
    code = "seal_not_found"


class ApprovalNotFound(NotFound):
    code = "approval_not_found"


class Conflict(YinxinError):
    code = "conflict"
    http_status = 409


class AlreadyExists(Conflict):
    code = "already_exists"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class NoActiveKey(Conflict):
    code = "no_active_key"


class CANotInitialised(Conflict):
    """Seals need Yinxin's CA: ``yinxin ca init`` creates it."""

    code = "ca_not_initialised"


class NoActiveSeal(Conflict):
    code = "no_active_seal"


class SealNotUsable(Conflict):
    """The seal is suspended, revoked or outside its certificate's validity: it cannot seal."""

    code = "seal_not_usable"


class KeyNotUsable(Conflict):
    """The key exists but may not sign: not active, past its signing period or signature limit."""

    code = "key_not_usable"


class AuthenticationFailed(YinxinError):
    """An officer's name or credential did not check out (the message never says which)."""

    code = "authentication_failed"
    http_status = 401


class PermissionDenied(YinxinError):
    """The caller is known but its role does not allow the operation."""

    code = "permission_denied"
    http_status = 403


class ConfigurationError(YinxinError):
    code = "configuration_error"
    http_status = 500


class BackendError(YinxinError):
    """The key backend (HSM or keystore) failed; details are in the log, not here."""

    code = "backend_error"
    http_status = 503
    exit_code = 3


class BackendUnavailable(BackendError):
    code = "backend_unavailable"


class LoginRefused(BackendError):
    """The token refused the PIN itself (incorrect, locked, expired, not set): a configuration fault.

    Restarting cannot fix it, and every retry costs a login attempt towards locking the PIN, so
    ``yinxin serve`` exits with 78 (``EX_CONFIG``, sysexits.h) for it: a supervisor told not to
    restart on 78 (systemd ``RestartPreventExitStatus=78``) does not crash-loop into a locked PIN.
    """

    code = "backend_login_refused"
    exit_code = 78
