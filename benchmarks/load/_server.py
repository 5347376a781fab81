"""The service under test: a data directory, a database, and ``yinxin serve`` on 127.0.0.1.

``Deployment`` prepares a fresh ``YINXIN_HOME`` (software keystore, development passphrase), a
database (SQLite in the home, or a throwaway PostgreSQL database that is dropped afterwards), runs
``yinxin init`` and ``yinxin seed-demo`` (departments and API clients), and starts ``yinxin serve``
with a given number of workers on a random free loopback port, in a session of its own so that its
workers can be accounted for and never outlive the run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

__all__ = ["RATE_LIMIT_ENV", "Deployment", "Server", "postgres_database"]

YINXIN = str(Path(sys.executable).with_name("yinxin"))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

# The per-address limits of POST /v1/verify (docs/serving.md) at the highest values the settings
# accept. The load also spreads its requests over many client addresses (X-Forwarded-For from the
# trusted loopback proxy), so no bucket runs dry: the limiter's work is measured, its refusals not.
RATE_LIMIT_ENV = {
    "YINXIN_VERIFY_RATE_PER_MINUTE": "100000",
    "YINXIN_VERIFY_BURST": "10000",
    "YINXIN_TOKEN_RATE_PER_MINUTE": "100000",
    "YINXIN_TOKEN_BURST": "10000",
}

POSTGRES_ADMIN_URL = os.environ.get(
    "YINXIN_LOAD_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the PostgreSQL server at ``YINXIN_LOAD_POSTGRES_URL``, dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    name = f"yinxin_load_{secrets.token_hex(6)}"
    engine = create_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except OperationalError as exc:
            raise SystemExit(
                f"PostgreSQL is not reachable at {engine.url.render_as_string(hide_password=True)} "
                f"({exc.orig}): set YINXIN_LOAD_POSTGRES_URL, or run with --db sqlite"
            ) from None
        try:
            yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@dataclass(frozen=True)
class APIClient:
    client_id: str
    client_secret: str
    department: str


class Server:
    """One ``yinxin serve`` process (and its workers) on 127.0.0.1."""

    def __init__(self, env: dict[str, str], workers: int, log_path: Path) -> None:
        self.workers = workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("wb") as out:
            # --forwarded-allow-ips: the load generator plays a reverse proxy on loopback, so the
            # X-Forwarded-For it sends names the client (one rate-limit bucket per simulated client).
            self.proc = subprocess.Popen(
                [
                    YINXIN,
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(workers),
                    "--forwarded-allow-ips",
                    "127.0.0.1",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.session_id = self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"yinxin serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.base + "/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"yinxin serve was not ready within {START_TIMEOUT} s:\n{self.output()}")
        # With several workers, each must have built its app (keys loaded, pool open) before the
        # load starts; a burst of parallel readiness probes reaches all of them.
        with httpx.Client(base_url=self.base, timeout=10.0) as client:
            for _ in range(20 * self.workers):
                client.get("/readyz", headers={"Connection": "close"}).raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        # Workers (and multiprocessing's resource tracker) are in the server's own session: make
        # sure none of them outlives the run.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.session_id, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        with suppress(ProcessLookupError):
            os.killpg(self.session_id, signal.SIGKILL)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Deployment:
    """A data directory and database, initialised and seeded, from which servers are started."""

    def __init__(self, db: str, database_url: str | None, keep: bool = False) -> None:
        self.db = db
        self.root = Path(tempfile.mkdtemp(prefix=f"yinxin-load-{db}-"))
        self.keep = keep
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("YINXIN_") and "MULTIPROC" not in k.upper()
        }
        self.env.update(
            YINXIN_HOME=str(self.root / "home"),
            YINXIN_ENVIRONMENT="development",
            **RATE_LIMIT_ENV,
        )
        if database_url is not None:
            self.env["YINXIN_DATABASE_URL"] = database_url
        for command in (["init"], ["seed-demo", "--json"]):
            done = subprocess.run(
                [YINXIN, *command], env=self.env, capture_output=True, text=True, timeout=300, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"yinxin {' '.join(command)} failed:\n{done.stderr}")
        credentials: dict[str, Any] = json.loads(
            (self.root / "home" / "demo-credentials.json").read_text(encoding="utf-8")
        )
        market = credentials["clients"]["market_regulator"]  # scopes include licence:issue
        self.issuer = APIClient(market["client_id"], market["client_secret"], market["department"])
        self._servers = 0

    def serve(self, workers: int) -> Server:
        self._servers += 1
        server = Server(self.env, workers, self.root / f"serve-{self._servers}-w{workers}.log")
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def access_token(base: str, client: APIClient, scope: str = "licence:issue") -> str:
    """A bearer token by the client-credentials grant (RFC 6749 §4.4), fetched once per server."""
    reply = httpx.post(
        base + "/v1/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(client.client_id, client.client_secret),
        timeout=30.0,
    )
    reply.raise_for_status()
    token: str = reply.json()["access_token"]
    return token
