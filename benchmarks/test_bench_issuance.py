"""End-to-end durable issuance on SQLite (WAL, synchronous=FULL: a returned commit survives power loss).

* issue-bulk: ``yinxin issue-bulk``'s code path (parse each JSON line, validate face data, allocate
  serials, sign, encrypt and index the holder ID, insert, audit-chain, commit per batch) vs a raw
  baseline doing only the irreducible work: ES256-sign the same payload with ``cryptography`` and
  insert one row per licence into a durable SQLite table, committing per batch;
* issue-single: one ``Vault.issue`` per transaction (the API's path), licences/s.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks._vaults import demo_lines, demo_vault
from schemas import LicenceCreate, load_licence_types
from vault import Vault
from verify_api._bulk import run_bulk
from verify_api._demo import DEMO_TYPE

LINES = 5000
BATCH = 500


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    with demo_vault(tmp_path) as v:
        yield v


def test_issue_bulk_raw_baseline(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "issue-bulk"
    benchmark.extra_info["role"] = "baseline"
    key = ec.generate_private_key(ec.SECP256R1())
    lines = demo_lines("raw", LINES)
    conn = sqlite3.connect(tmp_path / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE licences (id INTEGER PRIMARY KEY, payload TEXT, signature BLOB)")

    def run() -> None:
        for start in range(0, LINES, BATCH):
            rows = [
                (line, key.sign(line.encode(), ec.ECDSA(hashes.SHA256())))
                for line in lines[start : start + BATCH]
            ]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO licences (payload, signature) VALUES (?, ?)", rows)
            conn.execute("COMMIT")

    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info["licences_per_second"] = LINES / benchmark.stats.stats.median
    conn.close()


def test_issue_bulk_ours(benchmark: Any, vault: Vault, tmp_path: Path) -> None:
    benchmark.group = "issue-bulk"
    benchmark.extra_info["role"] = "ours"
    rounds = iter(range(100))

    def setup() -> tuple[tuple[argparse.Namespace], dict[str, Any]]:
        path = tmp_path / f"bulk-{next(rounds)}.jsonl"
        path.write_text("\n".join(demo_lines(path.stem, LINES)) + "\n", encoding="utf-8")
        args = argparse.Namespace(file=str(path), results=None, batch_size=BATCH, json=True)
        return (args,), {}

    def run(args: argparse.Namespace) -> None:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert run_bulk(vault, args, actor="bench") == 0
        assert json.loads(out.getvalue())["issued"] == LINES

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info["licences_per_second"] = LINES / benchmark.stats.stats.median
    assert vault.verify_audit().ok


def test_issue_single(benchmark: Any, vault: Vault) -> None:
    benchmark.group = "issue-single"
    request = LicenceCreate.model_validate(load_licence_types().get(DEMO_TYPE).example)
    benchmark.pedantic(vault.issue, args=(request,), kwargs={"actor": "bench"}, rounds=200, iterations=1)
    benchmark.extra_info["licences_per_second"] = 1 / benchmark.stats.stats.median
