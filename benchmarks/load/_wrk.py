"""Drive wrk (https://github.com/wg/wrk, Debian package ``wrk``) with ``wrk_driver.lua``.

wrk is a C event loop: one thread keeps 64 keep-alive connections busy for a few per cent of a
core, so on a 2-core machine it leaves the server almost everything. Its latencies are measured
per request from the moment the request is written (closed loop: a connection sends its next
request when the previous answer arrived).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.load._spec import LoadResult, RequestSpec

__all__ = ["find_wrk", "run_wrk"]

DRIVER = Path(__file__).with_name("wrk_driver.lua")
_MARK = "YINXIN-JSON "


def find_wrk() -> str | None:
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    """A Lua string literal for *text*: printable ASCII as is, everything else as decimal escapes."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if 32 <= byte < 127 and char not in '"\\':
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _lua_spec(spec: RequestSpec, limit: int, run_id: str) -> str:
    headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in spec.headers.items())
    clients = ", ".join(_lua_string(c) for c in spec.clients)
    lines = [
        "return {",
        f"  method = {_lua_string(spec.method)},",
        f"  path = {_lua_string(spec.path)},",
        f"  headers = {{{headers}}},",
        f"  clients = {{{clients}}},",
        f"  idempotency = {'true' if spec.idempotency else 'false'},",
        f"  run_id = {_lua_string(run_id)},",
        f"  limit = {limit},",
    ]
    if spec.expect is not None:
        lines.append(f"  expect = {_lua_string(spec.expect)},")
    if spec.body_template is not None:
        lines.append(f"  body_prefix = {_lua_string(spec.body_template[0])},")
        lines.append(f"  body_suffix = {_lua_string(spec.body_template[1])},")
    elif spec.bodies:
        lines.append(f"  bodies = {{{', '.join(_lua_string(body) for body in spec.bodies)}}},")
    elif spec.body is not None:
        lines.append(f"  body = {_lua_string(spec.body)},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def run_wrk(
    wrk: str,
    base: str,
    spec: RequestSpec,
    *,
    connections: int,
    duration: float,
    requests: int,
    threads: int,
    run_id: str,
    timeout_s: float = 10.0,
) -> LoadResult:
    """One wrk run, bounded by *duration* seconds and about *requests* answers (0: no count bound)."""
    threads = max(1, min(threads, connections))
    # Each thread stops the run when it alone has seen its share of the count; the others stop
    # within wrk's 100 ms stop check, so a count-bounded run ends at about *requests*.
    limit = -(-requests // threads) if requests > 0 else 0
    with tempfile.TemporaryDirectory(prefix="yinxin-wrk-") as tmp:
        spec_path = Path(tmp) / "spec.lua"
        spec_path.write_text(_lua_spec(spec, limit, run_id), encoding="ascii")
        env = {**os.environ, "YINXIN_LOAD_SPEC": str(spec_path)}
        command = [
            wrk,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={max(1, round(duration))}s",
            f"--timeout={timeout_s:g}s",
            f"--script={DRIVER}",
            base + spec.path,
        ]
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        started = time.monotonic()
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        deadline = started + duration + timeout_s + 30
        # wait4 rather than wait: the child's own CPU time is the generator's cost.
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:  # a hard stop: never leave a generator running
                proc.send_signal(signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout = out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
    summary_line = next((line for line in stdout.splitlines() if line.startswith(_MARK)), None)
    if summary_line is None:
        raise RuntimeError(f"wrk gave no summary (exit {proc.returncode}):\n{stdout}\n{stderr}")
    summary = json.loads(summary_line[len(_MARK) :])
    kinds = {f"http_{code}": count for code, count in summary["statuses"].items()}
    if summary["unexpected"]:
        kinds["unexpected_body"] = summary["unexpected"]
    for name in ("connect", "read", "write", "timeout"):
        if summary[name]:
            kinds[name] = summary[name]
    latency = summary["latency_us"]
    return LoadResult(
        generator="wrk",
        requests=summary["requests"],
        errors=sum(kinds.values()),
        error_kinds=kinds,
        duration_s=summary["duration_us"] / 1e6,
        latency_ms={k: round(v / 1000.0, 3) for k, v in latency.items()},
        generator_cpu_s=usage.ru_utime + usage.ru_stime,
        extra={"threads": threads, "count_limit_per_thread": limit},
    )
