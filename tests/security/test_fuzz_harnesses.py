"""The coverage-guided fuzz harnesses in fuzz/ (issue 6) run clean for a while.

Each harness runs in its own process through ``fuzz/run.py`` for ``YINXIN_FUZZ_SECONDS``
(default 30) with a fresh corpus made from its seeds: the token parser, the QR path, the
issuance request intake and the PDF verification intake. A crash fails the test; its input
is in ``fuzz/crashes/NAME/`` and the libFuzzer output in the log the failure names (see
fuzz/README.md for turning it into a regression test). The test also checks that the harness
really fuzzed: libFuzzer reports many executions and some coverage, so a harness that starts
and returns at once cannot pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fuzz.run import HARNESSES, run_harness

SECONDS = int(os.environ.get("YINXIN_FUZZ_SECONDS", "30"))
# Executions per second far below what each harness does on a busy two-core machine (token
# ~3000/s, qr ~2000/s, issuance ~1600/s, pdf ~60-150/s): enough to tell fuzzing from not.
MIN_RATE = {"token": 100, "qr": 100, "issuance": 100, "pdf": 3}

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_harness_runs_without_a_crash(name: str, tmp_path: Path) -> None:
    result = run_harness(
        name, SECONDS, corpus_root=tmp_path / "corpus", log_root=tmp_path / "logs", extra=["-seed=1"]
    )
    log = result.log.read_text(encoding="utf-8", errors="replace") if result.log else ""
    assert not result.crashed, f"{result.summary()}\n--- log {result.log} (tail) ---\n{log[-4000:]}"
    assert result.returncode == 0, f"{result.summary()}\n--- log tail ---\n{log[-4000:]}"
    assert result.runs >= max(50, MIN_RATE[name] * SECONDS), result.summary()
    assert result.coverage is not None and result.coverage > 50, result.summary()
    assert result.corpus is not None and result.corpus > 1, result.summary()
