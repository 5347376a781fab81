"""Crash consistency: ``kill -9`` during ``yinxin issue-bulk``, restart, and nothing is half-written.

Each test keeps one database for all its rounds: a round kills a real CLI process at a random
moment (seeded, printed), checks the invariants over everything issued so far, and the next
round restarts the import. ``YINXIN_CRASH_ROUNDS`` rounds per database (default 20; ``make soak``
and ``tests/faults/soak.py`` run 200), ``YINXIN_CRASH_SEED`` replays a run. After every crash:

- each licence has exactly one ``licence.issue`` audit event (whose token hash matches), and no
  such event names a licence that is not stored;
- serials are used once per (type, issuer, year), without holes, and the counter is at the last;
- one licence per idempotency key, each key a line of the bulk files; status slots unshared; each
  key's signature count equals the licences it signed;
- the audit chain, its signed checkpoints and the cross-check verify (the vault's ``verify_audit``,
  what ``yinxin audit verify`` runs; the CLI itself runs at the end).

A run the kill did not reach must have issued exactly the lines not yet done; at the end every line
of every file has exactly one licence, and a re-run issues nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._db import create_postgres_database, drop_postgres_database
from tests.faults._crash_support import CrashHarness, crash_rounds, crash_seed

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def crash_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: the CLI's default SQLite file in its home; else a PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        yield None
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


def test_issue_bulk_survives_kill_9_at_random_points(crash_database: str | None, tmp_path: Path) -> None:
    rounds = crash_rounds()
    started = time.monotonic()
    with CrashHarness(tmp_path, crash_database, crash_seed()) as harness:
        for _ in range(rounds):
            harness.run_round()
        harness.finish()
        print(harness.summary(), f"in {time.monotonic() - started:.1f} s")
        results = harness.results
    assert len(results) == rounds
    if rounds >= 10:
        # The harness must actually crash the import mid-way, not only before or after it.
        assert sum(r.killed and r.done_before < r.done_after < r.lines for r in results) >= rounds // 5
