"""Dual control (四眼原则): operations that run only when M of N security officers approve.

An officer *requests* an operation (their own approval counts once); it runs
when the M-th distinct security officer approves; any rejection, or expiry
(default 24 h), kills it. Every step is audited. The vote table's primary key
(request, officer) makes a second vote by the same officer impossible even
under concurrency, and the request row is locked while a vote is counted.

Operations (ETSI EN 319 401 §7.2 trusted roles; RFC 3647 §6.2.2 multi-person
control of private keys):

===================== =========================================================
``key.destroy``       delete a (non-active) key's private half from the backend
``key.compromise``    declare a key compromised since a time
``key.reissue``       re-issue every live licence a compromised key signed
``seal.revoke``       revoke a seal (its certificate goes on the CRL)
``ca.init``           create the CA's root key and certificate
===================== =========================================================

A request that was approved but whose operation failed (or was interrupted)
can be run again with :meth:`ApprovalBook.execute` by any security officer:
the operations are safe to repeat, and re-issuing resumes where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import func, select

from schemas.errors import (
    ApprovalNotFound,
    Conflict,
    IllegalTransition,
    InvalidInput,
    YinxinError,
)
from vault._approval_operations import Progress, operation_named
from vault._audit import AuditEntry
from vault._audit_crosscheck import APPROVAL_SUBJECT_PREFIX
from vault._models import ApprovalRequestRecord, ApprovalVoteRecord
from vault._officers import Officer, Role, require_role

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from vault._vault import Vault

__all__ = ["ApprovalBook", "ApprovalRequest", "ApprovalState"]

log = logging.getLogger("yinxin.vault")


class ApprovalState:
    PENDING: Final = "pending"
    APPROVED: Final = "approved"  # enough approvals; the operation is running or about to
    EXECUTED: Final = "executed"
    FAILED: Final = "failed"  # approved, but the operation failed: `approvals execute` retries
    REJECTED: Final = "rejected"
    EXPIRED: Final = "expired"


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    id: int
    operation: str
    params: Mapping[str, Any]
    subject: str
    summary: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    required: int
    state: str
    approvals: tuple[str, ...]
    rejections: tuple[str, ...]
    decided_at: datetime | None
    result: Mapping[str, Any] | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.operation,
            "params": dict(self.params),
            "subject": self.subject,
            "summary": self.summary,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "required": self.required,
            "state": self.state,
            "approvals": list(self.approvals),
            "rejections": list(self.rejections),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "result": dict(self.result) if self.result is not None else None,
            "error": self.error,
        }


# ---- the book ---------------------------------------------------------------------------------


class ApprovalBook:
    def __init__(self, vault: Vault, *, required: int = 2, ttl: timedelta = timedelta(hours=24)) -> None:
        if required < 1:
            raise InvalidInput("dual control needs at least one approval (YINXIN_APPROVALS_REQUIRED >= 1)")
        self._vault = vault
        self.required = required
        self.ttl = ttl

    def _to_request(self, s: Session, row: ApprovalRequestRecord) -> ApprovalRequest:
        votes = s.execute(
            select(ApprovalVoteRecord)
            .where(ApprovalVoteRecord.request_id == row.id)
            .order_by(ApprovalVoteRecord.at)
        ).scalars()
        approvals: list[str] = []
        rejections: list[str] = []
        for vote in votes:
            (approvals if vote.decision == "approve" else rejections).append(vote.officer)
        summary = _summary(row)
        return ApprovalRequest(
            int(row.id),
            row.operation,
            {k: v for k, v in row.params.items() if k != "summary"},
            row.subject,
            summary,
            row.requested_by,
            row.requested_at,
            row.expires_at,
            int(row.required),
            row.state,
            tuple(approvals),
            tuple(rejections),
            row.decided_at,
            dict(row.result) if row.result is not None else None,
            row.error,
        )

    def _row(self, s: Session, request_id: int, *, lock: bool = False) -> ApprovalRequestRecord:
        if not isinstance(request_id, int) or not 1 <= request_id <= 2**62:
            raise ApprovalNotFound(f"{str(request_id)[:20]!r} is not an approval request number")
        row = s.get(ApprovalRequestRecord, request_id, with_for_update=lock)
        if row is None:
            raise ApprovalNotFound(f"no approval request {request_id}: `yinxin approvals list` shows them")
        return row

    def _expire(self, s: Session, row: ApprovalRequestRecord, now: datetime) -> bool:
        if row.state == ApprovalState.PENDING and now >= row.expires_at:
            row.state = ApprovalState.EXPIRED
            row.decided_at = now
            self._vault.audit.append(
                s,
                AuditEntry(
                    "system",
                    "approval.expire",
                    f"{APPROVAL_SUBJECT_PREFIX}{row.id}",
                    {"operation": row.operation},
                ),
                at=now,
            )
            return True
        return False

    # ---- requesting and deciding -------------------------------------------------------------

    def request(
        self, operation: str, params: Mapping[str, Any], officer: Officer, *, progress: Progress | None = None
    ) -> ApprovalRequest:
        """Create a request with the requester's approval; runs at once if one approval suffices."""
        op = operation_named(operation)
        require_role(officer, (Role.SECURITY_OFFICER,), f"request {operation}")
        if not isinstance(params, Mapping):
            raise InvalidInput("parameters are a JSON object")
        normalised, subject, summary = op.check(self._vault, params)
        v = self._vault
        now = v.clock()
        with v.db.write() as s:
            v.audit.lock_head(s)
            enrolled = v.officers.count_security_officers(s)
            if enrolled < self.required:
                raise Conflict(
                    f"{operation} needs {self.required} security officers' approval but only {enrolled} "
                    "is enrolled: enrol another with `yinxin officer add NAME --role security-officer`"
                )
            duplicate = s.execute(
                select(ApprovalRequestRecord.id).where(
                    ApprovalRequestRecord.operation == operation,
                    ApprovalRequestRecord.subject == subject,
                    ApprovalRequestRecord.state == ApprovalState.PENDING,
                    ApprovalRequestRecord.expires_at > now,
                )
            ).scalar_one_or_none()
            if duplicate is not None:
                raise Conflict(
                    f"request {duplicate} for {operation} of {subject} is already pending: approve that one"
                )
            row = ApprovalRequestRecord(
                operation=operation,
                params={**normalised, "summary": summary},
                subject=subject,
                requested_by=officer.name,
                requested_at=now,
                expires_at=now + self.ttl,
                required=self.required,
                state=ApprovalState.PENDING,
            )
            s.add(row)
            s.flush()
            s.add(ApprovalVoteRecord(request_id=row.id, officer=officer.name, decision="approve", at=now))
            v.audit.append(
                s,
                AuditEntry(
                    officer.actor,
                    "approval.request",
                    f"{APPROVAL_SUBJECT_PREFIX}{row.id}",
                    {"operation": operation, "params": normalised, "required": self.required},
                ),
                at=now,
            )
            ready = self.required <= 1
            if ready:
                row.state = ApprovalState.APPROVED
                row.decided_at = now
            request_id = int(row.id)
        if ready:
            return self._execute(request_id, progress)
        return self.get(request_id)

    def approve(
        self,
        request_id: int,
        officer: Officer,
        *,
        comment: str | None = None,
        progress: Progress | None = None,
    ) -> ApprovalRequest:
        """Add *officer*'s approval; the M-th distinct approval runs the operation."""
        require_role(officer, (Role.SECURITY_OFFICER,), "approve dual-control operations")
        v = self._vault
        now = v.clock()
        ready = False
        with v.db.write() as s:
            row, expires_at = self._open_for_decision(s, request_id, now)
            if row is not None:
                voted = s.get(ApprovalVoteRecord, (row.id, officer.name))
                if voted is not None:
                    raise Conflict(
                        f"officer {officer.name} has already {voted.decision}d request {request_id}: "
                        "a different security officer must approve"
                    )
                s.add(
                    ApprovalVoteRecord(
                        request_id=row.id,
                        officer=officer.name,
                        decision="approve",
                        at=now,
                        comment=_comment(comment),
                    )
                )
                s.flush()
                count = int(
                    s.execute(
                        select(func.count())
                        .select_from(ApprovalVoteRecord)
                        .where(
                            ApprovalVoteRecord.request_id == row.id, ApprovalVoteRecord.decision == "approve"
                        )
                    ).scalar_one()
                )
                v.audit.append(
                    s,
                    AuditEntry(
                        officer.actor,
                        "approval.approve",
                        f"{APPROVAL_SUBJECT_PREFIX}{row.id}",
                        {"operation": row.operation, "approvals": count, "required": row.required},
                    ),
                    at=now,
                )
                ready = count >= row.required
                if ready:
                    row.state = ApprovalState.APPROVED
                    row.decided_at = now
        if row is None:
            raise IllegalTransition(
                f"request {request_id} expired at {expires_at.isoformat()}; make a new one"
            )
        if ready:
            return self._execute(request_id, progress)
        return self.get(request_id)

    def reject(self, request_id: int, officer: Officer, *, reason: str) -> ApprovalRequest:
        require_role(officer, (Role.SECURITY_OFFICER,), "reject dual-control operations")
        reason = (reason or "").strip()
        if not 1 <= len(reason) <= 500:
            raise InvalidInput("a rejection needs a reason of 1-500 characters")
        v = self._vault
        now = v.clock()
        with v.db.write() as s:
            row, _ = self._open_for_decision(s, request_id, now)
            if row is not None:
                voted = s.get(ApprovalVoteRecord, (row.id, officer.name))
                if voted is not None:
                    # The requester (or an approver) changing their mind still kills the request.
                    voted.decision = "reject"
                    voted.comment = reason
                    voted.at = now
                else:
                    s.add(
                        ApprovalVoteRecord(
                            request_id=row.id, officer=officer.name, decision="reject", at=now, comment=reason
                        )
                    )
                row.state = ApprovalState.REJECTED
                row.decided_at = now
                v.audit.append(
                    s,
                    AuditEntry(
                        officer.actor,
                        "approval.reject",
                        f"{APPROVAL_SUBJECT_PREFIX}{row.id}",
                        {"operation": row.operation, "reason": reason},
                    ),
                    at=now,
                )
        if row is None:
            raise IllegalTransition(f"request {request_id} had already expired")
        return self.get(request_id)

    def execute(
        self, request_id: int, officer: Officer, *, progress: Progress | None = None
    ) -> ApprovalRequest:
        """Run an approved request again (after a failure or an interruption)."""
        require_role(officer, (Role.SECURITY_OFFICER,), "run approved operations")
        with self._vault.db.read() as s:
            row = self._row(s, request_id)
            if row.state not in (ApprovalState.APPROVED, ApprovalState.FAILED):
                raise IllegalTransition(
                    f"request {request_id} is {row.state}: only an approved request whose operation failed "
                    "or was interrupted can be run again"
                )
        return self._execute(request_id, progress, retried_by=officer)

    def _execute(
        self, request_id: int, progress: Progress | None, retried_by: Officer | None = None
    ) -> ApprovalRequest:
        v = self._vault
        with v.db.read() as s:
            row = self._row(s, request_id)
            approvers = [
                vote.officer
                for vote in s.execute(
                    select(ApprovalVoteRecord)
                    .where(ApprovalVoteRecord.request_id == row.id, ApprovalVoteRecord.decision == "approve")
                    .order_by(ApprovalVoteRecord.at)
                ).scalars()
            ]
            operation, params = row.operation, {k: val for k, val in row.params.items() if k != "summary"}
        # The operation's own audit events name every officer who authorised it.
        actor = "officers:" + ",".join(approvers)
        op = operation_named(operation)
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            result = op.run(v, params, actor[:200], progress)
        except YinxinError as exc:
            error = str(exc)[:1000]
            log.warning("approved request %s (%s) failed: %s", request_id, operation, error)
        now = v.clock()
        with v.db.write() as s:
            row = self._row(s, request_id, lock=True)
            row.state = ApprovalState.EXECUTED if error is None else ApprovalState.FAILED
            row.result = result
            row.error = error
            details: dict[str, Any] = {"operation": operation, "approved_by": approvers}
            if retried_by is not None:
                details["run_by"] = retried_by.name
            if error is not None:
                details["error"] = error
            v.audit.append(
                s,
                AuditEntry(
                    retried_by.actor if retried_by else actor[:200],
                    "approval.execute" if error is None else "approval.fail",
                    f"{APPROVAL_SUBJECT_PREFIX}{row.id}",
                    details,
                ),
                at=now,
            )
        return self.get(request_id)

    def _open_for_decision(
        self, s: Session, request_id: int, now: datetime
    ) -> tuple[ApprovalRequestRecord | None, datetime]:
        """The request, locked and pending, and its expiry time; None for the request if it has
        just expired (the expiry is recorded and audited in this transaction)."""
        row = self._row(s, request_id, lock=True)
        expires_at = row.expires_at
        if self._expire(s, row, now):
            return None, expires_at
        self._check_pending(row)
        return row, expires_at

    @staticmethod
    def _check_pending(row: ApprovalRequestRecord) -> None:
        if row.state != ApprovalState.PENDING:
            raise IllegalTransition(f"request {row.id} is {row.state}: only a pending request can be decided")

    # ---- reading ----------------------------------------------------------------------------------

    def get(self, request_id: int) -> ApprovalRequest:
        with self._vault.db.read() as s:
            return self._to_request(s, self._row(s, request_id))

    def list(self, *, state: str | None = None, limit: int = 100) -> list[ApprovalRequest]:
        v = self._vault
        now = v.clock()
        with v.db.write() as s:
            pending = s.execute(
                select(ApprovalRequestRecord).where(
                    ApprovalRequestRecord.state == ApprovalState.PENDING,
                    ApprovalRequestRecord.expires_at <= now,
                )
            ).scalars()
            for row in pending:
                self._expire(s, row, now)
        with v.db.read() as s:
            query = (
                select(ApprovalRequestRecord)
                .order_by(ApprovalRequestRecord.id.desc())
                .limit(max(1, min(limit, 1000)))
            )
            if state is not None:
                query = query.where(ApprovalRequestRecord.state == state)
            return [self._to_request(s, r) for r in s.execute(query).scalars()]


def _summary(row: ApprovalRequestRecord) -> str:
    return str(row.params.get("summary", row.operation))


def _comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    comment = comment.strip()
    if len(comment) > 500:
        raise InvalidInput("a comment is at most 500 characters")
    return comment or None
