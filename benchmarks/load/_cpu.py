"""CPU accounting from /proc (Linux): the server's process group, the whole machine.

A load test on the machine it measures shares the cores with its own load generator and, on a shared
machine, with everything else. Each run records how many cores each of the three used, so a reader
can tell a server-bound figure from a generator-bound or a disturbed one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CPUSample", "CPUUsage", "cpu_usage", "sample"]

_TICK = float(os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class CPUSample:
    wall: float  # time.monotonic() when taken
    session: float  # CPU seconds of every live process in the server's session
    machine_busy: float  # CPU seconds the whole machine spent outside idle and iowait


@dataclass(frozen=True)
class CPUUsage:
    """Cores used on average over an interval (1.0 = one core busy all the time)."""

    server: float
    generator: float
    other: float
    cores: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "server_cores": round(self.server, 3),
            "generator_cores": round(self.generator, 3),
            "other_cores": round(self.other, 3),
            "machine_cores": self.cores,
            # The generator's share of what the server and the generator used together.
            "generator_share": round(self.generator / max(self.server + self.generator, 1e-9), 3),
        }


def _session_cpu(session_id: int) -> float:
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended between the listing and the read
            continue
        # Fields after the command name, which sits in parentheses and may hold spaces (proc(5)):
        # state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime ...
        fields = text[text.rfind(")") + 2 :].split()
        if int(fields[3]) == session_id:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _machine_busy() -> float:
    # /proc/stat "cpu  user nice system idle iowait irq softirq steal guest guest_nice" (ticks);
    # guest time is already counted in user.
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICK


def sample(session_id: int, wall: float) -> CPUSample:
    return CPUSample(wall=wall, session=_session_cpu(session_id), machine_busy=_machine_busy())


def cpu_usage(before: CPUSample, after: CPUSample, generator_seconds: float) -> CPUUsage:
    wall = max(after.wall - before.wall, 1e-9)
    server = (after.session - before.session) / wall
    generator = generator_seconds / wall
    busy = (after.machine_busy - before.machine_busy) / wall
    return CPUUsage(
        server=server,
        generator=generator,
        other=max(busy - server - generator, 0.0),
        cores=os.cpu_count() or 1,
    )
