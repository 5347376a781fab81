"""Rate limits on public endpoints: burst, then 429 with Retry-After; per client; bounded memory.

``POST /v1/verify`` belongs to the verify routes; here a test route declares the same dependency,
``rate_limited("verify")``, and a hand-moved clock makes refills exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from schemas.errors import ConfigurationError
from verify_api.metrics import Metrics
from verify_api.middleware import install_middleware
from verify_api.problems import install_problem_handlers
from verify_api.ratelimit import RateLimiter, RateLimits, client_key, rate_limited
from verify_api.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def limited_app(settings: Settings, clock: Clock) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings
    app.state.rate_limits = RateLimits(settings, clock=clock)
    install_problem_handlers(app)
    install_middleware(app, settings, Metrics())

    @app.post("/test/verify", dependencies=[Depends(rate_limited("verify"))])
    async def verify() -> dict[str, bool]:
        return {"valid": True}

    @app.get("/test/free")
    async def free() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.fixture
def client(clock: Clock) -> Iterator[TestClient]:
    with TestClient(limited_app(Settings(), clock), client=("203.0.113.7", 40000)) as c:
        yield c


def test_burst_of_30_then_429_with_retry_after(client: TestClient, clock: Clock) -> None:
    for i in range(30):
        assert client.post("/test/verify").status_code == 200, i
    r = client.post("/test/verify")
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == "rate_limited" and body["status"] == 429
    assert r.headers["retry-after"] == "1"  # 60 a minute: one token a second
    assert r.headers["x-content-type-options"] == "nosniff"  # a problem like any other
    assert client.get("/test/free").status_code == 200  # other routes are not limited

    clock.now += 1.0
    assert client.post("/test/verify").status_code == 200
    assert client.post("/test/verify").status_code == 429
    clock.now += 30.0
    assert all(client.post("/test/verify").status_code == 200 for _ in range(30))
    assert client.post("/test/verify").status_code == 429


def test_each_client_address_has_its_own_bucket(clock: Clock) -> None:
    app = limited_app(Settings(), clock)
    with (
        TestClient(app, client=("198.51.100.1", 1)) as first,
        TestClient(app, client=("198.51.100.2", 1)) as second,
    ):
        for _ in range(30):
            first.post("/test/verify")
        assert first.post("/test/verify").status_code == 429
        assert second.post("/test/verify").status_code == 200
        # X-Forwarded-For is not a way round the limit.
        spoofed = first.post("/test/verify", headers={"X-Forwarded-For": "192.0.2.99"})
        assert spoofed.status_code == 429


def test_limits_come_from_the_settings(clock: Clock) -> None:
    settings = Settings(verify_rate_per_minute=6, verify_burst=2)
    with TestClient(limited_app(settings, clock)) as c:
        assert [c.post("/test/verify").status_code for _ in range(3)] == [200, 200, 429]
        r = c.post("/test/verify")
        assert r.headers["retry-after"] == "10"  # 6 a minute: one token every 10 s
        clock.now += 10
        assert c.post("/test/verify").status_code == 200


def test_limits_are_built_from_settings_when_the_app_did_not(clock: Clock) -> None:
    app = limited_app(Settings(verify_burst=1), clock)
    del app.state.rate_limits
    with TestClient(app) as c:
        assert [c.post("/test/verify").status_code for _ in range(2)] == [200, 429]


def test_idle_buckets_are_dropped_and_the_table_is_capped() -> None:
    clock = Clock()
    limiter = RateLimiter(60, 30, max_clients=100, clock=clock)
    for i in range(100):
        assert limiter.acquire(f"10.0.0.{i}") == 0
    assert len(limiter) == 100
    limiter.acquire("10.0.1.1")  # full: the least recently used goes
    assert len(limiter) == 100
    clock.now += 31  # 30 tokens at one a second: every bucket is full again
    limiter.acquire("10.0.2.1")
    assert len(limiter) == 1


def test_tokens_come_back_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(60, 3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("a") == pytest.approx(1.0)
    clock.now += 2.9  # not yet idle long enough to be dropped (3 s refill)
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, pytest.approx(0.1)]


def _request(host: str) -> Request:
    return Request({"type": "http", "client": (host, 1), "headers": [], "method": "POST", "path": "/"})


def test_client_keys() -> None:
    assert client_key(_request("203.0.113.7")) == "203.0.113.7"
    # A host holds a whole IPv6 /64: the /64 is the client.
    assert client_key(_request("2001:db8:1:2:aaaa::1")) == client_key(_request("2001:db8:1:2:bbbb::9"))
    assert client_key(_request("2001:db8:1:2::1")) == "2001:db8:1:2::/64"
    assert client_key(_request("2001:db8:1:3::1")) != client_key(_request("2001:db8:1:2::1"))
    assert client_key(_request("::ffff:203.0.113.7")) == "203.0.113.7"


def test_bad_names_and_missing_settings_fail_clearly() -> None:
    with pytest.raises(ValueError, match="rate limit name"):
        rate_limited("Verify Me")
    with pytest.raises(ConfigurationError, match="YINXIN_LOOKUP_RATE_PER_MINUTE"):
        RateLimits(Settings()).limiter("lookup")
    with pytest.raises(ConfigurationError):
        RateLimiter(0, 1)
