"""Load test: ``yinxin serve`` on 127.0.0.1 under a bounded, closed-loop load (issue 7).

    .venv/bin/python -m benchmarks.load.run                       # everything, 10 s a run
    .venv/bin/python -m benchmarks.load.run --db sqlite --workers 1 --scenario verify --duration 5

For each database (SQLite in a fresh data directory; PostgreSQL in a throwaway database on
``YINXIN_LOAD_POSTGRES_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``,
dropped afterwards) and each worker count, the script starts ``yinxin serve`` on a random free
loopback port, fetches an access token once, issues the licence whose token the verify scenario
presents, and runs each scenario (``healthz``, ``verify``, ``issue``) after a short warm-up, until
``--duration`` seconds or about ``--requests`` answers, whichever comes first.

The load comes from wrk when it is installed (``apt-get install wrk``), else from an asyncio httpx
client (``--generator`` chooses). Every request carries ``X-Forwarded-For`` with one of
``--clients`` documentation addresses and the server trusts its loopback proxy, so the per-address
rate limit of ``POST /v1/verify`` (set to its maximum here) never refuses the load.

Each run records answers, errors (non-2xx, unexpected body, transport error, timeout), rate,
p50/p90/p99 latency and the cores used by the server, the generator and everything else. The
results go to ``benchmarks/results/load-<UTC timestamp>.json`` and ``load-latest.json``, and a table
with the issue's goals is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.load._cpu import cpu_usage, sample
from benchmarks.load._figures import Figure, load_figures
from benchmarks.load._httpx_client import run_httpx
from benchmarks.load._profile import Profiler, find_pyspy
from benchmarks.load._server import RATE_LIMIT_ENV, Deployment, Server, access_token, postgres_database
from benchmarks.load._spec import (
    SCENARIOS,
    VERIFY_LICENCES,
    LoadResult,
    RequestSpec,
    client_addresses,
    issue_licences,
    scenario_spec,
)
from benchmarks.load._wrk import find_wrk, run_wrk

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (10)")
    parser.add_argument(
        "--requests",
        type=int,
        default=200_000,
        help="stop a run after about this many answers (200 000; 0: time bound only)",
    )
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (64)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (1 2)")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--scenario", nargs="+", choices=[*SCENARIOS, "all"], default=["all"], help="scenarios (all)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unrecorded load first (2)")
    parser.add_argument("--generator", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument(
        "--wrk-threads", type=int, default=1, help="wrk threads (1: leaves the cores to the server)"
    )
    parser.add_argument("--clients", type=int, default=64, help="simulated client addresses (64)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (benchmarks/results)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories (server logs)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy during each measured run (profiles in the results directory)",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 600:
        parser.error("--duration must be in (0, 600] seconds")
    if args.requests < 0 or args.connections < 1 or args.clients < 1:
        parser.error("--requests must be ≥ 0, --connections and --clients ≥ 1")
    if not all(1 <= w <= 32 for w in args.workers):
        parser.error("--workers: 1 to 32")
    if "all" in args.scenario:
        args.scenario = list(SCENARIOS)
    if args.profile and find_pyspy() is None:
        parser.error("--profile needs py-spy on PATH (pip install py-spy) or YINXIN_PYSPY")
    return args


class Generator:
    """wrk when installed (or asked for), else the asyncio httpx client."""

    def __init__(self, choice: str, wrk_threads: int) -> None:
        wrk = find_wrk()
        if choice == "wrk" and wrk is None:
            raise SystemExit("--generator wrk: wrk is not installed (apt-get install wrk)")
        self.wrk = wrk if choice in ("auto", "wrk") else None
        self.name = "wrk" if self.wrk else "httpx"
        self.wrk_threads = wrk_threads

    def version(self) -> str:
        if self.wrk is None:
            import httpx

            return f"httpx {httpx.__version__}"
        done = subprocess.run([self.wrk, "--version"], capture_output=True, text=True, check=False)
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0].split(" Copyright")[0].strip() if text else "wrk"

    def run(
        self, base: str, spec: RequestSpec, *, connections: int, duration: float, requests: int, run_id: str
    ) -> LoadResult:
        if self.wrk is not None:
            return run_wrk(
                self.wrk,
                base,
                spec,
                connections=connections,
                duration=duration,
                requests=requests,
                threads=self.wrk_threads,
                run_id=run_id,
            )
        return run_httpx(
            base, spec, connections=connections, duration=duration, requests=requests, run_id=run_id
        )


@contextmanager
def _database(db: str) -> Iterator[str | None]:
    if db == "postgres":
        with postgres_database() as url:
            yield url
    else:
        yield None


def _wait_idle(server: Server, limit_s: float = 30.0) -> None:
    """Let the server finish what the warm-up left in flight (a stopped generator abandons up to
    one request per connection, which the server still completes) before measuring."""
    deadline = time.monotonic() + limit_s
    previous = sample(server.session_id, time.monotonic())
    while time.monotonic() < deadline:
        time.sleep(0.25)
        current = sample(server.session_id, time.monotonic())
        if (current.session - previous.session) / (current.wall - previous.wall) < 0.05:
            return
        previous = current


def _measure(
    generator: Generator,
    server: Server,
    spec: RequestSpec,
    args: argparse.Namespace,
    run_id: str,
) -> dict[str, Any]:
    if args.warmup > 0:
        generator.run(
            server.base,
            spec,
            connections=args.connections,
            duration=args.warmup,
            requests=0,
            run_id=run_id + "-warmup",
        )
        _wait_idle(server)
    profiler = None
    if args.profile:
        pyspy = find_pyspy()
        assert pyspy is not None
        out = args.out / "profiles" / f"{run_id}.txt"
        profiler = Profiler(pyspy, server.proc.pid, args.duration, out)
    before = sample(server.session_id, time.monotonic())
    result = generator.run(
        server.base,
        spec,
        connections=args.connections,
        duration=args.duration,
        requests=args.requests,
        run_id=run_id,
    )
    after = sample(server.session_id, time.monotonic())
    usage = cpu_usage(before, after, result.generator_cpu_s)
    server_cpu_s = after.session - before.session
    extra: dict[str, Any] = {}
    if profiler is not None:
        summary = profiler.finish()
        print(summary, flush=True)
        extra["profiled"] = str(profiler.out)
    return {
        "generator": result.generator,
        "connections": args.connections,
        "requests": result.requests,
        "errors": result.errors,
        "error_kinds": result.error_kinds,
        "duration_s": round(result.duration_s, 3),
        "rate": round(result.rate, 1),
        "latency_ms": result.latency_ms,
        "cpu": usage.as_dict(),
        # Server CPU per answer: less disturbed by other load on the machine than the rate is.
        "server_cpu_ms_per_request": round(server_cpu_s * 1000 / result.requests, 3)
        if result.requests
        else None,
        **({"generator_details": result.extra} if result.extra else {}),
        **extra,
    }


def _print_run(run: dict[str, Any]) -> None:
    lat = run["latency_ms"]
    cpu = run["cpu"]
    print(
        f"  {run['db']:<8} {run['workers']}w {run['scenario']:<8} {run['rate']:>9,.0f}/s "
        f"p50 {lat['p50']:7.2f} p90 {lat['p90']:7.2f} p99 {lat['p99']:7.2f} ms  "
        f"{run['requests']:>7} req {run['errors']:>5} err  "
        f"cpu server {cpu['server_cores']:.2f} gen {cpu['generator_cores']:.2f} "
        f"other {cpu['other_cores']:.2f} "
        f"({_ms(run['server_cpu_ms_per_request'])} ms server CPU/req)",
        flush=True,
    )


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _table(runs: list[dict[str, Any]], figures: list[Figure]) -> str:
    lines = [
        "",
        f"{'db':<9}{'workers':>7}  {'scenario':<9}{'requests':>9}{'errors':>8}{'rate/s':>10}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'server':>8}{'gen':>6}{'other':>7}{'cpu ms/req':>11}",
    ]
    for r in runs:
        lat, cpu = r["latency_ms"], r["cpu"]
        lines.append(
            f"{r['db']:<9}{r['workers']:>7}  {r['scenario']:<9}{r['requests']:>9}{r['errors']:>8}"
            f"{r['rate']:>10,.0f}{lat['p50']:>9.2f}{lat['p90']:>9.2f}{lat['p99']:>9.2f}"
            f"{cpu['server_cores']:>8.2f}{cpu['generator_cores']:>6.2f}{cpu['other_cores']:>7.2f}"
            f"{_ms(r['server_cpu_ms_per_request']):>11}"
        )
    lines.append(
        "(server / gen / other: cores used on average during the run by the server, the load generator "
        "and everything else; cpu ms/req: server CPU time per answer)"
    )
    if figures:
        lines.append("")
        for f in figures:
            verdict = "—" if f.met is None else ("met" if f.met else "MISSED")
            ratio = f"{f.ratio:7.1%}" if f.ratio is not None else "      —"
            lines.append(f"{f.name:<42} {ratio}  {f.ours}  vs {f.baseline}  goal: {f.goal_text}  [{verdict}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    generator = Generator(args.generator, args.wrk_threads)
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    clients = client_addresses(args.clients)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    print(
        f"load: {generator.version()} ({generator.name}), {args.connections} connections, "
        f"{args.duration:g} s or {args.requests or '∞'} answers per run, {args.warmup:g} s warm-up; "
        f"dbs {', '.join(dbs)}; workers {', '.join(map(str, args.workers))}; "
        f"scenarios {', '.join(args.scenario)}",
        flush=True,
    )
    if generator.name == "httpx":
        print(
            "warning: wrk is not installed (apt-get install wrk): the httpx client needs about 1 ms of "
            "CPU per request and cannot saturate the server on a small machine; see generator_cores",
            flush=True,
        )
    limits = ", ".join(f"{k}={v}" for k, v in RATE_LIMIT_ENV.items())
    print(
        f"rate limits raised for the run: {limits}; requests spread over {len(clients)} client "
        "addresses (X-Forwarded-For from the trusted loopback proxy)",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    for db in dbs:
        with _database(db) as url:
            deployment = Deployment(db, url, keep=args.keep)
            try:
                for workers in args.workers:
                    with deployment.serve(workers) as server:
                        bearer = access_token(server.base, deployment.issuer)
                        tag = f"{stamp}-{db}-w{workers}"
                        licences = issue_licences(server.base, bearer, tag, VERIFY_LICENCES)
                        for scenario in args.scenario:
                            spec = scenario_spec(
                                scenario,
                                clients=clients,
                                licence_tokens=tuple(licence["token"] for licence in licences),
                                bearer=bearer,
                                tag=f"{tag}-{scenario}",
                            )
                            run = {"db": db, "workers": workers, "scenario": scenario}
                            run.update(_measure(generator, server, spec, args, f"{tag}-{scenario}"))
                            runs.append(run)
                            _print_run(run)
            finally:
                if args.keep:
                    print(f"  data directory kept: {deployment.root}")
                deployment.close()
    figures = load_figures(runs)
    document = {
        "kind": "yinxin-load",
        "version": 1,
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {
            "generator": generator.name,
            "generator_version": generator.version(),
            "wrk_threads": generator.wrk_threads if generator.wrk else None,
            "duration_s": args.duration,
            "requests_bound": args.requests,
            "connections": args.connections,
            "warmup_s": args.warmup,
            "workers": args.workers,
            "dbs": dbs,
            "scenarios": args.scenario,
            "client_addresses": len(clients),
            "rate_limits": RATE_LIMIT_ENV,
            "key_backend": "software keystore (development passphrase)",
            "log_level": "WARNING (default: no per-request log lines)",
        },
        "runs": runs,
        "figures": [f.as_dict() for f in figures],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"load-{stamp}.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    shutil.copyfile(path, args.out / "load-latest.json")
    print(_table(runs, figures))
    print(f"\nresults: {path} (and {args.out / 'load-latest.json'})")
    return 0 if all(r["errors"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
