"""Fixtures for the fault tests: a PostgreSQL database of the test's own behind a fault proxy."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy.engine import make_url

from tests._db import create_postgres_database, drop_postgres_database
from tests.faults._proxy import FaultProxy


@dataclass(frozen=True)
class ProxiedPostgres:
    direct_url: str  # the test's database on 127.0.0.1:5432
    url: str = field(repr=False)  # the same database through the proxy, with a password in it
    password: str = field(repr=False)  # trust auth never asks for it; no answer or log may show it
    proxy: FaultProxy


@pytest.fixture
def proxied_postgres() -> Iterator[ProxiedPostgres]:
    """A fresh PostgreSQL database reached through a :class:`FaultProxy` (skips, or fails under
    CI=true, without PostgreSQL)."""
    direct = create_postgres_database()
    proxy = FaultProxy()
    password = f"db-pw-{secrets.token_hex(6)}"
    url = make_url(proxy.url(direct)).set(password=password).render_as_string(hide_password=False)
    try:
        yield ProxiedPostgres(direct, url, password, proxy)
    finally:
        proxy.close()
        drop_postgres_database(direct)
