"""The HTTP platform as a client sees it: body limit, security headers, request ids, health, metrics.

The app is the real one (``create_app``) with the platform installed and the health router
included here when the app factory does not do it yet; test routes are mounted beside them.
Rate limits are in test_ratelimit.py, ``yinxin serve`` in test_serve_process.py.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import select
from starlette.types import Message, Scope

from hsm import KeyBackend
from hsm._software import SoftwareBackend
from schemas import load_licence_types
from schemas.errors import ConfigurationError
from tests._db import database_url  # noqa: F401  (fixture)
from vault import Database, Vault
from verify_api.app import create_app
from verify_api.metrics import Metrics
from verify_api.middleware import BodyLimitMiddleware, RequestIdFilter, current_request_id, install_middleware
from verify_api.problems import install_problem_handlers
from verify_api.routes import api_docs, health
from verify_api.settings import Settings, load_settings

LIMIT = 65536
HEX_ID = re.compile(r"[0-9a-f]{32}")


class Thing(BaseModel):
    name: str
    note: str = ""


def _test_routes(calls: list[str]) -> APIRouter:
    r = APIRouter()

    @r.post("/test/echo")
    async def echo(request: Request) -> dict[str, int]:
        calls.append("echo")
        return {"bytes": len(await request.body())}

    @r.post("/test/things")
    def create_thing(thing: Thing) -> dict[str, str]:
        calls.append("things")
        return {"name": thing.name}

    @r.get("/test/things/{thing_id}")
    def get_thing(thing_id: str) -> dict[str, str | None]:
        logging.getLogger("yinxin.test").warning("looked up a thing")
        return {"thing_id": thing_id, "request_id": current_request_id()}

    @r.get("/test/cached")
    def cached() -> Response:
        return Response(
            "public",
            headers={"Cache-Control": "public, max-age=60", "Content-Security-Policy": "img-src 'self'"},
        )

    @r.get("/test/boom")
    def boom() -> None:
        raise RuntimeError("the database password is hunter2")

    return r


def platform_app(settings: Settings, vault: Vault, calls: list[str] | None = None) -> FastAPI:
    app = create_app(settings, vault=vault)
    if not hasattr(app.state, "metrics"):  # until the app factory installs the platform itself
        install_middleware(app, settings, Metrics())
    present = {getattr(route, "path", None) for route in app.routes}
    if "/healthz" not in present:
        app.include_router(health.liveness)
        app.include_router(health.router)
    app.include_router(_test_routes(calls if calls is not None else []))
    return app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", environment="development")


@pytest.fixture
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyBackend]:
    opened = SoftwareBackend(tmp_path_factory.mktemp("keystore"), b"platform-test-passphrase")
    yield opened
    opened.close()


def _open_vault(url: str, backend: KeyBackend) -> Vault:
    v = Vault(Database(url), backend, load_licence_types())
    v.initialise(actor="test")
    return v


@pytest.fixture
def vault(tmp_path: Path, backend: KeyBackend) -> Iterator[Vault]:
    """SQLite: the platform does not depend on the database, except readiness (run on both)."""
    v = _open_vault(f"sqlite:///{tmp_path / 'yinxin.db'}", backend)
    yield v
    v.close()


@pytest.fixture
def any_vault(database_url: str, backend: KeyBackend) -> Iterator[Vault]:  # noqa: F811 (fixture)
    v = _open_vault(database_url, backend)
    yield v
    v.close()


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def client(settings: Settings, vault: Vault, calls: list[str]) -> Iterator[TestClient]:
    with TestClient(platform_app(settings, vault, calls), raise_server_exceptions=False) as c:
        yield c


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code and body["type"] == f"urn:yinxin:problem:{code}"
    return body


def assert_security_headers(response: Any, *, https: bool = False) -> None:
    h = response.headers
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "no-referrer"
    assert h["x-frame-options"] == "DENY"
    assert ("strict-transport-security" in h) is https
    assert HEX_ID.fullmatch(h["x-request-id"]) or h["x-request-id"]


# ---- request body limit ------------------------------------------------------------------


def test_body_over_the_limit_by_content_length_is_refused_unread(
    client: TestClient, calls: list[str]
) -> None:
    r = client.post("/test/echo", content=b"x" * (LIMIT + 1))
    body = assert_problem(r, 413, "input_too_large")
    assert str(LIMIT) in body["detail"]
    assert r.headers["connection"] == "close"
    assert_security_headers(r)
    assert r.headers["cache-control"] == "no-store"
    assert calls == []  # the route never ran

    ok = client.post("/test/echo", content=b"x" * LIMIT)
    assert ok.status_code == 200 and ok.json() == {"bytes": LIMIT}


def test_chunked_body_over_the_limit_is_413_for_raw_and_model_routes(
    client: TestClient, calls: list[str]
) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        for _ in range(total // 8192):
            yield b"x" * 8192

    r = client.post("/test/echo", content=chunks(LIMIT + 8192))
    assert "content-length" not in r.request.headers  # sent chunked
    assert_problem(r, 413, "input_too_large")
    assert_security_headers(r)

    # A pydantic body: FastAPI reads the body itself and would turn a foreign error into a 400.
    big = json.dumps({"name": "n", "note": "y" * LIMIT}).encode()
    r = client.post("/test/things", content=iter([big]), headers={"content-type": "application/json"})
    assert_problem(r, 413, "input_too_large")
    assert "things" not in calls

    small = client.post("/test/echo", content=chunks(LIMIT - 8192))
    assert small.status_code == 200 and small.json() == {"bytes": LIMIT - 8192}


def test_streamed_body_stops_being_read_at_the_limit() -> None:
    """ASGI level: 16 KiB chunks, no Content-Length; reading stops at the first chunk past 64 KiB."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/read")
    async def read(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    limited = BodyLimitMiddleware(app, max_bytes=LIMIT)
    received = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"x" * 16384, "more_body": received < 100}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/read",
        "raw_path": b"/read",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    anyio.run(limited, scope, receive, send)
    assert received == 5  # 5 × 16 KiB = 80 KiB > 64 KiB: the sixth chunk is never asked for
    start = sent[0]
    assert start["status"] == 413
    assert (b"content-type", b"application/problem+json") in start["headers"]
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["code"] == "input_too_large"


# ---- security headers --------------------------------------------------------------------


def test_security_headers_on_success_and_on_every_error(client: TestClient) -> None:
    ok = client.get("/healthz")
    missing = client.get("/no/such/page")
    invalid = client.post("/test/things", json={"note": "no name"})
    wrong_method = client.delete("/healthz")
    crashed = client.get("/test/boom")
    assert ok.status_code == 200
    assert_problem(missing, 404, "not_found")
    assert_problem(invalid, 422, "invalid_input")
    assert wrong_method.status_code == 405
    body = assert_problem(crashed, 500, "internal_error")
    assert "hunter2" not in crashed.text and "RuntimeError" not in crashed.text
    assert body["correlation_id"] == crashed.headers["x-request-id"]  # the id the log carries
    for r in (ok, missing, invalid, wrong_method, crashed):
        assert_security_headers(r)
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_a_route_keeps_its_own_cache_control_and_csp(client: TestClient) -> None:
    r = client.get("/test/cached")
    assert r.headers["cache-control"] == "public, max-age=60"
    assert r.headers["content-security-policy"] == "img-src 'self'"
    assert r.headers.get_list("cache-control") == ["public, max-age=60"]
    assert_security_headers(r)


def test_hsts_only_over_https(settings: Settings, vault: Vault) -> None:
    app = platform_app(settings, vault)
    with TestClient(app, base_url="https://yinxin.example") as tls:
        r = tls.get("/healthz")
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    assert_security_headers(r, https=True)


# ---- request id ---------------------------------------------------------------------------


def test_request_id_echoed_generated_and_seen_by_the_route_and_logs(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    given = "client-42.retry_1"
    r = client.get("/test/things/t1", headers={"X-Request-ID": given})
    assert r.headers["x-request-id"] == given
    assert r.json()["request_id"] == given  # sync route, worker thread: the context came along

    generated = [client.get("/test/things/t2").headers["x-request-id"] for _ in range(3)]
    assert all(HEX_ID.fullmatch(g) for g in generated) and len(set(generated)) == 3

    for bad in ("x" * 65, "has space", "semi;colon", "新"):
        echoed = client.get("/healthz", headers={"X-Request-ID": bad.encode()})
        assert HEX_ID.fullmatch(echoed.headers["x-request-id"]), bad

    caplog.clear()
    handler_filter = RequestIdFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        with caplog.at_level(logging.INFO):
            client.get("/test/things/t3", headers={"X-Request-ID": "trace-me"})
    finally:
        caplog.handler.removeFilter(handler_filter)
    looked_up = [rec for rec in caplog.records if rec.getMessage() == "looked up a thing"]
    assert [getattr(rec, "request_id", None) for rec in looked_up] == ["trace-me"]
    access = [rec.getMessage() for rec in caplog.records if rec.name == "yinxin.http"]
    assert any("/test/things/{thing_id}" in line and "request_id=trace-me" in line for line in access)
    assert not any("t3" in line for line in access)  # the template, never the raw path


# ---- health ---------------------------------------------------------------------------------


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_the_hot_routes_are_matched_first(settings: Settings, vault: Vault) -> None:
    """FastAPI tries the routes in order (a miss costs microseconds): after its own /openapi.json,
    liveness probes and token verification are the first two, each alone in its router."""
    app = create_app(settings, vault=vault)
    tried: list[tuple[str, ...]] = []
    for route in app.router.routes:
        included = getattr(route, "original_router", None)  # FastAPI 0.165 wraps included routers
        for inner in included.routes if included is not None else [route]:
            tried.append((getattr(inner, "path", "?"), *sorted(getattr(inner, "methods", ()))))
    assert tried[:3] == [("/openapi.json", "GET", "HEAD"), ("/healthz", "GET"), ("/v1/verify", "POST")]


def test_readyz_when_database_and_backend_answer(settings: Settings, any_vault: Vault) -> None:
    with TestClient(platform_app(settings, any_vault)) as c:
        r = c.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "database": "ok", "backend": "ok"}


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_readyz_503_when_the_database_does_not_answer(
    settings: Settings, backend: KeyBackend, unused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql+psycopg://yinxin:s3cret-pw@127.0.0.1:{unused_port}/yinxin"
    unreachable = Vault(Database(url), backend, load_licence_types())
    with TestClient(platform_app(settings, unreachable)) as c:
        r = c.get("/readyz")
        metrics = c.get("/metrics").text
    body = assert_problem(r, 503, "not_ready")
    assert body["database"] == "unavailable" and body["backend"] == "ok"
    assert "database" in body["detail"]
    for secret in ("s3cret-pw", str(unused_port), "127.0.0.1", "postgres", "psycopg"):
        assert secret not in r.text
    assert "s3cret-pw" not in caplog.text
    assert 'yinxin_backend_errors_total{kind="database"} 1.0' in metrics
    unreachable.close()


def test_readyz_503_when_the_key_backend_is_closed(
    settings: Settings, vault: Vault, backend: KeyBackend
) -> None:
    with TestClient(platform_app(settings, vault)) as c:
        assert c.get("/readyz").status_code == 200
        backend.close()
        r = c.get("/readyz")
    body = assert_problem(r, 503, "not_ready")
    assert body["database"] == "ok" and body["backend"] == "unavailable"
    assert "key backend" in body["detail"]


def test_readyz_does_not_hang_on_a_hung_backend(
    settings: Settings, vault: Vault, backend: KeyBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    pings: list[int] = []

    def hung_ping() -> None:
        pings.append(1)
        release.wait(10)

    # Open the pooled database connection first: connecting to PostgreSQL on a busy machine can take
    # longer than the 0.3 s budget below, and this test is about the backend hanging, not the database.
    with vault.db.read() as s:
        s.execute(select(1))
    monkeypatch.setattr(health, "READINESS_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(backend, "ping", hung_ping)
    try:
        with TestClient(platform_app(settings, vault)) as c:
            started = time.monotonic()
            first = c.get("/readyz")
            second = c.get("/readyz")  # the first ping has not returned: no second thread
            elapsed = time.monotonic() - started
    finally:
        release.set()
    assert elapsed < 3
    for r in (first, second):
        body = assert_problem(r, 503, "not_ready")
        assert body["backend"] == "timeout" and body["database"] == "ok"
    assert len(pings) == 1


# ---- metrics ------------------------------------------------------------------------------


def _sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/test/things/1.2.156.3005.2.SECRET")
    client.get("/test/things/another")
    client.get("/no/such/page")
    client.request("BREW", "/healthz")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = r.text
    labels = {"method": "GET", "route": "/test/things/{thing_id}", "status": "200"}
    assert _sample(text, "yinxin_http_requests_total", **labels) == 2.0
    duration = {"method": "GET", "route": "/test/things/{thing_id}"}
    assert _sample(text, "yinxin_http_request_duration_seconds_count", **duration) == 2.0
    assert _sample(text, "yinxin_http_requests_total", method="GET", route="<unmatched>", status="404") == 1.0
    assert _sample(text, "yinxin_http_requests_total", method="OTHER", route="/healthz", status="405") == 1.0
    assert "SECRET" not in text and "another" not in text and "BREW" not in text
    for verdict in ("valid", "invalid", "revoked", "suspended", "expired", "not_yet_valid"):
        assert _sample(text, "yinxin_verifications_total", verdict=verdict) == 0.0


def test_metrics_calls_for_the_routes(client: TestClient) -> None:
    metrics: Metrics = client.app.state.metrics  # type: ignore[attr-defined]
    metrics.issued(3)
    metrics.issued(0)
    metrics.verified("valid")
    metrics.verified("revoked")
    metrics.verified("made-up")
    metrics.backend_error("database")
    metrics.backend_error("Not A Kind!")
    text = client.get("/metrics").text
    assert _sample(text, "yinxin_licences_issued_total") == 3.0
    assert _sample(text, "yinxin_verifications_total", verdict="valid") == 1.0
    assert _sample(text, "yinxin_verifications_total", verdict="revoked") == 1.0
    assert _sample(text, "yinxin_verifications_total", verdict="invalid") == 1.0
    assert _sample(text, "yinxin_backend_errors_total", kind="database") == 1.0
    assert _sample(text, "yinxin_backend_errors_total", kind="other") == 1.0


def test_each_app_has_its_own_registry(settings: Settings, vault: Vault) -> None:
    with TestClient(platform_app(settings, vault)) as a, TestClient(platform_app(settings, vault)) as b:
        a.get("/healthz")
        a.get("/healthz")
        b.get("/healthz")
        count_a = _sample(
            a.get("/metrics").text, "yinxin_http_requests_total", method="GET", route="/healthz", status="200"
        )
        count_b = _sample(
            b.get("/metrics").text, "yinxin_http_requests_total", method="GET", route="/healthz", status="200"
        )
    assert (count_a, count_b) == (2.0, 1.0)


def test_multiprocess_mode_needs_the_variable_before_start(tmp_path: Path) -> None:
    # This process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR.
    with pytest.raises(ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(multiprocess_dir=tmp_path)


# ---- settings and /docs ------------------------------------------------------------------------


def test_platform_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("YINXIN_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("YINXIN_VERIFY_RATE_PER_MINUTE", "120")
    monkeypatch.setenv("YINXIN_VERIFY_BURST", "5")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    s = Settings()
    assert (s.max_body_bytes, s.verify_rate_per_minute, s.verify_burst) == (4096, 120, 5)
    assert s.prometheus_multiproc_dir == tmp_path
    assert Settings(home=tmp_path, max_body_bytes=2048).max_body_bytes == 2048
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert Settings().prometheus_multiproc_dir is None


def test_database_read_threads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().db_read_threads == 4
    monkeypatch.setenv("YINXIN_DB_READ_THREADS", "8")
    assert Settings().db_read_threads == 8
    for wrong in ("0", "65", "many"):
        monkeypatch.setenv("YINXIN_DB_READ_THREADS", wrong)
        with pytest.raises(ConfigurationError, match="setting YINXIN_DB_READ_THREADS: "):
            load_settings()


def test_docs_page_is_self_contained() -> None:
    app = FastAPI(title="Yinxin <test>", version="9", docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    install_middleware(app, Settings(), Metrics())
    app.include_router(api_docs.router)
    app.include_router(health.liveness)
    app.include_router(health.router)
    app.include_router(_test_routes([]))
    with TestClient(app) as c:
        r = c.get("/docs")
        spec = c.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<script" not in page and "cdn" not in page.lower() and "http://" not in page
    assert "Yinxin &lt;test&gt;" in page  # escaped
    assert "/test/things/{thing_id}" in page and "/readyz" in page and 'href="#schema-Thing"' in page
    csp = r.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; style-src 'sha256-") and "frame-ancestors 'none'" in csp
    assert_security_headers(r)
    assert spec.status_code == 200 and "/healthz" in spec.json()["paths"]
