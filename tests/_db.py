"""Database fixtures: every vault and CLI test runs on SQLite and on PostgreSQL.

PostgreSQL is expected on 127.0.0.1:5432 with trust auth (override with
YINXIN_TEST_POSTGRES_URL). Each test gets its own database, dropped after.
Where PostgreSQL is unreachable the PostgreSQL half skips locally and fails
in CI (CI=true), where skipping it is not allowed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

ADMIN_URL = os.environ.get(
    "YINXIN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

_pg_available: bool | None = None


def _postgres_available() -> bool:
    global _pg_available
    if _pg_available is None:
        try:
            engine = create_engine(ADMIN_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_available = True
        except OperationalError:
            _pg_available = False
    return _pg_available


def require_postgres() -> None:
    if not _postgres_available():
        message = f"PostgreSQL is not reachable at {ADMIN_URL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: the PostgreSQL tests must run)")
        pytest.skip(message)


def create_postgres_database() -> str:
    require_postgres()
    name = f"yinxin_test_{secrets.token_hex(6)}"
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'yinxin.db'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)
