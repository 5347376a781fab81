"""``yinxin serve`` as an operator runs it: a real uvicorn process on 127.0.0.1, stopped with SIGTERM.

These tests need the health routes in ``verify_api.routes.ROUTERS`` and ``serve`` in the CLI (the
app factory's wiring). The argument checks of ``cmd_serve`` run in-process as well.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from schemas.errors import ConfigurationError, InvalidInput
from verify_api._serve import cmd_serve
from verify_api.settings import Settings

if TYPE_CHECKING:
    from tests.conftest import SoftHSMToken

YINXIN = str(Path(sys.executable).with_name("yinxin"))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: no YINXIN_* from the caller, a fresh home, development keystore."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("YINXIN_") and "MULTIPROC" not in k.upper()
    }
    clean.update(
        YINXIN_HOME=str(tmp_path / "home"), YINXIN_ENVIRONMENT="development", YINXIN_LOG_LEVEL="INFO"
    )
    return clean


@pytest.fixture
def initialised(env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run([YINXIN, "init"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return env


class Server:
    def __init__(self, env: dict[str, str], tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"serve-{self.port}.log"
        with self.log.open("wb") as out:
            # A session of its own, so that the workers can be found (and never outlive the test).
            self.proc = subprocess.Popen(
                [YINXIN, "serve", "--port", str(self.port), *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"yinxin serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"yinxin serve did not answer /healthz within {START_TIMEOUT} s:\n{self.output()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
                pytest.fail(f"yinxin serve did not stop on SIGTERM within {STOP_TIMEOUT} s")
        return self.proc.returncode

    def leftover_processes(self) -> bool:
        """Whether the server's process group (its workers, multiprocessing's resource tracker)
        is still there a few seconds after the server exited; if so it is killed."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return False
            time.sleep(0.1)
        os.killpg(self.proc.pid, signal.SIGKILL)
        return True


@pytest.fixture
def start(tmp_path: Path) -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()
        server.leftover_processes()


def healthz_count(base: str) -> float:
    for line in httpx.get(base + "/metrics", timeout=5).text.splitlines():
        if line.startswith('yinxin_http_requests_total{method="GET",route="/healthz",status="200"} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_health_readiness_and_metrics_then_stops_on_sigterm(
    initialised: dict[str, str], tmp_path: Path, start: list[Server], workers: int
) -> None:
    env = dict(initialised)
    metrics_dir = tmp_path / "prometheus"
    if workers > 1:  # several workers: their metrics merged through prometheus_client's files
        metrics_dir.mkdir()
        (metrics_dir / "counter_99999.db").write_bytes(b"stale")  # a previous run's: serve removes it
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    server = Server(env, tmp_path, "--workers", str(workers))
    start.append(server)
    server.wait_ready()

    ready = httpx.get(server.base + "/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "backend": "ok"}
    assert ready.headers["x-content-type-options"] == "nosniff"
    assert ready.headers["cache-control"] == "no-store"
    assert "server" not in ready.headers and "date" in ready.headers

    metrics = httpx.get(server.base + "/metrics", timeout=5)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'yinxin_http_requests_total{method="GET",route="/readyz",status="200"}' in metrics.text

    # Ten requests on ten connections (spread over the workers), all counted in one scrape.
    before = healthz_count(server.base)
    for _ in range(10):
        assert httpx.get(server.base + "/healthz", timeout=5).status_code == 200
    deadline = time.monotonic() + 5  # a worker records a request just after its last byte is sent
    while healthz_count(server.base) != before + 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert healthz_count(server.base) == before + 10

    if workers > 1:
        files = {p.name for p in metrics_dir.glob("*.db")}
        assert "counter_99999.db" not in files
        assert len({name.rsplit("_", 1)[1] for name in files if name.startswith("counter_")}) == workers

    # A graceful stop; uvicorn then re-raises the SIGTERM it caught, so the status may say so.
    assert server.stop() in (0, -signal.SIGTERM)
    assert not server.leftover_processes(), "worker processes outlived the server"
    output = server.output()
    assert "Traceback" not in output
    assert f"serving http://127.0.0.1:{server.port} with {workers} worker" in output


@pytest.mark.slow
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
    initialised: dict[str, str], tmp_path: Path, start: list[Server]
) -> None:
    server = Server(initialised, tmp_path)
    start.append(server)
    server.wait_ready()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        # Headers only: the server must answer without waiting for the 1 MB it was promised.
        sock.sendall(
            b"POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1048576\r\n\r\n"
        )
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after the answer
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    assert b'"code":"input_too_large"' in body


@pytest.mark.slow
def test_serve_one_line_errors(initialised: dict[str, str], env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        done = subprocess.run(
            [YINXIN, "serve", "--port", port], env=initialised, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "already in use" in done.stderr
    assert "Traceback" not in done.stderr

    done = subprocess.run(
        [YINXIN, "serve", "--workers", "33"], env=initialised, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--workers must be between 1 and 32" in done.stderr

    fresh = dict(env, YINXIN_HOME=str(tmp_path / "uninitialised"))
    done = subprocess.run(
        [YINXIN, "serve", "--port", str(free_port())], env=fresh, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "yinxin init" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.softhsm
def test_serve_with_a_refused_pin_exits_78_and_says_so(
    env: dict[str, str], softhsm_token: SoftHSMToken, tmp_path: Path
) -> None:
    """A PIN the token refuses is a configuration fault: exit 78 (EX_CONFIG), not 3, so that a
    supervisor told `RestartPreventExitStatus=78` stops instead of spending login attempts."""
    hsm_env = dict(
        env,
        YINXIN_HSM="pkcs11",
        YINXIN_PKCS11_MODULE=softhsm_token.module,
        YINXIN_PKCS11_TOKEN_LABEL=softhsm_token.label,
        YINXIN_PKCS11_PIN=softhsm_token.pin,
        SOFTHSM2_CONF=str(softhsm_token.conf_path),
    )
    done = subprocess.run([YINXIN, "init"], env=hsm_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    wrong_pin = "wrong-pin-5550123"
    done = subprocess.run(
        [YINXIN, "serve", "--port", str(free_port())],
        env=dict(hsm_env, YINXIN_PKCS11_PIN=wrong_pin),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "PIN incorrect" in done.stderr
    log = (
        (tmp_path / "home" / "yinxin.log").read_text(encoding="utf-8")
        if (tmp_path / "home" / "yinxin.log").exists()
        else ""
    )
    for text in (done.stderr, done.stdout, log):
        assert wrong_pin not in text and softhsm_token.pin not in text
        assert "Traceback" not in text


def _args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {"host": "127.0.0.1", "port": 8000, "workers": 1, "forwarded_allow_ips": None}
    values.update(overrides)
    return argparse.Namespace(**values)


def test_cmd_serve_refuses_bad_arguments_before_starting(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", environment="development")
    for workers in (0, 33, -1):
        with pytest.raises(InvalidInput, match="--workers"):
            cmd_serve(_args(workers=workers), settings)
    with pytest.raises(InvalidInput, match="--port"):
        cmd_serve(_args(port=70000), settings)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(InvalidInput, match="already in use") as caught:
            cmd_serve(_args(port=busy.getsockname()[1]), settings)
    assert caught.value.exit_code == 2
    with pytest.raises(ConfigurationError, match="yinxin init"):
        cmd_serve(_args(port=free_port()), settings)
    with pytest.raises(ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR"):
        cmd_serve(
            _args(port=free_port()),
            Settings(home=tmp_path / "home", prometheus_multiproc_dir=tmp_path / "missing"),
        )
