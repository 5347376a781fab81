"""ORM records of the licence repository (证照库).

Records are the storage shape only; the rest of ``vault`` hands out frozen
dataclasses. Columns that feed the audit hash (event time, details) are stored
as the exact text that was hashed, so verification never depends on how a
database round-trips timestamps or JSON.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AccessLogRecord",
    "ApiClientRecord",
    "ApprovalRequestRecord",
    "ApprovalVoteRecord",
    "AuditCheckpointRecord",
    "AuditEventRecord",
    "AuditHeadRecord",
    "Base",
    "CertificateAuthorityRecord",
    "DepartmentRecord",
    "KeyCeremonyRecord",
    "KeyRecord",
    "LicenceRecord",
    "OfficerRecord",
    "SealRecord",
    "SerialCounterRecord",
    "StatusChangeRecord",
    "StatusListRecord",
]

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware.

    SQLite has no timezone type: SQLAlchemy would store the wall time and hand back a
    naive value, which ``astimezone`` then misreads as local time. Naive input is refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Yinxin stores aware UTC timestamps only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


class DepartmentRecord(Base):
    __tablename__ = "departments"

    code: Mapped[str] = mapped_column(String(18), primary_key=True)  # USCC, GB 32100
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class KeyRecord(Base):
    """The key registry: which backend key signs for whom, and in which state."""

    __tablename__ = "keys"

    kid: Mapped[str] = mapped_column(String(128), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    backend: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(32))  # licence-signing
    department_code: Mapped[str | None] = mapped_column(
        String(18), ForeignKey("departments.code"), index=True
    )
    # NIST SP 800-57 Part 1 §7: pre-activation | active | retired | destroyed | compromised
    state: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # End of the originator-usage period (cryptoperiod): no signature after it. None: no limit.
    sign_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    max_signatures: Mapped[int | None] = mapped_column(BigInteger)
    signature_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the key is believed to have been compromised (may be before it was declared).
    compromised_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    state_reason: Mapped[str | None] = mapped_column(String(500))


class SerialCounterRecord(Base):
    """Gapless serial allocation per (type, issuer, year): GB/T 36904 serial = year + 7 digits."""

    __tablename__ = "serial_counters"

    type_code: Mapped[str] = mapped_column(String(21), primary_key=True)
    issuer_code: Mapped[str] = mapped_column(String(18), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_sequence: Mapped[int] = mapped_column(Integer)


class LicenceRecord(Base):
    """One licence version. The identifier (primary key) is a function of type, issuer,
    serial and version, so its uniqueness is theirs too: no second index for it."""

    __tablename__ = "licences"
    __table_args__ = (
        UniqueConstraint("issuer_code", "idempotency_key", name="uq_licences_idempotency"),
        UniqueConstraint("status_list", "status_index", name="uq_licences_status_slot"),
        Index("ix_licences_holder", "holder_id_index"),
    )

    identifier: Mapped[str] = mapped_column(String(128), primary_key=True)
    type_code: Mapped[str] = mapped_column(String(21))
    issuer_code: Mapped[str] = mapped_column(String(18), ForeignKey("departments.code"))
    serial_year: Mapped[int] = mapped_column(Integer)
    serial_sequence: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    holder_name: Mapped[str] = mapped_column(String(200))
    holder_id_type: Mapped[str] = mapped_column(String(3))
    # The holder ID number is stored only encrypted (AES-256-GCM under a backend key)
    # with a keyed hash (HMAC-SHA-256, another backend key) for look-up.
    holder_id_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    holder_id_index: Mapped[str] = mapped_column(String(64))
    holder_id_masked: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    kid: Mapped[str] = mapped_column(String(128), ForeignKey("keys.kid"))
    token: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # valid | suspended | revoked
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    # Token Status List (draft-ietf-oauth-status-list): the list and the randomly chosen,
    # never reused index that carry this licence's status.
    status_list: Mapped[str | None] = mapped_column(String(32), ForeignKey("status_lists.name"))
    status_index: Mapped[int | None] = mapped_column(Integer)
    # Set when this version was re-issued (its key was compromised): the newer version's identifier.
    superseded_by: Mapped[str | None] = mapped_column(String(128))


class StatusChangeRecord(Base):
    __tablename__ = "status_changes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    identifier: Mapped[str] = mapped_column(String(128), ForeignKey("licences.identifier"), index=True)
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEventRecord(Base):
    """Append-only, hash-chained: hash = SHA-256 over the canonical event incl. prev_hash."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[str] = mapped_column(String(40))  # ISO 8601 UTC with microseconds, as hashed
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON, as hashed
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRecord(Base):
    """One row: the chain head. Locking it serialises appends on PostgreSQL."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))


class StatusListRecord(Base):
    """One Token Status List: a fixed-size bit array published as a signed JWT."""

    __tablename__ = "status_lists"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)  # entries (2 bits each), at least 131 072
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiClientRecord(Base):
    """An API client of a department (OAuth 2.0 client credentials, RFC 6749 §4.4)."""

    __tablename__ = "api_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    department_code: Mapped[str] = mapped_column(String(18), ForeignKey("departments.code"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(255))  # slow KDF, never the secret
    scopes: Mapped[str] = mapped_column(String(500))  # space-separated (RFC 6749 §3.3)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AccessLogRecord(Base):
    """Who looked at which licence or holder, and why (用证事由)."""

    __tablename__ = "access_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    client_id: Mapped[str] = mapped_column(String(64))
    department_code: Mapped[str] = mapped_column(String(18))
    purpose: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))  # licence.read | holder.lookup
    identifier: Mapped[str | None] = mapped_column(String(128), index=True)
    # Holder look-ups: the keyed hash (to find a holder's access history) and the masked ID.
    holder_id_index: Mapped[str | None] = mapped_column(String(64), index=True)
    holder_id_masked: Mapped[str | None] = mapped_column(String(32))
    result_count: Mapped[int] = mapped_column(Integer)


class CertificateAuthorityRecord(Base):
    """Yinxin's own CA: its backend key, self-signed root certificate and current CRL."""

    __tablename__ = "certificate_authorities"

    ca_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kid: Mapped[str] = mapped_column(String(128), ForeignKey("keys.kid"))
    certificate: Mapped[bytes] = mapped_column(LargeBinary)  # DER
    state: Mapped[str] = mapped_column(String(16))  # active | retired
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    # The current CRL (RFC 5280 §5), re-issued when a seal is revoked, suspended or reinstated
    # and before next_update; crl_number only grows.
    crl_number: Mapped[int] = mapped_column(Integer)
    crl: Mapped[bytes | None] = mapped_column(LargeBinary)
    crl_next_update: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SealRecord(Base):
    """A department e-seal (电子印章): backend key + seal certificate + seal image."""

    __tablename__ = "seals"
    __table_args__ = (UniqueConstraint("ca_id", "certificate_serial", name="uq_seals_certificate"),)

    seal_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    department_code: Mapped[str] = mapped_column(String(18), ForeignKey("departments.code"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kid: Mapped[str] = mapped_column(String(128), ForeignKey("keys.kid"))
    ca_id: Mapped[str] = mapped_column(String(64), ForeignKey("certificate_authorities.ca_id"))
    certificate_serial: Mapped[str] = mapped_column(String(42))  # upper-case hex
    certificate: Mapped[bytes] = mapped_column(LargeBinary)  # DER
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the DER certificate
    image_png: Mapped[bytes] = mapped_column(LargeBinary)
    image_generated: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(String(16))  # active | suspended | revoked
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    state_reason: Mapped[str | None] = mapped_column(String(500))
    crl_reason: Mapped[str | None] = mapped_column(String(32))  # RFC 5280 §5.3.1 CRLReason name


class OfficerRecord(Base):
    """A named officer account: security officer, auditor or issuing operator."""

    __tablename__ = "officers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(32))  # security-officer | auditor | operator
    password_hash: Mapped[str | None] = mapped_column(String(255))  # scrypt, never the password
    # An API client acting as this officer (scope keys:manage); unique: one client, one officer.
    client_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("api_clients.client_id"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApprovalRequestRecord(Base):
    """A dual-control request (四眼原则): runs when M distinct security officers approve."""

    __tablename__ = "approval_requests"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    operation: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(String(200), index=True)  # kid, seal ID …
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    required: Mapped[int] = mapped_column(Integer)  # M at the time of the request
    # pending | approved | executed | failed | rejected | expired
    state: Mapped[str] = mapped_column(String(16), index=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(1000))


class ApprovalVoteRecord(Base):
    """One officer's decision on a request; the primary key makes a second vote impossible."""

    __tablename__ = "approval_votes"

    request_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("approval_requests.id"), primary_key=True
    )
    officer: Mapped[str] = mapped_column(String(64), ForeignKey("officers.name"), primary_key=True)
    decision: Mapped[str] = mapped_column(String(8))  # approve | reject
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    comment: Mapped[str | None] = mapped_column(String(500))


class AuditCheckpointRecord(Base):
    """A signed statement of the audit chain's head: sequence, head hash, time (a compact JWS)."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(40))
    kid: Mapped[str] = mapped_column(String(128))
    token: Mapped[str] = mapped_column(Text)


class KeyCeremonyRecord(Base):
    """The key-generation record: who, when, where, the attributes read back; signed by the audit key."""

    __tablename__ = "key_ceremonies"

    kid: Mapped[str] = mapped_column(String(128), ForeignKey("keys.kid"), primary_key=True)
    token: Mapped[str] = mapped_column(Text)  # compact JWS over the record (typ key-ceremony+jwt)
