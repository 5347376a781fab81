"""Optional sampling profile of the server during a measured run (py-spy, ``--profile``).

py-spy (``pip install py-spy``; not a project dependency) attaches to ``yinxin serve`` and its
workers (``--subprocesses``) and samples only the thread holding the GIL (``--gil``), i.e. where
the Python process spends its CPU, without pausing it (``--nonblocking``). The raw collapsed stacks
are kept; the summary lists the functions with the most samples of their own and the project's
functions by inclusive share. Profiled runs cost the server some CPU: their figures are marked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "find_pyspy", "summarise"]

_LINE = re.compile(r":\d+\)$")
# Leaves that mean "waiting", should py-spy count a waiting thread as active.
_IDLE = ("Condition.wait (threading.py)", "Queue.get (queue.py)", "select (selectors.py)")
_OURS = ("(schemas/", "(hsm/", "(signing/", "(vault/", "(verify_api/")


def find_pyspy() -> str | None:
    return os.environ.get("YINXIN_PYSPY") or shutil.which("py-spy")


class Profiler:
    def __init__(self, pyspy: str, pid: int, seconds: float, out: Path, rate: int = 100) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.log = out.with_suffix(".log")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(pid),
                    "--subprocesses",
                    "--gil",
                    "--nonblocking",
                    "--rate",
                    str(rate),
                    "--duration",
                    str(max(1, round(seconds))),
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def finish(self, timeout: float = 60.0) -> str:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(10)
        if not self.out.exists():
            return f"py-spy wrote no profile: {self.log.read_text(errors='replace')[-500:]}"
        summary = summarise(self.out)
        self.out.with_suffix(".summary.txt").write_text(summary, encoding="utf-8")
        return summary


def summarise(path: Path, top: int = 15) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        if frames[-1] in _IDLE:
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if total == 0:
        return "no samples"
    lines = [f"{total} samples with the GIL held; own time (self):"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines.append("project functions, inclusive:")
    ours = [(frame, n) for frame, n in inclusive.most_common() if any(p in frame for p in _OURS)]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in ours[:top]]
    return "\n".join(lines) + "\n"
