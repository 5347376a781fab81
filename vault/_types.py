"""Frozen values ``vault`` hands out (the ORM records never leave the package)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Self

from hsm import KeyRef

__all__ = [
    "CHINA_TIME",
    "BulkOutcome",
    "Clock",
    "Department",
    "IssueResult",
    "KeyInfo",
    "Licence",
    "LicenceState",
    "LicenceStatus",
    "StatusChange",
    "Verdict",
    "licence_window",
    "system_clock",
]

# Licence validity dates are calendar dates in China Standard Time (UTC+8, no DST).
CHINA_TIME = timezone(timedelta(hours=8), "CST")

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class LicenceStatus:
    """Stored states and the derived ones (expiry comes from the validity window)."""

    VALID = "valid"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    INVALID = "invalid"  # the token itself failed (signature, format, key)


def licence_window(valid_from: date, valid_until: date | None) -> tuple[datetime, datetime | None]:
    """``nbf``/``exp`` instants: from 00:00 CST on the first day to 24:00 CST on the last day."""
    start = datetime(valid_from.year, valid_from.month, valid_from.day, tzinfo=CHINA_TIME)
    if valid_until is None:
        return start, None  # 长期有效: no expiry
    end = datetime(valid_until.year, valid_until.month, valid_until.day, tzinfo=CHINA_TIME)
    return start, end + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Department:
    code: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    algorithm: str
    backend: str
    purpose: str
    department_code: str | None
    state: str
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    public_jwk: Mapping[str, Any]
    sign_until: datetime | None = None  # end of the signing period (cryptoperiod); None: no limit
    max_signatures: int | None = None
    signature_count: int = 0
    destroyed_at: datetime | None = None
    compromised_at: datetime | None = None
    state_reason: str | None = None


@dataclass(frozen=True, slots=True)
class LicenceState:
    """A licence as verification reads it: everything but its own data (the fields of its type).

    No verdict shows that data, and reading it cost a verification about a twentieth of its time
    (a kilobyte of JSON a row, parsed), so the verification read leaves it out.
    """

    identifier: str
    version: int
    type_code: str
    type_name: str
    issuer_code: str
    issuer_name: str
    holder_name: str
    holder_id_type: str
    holder_id_masked: str
    valid_from: date
    valid_until: date | None
    issued_at: datetime
    kid: str
    token: str
    status: str  # stored state: valid | suspended | revoked

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, type_name: str, issuer_name: str) -> Self:
        """From a ``licences`` row as a mapping by column name (no ORM object)."""
        return cls(**_state_of(row, type_name, issuer_name))

    def effective_status(self, now: datetime) -> str:
        """Revocation and suspension win over the validity window."""
        if self.status != LicenceStatus.VALID:
            return self.status
        start, end = licence_window(self.valid_from, self.valid_until)
        if now < start:
            return LicenceStatus.NOT_YET_VALID
        if end is not None and now >= end:
            return LicenceStatus.EXPIRED
        return LicenceStatus.VALID

    def summary(self) -> dict[str, Any]:
        """What a verifier may see: no full holder ID number, no token."""
        return {
            "identifier": self.identifier,
            "licence_type": self.type_code,
            "licence_type_name": self.type_name,
            "issuer": self.issuer_code,
            "issuer_name": self.issuer_name,
            "holder_name": self.holder_name,
            "holder_id_type": self.holder_id_type,
            "holder_id_masked": self.holder_id_masked,
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "issued_at": self.issued_at.astimezone(UTC).isoformat(),
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Licence(LicenceState):
    """A licence with its data: what issuance, look-ups and printing return."""

    data: Mapping[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, type_name: str, issuer_name: str) -> Self:
        """From a ``licences`` row as a mapping by column name (no ORM object)."""
        return cls(**_state_of(row, type_name, issuer_name), data=dict(row["data"]))


def _state_of(row: Mapping[str, Any], type_name: str, issuer_name: str) -> dict[str, Any]:
    return {
        "identifier": row["identifier"],
        "version": row["version"],
        "type_code": row["type_code"],
        "type_name": type_name,
        "issuer_code": row["issuer_code"],
        "issuer_name": issuer_name,
        "holder_name": row["holder_name"],
        "holder_id_type": row["holder_id_type"],
        "holder_id_masked": row["holder_id_masked"],
        "valid_from": row["valid_from"],
        "valid_until": row["valid_until"],
        "issued_at": row["issued_at"],
        "kid": row["kid"],
        "token": row["token"],
        "status": row["status"],
    }


@dataclass(frozen=True, slots=True)
class IssueResult:
    licence: Licence
    created: bool  # False when an idempotency key returned an earlier result
    # The key that signed a licence created just now (its department's active key at the commit).
    key: KeyRef | None = None
    # A presentation token for it (the QR code's), when the caller asked and one could be signed.
    presentation: str | None = None


@dataclass(frozen=True, slots=True)
class StatusChange:
    identifier: str
    from_status: str
    to_status: str
    reason: str
    actor: str
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to "is this licence good?": invalid is an answer, not an exception."""

    valid: bool
    status: str
    reasons: tuple[str, ...]
    codes: tuple[str, ...]
    checked_at: datetime
    kid: str | None = None
    licence: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "status": self.status,
            "reasons": list(self.reasons),
            "codes": list(self.codes),
            "kid": self.kid,
            "licence": dict(self.licence) if self.licence is not None else None,
            "checked_at": self.checked_at.astimezone(UTC).isoformat(),
        }


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """One line of a bulk import: issued, already issued (re-run), or an error."""

    line: int
    identifier: str | None = None
    created: bool = False
    error: str | None = None
    error_code: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    licence: Licence | None = None  # the licence as issued (created outcomes of issue_batch)
    key: KeyRef | None = None  # and the key that signed it
    presentation: str | None = None  # a presentation token for it, when asked for (Vault.issue)
