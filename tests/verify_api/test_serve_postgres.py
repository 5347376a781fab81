"""Several ``yinxin serve`` workers on one PostgreSQL database, over real HTTP on 127.0.0.1.

Issues licences concurrently through both workers and checks what the database guarantees:
distinct, gapless serials, every licence verifiable, an intact audit chain.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from schemas import LicenceIdentifier, load_licence_types
from tests._db import create_postgres_database, drop_postgres_database
from tests.verify_api.test_serve_process import YINXIN, Server

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BUSINESS = "11100000000013101Q001"


@pytest.fixture
def pg_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    import os

    url = create_postgres_database()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("YINXIN_") and "MULTIPROC" not in k.upper()
    }
    env.update(YINXIN_HOME=str(tmp_path / "home"), YINXIN_ENVIRONMENT="development", YINXIN_DATABASE_URL=url)
    try:
        for command in (["init"], ["seed-demo", "--json"]):
            done = subprocess.run(
                [YINXIN, *command], env=env, capture_output=True, text=True, timeout=120, check=False
            )
            assert done.returncode == 0, done.stderr
        yield env
    finally:
        drop_postgres_database(url)


def test_two_workers_on_postgresql_issue_gapless_serials(pg_env: dict[str, str], tmp_path: Path) -> None:
    server = Server(pg_env, tmp_path, "--workers", "2")
    try:
        server.wait_ready()
        creds = json.loads((Path(pg_env["YINXIN_HOME"]) / "demo-credentials.json").read_text())
        market = creds["clients"]["market_regulator"]
        token = httpx.post(
            server.base + "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(market["client_id"], market["client_secret"]),
            timeout=10,
        ).json()["access_token"]
        body = dict(load_licence_types().get(BUSINESS).example)

        def issue(n: int) -> dict[str, str]:
            request = {**body, "holder": {**body["holder"], "name": f"并发测试{n}"}}
            r = httpx.post(
                server.base + "/v1/licences",
                json=request,
                timeout=30,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201, r.text
            result: dict[str, str] = r.json()
            return result

        with ThreadPoolExecutor(max_workers=8) as pool:
            issued = list(pool.map(issue, range(24)))
        sequences = sorted(LicenceIdentifier.parse(x["identifier"]).sequence for x in issued)
        first = sequences[0]
        assert sequences == list(range(first, first + 24))  # distinct and gapless across both workers
        for x in issued[:6]:
            verdict = httpx.post(server.base + "/v1/verify", json={"token": x["token"]}, timeout=10).json()
            assert verdict["valid"] is True
        assert httpx.get(server.base + "/readyz", timeout=10).json()["status"] == "ready"
    finally:
        server.stop()
        server.leftover_processes()
    audit = subprocess.run(
        [YINXIN, "audit", "verify", "--json"],
        env=pg_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert audit.returncode == 0 and json.loads(audit.stdout)["valid"] is True
