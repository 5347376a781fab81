"""The app's own cost of a verification, in process: ``POST /v1/verify`` against ``GET /healthz``.

* app-verify-vs-healthz: the real app (``create_app``, every middleware, SQLite, software keystore)
  driven through ASGI in this process, no sockets and no uvicorn: 64 concurrent clients, each
  sending requests one after another, the verifications presenting 64 real licence tokens in turn
  (so the requests of one turn of the event loop ask about different licences, as under
  ``make load``). The baseline is the same app answering ``GET /healthz`` the same way.

``make load`` measures the same ratio over HTTP; this one leaves out uvicorn's HTTP work and the
load generator, so it is steadier (within a few per cent from run to run in one hour, against
±5-10 % over HTTP on this shared machine; the machine's speed still moves it from hour to hour, so
compare old and new code in alternating runs) and shows changes to the app's own code sooner. It has no goal of
its own: the issue's goal is the HTTP figure.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from benchmarks._vaults import demo_lines, demo_vault
from schemas import LicenceCreate
from verify_api.app import create_app
from verify_api.settings import Settings

CLIENTS = 64  # concurrent clients, as make load's connections
PER_CLIENT = 8  # requests each sends in a round, one after another
LICENCES = 64


class _App:
    """The app with its lifespan entered on an event loop of its own, and what to send it."""

    def __init__(self, root: Path) -> None:
        self._closing = ExitStack()
        self.vault = self._closing.enter_context(demo_vault(root))
        self.bodies: list[bytes] = []
        for line in demo_lines("app", LICENCES):
            licence = self.vault.issue(LicenceCreate.model_validate_json(line), actor="bench").licence
            self.bodies.append(json.dumps({"token": licence.token}).encode())
        # The highest per-address limits the settings accept, and a client address per client (as
        # make load's X-Forwarded-For): the limiter's work is measured, its refusals not.
        settings = Settings(
            home=root / "home", environment="development", verify_rate_per_minute=100_000, verify_burst=10_000
        )
        self.app = create_app(settings, vault=self.vault)
        self.loop = asyncio.new_event_loop()
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self._lifespan.__aenter__())

    def close(self) -> None:
        self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.close()
        self._closing.close()

    async def _one(self, client: int, turn: int, verify: bool) -> None:
        headers = [(b"host", b"127.0.0.1"), (b"accept", b"application/json")]
        if verify:
            body = self.bodies[(client + turn) % LICENCES]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            method, path = "POST", "/v1/verify"
        else:
            body, method, path = b"", "GET", "/healthz"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": (f"203.0.113.{client % 254 + 1}", 40000 + client),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        received = False
        answer: dict[str, Any] = {}

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # nothing more: the client neither sends nor leaves
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] = answer.get("body", b"") + message.get("body", b"")

        await self.app(scope, receive, send)
        expected = b'"valid":true' if verify else b'"ok"'
        if answer.get("status") != 200 or expected not in answer.get("body", b""):
            raise AssertionError(f"{method} {path}: {answer.get('status')} {answer.get('body', b'')[:300]!r}")

    async def _client(self, client: int, verify: bool) -> None:
        for turn in range(PER_CLIENT):
            await self._one(client, turn, verify)

    def round(self, verify: bool) -> None:
        """CLIENTS clients, each sending PER_CLIENT requests one after another."""

        async def everyone() -> None:
            await asyncio.gather(*(self._client(client, verify) for client in range(CLIENTS)))

        self.loop.run_until_complete(everyone())


@pytest.fixture(scope="module")
def app_under_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_App]:
    app = _App(tmp_path_factory.mktemp("app-bench"))
    yield app
    app.close()


@pytest.mark.parametrize("role", ["baseline", "ours"])
def test_app_verify_vs_healthz(benchmark: Any, app_under_test: _App, role: str) -> None:
    benchmark.group = "app-verify-vs-healthz"
    benchmark.extra_info["role"] = role
    benchmark.extra_info["requests_per_round"] = CLIENTS * PER_CLIENT
    verify = role == "ours"
    app_under_test.round(verify)  # warm: connections, prepared statements, trust store
    benchmark.pedantic(app_under_test.round, args=(verify,), rounds=15, iterations=1, warmup_rounds=1)
