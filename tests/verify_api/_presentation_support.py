"""Builders for the QR and verification-page tests: a real vault, the demo licences, the app.

Real database (the ``database_url`` fixture: SQLite and PostgreSQL), real
software keystore, a clock the test moves by hand (DESIGN §5.5).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from hsm import SignatureAlgorithm, SoftwareBackend
from schemas import LicenceCreate, load_licence_types
from vault import Database, Licence, Vault
from verify_api.app import create_app
from verify_api.auth import Principal
from verify_api.routes import ROUTERS
from verify_api.routes import oauth as oauth_routes
from verify_api.routes import page as page_routes
from verify_api.routes import qr as qr_routes
from verify_api.settings import Settings

# 2026-11-23 10:00 Beijing time.
START = datetime(2026, 11, 23, 2, 0, 0, tzinfo=UTC)
PUBLIC_URL = "http://127.0.0.1:8000"


class SettableClock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def open_vault(database_url: str, keystore: Path, clock: SettableClock) -> Vault:
    vault = Vault(
        Database(database_url),
        SoftwareBackend(keystore, b"test-passphrase"),
        load_licence_types(),
        clock=clock,
    )
    vault.initialise(actor="test")
    return vault


def close_vault(vault: Vault) -> None:
    vault.backend.close()
    vault.close()


def add_issuers(vault: Vault, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256) -> None:
    """Every demo type's issuer, registered with a key of *algorithm* (a new one each call)."""
    known = {d.code for d in vault.departments()}
    for issuer in sorted({t.example["issuer"] for t in vault.types.all()}):
        if issuer not in known:
            vault.add_department(issuer, f"北京市东城区测试发证机构{issuer[-4:]}", actor="test")
            known.add(issuer)
        vault.generate_key(issuer, algorithm, actor="test")


def issue_examples(vault: Vault) -> dict[str, Licence]:
    """Each demo licence type's own example, issued: type code -> licence."""
    return {
        t.code: vault.issue(LicenceCreate.model_validate(t.example), actor="test").licence
        for t in vault.types.all()
    }


def issue_example(vault: Vault, type_code: str, **changes: Any) -> Licence:
    example = {**vault.types.get(type_code).example, **changes}
    return vault.issue(LicenceCreate.model_validate(example), actor="test").licence


def make_app(vault: Vault, home: Path, *, authorised: bool = True) -> FastAPI:
    """The real app around *vault*, with the QR, page and token routers (until ROUTERS lists them)."""
    app = create_app(Settings(home=home, environment="development"), vault=vault, clock=vault.clock)
    for router in (qr_routes.router, page_routes.router, oauth_routes.router):
        if router not in ROUTERS:
            app.include_router(router)
    if authorised:
        # Stands in for require_scope("licence:read"); test_qr checks the real thing once.
        app.dependency_overrides[qr_routes._reader] = lambda: Principal(
            "test-client", "11110101000000123B", frozenset({"licence:read"})
        )
    return app
