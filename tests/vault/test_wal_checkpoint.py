"""SQLite: committed pages reach the database file on the checkpoint thread, not in the writer."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert

import vault._db as db_module
from vault import Database

THREAD = "yinxin-wal-checkpoint"


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


def _wait_for(condition: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[tuple[Database, Table, Path]]:
    path = tmp_path / "wal.db"
    database = Database(f"sqlite:///{path}")
    metadata = MetaData()
    table = Table("blobs", metadata, Column("id", Integer, primary_key=True), Column("body", LargeBinary))
    metadata.create_all(database.engine)
    yield database, table, path
    database.dispose()


def _write(database: Database, table: Table, rows: int, start: int = 0) -> None:
    with database.write() as session:
        session.execute(insert(table), [{"id": start + i, "body": os.urandom(3000)} for i in range(rows)])


def _pages_in_file(path: Path) -> int:
    # The database header's page count (offset 28), which only a checkpoint writes to the file.
    with path.open("rb") as fh:
        fh.seek(28)
        return int.from_bytes(fh.read(4), "big")


def test_a_commit_wakes_the_checkpoint_thread_which_copies_the_pages_to_the_file(
    sqlite_db: tuple[Database, Table, Path],
) -> None:
    database, table, path = sqlite_db
    before = _pages_in_file(path)
    _write(database, table, 200)  # ~150 pages: far below both SQLite's default 1 000 and our backstop
    assert _wait_for(lambda: _pages_in_file(path) > before + 100), "no checkpoint copied the commit"
    assert len(_checkpoint_threads()) >= 1
    # Everything committed is in the file (once the thread is done: until then a checkpoint of
    # our own would find the lock taken).
    probe = sqlite3.connect(path, timeout=0)
    try:
        assert _wait_for(lambda: _all_copied(probe))
    finally:
        probe.close()


def _all_copied(probe: sqlite3.Connection) -> bool:
    busy, logged, copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return bool(busy == 0 and logged == copied)


def test_writers_checkpoint_only_past_the_backstop(sqlite_db: tuple[Database, Table, Path]) -> None:
    database, *_ = sqlite_db
    with database.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == db_module.WAL_BACKSTOP_PAGES


def test_back_to_back_writes_keep_the_wal_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Writers that begin while the thread is still copying never see a complete checkpoint, so
    # only the backstop restarts the WAL: with a small one, the file stays near it.
    monkeypatch.setattr(db_module, "WAL_BACKSTOP_PAGES", 100)
    path = tmp_path / "bounded.db"
    database = Database(f"sqlite:///{path}")
    try:
        metadata = MetaData()
        table = Table("blobs", metadata, Column("id", Integer, primary_key=True), Column("body", LargeBinary))
        metadata.create_all(database.engine)
        for batch in range(40):  # ~40 pages a transaction, ~1 600 in all
            _write(database, table, 50, start=batch * 50)
        wal = path.with_name(path.name + "-wal").stat().st_size
        assert wal < 4096 * 400, f"the WAL grew to {wal} bytes"
    finally:
        database.dispose()


def test_dispose_stops_the_thread_and_a_later_write_starts_one(
    sqlite_db: tuple[Database, Table, Path],
) -> None:
    database, table, _ = sqlite_db
    checkpointer = database._checkpointer
    assert checkpointer is not None
    _write(database, table, 1)
    thread = checkpointer._thread
    assert thread is not None and thread.is_alive()
    database.dispose()
    assert not thread.is_alive() and checkpointer._thread is None
    _write(database, table, 1, start=1)
    assert checkpointer._thread is not None and checkpointer._thread.is_alive()


def test_the_thread_ends_when_idle(
    sqlite_db: tuple[Database, Table, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "_CHECKPOINTER_IDLE_SECONDS", 0.05)
    database, table, _ = sqlite_db
    _write(database, table, 1)
    checkpointer = database._checkpointer
    assert checkpointer is not None
    assert _wait_for(lambda: checkpointer._thread is None), "the idle thread did not end"
    assert not _checkpoint_threads() or all(t is not checkpointer._thread for t in _checkpoint_threads())
    monkeypatch.setattr(db_module, "_CHECKPOINTER_IDLE_SECONDS", 30.0)
    _write(database, table, 1, start=1)  # the next write starts a new one
    assert checkpointer._thread is not None and checkpointer._thread.is_alive()


def test_a_failing_checkpoint_is_one_warning_and_the_writes_go_on(
    sqlite_db: tuple[Database, Table, Path], caplog: pytest.LogCaptureFixture
) -> None:
    database, table, path = sqlite_db
    checkpointer = database._checkpointer
    assert checkpointer is not None
    checkpointer._path = str(path.with_name("missing-dir") / "nothing.db")  # cannot be opened
    with caplog.at_level(logging.WARNING, logger="yinxin.vault"):
        for i in range(3):
            _write(database, table, 1, start=i)
        assert _wait_for(lambda: any("checkpoint failed" in r.getMessage() for r in caplog.records))
        time.sleep(0.1)
    warnings = [r for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert len(warnings) == 1
    assert "writers will checkpoint" in warnings[0].getMessage()


def test_memory_and_postgresql_databases_have_no_checkpointer() -> None:
    assert Database("sqlite://")._checkpointer is None
    assert Database("sqlite:///:memory:")._checkpointer is None
    assert Database("postgresql://127.0.0.1:1/none")._checkpointer is None
