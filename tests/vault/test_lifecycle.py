"""Status changes, verification verdicts with live status, and the audit chain."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import date, timedelta

import pytest
from sqlalchemy import text

from hsm import SignatureAlgorithm
from hsm._software import SoftwareBackend
from schemas import LicenceCreate
from schemas.errors import ConfigurationError, IllegalTransition, InvalidInput, LicenceNotFound
from signing import sign_licence_token
from tests._builders import example
from vault import Database, Licence, LicenceState, Vault
from vault._db import MAX_READ_THREADS, READ_THREADS


def issue(vault: Vault, **changes: object) -> str:
    return vault.issue(example(vault, **changes), actor="officer-a").licence.identifier


def test_suspend_reinstate_revoke_with_history(ready_vault: Vault) -> None:
    ident = issue(ready_vault)
    ready_vault.suspend(ident, reason="经营场所核查", actor="officer-a")
    ready_vault.reinstate(ident, reason="核查通过", actor="officer-b")
    ready_vault.revoke(ident, reason="违法经营被吊销", actor="officer-a")
    history = ready_vault.status_history(ident)
    assert [(c.from_status, c.to_status, c.actor) for c in history] == [
        ("valid", "suspended", "officer-a"),
        ("suspended", "valid", "officer-b"),
        ("valid", "revoked", "officer-a"),
    ]
    assert history[2].reason == "违法经营被吊销"
    actions = [e.action for e in ready_vault.audit_events(subject=ident)]
    assert actions == ["licence.issue", "licence.suspend", "licence.reinstate", "licence.revoke"]


@pytest.mark.parametrize(
    ("steps", "action", "message"),
    [
        ([], "reinstate", "cannot reinstate .* it is valid"),
        (["suspend"], "suspend", "cannot suspend .* it is suspended"),
        (["revoke"], "reinstate", "revocation is final"),
        (["revoke"], "suspend", "revocation is final"),
        (["revoke"], "revoke", "revocation is final"),
    ],
)
def test_illegal_transitions_are_refused(
    ready_vault: Vault, steps: list[str], action: str, message: str
) -> None:
    ident = issue(ready_vault)
    for step in steps:
        getattr(ready_vault, step)(ident, reason="x", actor="t")
    events_before = len(ready_vault.audit_events(limit=1000))
    with pytest.raises(IllegalTransition, match=message):
        getattr(ready_vault, action)(ident, reason="y", actor="t")
    assert len(ready_vault.audit_events(limit=1000)) == events_before


def test_status_change_input_errors(ready_vault: Vault) -> None:
    ident = issue(ready_vault)
    with pytest.raises(InvalidInput, match="reason"):
        ready_vault.suspend(ident, reason="  ", actor="t")
    with pytest.raises(InvalidInput, match="reason"):
        ready_vault.suspend(ident, reason="x" * 501, actor="t")
    unknown = ident[:-5] + "999.002"  # well-formed prefix, wrong check → identifier error
    with pytest.raises(InvalidInput):
        ready_vault.suspend(unknown, reason="x", actor="t")


def test_unknown_but_well_formed_identifier(ready_vault: Vault) -> None:
    from schemas import LicenceIdentifier

    ident = LicenceIdentifier.parse(issue(ready_vault))
    other = LicenceIdentifier(ident.type_code, ident.issuer_code, ident.year, 99, 1)
    with pytest.raises(LicenceNotFound):
        ready_vault.get(str(other))


def test_verdict_follows_live_status(ready_vault: Vault) -> None:
    lic = ready_vault.issue(example(ready_vault), actor="t").licence
    v = ready_vault.verify(lic.token)
    assert (v.valid, v.status, v.reasons) == (True, "valid", ())
    assert v.licence is not None and v.licence["identifier"] == lic.identifier
    ready_vault.suspend(lic.identifier, reason="核查中", actor="t")
    v = ready_vault.verify(lic.token)
    assert (v.valid, v.status) == (False, "suspended")
    assert "核查中" in v.reasons[0]
    ready_vault.reinstate(lic.identifier, reason="ok", actor="t")
    assert ready_vault.verify(lic.token).valid
    ready_vault.revoke(lic.identifier, reason="吊销", actor="t")
    v = ready_vault.verify(lic.token)
    assert (v.valid, v.status, v.codes) == (False, "revoked", ("revoked",))


def _state(licence: Licence) -> LicenceState:
    return LicenceState(**{f.name: getattr(licence, f.name) for f in fields(LicenceState)})


def test_the_verification_lookup_reads_what_the_orm_reads(ready_vault: Vault) -> None:
    """Verification reads a licence through one prepared statement (no ORM session): every field
    but the licence's data (which no verdict shows), converted by the column types (dates, aware
    UTC timestamps), equals the ORM's, and the reason it reports is the latest status change's."""
    lic = ready_vault.issue(example(ready_vault, valid_until="2031-12-31"), actor="t").licence
    fast, reason = ready_vault._licence_for_verification(lic.identifier)
    assert (fast, reason) == (_state(ready_vault.get(lic.identifier)), "")
    assert type(fast) is LicenceState and not hasattr(fast, "data")
    assert fast.issued_at.utcoffset() == timedelta(0) and isinstance(fast.valid_until, date)
    for change, why in (
        (ready_vault.suspend, "第一次核查"),
        (ready_vault.reinstate, "核查完毕"),
        (ready_vault.suspend, "第二次核查"),
    ):
        change(lic.identifier, reason=why, actor="t")
    fast, reason = ready_vault._licence_for_verification(lic.identifier)
    assert (fast, reason) == (_state(ready_vault.get(lic.identifier)), "第二次核查")
    assert fast is not None and fast.status == "suspended"
    assert ready_vault._licence_for_verification(lic.identifier.replace(".001.", ".002.")) == (None, "")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL: the test below
def test_verification_reads_on_sqlite_use_one_connection_per_thread(ready_vault: Vault) -> None:
    """SQLite look-ups run on the thread's own connection, outside the pool: many verifying threads
    never starve the pool's sessions, a closed connection is replaced, and dispose() closes them all."""
    db = ready_vault.db
    assert db.in_process
    lic = ready_vault.issue(example(ready_vault), actor="t").licence
    barrier = threading.Barrier(24)

    def verify_here() -> tuple[bool, int]:
        barrier.wait()
        return ready_vault.verify(lic.token).valid, id(db.thread_connection())

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(lambda _: verify_here(), range(24)))
    assert all(valid for valid, _ in results)
    assert len({conn for _, conn in results}) == 24  # each thread its own
    # 24 threads hold a connection each, yet the pool (5 + 10 overflow) still serves writes at once.
    started = time.monotonic()
    ready_vault.revoke(lic.identifier, reason="吊销", actor="t")
    assert time.monotonic() - started < 5
    # The revocation is seen at once by a connection opened before it (autocommit reads).
    assert ready_vault.verify(lic.token).status == "revoked"
    # A connection closed under the reader is replaced, and the read goes on.
    broken = db.thread_connection()
    broken.close()
    assert ready_vault.verify(lic.token).status == "revoked"
    assert db.thread_connection() is not broken
    held = db.thread_connection()
    db.dispose()
    with pytest.raises(sqlite3.ProgrammingError):
        held.execute("SELECT 1")  # closed by dispose
    assert ready_vault.verify(lic.token).status == "revoked"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_verification_reads_on_postgresql_run_on_the_read_threads_own_connections(
    ready_vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    """On PostgreSQL the read threads (Database.read_executor) keep a connection each, in autocommit:
    a change is seen at once, a connection the server dropped is replaced without failing the read,
    and no more than READ_THREADS connections are held, outside the pool."""
    db = ready_vault.db
    assert not db.in_process
    lic = ready_vault.issue(example(ready_vault), actor="t").licence
    executor = db.read_executor()
    assert executor is db.read_executor()  # one per database
    verdicts = list(executor.map(lambda _: ready_vault.verify(lic.token).valid, range(50)))
    assert all(verdicts)
    pids = set(executor.map(lambda _: db.thread_connection().info.backend_pid, range(50)))
    assert 1 <= len(pids) <= READ_THREADS
    assert not db.on_own_connection()  # this (test) thread reads through the pool
    ready_vault.revoke(lic.identifier, reason="吊销", actor="t")
    assert executor.submit(ready_vault.verify, lic.token).result().status == "revoked"
    # The server ends every read thread's session (a restart, an idle timeout): reads go on.
    with db.engine.connect() as conn:
        ended = conn.execute(
            text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
            {"pids": list(pids)},
        ).scalar_one()
    assert ended == len(pids)
    with caplog.at_level(logging.WARNING, logger="yinxin.vault"):
        results = list(executor.map(lambda _: ready_vault.verify(lic.token).status, range(20)))
    assert results == ["revoked"] * 20
    # Each replacement is logged (the driver's error class only: its text may name the host).
    replaced = [r.getMessage() for r in caplog.records if "read connection was closed" in r.getMessage()]
    assert 1 <= len(replaced) <= len(pids)
    assert all("reading again on a new one" in message for message in replaced)
    db.dispose()  # the read threads stop and their connections close
    assert ready_vault.verify(lic.token).status == "revoked"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_number_of_read_threads_is_set_per_database(database_url: str) -> None:
    """YINXIN_DB_READ_THREADS: the read threads, and so the connections they hold, per process."""
    db = Database(database_url, read_threads=2)
    try:
        pids = set(db.read_executor().map(lambda _: db.thread_connection().info.backend_pid, range(40)))
        assert 1 <= len(pids) <= 2
    finally:
        db.dispose()
    for wrong in (0, MAX_READ_THREADS + 1):
        with pytest.raises(ConfigurationError, match="YINXIN_DB_READ_THREADS must be between 1 and 64"):
            Database(database_url, read_threads=wrong)


def test_expiry_and_not_yet_valid_follow_the_clock(ready_vault: Vault, clock: object) -> None:
    request = example(ready_vault, valid_from=date(2026, 12, 1), valid_until=date(2026, 12, 31))
    lic = ready_vault.issue(request, actor="t").licence
    assert ready_vault.verify(lic.token).status == "not_yet_valid"
    clock.advance(days=10)  # type: ignore[attr-defined]
    assert ready_vault.verify(lic.token).valid
    clock.advance(days=40)  # type: ignore[attr-defined]
    v = ready_vault.verify(lic.token)
    assert (v.valid, v.status) == (False, "expired")
    # Revocation wins over expiry.
    ready_vault.revoke(lic.identifier, reason="x", actor="t")
    assert ready_vault.verify(lic.token).status == "revoked"


def test_tampered_truncated_and_foreign_tokens_are_invalid(ready_vault: Vault, tmp_path: object) -> None:
    lic = ready_vault.issue(example(ready_vault), actor="t").licence
    header, payload, sig = lic.token.split(".")
    flipped = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:]
    for bad in (f"{header}.{flipped}.{sig}", lic.token[:-10], "garbage", ""):
        v = ready_vault.verify(bad)
        assert not v.valid and v.status == "invalid" and v.reasons
    # A token signed by a key this vault never registered.
    import pathlib

    foreign = SoftwareBackend(pathlib.Path(str(tmp_path)) / "other", b"pw")
    key = foreign.generate_key(SignatureAlgorithm.ES256, lic.kid)  # same kid, other key
    forged = sign_licence_token(
        foreign, key, {"iss": "x", "sub": lic.identifier, "jti": lic.identifier, "iat": 1}
    )
    v = ready_vault.verify(forged)
    assert not v.valid and "signature_invalid" in v.codes


def test_audit_chain_detects_edit_delete_and_truncation(ready_vault: Vault) -> None:
    for _ in range(3):
        issue(ready_vault)
    report = ready_vault.verify_audit()
    assert report.ok and report.events_checked >= 5
    with ready_vault.db.write() as s:
        s.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3"))
    report = ready_vault.verify_audit()
    assert not report.ok and any("event 3" in p and "edited" in p for p in report.problems)


def test_audit_chain_detects_deleted_rows(ready_vault: Vault) -> None:
    for _ in range(3):
        issue(ready_vault)
    head = ready_vault.verify_audit().head_seq
    with ready_vault.db.write() as s:
        s.execute(text("DELETE FROM audit_events WHERE seq = 2"))
    problems = ready_vault.verify_audit().problems
    assert any("missing" in p for p in problems)
    with ready_vault.db.write() as s:
        s.execute(text("DELETE FROM audit_events WHERE seq = :seq"), {"seq": head})
    problems = ready_vault.verify_audit().problems
    assert any("deleted from the end" in p for p in problems)


def test_licence_create_rejects_inverted_validity(ready_vault: Vault) -> None:
    body = dict(example(ready_vault).model_dump(mode="json"))
    body["valid_from"], body["valid_until"] = "2030-01-01", "2029-01-01"
    with pytest.raises(ValueError):
        LicenceCreate.model_validate(body)


def test_authentic_signature_on_a_token_the_vault_never_issued(ready_vault: Vault) -> None:
    """The issuing key signing other claims for an existing identifier (key misuse) is caught."""
    import base64
    import json

    from hsm import KeyRef

    lic = ready_vault.issue(example(ready_vault), actor="t").licence
    claims = json.loads(base64.urlsafe_b64decode(lic.token.split(".")[1] + "=="))
    claims["holder"]["name"] = "冒名顶替"
    key = KeyRef(lic.kid, SignatureAlgorithm.ES256)
    forged = sign_licence_token(ready_vault.backend, key, claims)
    v = ready_vault.verify(forged)
    assert (v.valid, v.status, v.codes) == (False, "invalid", ("token_mismatch",))
    assert ready_vault.verify(lic.token).valid
