"""The licence repository (证照库) and its lifecycle.

Issuance, status changes, verification with live status, the key registry and
the hash-chained audit log, over SQLAlchemy (SQLite or PostgreSQL). ``vault``
never imports FastAPI and never reads the environment: the composition root
(``verify_api``) hands it a :class:`Database`, a key backend and a clock.
"""

from __future__ import annotations

from vault._access import AccessEntry, Accessor
from vault._audit import AuditEvent, AuditReport
from vault._db import Database, DatabaseConflict, DatabaseError, normalise_database_url
from vault._issuance import request_hash
from vault._types import (
    CHINA_TIME,
    BulkOutcome,
    Clock,
    Department,
    IssueResult,
    KeyInfo,
    Licence,
    LicenceStatus,
    StatusChange,
    Verdict,
    system_clock,
)
from vault._vault import BulkItem, Vault

__all__ = [
    "CHINA_TIME",
    "AccessEntry",
    "Accessor",
    "AuditEvent",
    "AuditReport",
    "BulkItem",
    "BulkOutcome",
    "Clock",
    "Database",
    "DatabaseConflict",
    "DatabaseError",
    "Department",
    "IssueResult",
    "KeyInfo",
    "Licence",
    "LicenceStatus",
    "StatusChange",
    "Vault",
    "Verdict",
    "normalise_database_url",
    "request_hash",
    "system_clock",
]
