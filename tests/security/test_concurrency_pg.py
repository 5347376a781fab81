"""Races on a shared database: many writers at once, each with a connection of its own.

Every worker is a thread with its own :class:`Vault` over its own engine (so its own database
connection, opened before the start), released together by a barrier so the calls really
overlap. What a user would notice is asserted, never timing:

- 64 revocations of one licence, through the vault API and over HTTP (a real ``yinxin serve``
  with two workers): exactly one status change and one ``licence.revoke`` event; the other 63
  are refused alike, as ``docs/api.md`` documents illegal transitions: 409 problem+json
  ``illegal_transition`` over HTTP, ``IllegalTransition`` from the vault (no 500, no 503);
- 16 issuers at once (PostgreSQL and SQLite): distinct, gapless serials, the counter at the
  last, one audit event each, a verifying chain;
- key rotations during issuance: each rotation retires the key before it (one active key per
  department), every token verifies through the vault and, independently, with joserfc from
  the published JWKS, and each token's key was active when its licence was committed (ordered
  by the audit chain, which every commit extends under one lock). Before the fix in
  ``KeyRegistry.generate`` / ``Vault.issue_batch``, PostgreSQL showed two active keys after
  concurrent rotations and licences signed by a key retired events earlier.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import KeySet
from pydantic import SecretStr
from sqlalchemy import func, select

from hsm import KeyBackend, SignatureAlgorithm
from hsm._software import SoftwareBackend
from schemas import LicenceCreate, LicenceIdentifier, load_licence_types
from schemas.errors import IllegalTransition
from signing import jwks_document
from tests._db import create_postgres_database, database_url, drop_postgres_database  # noqa: F401
from tests.verify_api.test_serve_process import Server
from vault import BulkItem, ClientRegistry, Database, Licence, NewClient, Vault
from vault._models import AuditEventRecord, KeyRecord, SerialCounterRecord, StatusChangeRecord
from verify_api.settings import Settings
from verify_api.wiring import open_vault as wired_vault

MARKET = "11110101000000123B"
BUSINESS = "11100000000013101Q001"
REVOKERS = 64
ISSUERS = 16
TIMEOUT = 120.0
PASSPHRASE = "concurrency-test-passphrase"


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[KeyBackend]:
    keystore = SoftwareBackend(tmp_path / "keystore", PASSPHRASE.encode())
    yield keystore
    keystore.close()


def open_vault(url: str, backend: KeyBackend) -> Vault:
    return Vault(Database(url), backend, load_licence_types())


@pytest.fixture
def market(backend: KeyBackend) -> Iterator[Callable[[str], Vault]]:
    """A vault on *url* with the market regulator registered and holding an ES256 key."""
    opened: list[Vault] = []

    def make(url: str) -> Vault:
        vault = open_vault(url, backend)
        opened.append(vault)
        vault.initialise(actor="test")
        vault.add_department(MARKET, "北京市东城区市场监督管理局", actor="test")
        vault.generate_key(MARKET, SignatureAlgorithm.ES256, actor="test")
        return vault

    yield make
    for vault in opened:
        vault.close()


def request(n: int) -> LicenceCreate:
    body = dict(load_licence_types().get(BUSINESS).example)
    body["holder"] = {**body["holder"], "name": f"并发测试个体户{n}"}
    return LicenceCreate.model_validate(body)


def run_together(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` for i in 0..count-1 on *count* threads released together; each result or
    the exception it raised, by index."""
    barrier = threading.Barrier(count)
    outcomes: list[object] = [None] * count

    def worker(i: int) -> None:
        barrier.wait(timeout=TIMEOUT)
        try:
            outcomes[i] = work(i)
        except BaseException as exc:  # kept and asserted on by the caller
            outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a worker hung (deadlock?)"
    return outcomes


def workers(url: str, backend: KeyBackend, count: int) -> list[Vault]:
    """*count* vaults, each with its own engine and an open connection in its pool."""
    vaults = [open_vault(url, backend) for _ in range(count)]
    for vault in vaults:
        vault.departments()  # connect now, not inside the race
    return vaults


# ---- 64 revocations of one licence ------------------------------------------------------------


@pytest.mark.postgres
def test_64_concurrent_revocations_make_exactly_one_transition(
    postgres_url: str, backend: KeyBackend, market: Callable[[str], Vault]
) -> None:
    vault = market(postgres_url)
    licence = vault.issue(request(1), actor="test").licence
    vaults = workers(postgres_url, backend, REVOKERS)
    try:
        outcomes = run_together(
            REVOKERS,
            lambda i: vaults[i].revoke(licence.identifier, reason=f"并发吊销 {i}", actor=f"officer-{i}"),
        )
    finally:
        for v in vaults:
            v.close()

    won = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Licence)]
    assert len(won) == 1, [repr(o) for o in outcomes if not isinstance(o, IllegalTransition)][:5]
    winner, revoked = won[0]
    assert revoked.status == "revoked"
    refused = [o for o in outcomes if not isinstance(o, Licence)]
    assert len(refused) == REVOKERS - 1
    # Every loser gets the same answer: the documented conflict, not a database error.
    assert all(type(o) is IllegalTransition for o in refused), {type(o).__name__ for o in refused}
    assert {(o.code, o.http_status, str(o)) for o in refused if isinstance(o, IllegalTransition)} == {
        (
            "illegal_transition",
            409,
            f"licence {licence.identifier} is revoked; revocation is final and it cannot be revoked",
        )
    }

    with vault.db.read() as s:
        changes = s.execute(
            select(StatusChangeRecord.reason).where(StatusChangeRecord.identifier == licence.identifier)
        ).all()
        events = s.execute(
            select(AuditEventRecord.actor).where(
                AuditEventRecord.action == "licence.revoke", AuditEventRecord.subject == licence.identifier
            )
        ).all()
    assert [c.reason for c in changes] == [f"并发吊销 {winner}"]
    assert [e.actor for e in events] == [f"officer-{winner}"]
    assert vault.verify_audit().ok
    verdict = vault.verify(licence.token)
    assert not verdict.valid and verdict.status == "revoked"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, Settings, NewClient]]:
    """``yinxin serve --workers 2`` on a PostgreSQL database of its own, with the market regulator,
    its key and an API client allowed to issue and manage its licences (made in-process: cheaper
    than three CLI runs)."""
    url = create_postgres_database()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("YINXIN_") and "MULTIPROC" not in k.upper()
    }
    env.update(
        YINXIN_HOME=str(tmp_path / "home"),
        YINXIN_ENVIRONMENT="development",
        YINXIN_DATABASE_URL=url,
        YINXIN_KEYSTORE_PASSPHRASE=PASSPHRASE,
    )
    settings = Settings(
        home=tmp_path / "home",
        database_url=url,
        environment="development",
        hsm="software",
        keystore_passphrase=SecretStr(PASSPHRASE),
    )
    server: Server | None = None
    try:
        with wired_vault(settings, migrate=True) as vault:
            vault.initialise(actor="test")
            vault.add_department(MARKET, "北京市东城区市场监督管理局", actor="test")
            vault.generate_key(MARKET, SignatureAlgorithm.ES256, actor="test")
            client = ClientRegistry(vault).add(MARKET, "licence:issue licence:manage", actor="test")
        server = Server(env, tmp_path, "--workers", "2")
        server.wait_ready()
        yield server, settings, client
    finally:
        if server is not None:
            server.stop()
            server.leftover_processes()
        drop_postgres_database(url)


@pytest.mark.postgres
@pytest.mark.slow
def test_64_concurrent_revocations_over_http_answer_one_200_and_63_conflicts(
    served: tuple[Server, Settings, NewClient],
) -> None:
    server, settings, client = served
    token = httpx.post(
        server.base + "/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.client_secret),
        timeout=30,
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    issued = httpx.post(
        server.base + "/v1/licences", json=request(1).model_dump(mode="json"), headers=headers, timeout=30
    )
    assert issued.status_code == 201, issued.text
    identifier = issued.json()["identifier"]

    with httpx.Client(
        base_url=server.base,
        headers=headers,
        timeout=TIMEOUT,
        limits=httpx.Limits(max_connections=REVOKERS, max_keepalive_connections=REVOKERS),
    ) as http:
        http.get("/healthz")

        def revoke(i: int) -> httpx.Response:
            return http.post(f"/v1/licences/{identifier}/revoke", json={"reason": f"并发吊销 {i}"})

        outcomes = run_together(REVOKERS, revoke)

    responses = [o for o in outcomes if isinstance(o, httpx.Response)]
    assert len(responses) == REVOKERS, [repr(o) for o in outcomes if not isinstance(o, httpx.Response)][:3]
    assert Counter(r.status_code for r in responses) == {200: 1, 409: REVOKERS - 1}
    ok = next(r for r in responses if r.status_code == 200)
    assert ok.json()["status"] == "revoked"
    conflicts = [r for r in responses if r.status_code == 409]
    assert {r.headers["content-type"] for r in conflicts} == {"application/problem+json"}
    assert {(r.json()["type"], r.json()["code"]) for r in conflicts} == {
        ("urn:yinxin:problem:illegal_transition", "illegal_transition")
    }
    verdict = httpx.post(server.base + "/v1/verify", json={"token": issued.json()["token"]}, timeout=30)
    assert verdict.json()["valid"] is False and verdict.json()["status"] == "revoked"

    with wired_vault(settings) as vault:
        revocations = [e for e in vault.audit_events(subject=identifier) if e.action == "licence.revoke"]
        report = vault.verify_audit()
    assert len(revocations) == 1
    assert report.ok, report.problems


# ---- 16 issuers ---------------------------------------------------------------------------------


def test_16_concurrent_issuers_get_unique_gapless_serials(
    database_url: str,  # noqa: F811 (the fixture imported above)
    backend: KeyBackend,
    market: Callable[[str], Vault],
) -> None:
    vault = market(database_url)
    vaults = workers(database_url, backend, ISSUERS)

    def issue(i: int) -> list[str]:
        # One licence at a time, then a batch: both paths allocate from the same counter.
        single = [
            vaults[i].issue(request(100 * i + n), actor=f"issuer-{i}").licence.identifier for n in range(3)
        ]
        batch = vaults[i].issue_batch(
            [BulkItem(n, request(100 * i + 10 + n), f"batch-{i}-{n}") for n in range(4)], actor=f"issuer-{i}"
        )
        assert all(o.error is None for o in batch), [o.error for o in batch]
        return single + [str(o.identifier) for o in batch]

    try:
        outcomes = run_together(ISSUERS, issue)
    finally:
        for v in vaults:
            v.close()
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert not failures, failures[:3]
    identifiers = [i for o in outcomes if isinstance(o, list) for i in o]
    total = ISSUERS * 7
    assert len(identifiers) == len(set(identifiers)) == total
    sequences = sorted(LicenceIdentifier.parse(i).sequence for i in identifiers)
    assert sequences == list(range(1, total + 1))  # no serial twice, no hole
    with vault.db.read() as s:
        assert s.execute(select(SerialCounterRecord.last_sequence)).scalar_one() == total
        events = Counter(
            s.execute(
                select(AuditEventRecord.subject).where(AuditEventRecord.action == "licence.issue")
            ).scalars()
        )
    assert events == Counter(identifiers)
    report = vault.verify_audit()
    assert report.ok, report.problems


# ---- key rotation during issuance ------------------------------------------------------------------

ROTATORS = 2
ROTATIONS = 3
ROTATING_ISSUERS = 10
LICENCES_EACH = 6


def test_key_rotation_during_issuance_every_token_verifies_with_a_key_active_at_the_time(
    database_url: str,  # noqa: F811 (the fixture imported above)
    backend: KeyBackend,
    market: Callable[[str], Vault],
) -> None:
    vault = market(database_url)
    count = ROTATORS + ROTATING_ISSUERS
    vaults = workers(database_url, backend, count)

    def work(i: int) -> object:
        if i < ROTATORS:
            return [
                vaults[i].rotate_key(MARKET, officer=None, actor=f"rotator-{i}").kid for _ in range(ROTATIONS)
            ]
        return [
            vaults[i].issue(request(100 * i + n), actor=f"issuer-{i}").licence for n in range(LICENCES_EACH)
        ]

    try:
        outcomes = run_together(count, work)
    finally:
        for v in vaults:
            v.close()
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert not failures, failures[:3]
    licences = [lic for o in outcomes[ROTATORS:] if isinstance(o, list) for lic in o]
    assert len(licences) == ROTATING_ISSUERS * LICENCES_EACH

    # Each rotation retired the key before it: one chain of keys, one active at the end.
    with vault.db.read() as s:
        generated = [
            (e.seq, e.subject, json.loads(e.details))
            for e in s.execute(
                select(AuditEventRecord)
                .where(AuditEventRecord.action == "key.generate")
                .order_by(AuditEventRecord.seq)
            ).scalars()
            if json.loads(e.details).get("department") == MARKET
        ]
        issued_at = dict(
            s.execute(
                select(AuditEventRecord.subject, AuditEventRecord.seq).where(
                    AuditEventRecord.action == "licence.issue"
                )
            ).all()
        )
        active = s.execute(
            select(func.count())
            .select_from(KeyRecord)
            .where(KeyRecord.department_code == MARKET, KeyRecord.state == "active")
        ).scalar_one()
    assert len(generated) == 1 + ROTATORS * ROTATIONS
    assert active == 1
    for (_, previous, _), (_, kid, details) in itertools.pairwise(generated):
        assert details["retired"] == [previous], f"{kid} retired {details['retired']}, not [{previous}]"

    # The key of each token was active when its licence was committed: generated before the
    # licence's issue event, retired (by the next key.generate) after it.
    active_from = {kid: seq for seq, kid, _ in generated}
    active_until: dict[str, int] = {}
    for seq, _, details in generated:
        for old in details["retired"]:
            active_until.setdefault(old, seq)  # retired by the first rotation that names it
    for lic in licences:
        seq = issued_at[lic.identifier]
        assert active_from[lic.kid] < seq < active_until.get(lic.kid, seq + 1), (
            f"{lic.identifier} (event {seq}) was signed by {lic.kid}, active only from event "
            f"{active_from[lic.kid]} to {active_until.get(lic.kid)}"
        )

    # Every token verifies: through a fresh vault, and with joserfc from the published JWKS.
    checker = open_vault(database_url, backend)
    try:
        keyset = KeySet.import_key_set(jwks_document(checker.trust_store(refresh=True)))  # type: ignore[arg-type]
        for lic in licences:
            verdict = checker.verify(lic.token)
            assert verdict.valid, (lic.identifier, verdict.reasons)
            parsed = jws.deserialize_compact(lic.token, keyset, algorithms=["ES256"])
            assert parsed.protected["kid"] == lic.kid
            assert json.loads(parsed.payload)["jti"] == lic.identifier
        report = checker.verify_audit()
        assert report.ok, report.problems
    finally:
        checker.close()
