"""Signed audit checkpoints: the chain head, signed by the audit key in the key backend.

Every *interval* events (``YINXIN_AUDIT_CHECKPOINT_INTERVAL``, default 100) and
on demand (``yinxin audit checkpoint``) the head — sequence number, head hash,
time — is signed as a compact JWS (``typ: audit-checkpoint+jwt``) by the
active key of purpose ``audit``. Someone who can write to the database but
cannot use the audit key can still edit rows and re-hash the chain; they
cannot make the signed checkpoints agree, so ``yinxin audit verify`` sees a
rewritten or rewound chain up to the last checkpoint. Beyond it, a deleted
tail is found by cross-checking the records the missing events described
(``vault._audit_crosscheck``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from signing import CHECKPOINT_TYP, RecordRejected, sign_record, trusted_key_from_jwk, verify_record
from vault._audit import KEY_PURPOSE_AUDIT, lock_head, timestamp_text
from vault._keys import active_key_of
from vault._models import AuditCheckpointRecord, AuditHeadRecord, KeyRecord

__all__ = ["Checkpoint", "CheckpointCheck", "CheckpointSigner", "active_audit_key"]

log = logging.getLogger("yinxin.vault")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    head_hash: str
    at: str
    kid: str
    token: str

    def as_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "at": self.at,
            "kid": self.kid,
            "token": self.token,
        }


@dataclass(frozen=True, slots=True)
class CheckpointCheck:
    """What the stored checkpoints say, after their signatures were checked."""

    signed_heads: dict[int, str]  # sequence → head hash, from checkpoints that verify
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    checked: int
    last: Checkpoint | None  # the newest checkpoint that verifies


def active_audit_key(session: Session) -> KeyRef | None:
    row = active_key_of(session, KEY_PURPOSE_AUDIT)
    return None if row is None else KeyRef(row.kid, SignatureAlgorithm.parse(row.algorithm))


def _to_checkpoint(row: AuditCheckpointRecord) -> Checkpoint:
    return Checkpoint(int(row.seq), row.head_hash, row.at, row.kid, row.token)


class CheckpointSigner:
    """Writes checkpoints inside the appending transaction (the head lock is held)."""

    def __init__(self, backend: KeyBackend, interval: int = 100) -> None:
        self._backend = backend
        self.interval = interval
        self._warned = False

    def write(self, session: Session, seq: int, head_hash: str, at: str) -> Checkpoint | None:
        existing = session.get(AuditCheckpointRecord, seq)
        if existing is not None:
            return _to_checkpoint(existing)
        key = active_audit_key(session)
        if key is None:
            if not self._warned:
                log.warning("no active audit key: audit checkpoints are not being signed (run `yinxin init`)")
                self._warned = True
            return None
        # "prev": the checkpoint before this one, so a deleted checkpoint row is noticed.
        previous = session.execute(
            select(AuditCheckpointRecord.seq)
            .where(AuditCheckpointRecord.seq < seq)
            .order_by(AuditCheckpointRecord.seq.desc())
            .limit(1)
        ).scalar_one_or_none()
        record = {"seq": seq, "head": head_hash, "at": at, "prev": int(previous or 0)}
        token = sign_record(self._backend, key, record, typ=CHECKPOINT_TYP)
        session.add(AuditCheckpointRecord(seq=seq, head_hash=head_hash, at=at, kid=key.kid, token=token))
        session.flush()
        return Checkpoint(seq, head_hash, at, key.kid, token)

    def checkpoint_now(self, session: Session, now: datetime) -> Checkpoint | None:
        """Sign the current head (once per head: a second call returns the same checkpoint)."""
        seq, head_hash = lock_head(session)
        if seq == 0:
            return None
        return self.write(session, seq, head_hash, timestamp_text(now))

    @staticmethod
    def latest(session: Session) -> Checkpoint | None:
        row = session.execute(
            select(AuditCheckpointRecord).order_by(AuditCheckpointRecord.seq.desc()).limit(1)
        ).scalar_one_or_none()
        return None if row is None else _to_checkpoint(row)

    @staticmethod
    def all(session: Session, *, since_seq: int = 0) -> list[Checkpoint]:
        rows = session.execute(
            select(AuditCheckpointRecord)
            .where(AuditCheckpointRecord.seq >= since_seq)
            .order_by(AuditCheckpointRecord.seq)
        ).scalars()
        return [_to_checkpoint(r) for r in rows]

    def check(self, session: Session) -> CheckpointCheck:
        """Verify every stored checkpoint's signature with the audit key it names, that none is
        missing between them (each names its predecessor), and that the newest one is not gone
        (the chain passed a multiple of the interval after it)."""
        keys = {
            row.kid: row
            for row in session.execute(
                select(KeyRecord).where(KeyRecord.purpose == KEY_PURPOSE_AUDIT)
            ).scalars()
        }
        problems: list[str] = []
        warnings: list[str] = []
        signed: dict[int, str] = {}
        last: Checkpoint | None = None
        checked = 0
        stored_previous = 0
        for cp in CheckpointSigner.all(session):
            checked += 1
            expected_previous, stored_previous = stored_previous, cp.seq
            key_row = keys.get(cp.kid)
            if key_row is None:
                problems.append(
                    f"checkpoint at event {cp.seq} names audit key {cp.kid}, which is not registered"
                )
                continue
            if key_row.state == "compromised":
                warnings.append(
                    f"checkpoint at event {cp.seq} is signed by audit key {cp.kid}, declared compromised: "
                    "it proves nothing"
                )
                continue
            try:
                payload = verify_record(
                    cp.token, trusted_key_from_jwk(key_row.public_jwk), typ=CHECKPOINT_TYP
                )
            except RecordRejected as exc:
                problems.append(f"checkpoint at event {cp.seq}: {exc} (checkpoint forged or edited)")
                continue
            if (
                payload.get("seq") != cp.seq
                or payload.get("head") != cp.head_hash
                or payload.get("at") != cp.at
            ):
                problems.append(
                    f"checkpoint at event {cp.seq}: the stored columns differ from what was signed "
                    f"(signed: event {payload.get('seq')}, head {str(payload.get('head'))[:16]}…)"
                )
                continue
            if payload.get("prev") != expected_previous:
                problems.append(
                    f"checkpoint at event {cp.seq} follows the checkpoint at event {payload.get('prev')}, "
                    f"but the stored one before it is at event {expected_previous}: checkpoints were deleted"
                )
            signed[cp.seq] = cp.head_hash
            last = cp
        if checked == 0:
            warnings.append("no signed checkpoint yet: `yinxin audit checkpoint` makes one")
        head_seq = int(
            session.execute(select(AuditHeadRecord.seq).where(AuditHeadRecord.id == 1)).scalar_one()
        )
        # With no checkpoint at all (a log from before checkpoints, or every row deleted) there is
        # only the warning above, and the cross-check then covers every record.
        if checked and self.interval > 0 and (head_seq // self.interval) * self.interval > stored_previous:
            due = (head_seq // self.interval) * self.interval
            problems.append(
                f"the chain passed event {due}, a multiple of the checkpoint interval ({self.interval}), "
                f"but the newest checkpoint is at event {stored_previous}: a checkpoint was deleted "
                "(or the audit key was missing, or the interval was lowered: `yinxin audit checkpoint`)"
            )
        return CheckpointCheck(signed, tuple(problems), tuple(warnings), checked, last)
