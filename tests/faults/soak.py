"""The crash soak: many more ``kill -9`` rounds of ``yinxin issue-bulk`` than CI runs.

    python tests/faults/soak.py --rounds 200 [--db sqlite|postgres|both] [--seed N]

Runs ``tests/faults/test_crash.py`` (the same harness as CI) with ``YINXIN_CRASH_ROUNDS`` rounds
per database, printing every round and where the kills landed. ``--seed`` replays a run
(``YINXIN_CRASH_SEED``; each test prints the seed it used). Exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SELECT = {"sqlite": "sqlite", "postgres": "postgresql", "both": "sqlite or postgresql"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="crash rounds per database (default 200)")
    parser.add_argument("--db", choices=sorted(SELECT), default="both", help="which database (default both)")
    parser.add_argument("--seed", type=int, help="replay the run that printed this seed")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    env = dict(os.environ, YINXIN_CRASH_ROUNDS=str(args.rounds))
    if args.seed is not None:
        env["YINXIN_CRASH_SEED"] = str(args.seed)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-s",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "faults" / "test_crash.py"),
        "-k",
        SELECT[args.db],
    ]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
