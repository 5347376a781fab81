"""Find a deleted audit tail by the records it described.

Signed checkpoints prove the chain up to the newest one. Events after it
could be deleted together with the head row reset to an earlier event: the
chain is then short but self-consistent. The records those events described
are still in their tables, so every record created (or changed) since the
newest verified checkpoint must have its event among the events since then.
Records older than that checkpoint are covered by its signature.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault._models import (
    ApiClientRecord,
    ApprovalRequestRecord,
    AuditEventRecord,
    CertificateAuthorityRecord,
    DepartmentRecord,
    KeyRecord,
    LicenceRecord,
    OfficerRecord,
    SealRecord,
    StatusChangeRecord,
)

__all__ = ["APPROVAL_SUBJECT_PREFIX", "cross_check"]

APPROVAL_SUBJECT_PREFIX = "approval-"
_STATUS_ACTIONS = frozenset({"licence.suspend", "licence.reinstate", "licence.revoke", "licence.supersede"})
_MAX_LISTED = 20


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cross_check(session: Session, since: str | None, since_seq: int) -> list[str]:
    """Problems: records created or changed at or after *since* (an audit time text) without events.

    *since* None checks every record (no checkpoint yet).
    """
    start = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
    events = select(AuditEventRecord.subject, AuditEventRecord.action)
    if since is not None:
        events = events.where(AuditEventRecord.at >= since)
    seen: Counter[tuple[str, str]] = Counter()
    status_events: Counter[str] = Counter()
    for subject, action in session.execute(events):
        seen[(subject, action)] += 1
        if action in _STATUS_ACTIONS:
            status_events[subject] += 1

    problems: list[str] = []
    missing = 0

    def need(rows: Iterable[tuple[str, datetime]], actions: tuple[str, ...], what: str, verb: str) -> None:
        nonlocal missing
        for subject, at in rows:
            if not any(seen[(subject, action)] for action in actions):
                missing += 1
                if len(problems) < _MAX_LISTED:
                    problems.append(
                        f"{what} {subject} ({verb} {_when(at)}) has no {actions[0]} event in the audit log"
                    )

    def rows_since(query: Any, column: Any) -> list[tuple[str, datetime]]:
        if start is not None:
            query = query.where(column >= start)
        return [(str(a), b) for a, b in session.execute(query).all()]

    need(
        rows_since(select(LicenceRecord.identifier, LicenceRecord.issued_at), LicenceRecord.issued_at),
        ("licence.issue", "licence.reissue"),
        "licence",
        "issued",
    )
    need(
        rows_since(select(KeyRecord.kid, KeyRecord.created_at), KeyRecord.created_at),
        ("key.generate",),
        "key",
        "generated",
    )
    destroyed = select(KeyRecord.kid, KeyRecord.destroyed_at).where(KeyRecord.destroyed_at.is_not(None))
    need(rows_since(destroyed, KeyRecord.destroyed_at), ("key.destroy",), "key", "destroyed")
    need(
        rows_since(select(SealRecord.seal_id, SealRecord.created_at), SealRecord.created_at),
        ("seal.create",),
        "seal",
        "created",
    )
    need(
        rows_since(
            select(CertificateAuthorityRecord.ca_id, CertificateAuthorityRecord.created_at),
            CertificateAuthorityRecord.created_at,
        ),
        ("ca.init",),
        "CA",
        "created",
    )
    need(
        rows_since(select(DepartmentRecord.code, DepartmentRecord.created_at), DepartmentRecord.created_at),
        ("department.add",),
        "department",
        "added",
    )
    need(
        rows_since(select(ApiClientRecord.client_id, ApiClientRecord.created_at), ApiClientRecord.created_at),
        ("client.add",),
        "API client",
        "added",
    )
    need(
        rows_since(select(OfficerRecord.name, OfficerRecord.created_at), OfficerRecord.created_at),
        ("officer.add",),
        "officer",
        "enrolled",
    )
    approvals = rows_since(
        select(ApprovalRequestRecord.id, ApprovalRequestRecord.requested_at),
        ApprovalRequestRecord.requested_at,
    )
    need(
        [(f"{APPROVAL_SUBJECT_PREFIX}{i}", at) for i, at in approvals],
        ("approval.request",),
        "approval request",
        "made",
    )

    # Status changes: each licence needs at least as many status events as it has changes.
    changes: Counter[str] = Counter()
    first_change: dict[str, datetime] = {}
    for identifier, at in rows_since(
        select(StatusChangeRecord.identifier, StatusChangeRecord.changed_at), StatusChangeRecord.changed_at
    ):
        changes[identifier] += 1
        first_change.setdefault(identifier, at)
    for identifier, count in sorted(changes.items()):
        if status_events[identifier] < count:
            missing += 1
            if len(problems) < _MAX_LISTED:
                problems.append(
                    f"licence {identifier} has {count} status change(s) since "
                    f"{_when(first_change[identifier])} but {status_events[identifier]} status event(s) "
                    "in the audit log"
                )

    if missing:
        where = f"after event {since_seq}" if since is not None else "from the log"
        problems.append(
            f"{missing} record(s) have no audit event: events {where} were deleted "
            "(the tail of the chain was cut and its head reset)"
        )
    return problems
