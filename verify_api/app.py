"""The app factory: ``create_app(settings)`` builds the FastAPI application; nothing at import time.

``yinxin serve`` runs it under uvicorn (``verify_api.app:app_from_environment`` as a factory,
so every worker process builds its own app, backend sessions and database pool).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hsm import open_backend
from schemas import load_licence_types
from vault import Clock, Database, Vault, system_clock
from verify_api.metrics import Metrics
from verify_api.middleware import install_middleware
from verify_api.problems import install_problem_handlers
from verify_api.routes import ROUTERS
from verify_api.routes._docs import document_json_bodies
from verify_api.settings import Settings, load_settings
from verify_api.wiring import configure_logging, freeze_startup_objects

__all__ = ["app_from_environment", "create_app"]

API_VERSION = "0.2.0"


def create_app(settings: Settings, *, vault: Vault | None = None, clock: Clock = system_clock) -> FastAPI:
    """Build the app. Tests pass a ready *vault*; otherwise one is opened at start-up and closed at exit."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if vault is not None:
            app.state.vault = vault
            try:
                yield
            finally:
                await vault.db.aclose_batched_reads()  # this event loop's; the vault is the caller's
            return
        db = Database(settings.resolved_database_url(), read_threads=settings.db_read_threads)
        backend = open_backend(settings.backend_config())
        opened = Vault(db, backend, load_licence_types(), clock=clock, **settings.vault_options())
        app.state.vault = opened
        freeze_startup_objects()
        try:
            yield
        finally:
            await db.aclose_batched_reads()
            backend.close()
            db.dispose()

    app = FastAPI(
        title="Yinxin (印信)",
        version=API_VERSION,
        description="Electronic licences (电子证照): issue, look up with a stated purpose, verify, revoke.",
        lifespan=lifespan,
        # FastAPI's Swagger UI and ReDoc load scripts from a CDN; routes/api_docs.py serves /docs itself.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.settings = settings
    if vault is not None:
        app.state.vault = vault
    install_problem_handlers(app)
    install_middleware(app, settings, Metrics(multiprocess_dir=settings.prometheus_multiproc_dir))
    for router in ROUTERS:
        app.include_router(router)
    document_json_bodies(app)
    return app


def app_from_environment() -> FastAPI:
    """uvicorn factory for ``yinxin serve``: settings from the environment, once per worker."""
    settings = load_settings()
    configure_logging(settings)  # worker processes are spawned: each configures its own logging
    return create_app(settings)
