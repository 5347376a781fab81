"""The licence repository (证照库) and its lifecycle.

Issuance, status changes, verification with live status, the key registry and
the hash-chained audit log, over SQLAlchemy (SQLite or PostgreSQL). ``vault``
never imports FastAPI and never reads the environment: the composition root
(``verify_api``) hands it a :class:`Database`, a key backend and a clock.
"""

from __future__ import annotations

from vault._access import AccessEntry, Accessor
from vault._access_tokens import KEY_PURPOSE_SERVICE_TOKEN, ensure_service_key, service_trust_store
from vault._administration import AUDIT_EXPORT_FORMAT
from vault._approval_operations import OPERATIONS as APPROVAL_OPERATIONS
from vault._approvals import ApprovalRequest, ApprovalState
from vault._audit import AuditEvent, AuditReport
from vault._audit_checkpoints import Checkpoint
from vault._clients import SCOPES as CLIENT_SCOPES
from vault._clients import AuthenticatedClient, ClientInfo, ClientRegistry, InvalidScope, NewClient
from vault._db import MAX_READ_THREADS, Database, DatabaseConflict, DatabaseError, normalise_database_url
from vault._issuance import request_hash
from vault._key_lifecycle import AffectedReport, CompromiseResult, ReissueResult
from vault._keys import KEY_PURPOSE_LICENCE, CeremonyRecord, KeyPolicy, KeyState
from vault._licence_print import licence_pdf
from vault._officers import ROLES, Officer, Role
from vault._presentation import IssuingKeyUnavailable, presentation_for, verify_presentation_token
from vault._seal_types import CertificateAuthority, Seal, SealedDocument, SealSettings, SealState
from vault._seals import SealRegistry
from vault._status_publisher import StatusListPublisher, ensure_status_list_key, status_list_trust_store
from vault._types import (
    CHINA_TIME,
    BulkOutcome,
    Clock,
    Department,
    IssueResult,
    KeyInfo,
    Licence,
    LicenceState,
    LicenceStatus,
    StatusChange,
    Verdict,
    system_clock,
)
from vault._vault import MAX_IDEMPOTENCY_KEY, BulkItem, Vault

__all__ = [
    "APPROVAL_OPERATIONS",
    "AUDIT_EXPORT_FORMAT",
    "CHINA_TIME",
    "CLIENT_SCOPES",
    "KEY_PURPOSE_LICENCE",
    "KEY_PURPOSE_SERVICE_TOKEN",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_READ_THREADS",
    "ROLES",
    "AccessEntry",
    "Accessor",
    "AffectedReport",
    "ApprovalRequest",
    "ApprovalState",
    "AuditEvent",
    "AuditReport",
    "AuthenticatedClient",
    "BulkItem",
    "BulkOutcome",
    "CeremonyRecord",
    "CertificateAuthority",
    "Checkpoint",
    "ClientInfo",
    "ClientRegistry",
    "Clock",
    "CompromiseResult",
    "Database",
    "DatabaseConflict",
    "DatabaseError",
    "Department",
    "InvalidScope",
    "IssueResult",
    "IssuingKeyUnavailable",
    "KeyInfo",
    "KeyPolicy",
    "KeyState",
    "Licence",
    "LicenceState",
    "LicenceStatus",
    "NewClient",
    "Officer",
    "ReissueResult",
    "Role",
    "Seal",
    "SealRegistry",
    "SealSettings",
    "SealState",
    "SealedDocument",
    "StatusChange",
    "StatusListPublisher",
    "Vault",
    "Verdict",
    "ensure_service_key",
    "ensure_status_list_key",
    "licence_pdf",
    "normalise_database_url",
    "presentation_for",
    "request_hash",
    "service_trust_store",
    "status_list_trust_store",
    "system_clock",
    "verify_presentation_token",
]
