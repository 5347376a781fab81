"""Run the atheris harnesses for a fixed time each and say what they found.

    python fuzz/run.py --seconds 60               # every harness, one after another
    python fuzz/run.py --seconds 300 --only pdf   # one (repeat --only for several)

Each harness runs in its own process under libFuzzer's ``-max_total_time``, with a memory
ceiling (``-rss_limit_mb``), a per-input time limit (``-timeout``) and a maximum input length
(``-max_len``) chosen for its target. The corpus lives in ``fuzz/corpus/NAME`` (kept between
runs, so each run starts where the last stopped; seeds are added at every start), crashing
inputs go to ``fuzz/crashes/NAME/`` and the full libFuzzer output to ``fuzz/logs/NAME.log``:
all three are git-ignored.

One line per harness: executions, rate, corpus size, coverage, crashes. The exit status is 0
when no harness crashed, 1 when one did (or timed out, or ran out of memory), 2 when one
could not run at all.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Harness:
    script: str
    max_len: int  # bytes; the first byte picks the mode
    timeout: int  # seconds for one input before libFuzzer calls it a hang
    rss_limit_mb: int = 2048
    extra: tuple[str, ...] = ()


HARNESSES: dict[str, Harness] = {
    # A token is at most 8 KiB (MAX_TOKEN_BYTES): a little more reaches the too_large path.
    "token": Harness("fuzz_token.py", max_len=9000, timeout=10),
    # Presentation tokens are under 1 KiB and a QR code holds at most 2331 bytes.
    "qr": Harness("fuzz_qr.py", max_len=4096, timeout=20),
    # A request is at most 64 KiB; 16 KiB keeps the run fast and still holds any real one.
    "issuance": Harness("fuzz_issuance.py", max_len=16384, timeout=10),
    # The sealed seed is ~10 KB: mutate it whole from the start (-len_control=0).
    "pdf": Harness("fuzz_pdf.py", max_len=65536, timeout=60, rss_limit_mb=3072, extra=("-len_control=0",)),
}

_ARTIFACT = re.compile(r"^(crash|timeout|oom|leak)-")
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second")
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: \d+ corp: (\d+)/")
_EXECUTED = re.compile(r"^stat::number_of_executed_units: (\d+)")


@dataclass
class Result:
    name: str
    returncode: int
    seconds: float
    runs: int = 0
    corpus: int | None = None
    coverage: int | None = None
    crashes: list[Path] = field(default_factory=list)
    log: Path | None = None
    problem: str = ""  # a line or two from the log that says what went wrong

    @property
    def crashed(self) -> bool:
        return bool(self.crashes) or (self.returncode != 0 and self.runs > 0)

    @property
    def failed_to_run(self) -> bool:
        return self.returncode != 0 and not self.crashed

    def summary(self) -> str:
        rate = self.runs / self.seconds if self.seconds else 0.0
        corpus = "?" if self.corpus is None else str(self.corpus)
        coverage = "?" if self.coverage is None else str(self.coverage)
        state = "CRASH" if self.crashed else ("ERROR" if self.failed_to_run else "ok")
        line = (
            f"{self.name:<9} {state:<5} {self.runs} runs in {self.seconds:.0f} s ({rate:.0f}/s), "
            f"corpus {corpus}, cov {coverage}, crashes {len(self.crashes)}"
        )
        if self.crashes:
            line += ": " + ", ".join(_shown(path) for path in self.crashes)
        if self.problem:
            line += f" [{self.problem}]"
        return line


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _artifacts(directory: Path) -> set[Path]:
    return (
        {path for path in directory.iterdir() if _ARTIFACT.match(path.name)} if directory.is_dir() else set()
    )


def _problem(log: str) -> str:
    """The product input and exception lines of a crash, or the last line of a failed start."""
    lines = log.splitlines()
    picked = [line.strip() for line in lines if line.startswith("product input:")][:1]
    for index, line in enumerate(lines):
        if "Uncaught Python exception" in line and index + 1 < len(lines):
            picked.append(lines[index + 1].strip())
            break
        if line.startswith(("==", "ALARM:", "MS:")) and ("ERROR" in line or "ALARM" in line):
            picked.append(line.strip())
            break
    if not picked and lines:
        picked.append(lines[-1].strip())
    return " | ".join(text[:300] for text in picked)


def run_harness(
    name: str,
    seconds: int,
    *,
    corpus_root: Path = FUZZ_DIR / "corpus",
    crash_root: Path = FUZZ_DIR / "crashes",
    log_root: Path = FUZZ_DIR / "logs",
    seed: int | None = None,
    extra: Sequence[str] = (),
) -> Result:
    """Run harness *name* for *seconds* (plus its start-up) and read libFuzzer's output."""
    harness = HARNESSES[name]
    corpus = corpus_root / name
    crashes = crash_root / name
    for directory in (corpus, crashes, log_root):
        directory.mkdir(parents=True, exist_ok=True)
    log_path = log_root / f"{name}.log"
    before = _artifacts(crashes)
    command = [
        sys.executable,
        str(FUZZ_DIR / harness.script),
        str(corpus),
        f"-max_total_time={seconds}",
        f"-max_len={harness.max_len}",
        f"-timeout={harness.timeout}",
        f"-rss_limit_mb={harness.rss_limit_mb}",
        f"-artifact_prefix={crashes}{os.sep}",
        "-print_final_stats=1",
        *harness.extra,
        *([f"-seed={seed}"] if seed is not None else []),
        *extra,
    ]
    started = time.monotonic()
    # Start-up (key generation, sealing a PDF) and the last input's time limit come on top.
    wall_limit = seconds + harness.timeout + 300
    with log_path.open("w", encoding="utf-8", errors="replace") as log:
        try:
            completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=wall_limit)
            returncode = completed.returncode
        except subprocess.TimeoutExpired:
            returncode = -9
    elapsed = time.monotonic() - started
    text = log_path.read_text(encoding="utf-8", errors="replace")

    result = Result(name, returncode, elapsed, log=log_path)
    for line in text.splitlines():
        if match := _STATUS.match(line):
            result.runs = max(result.runs, int(match.group(1)))
            result.coverage, result.corpus = int(match.group(2)), int(match.group(3))
        elif match := _EXECUTED.match(line):
            result.runs = max(result.runs, int(match.group(1)))
        elif match := _DONE.match(line):
            result.runs = max(result.runs, int(match.group(1)))
            result.seconds = float(match.group(2))
    result.crashes = sorted(_artifacts(crashes) - before)
    if returncode == -9:
        result.problem = f"no answer after {wall_limit} s: killed"
    elif returncode != 0 or result.crashes:
        result.problem = _problem(text)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, required=True, help="fuzzing time per harness")
    parser.add_argument(
        "--only", action="append", choices=sorted(HARNESSES), help="run only this harness (repeatable)"
    )
    parser.add_argument("--corpus-root", type=Path, default=FUZZ_DIR / "corpus")
    parser.add_argument("--crash-root", type=Path, default=FUZZ_DIR / "crashes")
    parser.add_argument("--log-root", type=Path, default=FUZZ_DIR / "logs")
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed (default: a fresh one)")
    args = parser.parse_args(argv)
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")

    worst = 0
    for name in args.only or list(HARNESSES):
        result = run_harness(
            name,
            args.seconds,
            corpus_root=args.corpus_root,
            crash_root=args.crash_root,
            log_root=args.log_root,
            seed=args.seed,
        )
        print(result.summary(), flush=True)
        if result.crashed:
            worst = max(worst, 1)
        elif result.failed_to_run:
            worst = 2
    return worst


if __name__ == "__main__":
    sys.exit(main())
