"""What the benchmarks that issue licences share: a durable SQLite vault with the demo departments,
and request lines made from the demo type's example."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from hsm import KeyBackend, SoftwareBackend
from schemas import load_licence_types
from vault import Database, Vault
from verify_api._demo import DEMO_TYPE, ensure_demo_departments

__all__ = ["demo_lines", "demo_vault"]


class _Clock:
    def __call__(self) -> datetime:
        return datetime.now(UTC)


@contextmanager
def demo_vault(root: Path) -> Iterator[Vault]:
    """A vault on a SQLite file under *root* (software keystore), initialised, with the demo
    departments and their keys; closed, with its backend, on exit."""
    backend: KeyBackend = SoftwareBackend(root / "keystore", b"bench")
    vault = Vault(Database(f"sqlite:///{root / 'bench.db'}"), backend, load_licence_types(), clock=_Clock())
    try:
        vault.initialise(actor="bench")
        ensure_demo_departments(vault, "bench")
        yield vault
    finally:
        vault.close()
        backend.close()


def demo_lines(tag: str, count: int) -> list[str]:
    """*count* JSON requests for the demo type's example, each holder name made unique with *tag*."""
    example = load_licence_types().get(DEMO_TYPE).example
    out = []
    for i in range(count):
        body = json.loads(json.dumps(example))
        body["holder"]["name"] = f"{body['holder']['name']}-{tag}-{i}"
        out.append(json.dumps(body, ensure_ascii=False))
    return out
