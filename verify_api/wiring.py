"""Composition: settings → key backend + database + licence types + clock → :class:`vault.Vault`."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from hsm import open_backend
from schemas import load_licence_types
from schemas.errors import ConfigurationError
from vault import Clock, Database, Vault, system_clock
from verify_api._request_id import RequestIdFilter
from verify_api.settings import Settings

__all__ = ["configure_logging", "freeze_startup_objects", "open_vault"]

_frozen = False


def configure_logging(settings: Settings) -> None:
    """Log to stderr at the configured level; detail (tracebacks) goes to YINXIN_HOME/yinxin.log."""
    root = logging.getLogger("yinxin")
    for old in [h for h in root.handlers if getattr(h, "yinxin_handler", False)]:
        root.removeHandler(old)
        old.close()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler()
    console.setLevel(settings.log_level)
    console.setFormatter(logging.Formatter("yinxin: %(levelname)s: %(message)s"))
    console.addFilter(RequestIdFilter())
    console.yinxin_handler = True  # type: ignore[attr-defined]
    root.addHandler(console)
    try:
        settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        file_handler = logging.FileHandler(settings.home / "yinxin.log", encoding="utf-8")
    except OSError:
        return
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    file_handler.addFilter(RequestIdFilter())
    file_handler.yinxin_handler = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)


@contextmanager
def open_vault(settings: Settings, *, clock: Clock = system_clock, migrate: bool = False) -> Iterator[Vault]:
    """Open backend and database; with ``migrate=False`` an uninitialised database is an error."""
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.resolved_database_url(), read_threads=settings.db_read_threads)
    try:
        if not migrate and not db.is_current():
            raise ConfigurationError(
                f"the database at {db.url} is not initialised or not at the current schema: run `yinxin init`"
            )
        backend = open_backend(settings.backend_config())
        try:
            yield Vault(
                db,
                backend,
                load_licence_types(),
                clock=clock,
                **settings.vault_options(),
            )
        finally:
            backend.close()
    finally:
        db.dispose()


def freeze_startup_objects() -> None:
    """Move everything built at start-up (modules, the app, schemas, the pool) out of the collector's reach.

    For a long-running process once it is set up: a server worker, a bulk import. Such a process
    holds some 200 000 long-lived objects, and each full collection walked all of them: about 50 ms
    in a server worker, with every request stalled (the load test's p99 showed it), and 80-100 ms
    per 5 000 licences in ``issue-bulk`` (a tenth of its time). Frozen objects are never collected,
    nor scanned; the work's own garbage is collected as before. ``gc.freeze`` is meant for exactly
    this (the standard library's docs: call it once the process is set up).
    """
    global _frozen
    if _frozen:
        return  # once a process: a test process builds many apps, and frozen garbage is never freed
    _frozen = True
    gc.collect()
    gc.freeze()
