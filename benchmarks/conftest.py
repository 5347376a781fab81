"""Benchmark fixtures and the ratio report.

Each benchmark group holds our code path and its baseline (the raw primitive
or framework) measured in the same run; tests set ``extra_info["role"]`` to
``"baseline"`` or ``"ours"`` and the summary prints ours as a percentage of
the baseline's rate (best times: the least disturbed by other load on a
2-core machine), next to the goal where the issue sets one.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from hsm import KeyBackend, PKCS11Backend, SoftwareBackend, find_softhsm_module

GOALS = {"verify": 0.85, "sign-pkcs11": 0.80}


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    module = find_softhsm_module()
    if module is None:
        if os.environ.get("CI") == "true":
            pytest.fail("SoftHSM2 is not installed")
        pytest.skip("SoftHSM2 is not installed")
    root = tmp_path_factory.mktemp("softhsm-bench")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label, pin = f"bench-{secrets.token_hex(3)}", secrets.token_hex(8)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            secrets.token_hex(8),
        ],
        check=True,
        capture_output=True,
    )
    yield {"module": module, "label": label, "pin": pin}
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


@pytest.fixture(scope="session")
def software_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyBackend]:
    backend = SoftwareBackend(tmp_path_factory.mktemp("keystore"), b"bench-passphrase")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def pkcs11_backend(softhsm: dict[str, str]) -> Iterator[KeyBackend]:
    backend = PKCS11Backend(softhsm["module"], softhsm["label"], softhsm["pin"])
    yield backend
    backend.close()


def _rate_ratios(benchmarks: list[Any]) -> list[tuple[str, float, str]]:
    by_group: dict[str, dict[str, Any]] = {}
    for bench in benchmarks:
        role = bench.extra_info.get("role")
        if role in ("baseline", "ours"):
            by_group.setdefault(bench.group or bench.name, {})[role] = bench
    lines = []
    for group, pair in sorted(by_group.items()):
        if {"baseline", "ours"} <= pair.keys():
            ratio = pair["baseline"].stats.min / pair["ours"].stats.min
            goal = next((g for prefix, g in GOALS.items() if group.startswith(prefix)), None)
            mark = "" if goal is None else (f"  (goal ≥ {goal:.0%}: {'met' if ratio >= goal else 'NOT met'})")
            lines.append((group, ratio, mark))
    return lines


# Issue 4's absolute goals on this machine (per core, best time): sealing with SoftHSM, verification.
_PDF_RATE_GOALS = {"pdf-seal-pkcs11": 60.0, "pdf-verify": 100.0}


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    terminalreporter.write_sep("-", "ours as a share of the baseline's rate (same run, best times)")
    for group, ratio, mark in _rate_ratios(session.benchmarks):
        terminalreporter.write_line(f"{group:<40} {ratio:7.1%}{mark}")
    for bench in session.benchmarks:
        rate = bench.extra_info.get("licences_per_second")
        if rate:
            terminalreporter.write_line(f"{bench.name:<40} {rate:9.0f} licences/s")
        pdf_rate = bench.extra_info.get("pdfs_per_second")
        if pdf_rate:
            goal = next((g for p, g in _PDF_RATE_GOALS.items() if (bench.group or "").startswith(p)), None)
            mark = ""
            if goal is not None and bench.extra_info.get("role") == "ours":
                mark = f"  (goal ≥ {goal:.0f}/s: {'met' if pdf_rate >= goal else 'NOT met'})"
            unit = "QR codes/s" if (bench.group or "").startswith("qr-") else "PDFs/s"  # as report.py
            terminalreporter.write_line(f"{bench.name:<48} {pdf_rate:7.1f} {unit}{mark}")
        if bench.extra_info.get("qr_version"):
            terminalreporter.write_line(f"{bench.name:<48} QR version {bench.extra_info['qr_version']}")
