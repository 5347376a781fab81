"""What a load run sends (``RequestSpec``), what it measured (``LoadResult``), and the scenarios.

Scenarios (docs/api.md):

- ``healthz``: ``GET /healthz``, the framework's ceiling (routing, middleware, JSON; no database).
- ``verify``: ``POST /v1/verify`` with ``{"token": …}``, one of ``VERIFY_LICENCES`` real licence
  tokens issued at setup, each request the next (so concurrent requests ask about different
  licences); public, rate-limited per client address; the answer must say ``"valid":true``
  (signature, claims, live status from the database).
- ``issue``: ``POST /v1/licences`` with a bearer token of a ``licence:issue`` client (fetched once
  per server through ``/v1/oauth/token``), a unique ``Idempotency-Key`` and a unique holder name per
  request, so every request is a real, durable issuance (serial, signature, row, audit event).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from schemas import load_licence_types

__all__ = ["SCENARIOS", "VERIFY_LICENCES", "LoadResult", "RequestSpec", "client_addresses", "scenario_spec"]

SCENARIOS = ("healthz", "verify", "issue")
# The licence type the issuing demo client (market regulator) may issue: its example's issuer is
# that client's department (schemas/licence_types/, verify_api._demo).
BUSINESS_TYPE = "11100000000013101Q001"
_UNIQUE = "@@UNIQUE@@"
# Distinct licences the verify scenario presents, in turn: as many as connections by default, so
# the requests in flight at any moment ask about different licences, as real verifiers do.
VERIFY_LICENCES = 64


def client_addresses(count: int) -> tuple[str, ...]:
    """Documentation-range addresses (RFC 5737 TEST-NET-3), one per simulated client."""
    return tuple(f"203.0.113.{i % 254 + 1}" for i in range(count))


@dataclass(frozen=True)
class RequestSpec:
    method: str
    path: str
    headers: dict[str, str]
    clients: tuple[str, ...]  # sent as X-Forwarded-For, cycled per request
    body: str | None = None  # the same body on every request
    bodies: tuple[str, ...] = ()  # or one of these, each request the next
    body_template: tuple[str, str] | None = None  # prefix, suffix: a unique string goes between them
    idempotency: bool = False  # a unique Idempotency-Key per request
    expect: str | None = None  # a substring every 2xx answer must contain

    def body_for(self, unique: str, turn: int = 0) -> str | None:
        """The body of a request: *unique* to it (a template's), or the bodies' *turn*-th, in turn."""
        if self.body_template is not None:
            return self.body_template[0] + unique + self.body_template[1]
        if self.bodies:
            return self.bodies[turn % len(self.bodies)]
        return self.body


@dataclass
class LoadResult:
    generator: str
    requests: int  # answers received within the run
    errors: int  # non-2xx answers, unexpected bodies, transport errors and timeouts
    error_kinds: dict[str, int]
    duration_s: float
    latency_ms: dict[str, float]  # p50, p90, p99, max, mean
    generator_cpu_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def _issue_body(tag: str) -> tuple[str, str]:
    example: dict[str, Any] = json.loads(json.dumps(load_licence_types().get(BUSINESS_TYPE).example))
    example["holder"]["name"] = f"{example['holder']['name']}-{_UNIQUE}"
    # ensure_ascii: the body is plain ASCII (\u escapes), so it passes through Lua strings untouched.
    text = json.dumps(example, ensure_ascii=True, separators=(",", ":"))
    prefix, suffix = text.split(_UNIQUE)
    return prefix + tag + "-", suffix


def issue_licences(base: str, bearer: str, tag: str, count: int = 1) -> list[dict[str, Any]]:
    """Issue *count* licences through the API (setup: the tokens the verify scenario presents);
    each must verify as valid before the run starts."""
    prefix, suffix = _issue_body(tag)
    licences: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, timeout=30.0) as client:
        for number in range(count):
            reply = client.post(
                "/v1/licences",
                content=(prefix + f"setup-{number}" + suffix).encode(),
                headers={
                    "Authorization": f"Bearer {bearer}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"{tag}-setup-{number}",
                },
            )
            if reply.status_code != 201:
                raise RuntimeError(f"setup issuance failed: {reply.status_code} {reply.text[:500]}")
            licence: dict[str, Any] = reply.json()
            check = client.post("/v1/verify", json={"token": licence["token"]})
            if check.status_code != 200 or check.json().get("valid") is not True:
                raise RuntimeError(f"a setup licence does not verify: {check.status_code} {check.text[:500]}")
            licences.append(licence)
    return licences


def scenario_spec(
    name: str, *, clients: tuple[str, ...], licence_tokens: tuple[str, ...], bearer: str, tag: str
) -> RequestSpec:
    json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if name == "healthz":
        return RequestSpec("GET", "/healthz", {}, clients, expect='"ok"')
    if name == "verify":
        bodies = tuple(json.dumps({"token": token}, separators=(",", ":")) for token in licence_tokens)
        return RequestSpec("POST", "/v1/verify", json_headers, clients, bodies=bodies, expect='"valid":true')
    if name == "issue":
        return RequestSpec(
            "POST",
            "/v1/licences",
            {**json_headers, "Authorization": f"Bearer {bearer}"},
            clients,
            body_template=_issue_body(tag),
            idempotency=True,
            expect='"identifier"',
        )
    raise ValueError(f"unknown scenario {name!r}: one of {', '.join(SCENARIOS)}")
