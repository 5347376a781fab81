"""``yinxin serve``: run the HTTP API under uvicorn.

Before uvicorn starts, the command checks what would otherwise fail in every worker, one traceback
each: the database is initialised (``yinxin init``) and the key backend opens; the address is free
(a port in use is a one-line error, exit 2). Each worker then builds its own app through
``verify_api.app:app_from_environment`` (settings, backend sessions, database pool per process).

Choices:

- ``access_log=False``: uvicorn's access log writes the raw path and query, which can carry a
  licence token. The platform middleware logs each request under its route template instead
  (logger ``yinxin.http``, level INFO, to ``YINXIN_HOME/yinxin.log``).
- ``proxy_headers`` off unless ``--forwarded-allow-ips`` names the reverse proxy: only then does
  uvicorn take the client address (rate limits, logs) and the scheme (HSTS) from
  ``X-Forwarded-For`` / ``X-Forwarded-Proto``, and only from those addresses.
- ``server_header=False``: no product banner.
- Several workers are several processes: each has its own rate-limit buckets (a client gets up to
  N times the limit) and its own metrics unless ``PROMETHEUS_MULTIPROC_DIR`` is set (see
  :mod:`verify_api.metrics`); this command empties that directory's metric files at start.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from schemas.errors import ConfigurationError, InvalidInput
from vault import DatabaseError
from verify_api.settings import Settings
from verify_api.wiring import open_vault

__all__ = ["MAX_WORKERS", "cmd_serve"]

log = logging.getLogger("yinxin.cli")

MAX_WORKERS = 32
APP_FACTORY = "verify_api.app:app_from_environment"
GRACEFUL_SHUTDOWN_SECONDS = 10
_METRIC_FILES = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    host: str = args.host
    port: int = args.port
    workers: int = args.workers
    if not 1 <= workers <= MAX_WORKERS:
        raise InvalidInput(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}")
    if not 1 <= port <= 65535:
        raise InvalidInput(f"--port must be between 1 and 65535, not {port}")
    _check_address(host, port)
    _prepare_metrics_dir(settings.prometheus_multiproc_dir, workers)
    _check_vault(settings)

    import uvicorn  # here, not at the top: every other command starts faster without it

    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(
        f"yinxin: serving http://{shown}:{port} with {workers} worker{'s' if workers > 1 else ''} "
        "(Ctrl+C or SIGTERM stops)\n"
    )
    sys.stderr.flush()
    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            proxy_headers=args.forwarded_allow_ips is not None,
            forwarded_allow_ips=args.forwarded_allow_ips,
            server_header=False,
            date_header=True,
            access_log=False,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    except SystemExit as exc:  # uvicorn exits this way when start-up fails; it logged the reason
        if exc.code not in (0, None):
            sys.stderr.write("yinxin: error: the server did not start; the reason is logged above\n")
            return 3
    return 0


def _check_vault(settings: Settings) -> None:
    """The checks ``open_vault`` makes: the schema is current and the key backend opens."""
    try:
        with open_vault(settings):
            pass
    except SQLAlchemyError as exc:
        raise DatabaseError(
            "the database did not answer; check YINXIN_DATABASE_URL and that the database is running"
        ) from exc


def _check_address(host: str, port: int) -> None:
    # What uvicorn does when it binds (SO_REUSEADDR, the family from the host's form), done first so
    # that a busy port is one line and exit 2, not a log record and exit 3.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InvalidInput(
                f"port {port} on {host} is already in use: stop what listens there or choose another --port"
            ) from None
        raise InvalidInput(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None


def _prepare_metrics_dir(directory: Path | None, workers: int) -> None:
    if directory is None:
        if workers > 1:
            log.warning(
                "%d workers without PROMETHEUS_MULTIPROC_DIR: each scrape of /metrics sees one worker",
                workers,
            )
        return
    if not directory.is_dir():
        raise ConfigurationError(
            f"PROMETHEUS_MULTIPROC_DIR {str(directory)!r} is not a directory: create it (empty) first"
        )
    # prometheus_client: the directory "must be wiped between runs"; only its own files go.
    for pattern in _METRIC_FILES:
        for stale in directory.glob(pattern):
            try:
                stale.unlink()
            except OSError as exc:
                raise ConfigurationError(
                    f"PROMETHEUS_MULTIPROC_DIR: cannot remove {stale.name}: {exc.strerror}"
                ) from exc
