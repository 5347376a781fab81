"""Vault fixtures: a real database (SQLite file and PostgreSQL), a real key backend, a settable clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hsm import KeyBackend, SignatureAlgorithm
from hsm._software import SoftwareBackend
from schemas import load_licence_types
from tests._db import database_url  # noqa: F401  (fixture)
from vault import Database, Vault


class SettableClock:
    """A clock the test moves by hand (time is injected, DESIGN §5.5)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock(datetime(2026, 11, 23, 2, 0, 0, tzinfo=UTC))


@pytest.fixture
def software_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyBackend]:
    backend = SoftwareBackend(tmp_path_factory.mktemp("keystore"), b"test-passphrase")
    yield backend
    backend.close()


@pytest.fixture
def vault(
    database_url: str,  # noqa: F811 (the fixture imported above)
    software_backend: KeyBackend,
    clock: SettableClock,
) -> Iterator[Vault]:
    v = Vault(Database(database_url), software_backend, load_licence_types(), clock=clock)
    v.initialise(actor="test")
    yield v
    v.close()


@pytest.fixture
def ready_vault(vault: Vault) -> Vault:
    """A vault with every example issuer registered and holding an ES256 key."""
    for t in vault.types.all():
        issuer = t.example["issuer"]
        if issuer not in {d.code for d in vault.departments()}:
            vault.add_department(issuer, f"测试发证机构 {issuer[-4:]}", actor="test")
            vault.generate_key(issuer, SignatureAlgorithm.ES256, actor="test")
    return vault


# ---- key management (officers, dual control, signed audit log) ----------------------------------

from collections.abc import Callable  # noqa: E402  (this section was appended)
from typing import Any  # noqa: E402

from tests.vault._officer_support import DEPT  # noqa: E402


@pytest.fixture
def key_vault(
    database_url: str,  # noqa: F811 (the fixture imported above)
    backend: KeyBackend,
    clock: SettableClock,
) -> Iterator[Vault]:
    """A vault on each database and each key backend (software keystore, SoftHSM2 token),
    in setup mode, whose first example issuer holds an active ES256 licence key."""
    v = Vault(Database(database_url), backend, load_licence_types(), clock=clock)
    v.initialise(actor="test")
    v.add_department(DEPT, "北京市市场监督管理局", actor="test")
    v.generate_key(DEPT, SignatureAlgorithm.ES256, actor="test")
    yield v
    v.close()


@pytest.fixture
def make_vault(
    database_url: str,  # noqa: F811 (the fixture imported above)
    software_backend: KeyBackend,
    clock: SettableClock,
) -> Iterator[Callable[..., Vault]]:
    """Build the test's vault with constructor options (key policy, approvals, checkpoints);
    its first example issuer is registered and holds an active ES256 key."""
    made: list[Vault] = []

    def make(**options: Any) -> Vault:
        v = Vault(Database(database_url), software_backend, load_licence_types(), clock=clock, **options)
        made.append(v)
        v.initialise(actor="test")
        v.add_department(DEPT, "北京市市场监督管理局", actor="test")
        v.generate_key(DEPT, SignatureAlgorithm.ES256, actor="test")
        return v

    yield make
    for v in made:
        v.close()
