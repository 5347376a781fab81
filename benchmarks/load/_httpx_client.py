"""The fallback load generator: an asyncio client on httpx, one task per connection.

Closed loop like wrk: each of *connections* tasks sends its next request when the previous answer
arrived, over its own keep-alive connection. It runs in this process, so its CPU time is this
process's during the run (``resource.getrusage``). httpx spends a few hundred microseconds of Python
per request, so on a small machine it may need as much CPU as the server: ``run.py`` reports the
generator's share, and wrk is preferred wherever it is installed.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from collections import Counter

import httpx

from benchmarks.load._spec import LoadResult, RequestSpec

__all__ = ["run_httpx"]


def _percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return 0.0
    rank = max(0, math.ceil(p / 100.0 * len(ordered)) - 1)
    return ordered[min(rank, len(ordered) - 1)]


async def _load(
    base: str,
    spec: RequestSpec,
    connections: int,
    duration: float,
    requests: int,
    run_id: str,
    timeout_s: float,
) -> tuple[list[float], Counter[str], float]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    budget = requests if requests > 0 else math.inf
    issued = 0
    deadline = time.monotonic() + duration

    async def connection(index: int) -> None:
        nonlocal issued
        client_address = spec.clients[index % len(spec.clients)]
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout_s) as client:
            sent = 0
            while time.monotonic() < deadline and issued < budget:
                issued += 1
                sent += 1
                unique = f"{run_id}-{index}-{sent}"
                headers = {**spec.headers, "X-Forwarded-For": client_address}
                if spec.idempotency:
                    headers["Idempotency-Key"] = unique
                body = spec.body_for(unique, index + sent - 1)  # connections start apart
                start = time.perf_counter()
                try:
                    reply = await client.request(
                        spec.method, spec.path, headers=headers, content=body.encode() if body else None
                    )
                except httpx.TimeoutException:
                    errors["timeout"] += 1
                    continue
                except httpx.TransportError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - start)
                if not 200 <= reply.status_code < 300:
                    errors[f"http_{reply.status_code}"] += 1
                elif spec.expect is not None and spec.expect not in reply.text:
                    errors["unexpected_body"] += 1

    started = time.monotonic()
    await asyncio.gather(*(connection(i) for i in range(connections)))
    return latencies, errors, time.monotonic() - started


def run_httpx(
    base: str,
    spec: RequestSpec,
    *,
    connections: int,
    duration: float,
    requests: int,
    run_id: str,
    timeout_s: float = 10.0,
) -> LoadResult:
    """One run, bounded by *duration* seconds and *requests* requests (0: no count bound)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    latencies, errors, elapsed = asyncio.run(
        _load(base, spec, connections, duration, requests, run_id, timeout_s)
    )
    after = resource.getrusage(resource.RUSAGE_SELF)
    ordered = sorted(latencies)
    answered = len(ordered)
    return LoadResult(
        generator="httpx",
        requests=answered,
        errors=sum(errors.values()),
        error_kinds=dict(errors),
        duration_s=elapsed,
        latency_ms={
            "p50": round(_percentile(ordered, 50) * 1000, 3),
            "p90": round(_percentile(ordered, 90) * 1000, 3),
            "p99": round(_percentile(ordered, 99) * 1000, 3),
            "max": round((ordered[-1] if ordered else 0.0) * 1000, 3),
            "mean": round(sum(ordered) / answered * 1000 if answered else 0.0, 3),
        },
        generator_cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    )
