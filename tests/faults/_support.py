"""The service under fault: a real vault and app over a real database and key backend.

:func:`open_service` builds what ``yinxin serve`` builds (the app factory over a vault), with one
issuing department, its licence key and an API client, and hands back a client that talks HTTP to
it. :func:`check_invariants` states what no fault may break (DESIGN §3, "Issue"): no licence
without its audit event and no audit event without its licence, gapless serials with the counter
at the last one, one status change per audit event, and an audit chain that verifies.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from hsm import KeyBackend, SignatureAlgorithm
from schemas import load_licence_types
from vault import ClientRegistry, Database, NewClient, Vault, ensure_service_key, ensure_status_list_key
from vault._models import AuditEventRecord, LicenceRecord, SerialCounterRecord, StatusChangeRecord
from verify_api.app import create_app
from verify_api.settings import Settings

__all__ = [
    "BUSINESS",
    "MARKET",
    "Service",
    "assert_problem",
    "check_invariants",
    "licence_request",
    "open_service",
    "populate",
]

MARKET = "11110101000000123B"  # 北京市东城区市场监督管理局: issues 个体工商户营业执照
BUSINESS = "11100000000013101Q001"


def licence_request(n: int = 0) -> dict[str, Any]:
    """The licence type's example, with a holder name of its own."""
    body: dict[str, Any] = json.loads(json.dumps(load_licence_types().get(BUSINESS).example))
    body["holder"]["name"] = f"故障测试商户{n}"
    return body


@dataclass
class Service:
    api: TestClient
    vault: Vault
    token: str

    def issue(self, body: dict[str, Any], idempotency_key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        r: httpx.Response = self.api.post("/v1/licences", json=body, headers=headers)
        return r

    def revoke(self, identifier: str, reason: str = "营业执照被依法吊销") -> httpx.Response:
        r: httpx.Response = self.api.post(
            f"/v1/licences/{identifier}/revoke",
            json={"reason": reason},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        return r


def populate(vault: Vault) -> NewClient:
    """What ``yinxin init``, ``dept add``, ``key generate`` and ``client add`` do for one issuing
    department; returns its API client."""
    vault.initialise(actor="test")
    ensure_service_key(vault, actor="test")
    ensure_status_list_key(vault)
    vault.add_department(MARKET, "北京市东城区市场监督管理局", actor="test")
    vault.generate_key(MARKET, SignatureAlgorithm.ES256, actor="test")
    return ClientRegistry(vault).add(MARKET, "licence:issue licence:read licence:manage", actor="test")


@contextmanager
def open_service(database_url: str, backend: KeyBackend, home: Path) -> Iterator[Service]:
    """The app over a fresh vault on *database_url* and *backend* (which the caller closes)."""
    vault = Vault(Database(database_url), backend, load_licence_types())
    try:
        client = populate(vault)
        app = create_app(Settings(home=home, public_url="http://127.0.0.1:8000"), vault=vault)
        # raise_server_exceptions=False: an unhandled error must reach the test as the 500 a client
        # would see, not as an exception in the test.
        with TestClient(app, raise_server_exceptions=False) as api:
            r = api.post(
                "/v1/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client.client_id, client.client_secret),
            )
            assert r.status_code == 200, r.text
            yield Service(api, vault, r.json()["access_token"])
    finally:
        vault.close()


def assert_problem(r: httpx.Response, status: int, *, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """*r* is an RFC 9457 problem with *status*, no stack trace, none of *secrets*."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["type"] == f"urn:yinxin:problem:{body['code']}"
    assert body["detail"]
    # The correlation id is random hex made by the service: it can contain a short secret such as
    # "5432" by chance, so it is left out of the text searched for leaks.
    scanned = r.text.replace(body["correlation_id"], "") if body.get("correlation_id") else r.text
    for leak in ("Traceback", 'File "', "sqlalchemy", "psycopg", "pkcs11.exceptions", *secrets):
        assert leak not in scanned, f"{leak!r} in {r.text}"
    return body


def check_invariants(vault: Vault) -> dict[str, int]:
    """What no fault may break; returns the counts (licences, audit events, status changes)."""
    with vault.db.read() as s:
        licences = s.execute(select(LicenceRecord)).scalars().all()
        events = s.execute(select(AuditEventRecord)).scalars().all()
        changes = s.execute(select(StatusChangeRecord)).scalars().all()
        counters = s.execute(select(SerialCounterRecord)).scalars().all()

    issued = {e.subject: e for e in events if e.action == "licence.issue"}
    by_identifier = {lic.identifier: lic for lic in licences}
    # No licence without its audit event, and no audit event without its licence.
    assert set(issued) == set(by_identifier), set(issued) ^ set(by_identifier)
    assert sum(1 for e in events if e.action == "licence.issue") == len(licences)
    for identifier, event in issued.items():
        details = json.loads(event.details)
        token = by_identifier[identifier].token
        assert details["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()

    # Serials: gapless from 1 in each (type, issuer, year), the counter at the last one taken.
    groups: dict[tuple[str, str, int], list[int]] = {}
    for lic in licences:
        groups.setdefault((lic.type_code, lic.issuer_code, lic.serial_year), []).append(lic.serial_sequence)
    last = {(c.type_code, c.issuer_code, c.year): c.last_sequence for c in counters}
    for group, sequences in groups.items():
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), (group, sorted(sequences))
        assert last[group] == len(sequences), (group, last[group], len(sequences))
    for group, value in last.items():
        assert value == len(groups.get(group, [])), (group, value)

    # Idempotency keys are used once per issuer.
    keys = Counter((lic.issuer_code, lic.idempotency_key) for lic in licences if lic.idempotency_key)
    assert all(n == 1 for n in keys.values()), keys

    # One audit event per status change, and the licence shows the last change.
    changed = Counter(e.subject for e in events if e.action in ("licence.revoke", "licence.suspend"))
    assert changed == Counter(c.identifier for c in changes if c.to_status in ("revoked", "suspended"))
    for change in changes:
        assert by_identifier[change.identifier].status_changed_at is not None

    report = vault.verify_audit()
    assert report.ok, report.problems
    assert report.events_checked == len(events)
    return {"licences": len(licences), "events": len(events), "status_changes": len(changes)}
