"""Operations endpoints: liveness, readiness, Prometheus metrics.

- ``GET /healthz`` — the process answers (liveness: restart it if this fails).
- ``GET /readyz`` — the database answers ``SELECT 1`` and the key backend answers its ping, each
  within ``READINESS_TIMEOUT_SECONDS`` (readiness: send it traffic only while this is 200). A 503
  names what failed and, where our error gives one, why (a refused PIN), never how it is
  configured (no URL, no host, no PIN).
- ``GET /metrics`` — Prometheus text format 0.0.4 (see :mod:`verify_api.metrics`). It tells
  anyone who can reach it how busy the service is: expose it to the monitoring network only.

Both checks are blocking calls, run in worker threads of their own. A thread cannot be cancelled:
on timeout it is abandoned, and until it returns that check answers ``timeout`` at once instead of
starting another thread, so a hung database costs one thread, not one per probe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from schemas.errors import YinxinError
from vault import Vault
from verify_api.deps import VaultDep
from verify_api.metrics import CONTENT_TYPE, Metrics, MetricsDep
from verify_api.problems import PROBLEM_JSON, problem_response

__all__ = ["READINESS_TIMEOUT_SECONDS", "liveness", "router"]

log = logging.getLogger("yinxin.api")

READINESS_TIMEOUT_SECONDS = 2.0

CheckResult = Literal["ok", "unavailable", "timeout"]

# Liveness on a router of its own, so that the app can put it first and verification right after
# it, ahead of the other operations routes (routes/__init__.py).
liveness = APIRouter(tags=["operations"])
router = APIRouter(tags=["operations"])

_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "Not ready: the body names the check that failed",
        "content": {PROBLEM_JSON: {"schema": {"type": "object"}}},
    }
}


@liveness.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database and the key backend answer", responses=_NOT_READY)
async def readyz(request: Request, vault: VaultDep) -> Any:
    probes = _probes(request)
    results: dict[str, tuple[CheckResult, str | None]] = {}

    async def run(name: str, check: Callable[[], None]) -> None:
        results[name] = await probes.run(name, check)

    async with anyio.create_task_group() as group:
        group.start_soon(run, "database", lambda: _select_one(vault))
        group.start_soon(run, "backend", vault.backend.ping)
    (database, database_cause), (backend, backend_cause) = results["database"], results["backend"]
    if database == "ok" and backend == "ok":
        return {"status": "ready", "database": "ok", "backend": "ok"}
    metrics: Metrics | None = getattr(request.app.state, "metrics", None)
    failed = []
    if database != "ok":
        failed.append(_failure("the database", database, database_cause))
        if metrics is not None:
            metrics.backend_error("database")
    if backend != "ok":
        failed.append(_failure("the key backend", backend, backend_cause))
        if metrics is not None:
            metrics.backend_error("key_backend")
    return problem_response(
        503,
        "not_ready",
        "not ready: " + " and ".join(failed) + "; the details are in the log",
        instance=request.url.path,
        database=database,
        backend=backend,
    )


def _failure(what: str, result: CheckResult, cause: str | None) -> str:
    if result == "timeout":
        return f"{what} did not answer within {READINESS_TIMEOUT_SECONDS:g} s"
    return f"{what} is unavailable" + (f" ({cause})" if cause else "")


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format 0.0.4)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
def metrics_text(metrics: MetricsDep) -> Response:
    # A plain def: FastAPI runs it in a worker thread, as merging the worker files reads the disk.
    return Response(content=metrics.render(), media_type=CONTENT_TYPE)


def _select_one(vault: Vault) -> None:
    with vault.db.read() as session:
        session.execute(text("SELECT 1"))


class _Probes:
    """The readiness checks of one app: a check whose thread has not returned is not started again."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._running: set[str] = set()
        self._limiter = anyio.CapacityLimiter(4)  # off the shared pool that serves sync routes

    async def run(self, name: str, check: Callable[[], None]) -> tuple[CheckResult, str | None]:
        """The check's result, and the cause of a failure when our error names a safe one."""
        if name in self._running:
            log.warning("readiness: the previous %s check has not returned yet", name)
            return "timeout", None

        def call() -> None:
            # Marked from inside the thread: a call cancelled before its thread started marks nothing.
            self._running.add(name)
            try:
                check()
            finally:
                self._running.discard(name)

        try:
            with anyio.fail_after(self.timeout):
                await anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=self._limiter)
        except TimeoutError:
            log.warning("readiness: the %s check did not answer within %.1f s", name, self.timeout)
            return "timeout", None
        except YinxinError as exc:  # our messages carry no secrets (DESIGN §5.10)
            log.warning("readiness: the %s check failed: %s", name, exc)
            # A cause names what is wrong (a refused PIN, say), never the configuration.
            cause = exc.details.get("cause")
            return "unavailable", cause if isinstance(cause, str) else None
        except Exception as exc:  # a foreign message might quote a connection string: the class only
            log.warning("readiness: the %s check failed (%s)", name, type(exc).__name__)
            return "unavailable", None
        return "ok", None


def _probes(request: Request) -> _Probes:
    state = request.app.state
    probes: _Probes | None = getattr(state, "readiness_probes", None)
    if probes is None:
        probes = state.readiness_probes = _Probes(READINESS_TIMEOUT_SECONDS)
    return probes
