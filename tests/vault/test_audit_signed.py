"""The signed audit log: checkpoints of the chain head signed by the audit key, tamper detection,
and an export anyone can check with hashlib, json and a JOSE library of their own.

Tampering is done the way an attacker with database access would: SQLAlchemy on the vault's
own tables, with no access to the audit key; those tests share one audited vault per database
and put its audit tables back after each. Signatures are checked with ``cryptography`` and
``joserfc``, never with our own ``signing`` package. SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from joserfc import jws
from joserfc.jwk import ECKey
from sqlalchemy import Table, delete, insert, select, update

from hsm import SignatureAlgorithm, SoftwareBackend
from schemas import load_licence_types
from schemas.errors import PermissionDenied
from tests._db import create_postgres_database, drop_postgres_database
from tests.vault._officer_support import DEPT, enrol, issue, verify_es256_jws
from tests.vault.conftest import SettableClock
from vault import Database, Vault
from vault._audit import event_hash
from vault._audit_checkpoints import Checkpoint
from vault._models import AuditCheckpointRecord, AuditEventRecord, AuditHeadRecord
from vault._officers import Role
from vault._types import Licence

_AUDIT_TABLES = (
    cast(Table, AuditEventRecord.__table__),
    cast(Table, AuditCheckpointRecord.__table__),
    cast(Table, AuditHeadRecord.__table__),
)
INTERVAL = 10
HEAD = 35  # events in the audited vault: 5 from setting it up, then one per licence


class Audited:
    """A vault with a checkpoint every 10 events, 35 events long, one licence per second."""

    def __init__(self, vault: Vault, licences: list[Licence]) -> None:
        self.vault = vault
        self.licences = licences
        self._saved: dict[str, list[dict[str, Any]]] = {}

    def save(self) -> None:
        """Remember the audit tables as they are (before a test tampers with them)."""
        with self.vault.db.read() as s:
            for table in _AUDIT_TABLES:
                self._saved[table.name] = [dict(row._mapping) for row in s.execute(select(table))]

    def restore(self) -> None:
        with self.vault.db.write() as s:
            for table in _AUDIT_TABLES:
                s.execute(delete(table))
                s.execute(insert(table), self._saved[table.name])

    def checkpoints(self) -> list[Checkpoint]:
        with self.vault.db.read() as s:
            return self.vault.checkpoints.all(s)

    def event(self, seq: int) -> AuditEventRecord:
        with self.vault.db.read() as s:
            return s.execute(select(AuditEventRecord).where(AuditEventRecord.seq == seq)).scalar_one()

    def licence_of_event(self, seq: int) -> Licence:
        return next(lic for lic in self.licences if lic.identifier == self.event(seq).subject)

    # -- what an attacker with write access to the database can do --

    def edit(self, seq: int, **values: Any) -> None:
        with self.vault.db.write() as s:
            s.execute(update(AuditEventRecord).where(AuditEventRecord.seq == seq).values(**values))

    def delete_events(self, first: int, last: int) -> None:
        with self.vault.db.write() as s:
            s.execute(delete(AuditEventRecord).where(AuditEventRecord.seq.between(first, last)))

    def reset_head(self, seq: int) -> None:
        head_hash = self.event(seq).hash
        with self.vault.db.write() as s:
            s.execute(update(AuditHeadRecord).where(AuditHeadRecord.id == 1).values(seq=seq, hash=head_hash))

    def rehash_from(self, first: int) -> None:
        """Recompute every hash from event *first* on, and the head: a self-consistent chain again."""
        with self.vault.db.write() as s:
            rows = (
                s.execute(
                    select(AuditEventRecord)
                    .where(AuditEventRecord.seq >= first)
                    .order_by(AuditEventRecord.seq)
                )
                .scalars()
                .all()
            )
            prev = s.execute(
                select(AuditEventRecord.hash).where(AuditEventRecord.seq == first - 1)
            ).scalar_one()
            for row in rows:
                row.prev_hash = prev
                row.hash = event_hash(row.seq, row.at, row.actor, row.action, row.subject, row.details, prev)
                prev = row.hash
            s.execute(
                update(AuditHeadRecord).where(AuditHeadRecord.id == 1).values(seq=rows[-1].seq, hash=prev)
            )


def head_seq(vault: Vault) -> int:
    with vault.db.read() as s:
        return vault.audit.head(s)[0]


def fill(vault: Vault, clock: SettableClock, until: int) -> list[Licence]:
    """Issue licences, one a second, until the chain is *until* events long."""
    licences = []
    while head_seq(vault) < until:
        clock.advance(seconds=1)
        licences.append(issue(vault))
    assert head_seq(vault) == until
    return licences


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def audited_once(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Audited]:
    """One audited vault per database for the tampering tests (each puts the tables back after it):
    35 events, signed at events 10, 20 and 30."""
    root = tmp_path_factory.mktemp("audited")
    url = f"sqlite:///{root / 'yinxin.db'}" if request.param == "sqlite" else create_postgres_database()
    backend = SoftwareBackend(root / "keystore", b"test-passphrase")
    clock = SettableClock(datetime(2026, 11, 23, 2, 0, 0, tzinfo=UTC))
    vault = Vault(
        Database(url), backend, load_licence_types(), clock=clock, audit_checkpoint_interval=INTERVAL
    )
    try:
        vault.initialise(actor="test")
        vault.add_department(DEPT, "北京市市场监督管理局", actor="test")
        vault.generate_key(DEPT, SignatureAlgorithm.ES256, actor="test")
        audited = Audited(vault, fill(vault, clock, HEAD))
        assert [cp.seq for cp in audited.checkpoints()] == [10, 20, 30]
        audited.save()
        yield audited
    finally:
        vault.close()
        backend.close()
        if request.param == "postgresql":
            drop_postgres_database(url)


@pytest.fixture
def audited(audited_once: Audited) -> Iterator[Audited]:
    report = audited_once.vault.verify_audit()
    assert report.ok and report.head_seq == HEAD, report.problems  # untouched by the test before
    yield audited_once
    audited_once.restore()


def problems_of(vault: Vault) -> str:
    report = vault.verify_audit()
    assert not report.ok
    return "\n".join(report.problems)


# ---- checkpoints ----------------------------------------------------------------------------------


def test_the_head_is_signed_every_n_events(audited: Audited) -> None:
    vault = audited.vault  # audit_checkpoint_interval=10, 35 events
    checkpoints = audited.checkpoints()

    assert [cp.seq for cp in checkpoints] == [10, 20, 30]
    report = vault.verify_audit()
    assert report.ok, report.problems
    assert (report.events_checked, report.head_seq) == (HEAD, HEAD)
    assert report.checkpoints_checked == 3 and report.last_checkpoint_seq == 30
    assert report.warnings == ()
    (audit_key,) = [k for k in vault.list_keys() if k.purpose == "audit"]
    previous = 0  # each checkpoint names the one before it
    for cp in checkpoints:
        assert cp.kid == audit_key.kid
        assert cp.head_hash == audited.event(cp.seq).hash
        assert cp.at == audited.event(cp.seq).at
        # Independent check: cryptography alone, against the audit key's public JWK.
        header, payload = verify_es256_jws(cp.token, audit_key.public_jwk)
        assert header == {"alg": "ES256", "kid": audit_key.kid, "typ": "audit-checkpoint+jwt"}
        assert payload == {"seq": cp.seq, "head": cp.head_hash, "at": cp.at, "prev": previous}
        previous = cp.seq


def test_a_checkpoint_on_demand_signs_the_current_head_once(
    make_vault: Callable[..., Vault], clock: SettableClock
) -> None:
    vault = make_vault()  # checkpoints every 100 events: none yet
    assert vault.verify_audit().warnings == ("no signed checkpoint yet: `yinxin audit checkpoint` makes one",)
    head = len(vault.audit_events(limit=1000))

    first = vault.audit_checkpoint(officer=None, actor="t")  # setup mode: the local user
    clock.advance(minutes=1)
    second = vault.audit_checkpoint(officer=None, actor="t")

    assert first is not None and second is not None
    assert first.seq == second.seq == head
    assert second.token == first.token
    report = vault.verify_audit()
    assert report.ok and report.last_checkpoint_seq == head and report.warnings == ()
    with vault.db.read() as s:
        assert [cp.seq for cp in vault.checkpoints.all(s)] == [head]

    # Once officers exist, an auditor or a security officer makes them; an operator may not.
    boss = enrol(vault, "zhang.wei", acting=None)
    auditor = enrol(vault, "li.na", Role.AUDITOR, acting=boss)
    operator = enrol(vault, "wang.fang", Role.OPERATOR, acting=boss)
    with pytest.raises(PermissionDenied):
        vault.audit_checkpoint(officer=None, actor="t")
    with pytest.raises(PermissionDenied):
        vault.audit_checkpoint(officer=operator, actor="t")
    by_auditor = vault.audit_checkpoint(officer=auditor, actor="t")
    assert by_auditor is not None and by_auditor.seq > head


def test_checkpoints_survive_a_rotation_of_the_audit_key(
    make_vault: Callable[..., Vault], clock: SettableClock
) -> None:
    vault = make_vault(audit_checkpoint_interval=INTERVAL)
    fill(vault, clock, 30)
    old = next(k for k in vault.list_keys() if k.purpose == "audit")

    new = vault.rotate_system_key("audit", SignatureAlgorithm.ES256, officer=None, actor="t")
    fill(vault, clock, 40)

    with vault.db.read() as s:
        kids = {cp.seq: cp.kid for cp in vault.checkpoints.all(s)}
    assert kids[30] == old.kid and kids[40] == new.kid
    assert vault.key_details(old.kid)[0].state == "retired"
    report = vault.verify_audit()
    assert report.ok, report.problems
    assert report.checkpoints_checked == 4


# ---- tampering ------------------------------------------------------------------------------------


def test_an_edited_event_is_found(audited: Audited) -> None:
    audited.edit(15, details='{"reason":"nothing to see"}')

    problems = problems_of(audited.vault)

    assert "event 15: content does not match its hash (row edited)" in problems


def test_a_deleted_event_is_found(audited: Audited) -> None:
    audited.delete_events(15, 15)

    problems = problems_of(audited.vault)

    assert "events 15..15 are missing" in problems


def test_a_chain_rewound_past_a_checkpoint_is_found(audited: Audited) -> None:
    # Delete the last 8 events (the checkpointed event 30 among them) and point the head at event 27.
    audited.delete_events(28, HEAD)
    audited.reset_head(27)

    problems = problems_of(audited.vault)

    assert "the log ends at event 27, but a signed checkpoint covers events up to 30" in problems
    assert "rewound" in problems and "deleted" in problems


def test_a_chain_edited_and_rehashed_is_found_by_its_checkpoints(audited: Audited) -> None:
    audited.edit(15, actor="operator-b")
    audited.rehash_from(15)
    with audited.vault.db.read() as s:  # the chain itself is consistent again
        assert audited.vault.audit.verify(s).ok

    problems = problems_of(audited.vault)

    assert "event 20: its hash differs from the one the signed checkpoint at event 20 records" in problems
    assert "rewritten and re-hashed" in problems


def test_a_tail_deleted_after_the_last_checkpoint_is_found_by_the_records_it_described(
    audited: Audited,
) -> None:
    lost = [audited.licence_of_event(seq) for seq in range(31, HEAD + 1)]
    audited.delete_events(31, HEAD)
    audited.reset_head(30)  # the checkpoint rows stay; the chain up to 30 is intact and signed
    with audited.vault.db.read() as s:
        assert audited.vault.audit.verify(s).ok

    problems = problems_of(audited.vault)

    for lic in lost:
        assert f"licence {lic.identifier}" in problems
        assert "has no licence.issue event" in problems
    assert f"{len(lost)} record(s) have no audit event: events after event 30 were deleted" in problems
    for lic in audited.licences:
        if lic not in lost:
            assert lic.identifier not in problems


def test_a_forged_checkpoint_is_found(audited: Audited) -> None:
    with audited.vault.db.write() as s:
        s.execute(
            update(AuditCheckpointRecord).where(AuditCheckpointRecord.seq == 20).values(head_hash="f" * 64)
        )

    problems = problems_of(audited.vault)

    assert "checkpoint at event 20: the stored columns differ from what was signed" in problems


def test_a_rehashed_chain_is_found_even_if_its_checkpoint_was_deleted(audited: Audited) -> None:
    # Who did it is rewritten; the chain is re-hashed; the checkpoint that would tell is deleted.
    audited.edit(25, actor="operator-b")
    audited.rehash_from(25)
    with audited.vault.db.write() as s:
        s.execute(delete(AuditCheckpointRecord).where(AuditCheckpointRecord.seq == 30))

    # Checkpoints are made every 10 events: the one at 30 must be there.
    assert not audited.vault.verify_audit().ok


# ---- export -----------------------------------------------------------------------------------------------


def test_the_export_is_verifiable_with_hashlib_json_and_another_jose_library(audited: Audited) -> None:
    lines = list(audited.vault.export_audit(since_seq=5))
    records = [json.loads(line) for line in lines]
    header, rest = records[0], records[1:]
    events = [r for r in rest if r["type"] == "event"]
    checkpoints = [r for r in rest if r["type"] == "checkpoint"]

    assert header["type"] == "header" and header["format"] == "yinxin-audit-export/1"
    assert header["since"] == 5
    assert [e["seq"] for e in events] == list(range(5, HEAD + 1))
    assert {r["type"] for r in rest} == {"event", "checkpoint"}
    # The header anchors the export: its prev_hash is what event 5 links to.
    assert header["prev_hash"] == events[0]["prev_hash"] == audited.event(4).hash
    assert (header["head_seq"], header["head_hash"]) == (HEAD, events[-1]["hash"])
    # Every hash, recomputed with hashlib and json only (details is hashed as the stored JSON text).
    prev = header["prev_hash"]
    for e in events:
        assert isinstance(e["details"], str)
        material = json.dumps(
            [e["seq"], e["at"], e["actor"], e["action"], e["subject"], e["details"], e["prev_hash"]],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        assert e["prev_hash"] == prev
        assert hashlib.sha256(material.encode("utf-8")).hexdigest() == e["hash"], e["seq"]
        prev = e["hash"]
    # Each checkpoint follows the event it signs, and verifies with joserfc and the exported JWK.
    hashes = {e["seq"]: e["hash"] for e in events}
    assert [cp["seq"] for cp in checkpoints] == [10, 20, 30]
    for cp in checkpoints:
        before = rest[rest.index(cp) - 1]
        assert (before["type"], before["seq"]) == ("event", cp["seq"])
    (jwk,) = header["audit_keys"]
    assert jwk["state"] == "active" and "d" not in jwk
    key = ECKey.import_key({name: value for name, value in jwk.items() if name != "state"})
    for cp in checkpoints:
        signed = jws.deserialize_compact(cp["token"], key, algorithms=["ES256"])
        assert signed.protected == {"alg": "ES256", "kid": jwk["kid"], "typ": "audit-checkpoint+jwt"}
        payload = json.loads(signed.payload)
        assert {k: payload[k] for k in ("seq", "head", "at")} == {
            "seq": cp["seq"],
            "head": hashes[cp["seq"]],
            "at": cp["at"],
        }
        assert cp["head_hash"] == hashes[cp["seq"]] and cp["kid"] == jwk["kid"]
