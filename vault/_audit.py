"""The tamper-evident audit log: an append-only, hash-chained event list.

Each event's hash is SHA-256 over the canonical JSON (sorted keys, no spaces,
UTF-8) of ``[seq, at, actor, action, subject, details, prev_hash]``; the first
event's ``prev_hash`` is 64 zeros. Editing, inserting, deleting or reordering
a row breaks the chain at that row. The head (last seq and hash) is kept in
a one-row table whose row lock serialises appends on PostgreSQL, so two
concurrent transactions can never both extend the same head.

Details never carry secrets or full ID numbers (DESIGN §5.10); callers pass
masked values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import orjson
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from vault._db import insert_rows
from vault._models import AuditEventRecord, AuditHeadRecord

__all__ = [
    "GENESIS_HASH",
    "KEY_PURPOSE_AUDIT",
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "AuditReport",
    "CheckpointWriter",
    "canonical_json",
    "event_hash",
    "timestamp_text",
]

GENESIS_HASH = "0" * 64
KEY_PURPOSE_AUDIT = "audit"  # signs audit checkpoints and key-generation records


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text: the same bytes as
    ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``,
    about ten times faster (orjson); audit hashes are computed over it on every issuance."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode("utf-8")


def timestamp_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(seq: int, at: str, actor: str, action: str, subject: str, details: str, prev_hash: str) -> str:
    material = canonical_json([seq, at, actor, action, subject, details, prev_hash])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An event to append (before it has a place in the chain)."""

    actor: str
    action: str
    subject: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    at: str
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    ok: bool
    events_checked: int
    head_seq: int
    head_hash: str
    problems: tuple[str, ...]
    # Findings that do not break the chain (e.g. no checkpoint yet, a checkpoint key compromised).
    warnings: tuple[str, ...] = ()
    checkpoints_checked: int = 0
    last_checkpoint_seq: int | None = None


class CheckpointWriter(Protocol):
    """Signs the chain head every *interval* events (see ``vault._audit_checkpoints``)."""

    interval: int

    def write(self, session: Session, seq: int, head_hash: str, at: str) -> object: ...


# The chain head, always read and written as a row of the table (never as an ORM object that
# could be left stale in a session by the UPDATE), with statements built once.
_HEAD = cast(Table, AuditHeadRecord.__table__)
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)
_LOCK_HEAD = _READ_HEAD.with_for_update()
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))


def lock_head(session: Session) -> tuple[int, str]:
    """Lock the chain head (``SELECT … FOR UPDATE``): the one row every writer serialises on."""
    head = session.execute(_LOCK_HEAD).one()
    return int(head.seq), str(head.hash)


class AuditLog:
    """Appends to and verifies the chain; never commits (the caller owns the transaction).

    With a :class:`CheckpointWriter` attached, an append that carries the chain past a
    multiple of its interval also signs the new head, in the same transaction.
    """

    def __init__(self) -> None:
        self.checkpoints: CheckpointWriter | None = None

    def lock_head(self, session: Session) -> tuple[int, str]:
        """Lock the chain head (``SELECT … FOR UPDATE``): the one row every writer serialises on."""
        return lock_head(session)

    def append(self, session: Session, entry: AuditEntry, *, at: datetime) -> AuditEvent:
        return self.append_many(session, [entry], at=at)[0]

    def append_many(
        self,
        session: Session,
        entries: Sequence[AuditEntry],
        *,
        at: datetime,
        locked_head: tuple[int, str] | None = None,
    ) -> list[AuditEvent]:
        """Append *entries* after the chain head, which this locks unless the caller did.

        *locked_head* is what :meth:`lock_head` returned earlier in this transaction, with
        nothing appended since (it saves issuance a round trip while it holds the lock). A
        stale one cannot fork the chain: its sequence numbers are taken, so the insert fails.
        """
        if not entries:
            return []
        seq, prev = locked_head if locked_head is not None else lock_head(session)
        first_seq = seq
        stamp = timestamp_text(at)
        events: list[AuditEvent] = []
        rows: list[dict[str, Any]] = []
        for entry in entries:
            seq += 1
            details_json = canonical_json(dict(entry.details))
            digest = event_hash(seq, stamp, entry.actor, entry.action, entry.subject, details_json, prev)
            rows.append(
                {
                    "seq": seq,
                    "at": stamp,
                    "actor": entry.actor,
                    "action": entry.action,
                    "subject": entry.subject,
                    "details": details_json,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            events.append(
                AuditEvent(seq, stamp, entry.actor, entry.action, entry.subject, entry.details, prev, digest)
            )
            prev = digest
        insert_rows(session, cast(Table, AuditEventRecord.__table__), rows)
        session.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev})
        writer = self.checkpoints
        if (
            writer is not None
            and writer.interval > 0
            and seq // writer.interval > first_seq // writer.interval
        ):
            writer.write(session, seq, prev, stamp)
        return events

    def head(self, session: Session) -> tuple[int, str]:
        head = session.execute(_READ_HEAD).one()
        return int(head.seq), str(head.hash)

    def hash_before(self, session: Session, seq: int) -> str:
        """The hash event *seq* links to: event ``seq - 1``'s (genesis for the first)."""
        if seq <= 1:
            return GENESIS_HASH
        found = session.execute(
            select(AuditEventRecord.hash).where(AuditEventRecord.seq == seq - 1)
        ).scalar_one_or_none()
        return found or ""

    def since(self, session: Session, first_seq: int, *, batch: int = 2000) -> Iterator[AuditEventRecord]:
        """Every stored event from *first_seq* on, in order, read in batches (for exports)."""
        last = first_seq - 1
        while True:
            rows = (
                session.execute(
                    select(AuditEventRecord)
                    .where(AuditEventRecord.seq > last)
                    .order_by(AuditEventRecord.seq)
                    .limit(batch)
                )
                .scalars()
                .all()
            )
            if not rows:
                return
            yield from rows
            last = rows[-1].seq

    def events(self, session: Session, *, subject: str | None = None, limit: int = 100) -> list[AuditEvent]:
        query = select(AuditEventRecord).order_by(AuditEventRecord.seq.desc()).limit(limit)
        if subject is not None:
            query = query.where(AuditEventRecord.subject == subject)
        return [_to_event(r) for r in reversed(session.execute(query).scalars().all())]

    def verify(
        self, session: Session, *, batch: int = 5000, signed_heads: Mapping[int, str] | None = None
    ) -> AuditReport:
        """Walk the whole chain; every problem found is listed, not just the first.

        *signed_heads* (sequence → head hash, from verified checkpoints) must match the
        chain where it passes them: a chain rewritten and re-hashed from some event on
        (by someone without the audit key) differs there.
        """
        signed = dict(signed_heads or {})
        problems: list[str] = []
        expected_seq = 1
        prev = GENESIS_HASH
        checked = 0
        last_seq = 0
        while True:
            rows: Iterable[AuditEventRecord] = (
                session.execute(
                    select(AuditEventRecord)
                    .where(AuditEventRecord.seq > last_seq)
                    .order_by(AuditEventRecord.seq)
                    .limit(batch)
                )
                .scalars()
                .all()
            )
            rows = list(rows)
            if not rows:
                break
            for row in rows:
                if row.seq != expected_seq:
                    problems.append(
                        f"events {expected_seq}..{row.seq - 1} are missing (sequence jumps to {row.seq})"
                    )
                if row.prev_hash != prev:
                    problems.append(f"event {row.seq}: previous-hash link broken (an earlier row changed?)")
                digest = event_hash(
                    row.seq, row.at, row.actor, row.action, row.subject, row.details, row.prev_hash
                )
                if digest != row.hash:
                    problems.append(f"event {row.seq}: content does not match its hash (row edited)")
                if row.seq in signed and signed.pop(row.seq) != row.hash:
                    problems.append(
                        f"event {row.seq}: its hash differs from the one the signed checkpoint at "
                        f"event {row.seq} records (the chain was rewritten and re-hashed)"
                    )
                prev = row.hash
                expected_seq = row.seq + 1
                last_seq = row.seq
                checked += 1
            if len(problems) > 100:
                problems.append("… more problems not listed")
                break
        missing = sorted(seq for seq in signed if seq > last_seq)
        if missing:
            problems.append(
                f"the log ends at event {last_seq}, but a signed checkpoint covers events up to "
                f"{missing[-1]}: events {last_seq + 1}..{missing[-1]} were deleted (the chain was rewound)"
            )
        head = session.execute(_READ_HEAD).one()
        if head.seq != last_seq or head.hash != prev:
            problems.append(
                f"chain head says event {head.seq} but the log ends at event {last_seq} "
                "(events deleted from the end, or the head was rewritten)"
            )
        return AuditReport(not problems, checked, head.seq, head.hash, tuple(problems))

    def count(self, session: Session) -> int:
        return int(session.execute(select(func.count()).select_from(AuditEventRecord)).scalar_one())


def _to_event(row: AuditEventRecord) -> AuditEvent:
    return AuditEvent(
        row.seq, row.at, row.actor, row.action, row.subject, json.loads(row.details), row.prev_hash, row.hash
    )
