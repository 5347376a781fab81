"""Benchmark report: the latest table in benchmarks/README.md and a plot, from the JSON results.

    .venv/bin/python -m benchmarks.report              # newest results in benchmarks/results/
    .venv/bin/python -m benchmarks.report --bench FILE --load FILE --check

Inputs: the newest pytest-benchmark JSON (``make bench`` writes ``benchmarks/results/bench.json``
with ``--benchmark-json``) and the newest load-test JSON (``benchmarks/results/load-*.json``, from
``make load``). Either may be missing; its half of the report then says so. The benchmark results
are copied without their raw timings to ``benchmarks/results/bench-latest.json`` (kept in git with
``load-latest.json``, so that the table can be regenerated from a fresh clone).

Every figure is ours against a baseline measured in the same run on the same machine:

- paired benchmark groups (``extra_info["role"]`` ``"baseline"`` / ``"ours"``): our rate as a share
  of the baseline's, from best times (the least disturbed by other load), as ``benchmarks/conftest.py``
  prints it;
- absolute goals (sealed PDFs a second, licences a second) are converted to the same scale with the
  baseline's rate, so that one plot shows every figure as a ratio with its goal;
- load figures: the verify and issuance rates as a share of ``GET /healthz`` on the same server
  (``benchmarks/load/_figures.py``).

Outputs: the section between ``<!-- bench-report:start -->`` and ``<!-- bench-report:end -->`` in
``benchmarks/README.md`` and ``benchmarks/report.png``. ``--check`` exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from benchmarks.load._figures import Figure, load_figures

__all__ = ["bench_figures", "main", "render_plot", "render_section"]

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
PLOT = HERE / "report.png"
BENCH_LATEST = RESULTS / "bench-latest.json"
START, END = "<!-- bench-report:start -->", "<!-- bench-report:end -->"

# Issue 7's goals for the pytest-benchmark groups. Ratio goals: ours as a share of the baseline's
# rate (group prefix → share). Rate goals: ours at least this many a second (group prefix → rate,
# unit), converted to a ratio with the baseline's rate of the same run.
RATIO_GOALS = {"verify-": 0.85, "sign-pkcs11-": 0.80}
RATE_GOALS = {
    "issue-bulk": (10_000.0, "licences/s"),
    "pdf-seal-pkcs11": (60.0, "PDFs/s"),
    "pdf-verify": (100.0, "PDFs/s"),
}
# The raw SoftHSM signing rate that bulk issuance is also compared with (issue 7).
RAW_SOFTHSM_GROUP = "sign-pkcs11-ES256"


def _newest(pattern: str) -> Path | None:
    found = sorted(RESULTS.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}".replace(",", " ")
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass(frozen=True)
class _Bench:
    name: str
    group: str
    role: str | None
    best_s: float
    median_s: float
    extra: dict[str, Any]

    def rate(self) -> tuple[float, str]:
        """Items a second from the best time, in the unit the benchmark reports."""
        if "licences_per_second" in self.extra:
            # Bulk benchmarks time a whole batch; the test stores the batch rate (median time).
            per_batch = self.extra["licences_per_second"] * self.median_s
            return per_batch / self.best_s, "licences/s"
        if "requests_per_round" in self.extra:
            # The in-process app benchmark times rounds of many requests.
            return self.extra["requests_per_round"] / self.best_s, "requests/s"
        if "pdfs_per_second" in self.extra:
            # The PDF suite stores every rate under this key, QR codes included.
            unit = "QR codes/s" if self.group.startswith("qr-") else "PDFs/s"
            return float(self.extra["pdfs_per_second"]), unit
        return 1.0 / self.best_s, "ops/s"


def _benchmarks(document: dict[str, Any]) -> list[_Bench]:
    out = []
    for b in document.get("benchmarks", []):
        extra = b.get("extra_info") or {}
        out.append(
            _Bench(
                name=b["name"],
                group=b.get("group") or b["name"],
                role=extra.get("role"),
                best_s=float(b["stats"]["min"]),
                median_s=float(b["stats"]["median"]),
                extra=extra,
            )
        )
    return out


def bench_figures(document: dict[str, Any]) -> list[Figure]:
    benches = _benchmarks(document)
    groups: dict[str, dict[str, _Bench]] = {}
    for b in benches:
        groups.setdefault(b.group, {})[b.role or b.name] = b
    figures: list[Figure] = []
    for group in sorted(groups):
        members = groups[group]
        ours, base = members.get("ours"), members.get("baseline")
        if ours is None or base is None:
            for b in members.values():  # an absolute figure: no baseline in the run
                rate, unit = b.rate()
                figures.append(Figure("bench", group, f"{_number(rate)} {unit}", "—", None, None, "—", None))
            continue
        ours_rate, unit = ours.rate()
        base_rate, _ = base.rate()
        ratio = ours_rate / base_rate
        ratio_goal = next((g for prefix, g in RATIO_GOALS.items() if group.startswith(prefix)), None)
        rate_goal = next((g for prefix, g in RATE_GOALS.items() if group.startswith(prefix)), None)
        goal: float | None = None
        goal_text, met = "—", None
        if ratio_goal is not None:
            goal, goal_text, met = ratio_goal, f"≥ {ratio_goal:.0%} of baseline", ratio >= ratio_goal
        elif rate_goal is not None:
            target, target_unit = rate_goal
            goal = target / base_rate
            goal_text, met = f"≥ {_number(target)} {target_unit}", ours_rate >= target
        figures.append(
            Figure(
                "bench",
                group,
                f"{_number(ours_rate)} {unit}",
                f"{base.name.removeprefix('test_')} {_number(base_rate)} {unit}",
                ratio,
                goal,
                goal_text,
                met,
            )
        )
    # Bulk issuance against the raw SoftHSM signing rate (how close issuance is to the HSM's limit).
    bulk = groups.get("issue-bulk", {}).get("ours")
    raw = groups.get(RAW_SOFTHSM_GROUP, {}).get("baseline")
    if bulk is not None and raw is not None:
        bulk_rate, _ = bulk.rate()
        raw_rate = 1.0 / raw.best_s
        figures.append(
            Figure(
                "bench",
                "issue-bulk / raw SoftHSM ES256 sign",
                f"{_number(bulk_rate)} licences/s",
                f"raw python-pkcs11 sign {_number(raw_rate)}/s",
                bulk_rate / raw_rate,
                None,
                "— (reported)",
                None,
            )
        )
    return figures


# -- the README section -----------------------------------------------------------------------


def _verdict(f: Figure) -> str:
    return "—" if f.met is None else ("pass" if f.met else "**miss**")


def _rows(figures: list[Figure]) -> list[str]:
    rows = ["| figure | ours | baseline | ratio | goal | result |", "|---|---|---|---|---|---|"]
    for f in figures:
        ratio = "—" if f.ratio is None else f"{f.ratio:.1%}"
        note = f" ({f.note})" if f.note else ""
        rows.append(f"| {f.name} | {f.ours}{note} | {f.baseline} | {ratio} | {f.goal_text} | {_verdict(f)} |")
    return rows


def _load_runs_table(document: dict[str, Any]) -> list[str]:
    rows = [
        "| db | workers | scenario | requests | errors | rate/s | p50 ms | p90 ms | p99 ms "
        "| server CPU ms/req | cores: server / generator / other |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in document.get("runs", []):
        lat, cpu = r["latency_ms"], r["cpu"]
        per_req = r.get("server_cpu_ms_per_request")
        rows.append(
            f"| {r['db']} | {r['workers']} | {r['scenario']} | {r['requests']} | {r['errors']} "
            f"| {_number(r['rate'])} | {lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} "
            f"| {'—' if per_req is None else f'{per_req:.2f}'} "
            f"| {cpu['server_cores']:.2f} / {cpu['generator_cores']:.2f} / {cpu['other_cores']:.2f} |"
        )
    return rows


def _busy_note(document: dict[str, Any]) -> str | None:
    others = [r["cpu"]["other_cores"] for r in document.get("runs", [])]
    if not others:
        return None
    cores = document.get("machine", {}).get("cpus") or 1
    worst = max(others)
    if worst < 0.25:
        return None
    return (
        f"**The machine was busy:** other processes used up to {worst:.2f} of its {cores} cores during "
        f"these runs (mean {sum(others) / len(others):.2f}). Rates and latencies are depressed and "
        "noisy; the server CPU time per request is the steadier figure. Re-run on a quiet machine."
    )


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else str(path)


def render_section(
    bench: dict[str, Any] | None,
    bench_path: Path | None,
    load: dict[str, Any] | None,
    load_path: Path | None,
    figures: list[Figure],
) -> str:
    lines = [
        START,
        "",
        "<!-- generated by `make bench-report` (benchmarks/report.py): do not edit by hand -->",
        "",
    ]
    b_figs = [f for f in figures if f.source == "bench"]
    l_figs = [f for f in figures if f.source == "load"]
    lines.append("### Benchmarks (`make bench`)")
    lines.append("")
    if bench is None or bench_path is None:
        lines.append("No pytest-benchmark results yet: run `make bench`.")
    else:
        machine = bench.get("machine_info", {})
        cpu = machine.get("cpu", {}).get("brand_raw", "")
        lines.append(
            f"From `{_shown(bench_path)}`"
            f", {bench.get('datetime', '?')[:19].replace('T', ' ')} UTC; Python "
            f"{machine.get('python_version', '?')}; {cpu}. Ratios from best times."
        )
        lines.append("")
        lines += _rows(b_figs)
    lines += ["", "### Load (`make load`)", ""]
    if load is None or load_path is None:
        lines.append("No load results yet: run `make load`.")
    else:
        config = load.get("config", {})
        machine = load.get("machine", {})
        lines.append(
            f"From `{_shown(load_path)}`"
            f", {load.get('started_at', '?').replace('T', ' ')}; {machine.get('cpus', '?')} cores; "
            f"generator {config.get('generator_version', config.get('generator', '?'))}; "
            f"{config.get('connections', '?')} connections; {config.get('duration_s', '?')} s per run "
            f"(or {config.get('requests_bound', '?')} answers); load average before/after "
            f"{machine.get('loadavg_before', ['?'])[0]} / {machine.get('loadavg_after', ['?'])[0]}."
        )
        note = _busy_note(load)
        if note:
            lines += ["", note]
        lines.append("")
        lines += _rows(l_figs)
        lines += ["", *_load_runs_table(load)]
    lines += ["", "![Each figure as a ratio to its baseline, with its goal](report.png)", "", END]
    return "\n".join(lines)


def replace_section(readme: str, section: str) -> str:
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{README}: the markers {START} … {END} are missing")
    return readme[:start] + section + readme[end + len(END) :]


# -- the plot ---------------------------------------------------------------------------------

_GREEN, _RED, _GREY = (46, 139, 87), (200, 55, 45), (150, 150, 150)
_INK, _GRID = (30, 30, 30), (225, 225, 225)


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu"):
        path = Path(folder) / name
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)  # Pillow's own font (FreeType builds)


def render_plot(figures: list[Figure], path: Path, subtitle: str) -> None:
    plotted = [f for f in figures if f.ratio is not None]
    width, left, right, top, row = 1500, 560, 190, 110, 38
    height = top + max(1, len(plotted)) * row + 110
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    title, small, label = _font(24, bold=True), _font(14), _font(16)
    small_bold = _font(13, bold=True)
    draw.text(
        (20, 16),
        "Yinxin: each figure as a ratio to its baseline (same run, same machine)",
        font=title,
        fill=_INK,
    )
    draw.text((20, 52), subtitle, font=small, fill=(90, 90, 90))
    values = [f.ratio or 0.0 for f in plotted] + [f.goal or 0.0 for f in plotted]
    scale_max = min(2.5, max(1.25, max(values, default=1.0) * 1.05))
    plot_w = width - left - right

    def x(v: float) -> int:
        return left + round(min(v, scale_max) / scale_max * plot_w)

    bottom = top + len(plotted) * row
    step = 0.25
    tick = 0.0
    while tick <= scale_max + 1e-9:
        draw.line([(x(tick), top - 6), (x(tick), bottom)], fill=_GRID, width=1)
        draw.text((x(tick), top - 26), f"{tick:.0%}", font=small, fill=(90, 90, 90), anchor="mm")
        tick += step
    draw.line([(x(1.0), top - 10), (x(1.0), bottom)], fill=(80, 80, 80), width=2)  # = the baseline
    headings = {"bench": "pytest-benchmark (make bench)", "load": "load test (make load)"}
    for i, f in enumerate(plotted):
        y = top + i * row
        if i == 0 or f.source != plotted[i - 1].source:
            if i > 0:
                draw.line([(20, y), (width - 20, y)], fill=(160, 160, 160), width=1)
            draw.text((20, y + 3), headings.get(f.source, f.source), font=small_bold, fill=(90, 90, 90))
        colour = _GREY if f.met is None else (_GREEN if f.met else _RED)
        ratio = f.ratio or 0.0
        draw.text((left - 12, y + row // 2 + 4), f.name, font=label, fill=_INK, anchor="rm")
        draw.rectangle([(x(0), y + 9), (x(ratio), y + row - 5)], fill=colour)
        if f.goal is not None:
            gx = x(f.goal)
            draw.line([(gx, y + 4), (gx, y + row)], fill=_INK, width=4)
        text = f"{ratio:.1%}" + (" ▶" if ratio > scale_max else "")
        if f.p99_ms is not None:
            text += f" · p99 {f.p99_ms:.0f} ms"
        at = (x(ratio) + 8, y + row // 2 + 2)
        box = draw.textbbox(at, text, font=small, anchor="lm")
        if f.goal is not None and box[0] - 6 <= x(f.goal) <= box[2] + 6:
            at = (x(f.goal) + 10, at[1])  # keep the goal mark clear of the text
        draw.text(at, text, font=small, fill=_INK, anchor="lm")
    # Legend.
    ly = bottom + 30
    entries = [(_GREEN, "goal met"), (_RED, "goal missed"), (_GREY, "no goal (reported)")]
    lx = 20
    for colour, text in entries:
        draw.rectangle([(lx, ly), (lx + 24, ly + 16)], fill=colour)
        draw.text((lx + 32, ly + 8), text, font=small, fill=_INK, anchor="lm")
        lx += 220
    draw.line([(lx, ly - 2), (lx, ly + 18)], fill=_INK, width=4)
    draw.text((lx + 10, ly + 8), "goal (on the ratio scale)", font=small, fill=_INK, anchor="lm")
    lx += 260
    draw.line([(lx, ly - 2), (lx, ly + 18)], fill=(80, 80, 80), width=2)
    draw.text((lx + 10, ly + 8), "100 % = as fast as the baseline", font=small, fill=_INK, anchor="lm")
    draw.text(
        (20, ly + 40),
        "Load figures: rate as a share of GET /healthz on the same server; p99 goals: verify ≤ 20 ms, "
        "issuance ≤ 50 ms.",
        font=small,
        fill=(90, 90, 90),
    )
    image.save(path, optimize=True)


# -- main -------------------------------------------------------------------------------------


def _read(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _keep_slim(document: dict[str, Any], path: Path) -> None:
    """Write the benchmark results without the raw timings (``stats.data``, megabytes) as the
    committed input of the table (``bench-latest.json``)."""
    slim = dict(document)
    slim["benchmarks"] = [
        {**b, "stats": {k: v for k, v in b.get("stats", {}).items() if k != "data"}}
        for b in document.get("benchmarks", [])
    ]
    path.write_text(json.dumps(slim, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, help="pytest-benchmark JSON (newest bench*.json in results/)")
    parser.add_argument("--load", type=Path, help="load JSON (newest load-*.json in results/)")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    bench_path = args.bench or _newest("bench*.json")
    load_path = args.load or _newest("load-*.json")
    bench, load = _read(bench_path), _read(load_path)
    if bench is not None and bench_path is not None and bench_path.resolve() != BENCH_LATEST.resolve():
        _keep_slim(bench, BENCH_LATEST)
    figures: list[Figure] = []
    if bench is not None:
        figures += bench_figures(bench)
    if load is not None:
        figures += load_figures(load.get("runs", []))
    section = render_section(bench, bench_path, load, load_path, figures)
    args.readme.write_text(
        replace_section(args.readme.read_text(encoding="utf-8"), section), encoding="utf-8"
    )
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sources = ", ".join(p.name for p in (bench_path, load_path) if p is not None) or "no results"
    render_plot(figures, args.plot, f"generated {stamp} from {sources}")
    for f in figures:
        ratio = "    —  " if f.ratio is None else f"{f.ratio:7.1%}"
        print(f"{f.name:<48} {ratio}  {f.goal_text:<45} {_verdict(f).strip('*')}")
    print(f"wrote {args.readme} (section) and {args.plot}")
    missed = [f for f in figures if f.met is False]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
