"""Figures and goals: a measured value beside the baseline it is compared with, and the goal.

Issue 7's load goals, each a ratio to ``GET /healthz`` measured on the same server in the same run
(a shared, noisy machine moves absolute rates; ratios survive):

- verify: ``POST /v1/verify`` rate ≥ 50 % of the healthz rate at the same number of workers, with
  p99 ≤ 20 ms;
- issuance: ``POST /v1/licences`` rate ≥ 25 % of the healthz rate with 2 workers on PostgreSQL, with
  p99 ≤ 50 ms;
- zero errors in every run.

``report.py`` adds the pytest-benchmark figures to these; both end up in the same table and plot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "ISSUE_P99_MS",
    "ISSUE_RATIO_GOAL",
    "VERIFY_P99_MS",
    "VERIFY_RATIO_GOAL",
    "Figure",
    "load_figures",
]

VERIFY_RATIO_GOAL = 0.50
VERIFY_P99_MS = 20.0
ISSUE_RATIO_GOAL = 0.25
ISSUE_P99_MS = 50.0


@dataclass(frozen=True)
class Figure:
    """One line of the report: *ratio* = ours / baseline (rates), *goal* on the same scale."""

    source: str  # "bench" or "load"
    name: str
    ours: str  # what was measured, with its unit ("1 234 verifications/s")
    baseline: str  # what it is compared with ("GET /healthz 4 000/s")
    ratio: float | None  # None: an absolute figure without a baseline
    goal: float | None  # goal on the ratio's scale (absolute goals converted with the baseline rate)
    goal_text: str  # the goal as the issue states it ("≥ 50 % of healthz, p99 ≤ 20 ms")
    met: bool | None  # None: no goal
    note: str = ""
    p99_ms: float | None = None  # load figures: the measured run's p99 latency

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Figure:
        return Figure(**data)


def _rate(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ")


def _index(runs: list[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    return {(r["db"], r["workers"], r["scenario"]): r for r in runs}


def load_figures(runs: list[dict[str, Any]]) -> list[Figure]:
    """The goal figures of a load run: per database and worker count, verify and issuance / healthz."""
    by_key = _index(runs)
    figures: list[Figure] = []
    dbs = sorted({r["db"] for r in runs}, key=lambda d: (d != "sqlite", d))
    workers = sorted({r["workers"] for r in runs})
    for db in dbs:
        for w in workers:
            health = by_key.get((db, w, "healthz"))
            for scenario, label, unit in (
                ("verify", "verify", "verifications/s"),
                ("issue", "issuance", "licences/s"),
            ):
                run = by_key.get((db, w, scenario))
                if run is None or health is None or health["rate"] <= 0:
                    continue
                ratio = run["rate"] / health["rate"]
                p99 = run["latency_ms"]["p99"]
                errors = run["errors"] + health["errors"]
                if scenario == "verify":
                    goal: float | None = VERIFY_RATIO_GOAL
                    p99_goal: float | None = VERIFY_P99_MS
                elif db == "postgres" and w == 2:
                    goal, p99_goal = ISSUE_RATIO_GOAL, ISSUE_P99_MS
                else:
                    goal = p99_goal = None  # measured for comparison; the issue sets no goal here
                met = None
                goal_text = "—"
                if goal is not None and p99_goal is not None:
                    met = ratio >= goal and p99 <= p99_goal and errors == 0
                    goal_text = f"≥ {goal:.0%} of healthz, p99 ≤ {p99_goal:g} ms, 0 errors"
                figures.append(
                    Figure(
                        source="load",
                        name=f"{label} / healthz, {db}, {w} worker{'s' if w > 1 else ''}",
                        ours=f"{_rate(run['rate'])} {unit}, p99 {p99:.1f} ms",
                        baseline=f"GET /healthz {_rate(health['rate'])}/s",
                        ratio=ratio,
                        goal=goal,
                        goal_text=goal_text,
                        met=met,
                        note=f"{errors} errors" if errors else "",
                        p99_ms=p99,
                    )
                )
        for w in workers:
            # What the rate ratio would be if the server had the cores to itself and were CPU-bound:
            # healthz CPU per answer / verify CPU per answer. Steadier than rates on a busy machine.
            health, run = by_key.get((db, w, "healthz")), by_key.get((db, w, "verify"))
            h_cpu = (health or {}).get("server_cpu_ms_per_request")
            v_cpu = (run or {}).get("server_cpu_ms_per_request")
            if h_cpu and v_cpu:
                figures.append(
                    Figure(
                        source="load",
                        name=f"verify / healthz by CPU, {db}, {w} worker{'s' if w > 1 else ''}",
                        ours=f"{v_cpu:.2f} ms server CPU per verification",
                        baseline=f"GET /healthz {h_cpu:.2f} ms",
                        ratio=h_cpu / v_cpu,
                        goal=VERIFY_RATIO_GOAL,
                        goal_text="estimate (the goal applies to the rate)",
                        met=None,
                    )
                )
        one, two = by_key.get((db, 1, "verify")), by_key.get((db, 2, "verify"))
        if one is not None and two is not None and one["rate"] > 0:
            figures.append(
                Figure(
                    source="load",
                    name=f"verify scale-out, {db}: 2 workers / 1",
                    ours=f"{_rate(two['rate'])} verifications/s",
                    baseline=f"1 worker {_rate(one['rate'])}/s",
                    ratio=two["rate"] / one["rate"],
                    goal=None,
                    goal_text="—",
                    met=None,
                    note="the load generator and other processes share the cores",
                )
            )
    return figures
