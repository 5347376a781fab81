"""The app's own cost of a verification and of an issuance, in process, against ``GET /healthz``.

* app-verify-vs-healthz: the real app (``create_app``, every middleware, SQLite, software keystore)
  driven through ASGI in this process, no sockets and no uvicorn: 64 concurrent clients, each
  sending requests one after another, the verifications presenting 64 real licence tokens in turn
  (so the requests of one turn of the event loop ask about different licences, as under
  ``make load``). The baseline is the same app answering ``GET /healthz`` the same way.
* app-issue-vs-healthz: the same app and clients issuing licences, ``POST /v1/licences`` with a
  bearer token of a ``licence:issue`` client, a unique holder name and ``Idempotency-Key`` per
  request, each committed durably (group commit) on SQLite; the same baseline.

``make load`` measures the same ratios over HTTP; these leave out uvicorn's HTTP work and the
load generator, so they are steadier (within a few per cent from run to run in one hour, against
±5-10 % over HTTP on this shared machine; the machine's speed still moves them from hour to hour,
so compare old and new code in alternating runs) and show changes to the app's own code sooner.
They have no goals of their own: the issue's goals are the HTTP figures.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, MutableMapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from benchmarks._vaults import demo_lines, demo_vault
from schemas import LicenceCreate
from vault._clients import ClientRegistry
from verify_api._demo import DEMO_DEPARTMENTS
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
        # Issuance: a licence:issue client of the demo type's issuing department, its bearer token
        # fetched once (as a real client would for the token's ten minutes), and a request body
        # whose holder name is made unique per request.
        self.request = json.loads(demo_lines("app-issue", 1)[0])
        registry = ClientRegistry(self.vault)
        client = registry.add(self.request["issuer"], "licence:issue", actor="bench")
        authenticated = registry.authenticate(client.client_id, client.client_secret)
        assert authenticated is not None and self.request["issuer"] in DEMO_DEPARTMENTS
        self.bearer = b"Bearer " + registry.issue_token(authenticated).token.encode()
        self.issued = 0
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

    def _issuance(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        self.issued += 1
        body = dict(self.request, holder={**self.request["holder"], "name": f"申请人{self.issued}"})
        headers = [
            (b"authorization", self.bearer),
            (b"idempotency-key", f"app-bench-{self.issued}".encode()),
        ]
        return json.dumps(body, ensure_ascii=False).encode(), headers

    async def _one(self, client: int, turn: int, kind: str) -> None:
        headers = [(b"host", b"127.0.0.1"), (b"accept", b"application/json")]
        if kind == "verify":
            body, method, path, status, expected = (
                self.bodies[(client + turn) % LICENCES],
                "POST",
                "/v1/verify",
                200,
                b'"valid":true',
            )
        elif kind == "issue":
            (body, extra), method, path, status, expected = (
                self._issuance(),
                "POST",
                "/v1/licences",
                201,
                b'"status":"valid"',
            )
            headers += extra
        else:
            body, method, path, status, expected = b"", "GET", "/healthz", 200, b'"ok"'
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
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

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] = answer.get("body", b"") + message.get("body", b"")

        await self.app(scope, receive, send)
        if answer.get("status") != status or expected not in answer.get("body", b""):
            raise AssertionError(f"{method} {path}: {answer.get('status')} {answer.get('body', b'')[:300]!r}")

    async def _client(self, client: int, kind: str, per_client: int) -> None:
        for turn in range(per_client):
            await self._one(client, turn, kind)

    def round(self, kind: str, per_client: int = PER_CLIENT) -> None:
        """CLIENTS clients, each sending *per_client* requests of *kind* one after another."""

        async def everyone() -> None:
            await asyncio.gather(*(self._client(client, kind, per_client) for client in range(CLIENTS)))

        self.loop.run_until_complete(everyone())


@pytest.fixture(scope="module")
def app_under_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_App]:
    app = _App(tmp_path_factory.mktemp("app-bench"))
    yield app
    app.close()


def _against_healthz(benchmark: Any, app: _App, role: str, ours: str, per_client: int, rounds: int) -> None:
    """Rounds of *ours* (role "ours") or of GET /healthz (role "baseline"), the same size for both:
    make bench's summary compares the two roles' best round times."""
    benchmark.extra_info["role"] = role
    benchmark.extra_info["requests_per_round"] = CLIENTS * per_client
    kind = ours if role == "ours" else "healthz"
    app.round(kind, per_client)  # warm: connections, prepared statements, trust store, access token
    benchmark.pedantic(app.round, args=(kind, per_client), rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("role", ["baseline", "ours"])
def test_app_verify_vs_healthz(benchmark: Any, app_under_test: _App, role: str) -> None:
    benchmark.group = "app-verify-vs-healthz"
    _against_healthz(benchmark, app_under_test, role, "verify", PER_CLIENT, rounds=15)


ISSUES_PER_CLIENT = 4  # a round of 256 durable issuances (about half a second)


@pytest.mark.parametrize("role", ["baseline", "ours"])
def test_app_issue_vs_healthz(benchmark: Any, app_under_test: _App, role: str) -> None:
    benchmark.group = "app-issue-vs-healthz"
    _against_healthz(benchmark, app_under_test, role, "issue", ISSUES_PER_CLIENT, rounds=10)
