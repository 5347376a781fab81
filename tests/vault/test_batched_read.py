"""Verification from coroutines (``Vault.verify_async``) and batched reads.

The token checks of the verifications that start in one turn of the event loop run back to back
(``TurnCalls``), and their licence look-ups share statements (``Database.batched_read``): on
PostgreSQL one round trip per free connection, on SQLite one statement per turn of the event
loop. Every verdict must be the one :meth:`Vault.verify` gives, a change must be seen at once, a
connection the server drops must be replaced without failing a read, and a database that cannot
be read must fail every waiting read with the 503 error, never hang it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, text

import vault._vault as vault_module
from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from schemas import load_licence_types
from signing import sign_licence_token
from signing._jws import encode_header
from tests._builders import example
from tests.vault.conftest import SettableClock
from vault import Database, DatabaseError, Licence, Vault
from vault._batched_read import MAX_BATCH, BatchedRead, LoopBatchedRead, TurnCalls, batch_statement
from vault._models import LicenceRecord
from vault._reading import _VERIFICATION_READ

T = TypeVar("T")


def run(coroutine: Callable[[], Awaitable[T]], db: Database) -> T:
    """Run *coroutine* on a fresh event loop, closing that loop's batched reads at the end."""

    async def main() -> T:
        try:
            return await coroutine()
        finally:
            await db.aclose_batched_reads()

    return asyncio.run(main())


def reader_of(db: Database) -> BatchedRead | LoopBatchedRead:
    return db.batched_read(_VERIFICATION_READ, LicenceRecord.identifier)


def _issued_under_a_new_key_elsewhere(
    database_url: str, backend: KeyBackend, clock: SettableClock, issuer: str
) -> Licence:
    """A licence signed by a new key of *issuer* that another process (another Vault on the same
    database) made: unknown to the trust stores this process has cached."""
    other = Vault(Database(database_url), backend, load_licence_types(), clock=clock)
    try:
        other.generate_key(issuer, SignatureAlgorithm.ES256, actor="t")
        return other.issue(example(other), actor="t").licence
    finally:
        other.close()


def test_verify_async_gives_the_verdicts_verify_gives(
    ready_vault: Vault,
    software_backend: KeyBackend,
    clock: SettableClock,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vault_module, "UNKNOWN_KEY_REFRESH_SECONDS", 0.0)
    vault = ready_vault
    licences = [vault.issue(example(vault), actor="t").licence for _ in range(6)]
    vault.suspend(licences[1].identifier, reason="经营场所核查", actor="t")
    vault.revoke(licences[2].identifier, reason="违法经营被吊销", actor="t")
    # The issuing key signing an identifier the vault never issued.
    never = licences[0].identifier.replace(".001.", ".009.")
    claims = {"iss": "x", "sub": never, "jti": never, "iat": 1}
    unissued = sign_licence_token(vault.backend, KeyRef(licences[0].kid, SignatureAlgorithm.ES256), claims)
    header, payload, signature = licences[3].token.split(".")
    tampered = f"{header}.{payload[:-3]}{'A' if payload[-3] != 'A' else 'B'}{payload[-2:]}.{signature}"
    vault.trust_store()  # cached now: a key made by another process is unknown to it ...
    from_other = _issued_under_a_new_key_elsewhere(
        database_url, software_backend, clock, licences[0].issuer_code
    )
    assert from_other.kid not in vault.trust_store()  # ... until the verdict refreshes it
    tokens = [lic.token for lic in licences] * 5 + [unissued, tampered, "garbage", "", from_other.token]

    async def verify_all() -> list[Any]:
        return list(await asyncio.gather(*(vault.verify_async(token) for token in tokens)))

    verdicts = run(verify_all, vault.db)
    expected = [vault.verify(token) for token in tokens]
    assert verdicts == expected
    statuses = {v.status for v in verdicts}
    assert {"valid", "suspended", "revoked", "invalid"} <= statuses
    assert verdicts[-1].valid and verdicts[1].reasons and "经营场所核查" in verdicts[1].reasons[0]
    assert not verdicts[-5].valid and not verdicts[-4].valid


def test_concurrent_look_ups_share_statements(ready_vault: Vault) -> None:
    vault = ready_vault
    licences = [vault.issue(example(vault), actor="t").licence for _ in range(10)]
    vault.trust_store()
    tokens = [lic.token for lic in licences] * 20  # 200 verifications of 10 licences at once

    async def verify_all() -> tuple[list[Any], BatchedRead | LoopBatchedRead, int, tuple[int, int]]:
        verdicts = await asyncio.gather(*(vault.verify_async(token) for token in tokens))
        reader = reader_of(vault.db)
        checks = vault._token_checks()
        return list(verdicts), reader, getattr(reader, "connections", 0), (checks.statements, checks.keys)

    verdicts, reader, connections, checks = run(verify_all, vault.db)
    assert all(v.valid for v in verdicts)
    identifiers = [v.licence["identifier"] for v in verdicts if v.licence]
    assert identifiers == [lic.identifier for lic in licences] * 20
    # All 200 started in the same turn of the loop: their 10 distinct tokens were checked in one
    # run, back to back; then one statement read the 10 licences (on PostgreSQL on the one
    # connection that turn opened).
    assert checks == (1, 10)
    assert (reader.statements, reader.keys) == (1, 10)
    assert connections == (0 if isinstance(reader, LoopBatchedRead) else 1)


def test_more_keys_than_one_statement_takes_go_in_the_next(ready_vault: Vault) -> None:
    db = ready_vault.db
    lic = ready_vault.issue(example(ready_vault), actor="t").licence
    keys = [f"no-such-licence-{n}" for n in range(MAX_BATCH + 44)] + [lic.identifier]

    async def read_all() -> tuple[list[Any], int, int]:
        reader = reader_of(db)
        rows = await asyncio.gather(*(reader.get(key) for key in keys))
        return list(rows), reader.statements, reader.keys

    rows, statements, read = run(read_all, db)
    assert rows[:-1] == [None] * (MAX_BATCH + 44)
    assert (
        rows[-1] is not None and rows[-1]["identifier"] == lic.identifier and rows[-1]["last_reason"] is None
    )
    assert read == len(keys) and statements >= 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_change_is_seen_at_once_and_a_dropped_connection_is_replaced(
    ready_vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    vault = ready_vault
    lic = vault.issue(example(vault), actor="t").licence

    async def scenario() -> list[str]:
        first = await vault.verify_async(lic.token)
        assert first.valid
        # Revoked by another connection: the read connections (autocommit) see it at once.
        await asyncio.to_thread(vault.revoke, lic.identifier, reason="吊销", actor="t")
        seen = [(await vault.verify_async(lic.token)).status]
        # The server ends every other session of this database (a restart, an idle timeout).
        ended = await asyncio.to_thread(_terminate_other_sessions, vault.db)
        assert ended >= 1
        verdicts = await asyncio.gather(*(vault.verify_async(lic.token) for _ in range(20)))
        return seen + [v.status for v in verdicts]

    with caplog.at_level(logging.WARNING, logger="yinxin.vault"):
        statuses = run(scenario, vault.db)
    assert statuses == ["revoked"] * 21
    replaced = [r.getMessage() for r in caplog.records if "read connection failed" in r.getMessage()]
    assert replaced and all("reading again on a new one" in message for message in replaced)


def _terminate_other_sessions(db: Database) -> int:
    with db.engine.connect() as conn:
        ended = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    db.engine.dispose()  # the pool's connections were among them
    return int(ended)


def test_a_cancelled_waiter_does_not_disturb_the_others(ready_vault: Vault) -> None:
    vault = ready_vault
    lic = vault.issue(example(vault), actor="t").licence

    async def scenario() -> list[Any]:
        tasks = [asyncio.create_task(vault.verify_async(lic.token)) for _ in range(12)]
        await asyncio.sleep(0)  # all are waiting for their read now
        tasks[3].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        return list(done)

    results = run(scenario, vault.db)
    assert isinstance(results[3], asyncio.CancelledError)
    assert all(r.valid for i, r in enumerate(results) if i != 3)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_closing_the_reads_closes_their_connections(ready_vault: Vault) -> None:
    vault = ready_vault
    lic = vault.issue(example(vault), actor="t").licence

    async def scenario() -> tuple[int, BatchedRead]:
        await asyncio.gather(*(vault.verify_async(lic.token) for _ in range(30)))
        reader = reader_of(vault.db)
        assert isinstance(reader, BatchedRead)
        opened = reader.connections
        await vault.db.aclose_batched_reads()
        with pytest.raises(DatabaseError):
            await reader.get(lic.identifier)  # a straggler after shutdown: the 503, not a hang
        return opened, reader

    opened, reader = asyncio.run(scenario())
    assert 1 <= opened <= vault.db.read_threads
    assert reader.connections == 0


def test_a_database_that_cannot_be_read_fails_every_waiting_read_with_the_503(tmp_path: Path) -> None:
    # A SQLite file without the schema: every read fails, as with a damaged or foreign file.
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:

        async def scenario() -> list[Any]:
            reader = reader_of(db)
            return list(
                await asyncio.gather(*(reader.get(f"k{n}") for n in range(10)), return_exceptions=True)
            )

        outcomes = run(scenario, db)
    finally:
        db.dispose()
    assert all(isinstance(o, DatabaseError) and o.http_status == 503 for o in outcomes), outcomes


@pytest.mark.postgres
def test_an_unreachable_database_fails_every_waiting_read_with_the_503() -> None:
    # Port 1 on loopback: nothing listens, so every connection is refused at once.
    db = Database("postgresql://yinxin:s3cret-pw@127.0.0.1:1/nowhere")
    try:

        async def scenario() -> list[Any]:
            reader = reader_of(db)
            return list(
                await asyncio.gather(*(reader.get(f"k{n}") for n in range(10)), return_exceptions=True)
            )

        started = time.monotonic()
        outcomes = run(scenario, db)
        assert time.monotonic() - started < 10
    finally:
        db.dispose()
    assert all(isinstance(o, DatabaseError) for o in outcomes), outcomes
    assert {o.http_status for o in outcomes} == {503}
    assert all("s3cret-pw" not in str(o) and "did not answer" in str(o) for o in outcomes)


def test_a_batched_read_must_select_its_key() -> None:
    db = Database("postgresql://postgres@127.0.0.1:5432/postgres")  # compiled only, never connected
    try:
        statement = batch_statement(select(LicenceRecord.token), LicenceRecord.identifier)

        async def make() -> None:
            BatchedRead(db, statement, key_column="identifier", connections=1)

        with pytest.raises(ValueError, match="key column 'identifier'"):
            asyncio.run(make())
    finally:
        db.dispose()


def test_a_key_another_process_made_verifies_at_once_and_made_up_keys_cannot_flood_the_registry(
    ready_vault: Vault,
    software_backend: KeyBackend,
    clock: SettableClock,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token under a key this process has not cached re-reads the trust store (another worker or
    the CLI may have made the key), at most once per UNKNOWN_KEY_REFRESH_SECONDS."""
    vault = ready_vault
    lic = vault.issue(example(vault), actor="t").licence
    assert vault.verify(lic.token).valid  # the trust store is cached now
    from_other = _issued_under_a_new_key_elsewhere(database_url, software_backend, clock, lic.issuer_code)
    reads: list[None] = []
    registry_read = vault.keys.trust_store
    monkeypatch.setattr(
        vault.keys, "trust_store", lambda *a, **k: reads.append(None) or registry_read(*a, **k)
    )
    _, payload, signature = lic.token.split(".")
    made_up = [f"{encode_header(f'made-up-{n}', 'ES256')}.{payload}.{signature}" for n in range(50)]

    monkeypatch.setattr(vault_module, "UNKNOWN_KEY_REFRESH_SECONDS", 3600.0)
    for token in made_up:
        verdict = vault.verify(token)
        assert (verdict.valid, verdict.codes) == (False, ("unknown_key",))
    assert not vault.verify(from_other.token).valid  # the store was read less than an hour ago
    assert reads == []

    monkeypatch.setattr(vault_module, "UNKNOWN_KEY_REFRESH_SECONDS", 0.0)
    verdict = vault.verify(from_other.token)
    assert verdict.valid and verdict.kid == from_other.kid
    assert len(reads) == 1


def test_a_trust_store_due_for_its_re_read_is_read_where_it_may_block(
    ready_vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the turn's checks re-read it on the event loop (an in-process read); on PostgreSQL
    a network read must not stall the loop: each verification re-reads it on a read thread."""
    vault = ready_vault
    licences = [vault.issue(example(vault), actor="t").licence for _ in range(5)]
    vault.trust_store()
    monkeypatch.setattr(vault, "_trust_refresh", -1.0)  # due at every use
    readers: list[threading.Thread] = []
    registry_read = vault.keys.trust_store
    monkeypatch.setattr(
        vault.keys,
        "trust_store",
        lambda *a, **k: readers.append(threading.current_thread()) or registry_read(*a, **k),
    )

    async def verify_all() -> list[Any]:
        return list(await asyncio.gather(*(vault.verify_async(lic.token) for lic in licences * 4)))

    verdicts = run(verify_all, vault.db)
    assert [v.status for v in verdicts] == ["valid"] * 20
    assert readers
    on_loop = [thread is threading.main_thread() for thread in readers]
    assert all(on_loop) if vault.db.in_process else not any(on_loop)


def test_turn_calls_run_the_keys_of_a_turn_together() -> None:
    runs: list[list[int]] = []

    def square(keys: list[int]) -> dict[int, int]:
        runs.append(keys)
        return {key: key * key for key in keys if key != 7}  # 7 left out: its waiters get None

    async def scenario() -> tuple[list[int | None], list[int | None]]:
        calls: TurnCalls[int, int] = TurnCalls(square)
        first = await asyncio.gather(*(calls.get(key % 10) for key in range(40)))
        later = await asyncio.gather(*(calls.get(key) for key in range(MAX_BATCH + 5)))
        return list(first), list(later)

    first, later = asyncio.run(scenario())
    assert first == [None if k % 10 == 7 else (k % 10) ** 2 for k in range(40)]
    assert runs[0] == list(range(10))  # one run for the first turn, each distinct key once
    assert [len(keys) for keys in runs[1:]] == [MAX_BATCH, 5]
    assert later == [None if k == 7 else k * k for k in range(MAX_BATCH + 5)]


def test_turn_calls_pass_a_failure_to_every_waiter_of_the_run() -> None:
    def broken(keys: list[str]) -> dict[str, str]:
        raise DatabaseError("the database did not answer")

    async def scenario() -> list[Any]:
        calls: TurnCalls[str, str] = TurnCalls(broken)
        return list(await asyncio.gather(*(calls.get(f"k{n % 3}") for n in range(9)), return_exceptions=True))

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 9 and all(isinstance(o, DatabaseError) for o in outcomes)
