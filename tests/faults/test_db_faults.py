"""The database fails under a running service: PostgreSQL behind a fault proxy, a SQLite file.

PostgreSQL is reached through :class:`tests.faults._proxy.FaultProxy`, which refuses connections
(the database is down), resets the open ones, or cuts one in the middle of an issuance: before the
licence row, before the audit event, before the COMMIT, in the middle of a statement, or just
after the COMMIT went through (the outcome is unknown to the service). For SQLite, another
process holds the write lock, or the file cannot be opened.

What a user notices: a 503 problem that says to retry (never a 500, never the database's
address), a readiness probe that fails while the database is away and passes when it is back,
and a retry with the same Idempotency-Key that issues the licence exactly once. What no fault may
break is checked by :func:`tests.faults._support.check_invariants`.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import event, select, text

from hsm import DEVELOPMENT_PASSPHRASE, SoftwareBackend
from schemas import load_licence_types
from tests.faults._load import Answer, Load
from tests.faults._proxy import Cut
from tests.faults._support import (
    Service,
    assert_problem,
    check_invariants,
    licence_request,
    open_service,
    populate,
)
from tests.verify_api.test_serve_process import Server
from vault import Database, DatabaseError, Vault
from vault._models import LicenceRecord
from verify_api.settings import Settings
from verify_api.wiring import open_vault

if TYPE_CHECKING:
    from tests.faults.conftest import ProxiedPostgres

PASSPHRASE = b"fault-test-keystore"


@pytest.fixture
def keystore(tmp_path: Path) -> Iterator[SoftwareBackend]:
    backend = SoftwareBackend(tmp_path / "keystore", PASSPHRASE)
    yield backend
    backend.close()


def _secrets(pg: ProxiedPostgres) -> tuple[str, ...]:
    """What a client must not learn about the database: where it is and what it is called."""
    name = pg.direct_url.rsplit("/", 1)[1]
    return (pg.password, name, "127.0.0.1", f":{pg.proxy.port}", "5432", "postgres", "psycopg")


def _database_problem(r: httpx.Response, secrets: tuple[str, ...]) -> dict[str, Any]:
    body = assert_problem(r, 503, secrets=secrets)
    assert body["code"] == "database_error"
    assert "database is unavailable" in body["detail"] and "retry" in body["detail"]
    assert "Idempotency-Key" in body["detail"] and body["correlation_id"] in body["detail"]
    assert r.headers["retry-after"] == "5"
    return body


def _issued_once(service: Service, body: dict[str, Any], key: str, *, created: bool | None = True) -> str:
    """Retry *body* with *key*: the licence is issued (or, *created* False, was already), and a
    second retry returns the same licence, not another one. Returns its identifier."""
    r = service.issue(body, key)
    expected = {True: (201,), False: (200,), None: (200, 201)}[created]
    assert r.status_code in expected, r.text
    identifier: str = r.json()["identifier"]
    again = service.issue(body, key)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true", again.text
    assert again.json()["identifier"] == identifier
    return identifier


# ---- PostgreSQL through the proxy -------------------------------------------------------------


@pytest.mark.postgres
def test_while_postgresql_is_down_requests_get_503_readiness_fails_and_the_retry_issues_once(
    proxied_postgres: ProxiedPostgres,
    keystore: SoftwareBackend,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="yinxin")
    pg = proxied_postgres
    secrets = _secrets(pg)
    with open_service(pg.url, keystore, tmp_path / "home") as service:
        first = service.issue(licence_request(0), "first")
        assert first.status_code == 201, first.text
        identifier = first.json()["identifier"]
        assert service.api.get("/readyz").status_code == 200

        pg.proxy.refuse()
        assert pg.proxy.drop_all() >= 1
        body = licence_request(1)
        _database_problem(service.issue(body, "during-the-outage"), secrets)
        _database_problem(service.revoke(identifier), secrets)
        # Verification reads through its own lean path (PreparedRead): the same 503, no 500.
        token = first.json()["token"]
        _database_problem(service.api.post("/v1/verify", json={"token": token}), secrets)
        ready = service.api.get("/readyz")
        problem = assert_problem(ready, 503, secrets=secrets)
        assert problem["database"] == "unavailable" and problem["backend"] == "ok"
        assert "the database is unavailable" in problem["detail"]
        assert service.api.get("/healthz").status_code == 200  # alive: no reason to restart it
        assert pg.proxy.refused >= 3

        pg.proxy.accept()
        assert service.api.get("/readyz").status_code == 200
        # The pool replaced the connections the outage killed: the verification path reads again.
        verdict = service.api.post("/v1/verify", json={"token": token})
        assert verdict.status_code == 200 and verdict.json()["valid"] is True, verdict.text
        _issued_once(service, body, "during-the-outage")
        revoked = service.revoke(identifier)
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked", revoked.text
        counts = check_invariants(service.vault)
    assert (counts["licences"], counts["status_changes"]) == (2, 1)
    assert "database operation failed" in caplog.text  # the operator's log says what happened ...
    assert pg.password not in caplog.text  # ... without the password


# Where an issuance's connection is cut; the transaction is lost each time.
MID_TRANSACTION_CUTS: dict[str, Callable[[], Cut]] = {
    "before the licence row": lambda: Cut(on=b"INSERT INTO licences"),
    "before the audit event": lambda: Cut(on=b"INSERT INTO audit_events"),
    "before the COMMIT": lambda: Cut(on=b"COMMIT", primed_by=b"INSERT INTO licences"),
    "in the middle of the licence row": lambda: Cut(on=b"INSERT INTO licences", keep=60),
}


@pytest.mark.postgres
def test_a_connection_cut_mid_transaction_stores_nothing_and_the_retry_issues_once(
    proxied_postgres: ProxiedPostgres, keystore: SoftwareBackend, tmp_path: Path
) -> None:
    pg = proxied_postgres
    secrets = _secrets(pg)
    with open_service(pg.url, keystore, tmp_path / "home") as service:
        assert service.issue(licence_request(0), "warm-up").status_code == 201
        for n, (where, make_cut) in enumerate(MID_TRANSACTION_CUTS.items(), start=1):
            before = check_invariants(service.vault)
            cut = pg.proxy.arm(make_cut())
            body, key = licence_request(n), f"cut-{n}"
            _database_problem(service.issue(body, key), secrets)
            assert cut.fired.is_set(), where
            assert check_invariants(service.vault) == before, where  # nothing of it was stored
            _issued_once(service, body, key)

        # A connection cut after some bytes of its first packets: here, the next connection opened.
        pg.proxy.drop_all()
        cut = pg.proxy.arm(Cut(after_bytes=40))
        body, key = licence_request(99), "cut-while-connecting"
        _database_problem(service.issue(body, key), secrets)
        assert cut.fired.is_set()
        _issued_once(service, body, key)
        counts = check_invariants(service.vault)
    assert counts["licences"] == len(MID_TRANSACTION_CUTS) + 2


@pytest.mark.postgres
def test_commit_outcome_unknown_the_retry_returns_the_committed_licence(
    proxied_postgres: ProxiedPostgres, keystore: SoftwareBackend, tmp_path: Path
) -> None:
    """The COMMIT reached PostgreSQL and was applied; its answer never reached the service."""
    pg = proxied_postgres
    secrets = _secrets(pg)
    with open_service(pg.url, keystore, tmp_path / "home") as service:
        cut = pg.proxy.arm(Cut(on=b"COMMIT", primed_by=b"INSERT INTO licences", forward=True))
        body = licence_request(1)
        _database_problem(service.issue(body, "unknown-outcome"), secrets)
        assert cut.fired.is_set()
        with Database(pg.direct_url).read() as s:  # past the proxy: what PostgreSQL holds
            stored = s.execute(
                select(LicenceRecord.identifier).where(LicenceRecord.idempotency_key == "unknown-outcome")
            ).scalar_one()
        # The retry finds the licence that was committed: no duplicate, no error.
        assert _issued_once(service, body, "unknown-outcome", created=False) == stored
        assert check_invariants(service.vault)["licences"] == 1

        # A revocation whose COMMIT went through unanswered: the retry says the licence is revoked.
        cut = pg.proxy.arm(Cut(on=b"COMMIT", primed_by=b"INSERT INTO status_changes", forward=True))
        _database_problem(service.revoke(stored), secrets)
        assert cut.fired.is_set()
        again = service.revoke(stored)
        problem = assert_problem(again, 409, secrets=secrets)
        assert problem["code"] == "illegal_transition" and "is revoked" in problem["detail"]
        assert [c.to_status for c in service.vault.status_history(stored)] == ["revoked"]
        counts = check_invariants(service.vault)
    assert (counts["licences"], counts["status_changes"]) == (1, 1)


def _database_answers(answers: list[Answer], secrets: tuple[str, ...]) -> list[Answer]:
    """Every answer is a licence or a 503 problem naming the database; returns the 503s."""
    failed = []
    for answer in answers:
        assert answer.status in (201, 503), answer
        if answer.status == 503:
            assert answer.problem is not None and answer.problem["code"] == "database_error", answer
            for secret in secrets:
                assert secret not in str(answer.problem)
            failed.append(answer)
    return failed


@pytest.mark.postgres
def test_connections_reset_under_concurrent_issuance(
    proxied_postgres: ProxiedPostgres, keystore: SoftwareBackend, tmp_path: Path
) -> None:
    pg = proxied_postgres
    with open_service(pg.url, keystore, tmp_path / "home") as service:
        with Load(service, threads=4, name="pg") as load:
            load.wait_for(6)
            for _ in range(3):
                pg.proxy.drop_all()  # PostgreSQL restarts, say: every connection is reset at once
                time.sleep(0.05)
            reset_at = time.monotonic()
            load.wait_for(6, since=reset_at)
        failed = _database_answers(load.answers, _secrets(pg))
        # Those that failed are retried: issued now, or found committed (the COMMIT went through).
        for answer in failed:
            _issued_once(service, answer.body, answer.key, created=None)
        counts = check_invariants(service.vault)
    assert counts["licences"] == len({a.key for a in load.answers})


@pytest.mark.postgres
def test_a_key_backend_failure_after_the_connection_died_is_503_not_500(
    proxied_postgres: ProxiedPostgres,
    keystore: SoftwareBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two faults in one issuance: the connection dies while the licence is being signed, and the
    signing fails. The rollback cannot reach the database; the answer is still the 503 of the key
    backend, and PostgreSQL drops the transaction with the connection.

    The wrapper only chooses the moment: the reset connections and the failed signature are real."""
    pg = proxied_postgres
    with open_service(pg.url, keystore, tmp_path / "home") as service:
        assert service.issue(licence_request(0), "first").status_code == 201
        keystore.close()  # the keystore is gone: signing fails
        real_sign_many = keystore.sign_many  # issuance signs its batch in one call
        reset: list[int] = []

        def sign_as_the_connection_dies(*args: Any, **kwargs: Any) -> list[bytes]:
            reset.append(pg.proxy.drop_all())  # the issuance's transaction is open on one of them
            return real_sign_many(*args, **kwargs)

        monkeypatch.setattr(keystore, "sign_many", sign_as_the_connection_dies)
        r = service.issue(licence_request(1), "double-fault")
        assert reset and reset[0] >= 1
        problem = assert_problem(r, 503, secrets=_secrets(pg))
        assert problem["code"] == "backend_unavailable" and "key backend" in problem["detail"]
    reopened = SoftwareBackend(tmp_path / "keystore", PASSPHRASE)
    checker = Vault(Database(pg.direct_url), reopened, load_licence_types())
    try:
        assert check_invariants(checker)["licences"] == 1
    finally:
        checker.close()
        reopened.close()


# ---- SQLite ------------------------------------------------------------------------------------


def _short_lock_wait(db: Database) -> None:
    """Wait 0.2 s, not the configured 30, for another writer's lock (a test need not wait 30 s
    to see what a locked database answers); applies to connections opened from now on."""

    @event.listens_for(db.engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=200")

    db.engine.dispose()


def test_a_locked_sqlite_database_answers_503_and_the_retry_issues_once(
    keystore: SoftwareBackend, tmp_path: Path
) -> None:
    path = tmp_path / "yinxin.db"
    with open_service(f"sqlite:///{path}", keystore, tmp_path / "home") as service:
        _short_lock_wait(service.vault.db)
        first = service.issue(licence_request(0), "first")
        assert first.status_code == 201
        identifier = first.json()["identifier"]

        other = sqlite3.connect(path, isolation_level=None)  # another process: a bulk import, say
        try:
            other.execute("BEGIN EXCLUSIVE")
            secrets = (str(tmp_path), "sqlite", "yinxin.db", "locked")
            body = licence_request(1)
            _database_problem(service.issue(body, "while-locked"), secrets)
            _database_problem(service.revoke(identifier), secrets)
            # Readers are not blocked by a writer (WAL): still ready, and licences still verify.
            assert service.api.get("/readyz").status_code == 200
            verdict = service.api.post("/v1/verify", json={"token": first.json()["token"]})
            assert verdict.status_code == 200 and verdict.json()["valid"] is True
        finally:
            other.execute("ROLLBACK")
            other.close()
        _issued_once(service, body, "while-locked")
        assert service.revoke(identifier).status_code == 200
        counts = check_invariants(service.vault)
    assert (counts["licences"], counts["status_changes"]) == (2, 1)


def test_a_sqlite_database_that_cannot_be_opened_answers_503_until_it_is_back(
    keystore: SoftwareBackend, tmp_path: Path
) -> None:
    path = tmp_path / "yinxin.db"
    with open_service(f"sqlite:///{path}", keystore, tmp_path / "home") as service:
        assert service.issue(licence_request(0), "first").status_code == 201
        # The file is replaced by something SQLite cannot open (running as root, a chmod would not
        # stop us). Open connections keep the old file; the pool is emptied so that the next
        # request opens the path anew, as a newly started worker would.
        os.rename(path, tmp_path / "elsewhere.db")
        path.mkdir()
        service.vault.db.engine.dispose()
        secrets = (str(tmp_path), "sqlite", "yinxin.db", "unable to open")
        body = licence_request(1)
        _database_problem(service.issue(body, "while-unopenable"), secrets)
        ready = service.api.get("/readyz")
        problem = assert_problem(ready, 503, secrets=secrets)
        assert problem["database"] == "unavailable" and problem["backend"] == "ok"

        path.rmdir()
        os.rename(tmp_path / "elsewhere.db", path)
        assert service.api.get("/readyz").status_code == 200
        _issued_once(service, body, "while-unopenable")
        assert check_invariants(service.vault)["licences"] == 2


# ---- a real `yinxin serve` process -------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_a_running_yinxin_serve_rides_out_a_postgresql_outage(
    proxied_postgres: ProxiedPostgres, tmp_path: Path
) -> None:
    """The server as an operator runs it (uvicorn, its own process) on PostgreSQL through the
    proxy: it answers 503 while the database is down, is ready again by itself when it is back,
    never exits, and shows the database password to no one."""
    pg = proxied_postgres
    home = tmp_path / "home"
    with open_vault(
        Settings(home=home, database_url=pg.direct_url, environment="development"), migrate=True
    ) as v:
        client = populate(v)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("YINXIN_") and "MULTIPROC" not in k.upper()
    }
    env.update(
        YINXIN_HOME=str(home),
        YINXIN_ENVIRONMENT="development",
        YINXIN_DATABASE_URL=pg.url,
        YINXIN_LOG_LEVEL="INFO",
    )
    server = Server(env, tmp_path)
    try:
        server.wait_ready()
        token = httpx.post(
            server.base + "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client.client_id, client.client_secret),
            timeout=10,
        ).json()["access_token"]

        def issue(n: int) -> httpx.Response:
            return httpx.post(
                server.base + "/v1/licences",
                json=licence_request(n),
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"serve-{n}"},
                timeout=30,
            )

        assert issue(0).status_code == 201
        pg.proxy.refuse()
        pg.proxy.drop_all()
        _database_problem(issue(1), _secrets(pg))
        problem = assert_problem(httpx.get(server.base + "/readyz", timeout=10), 503, secrets=_secrets(pg))
        assert problem["database"] == "unavailable"
        assert httpx.get(server.base + "/healthz", timeout=10).status_code == 200

        pg.proxy.accept()
        deadline = time.monotonic() + 5
        while httpx.get(server.base + "/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "not ready 5 s after the database came back"
            time.sleep(0.1)
        first, again = issue(1), issue(1)
        assert first.status_code == 201 and again.status_code == 200
        assert again.json()["identifier"] == first.json()["identifier"]
        assert server.proc.poll() is None  # it never exited
    finally:
        server.stop()
        server.leftover_processes()
    logged = server.output() + (home / "yinxin.log").read_text()
    assert "database operation failed" in logged
    assert pg.password not in logged and "Traceback" not in logged
    checker = Vault(
        Database(pg.direct_url),
        SoftwareBackend(home / "keystore", DEVELOPMENT_PASSPHRASE),
        load_licence_types(),
    )
    try:
        assert check_invariants(checker)["licences"] == 2
    finally:
        checker.close()
        checker.backend.close()


def test_a_silent_postgresql_host_fails_in_seconds_not_never() -> None:
    """A host that accepts the TCP connection and then says nothing (a hung server, a black-holed
    route behind a NAT) costs libpq's connect_timeout, which the Database sets to 5 s, not for ever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        db = Database(f"postgresql://yinxin:secret-pw@127.0.0.1:{port}/yinxin")
        started = time.monotonic()
        with pytest.raises(DatabaseError) as caught, db.read() as session:
            session.execute(text("SELECT 1"))
        elapsed = time.monotonic() - started
        db.engine.dispose()
    assert 4.0 <= elapsed < 10.0, elapsed
    assert "secret-pw" not in str(caught.value)
