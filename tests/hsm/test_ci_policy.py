"""Under CI=true a skipped SoftHSM2/PostgreSQL test fails the run (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SAMPLE = """
import pytest

@pytest.mark.softhsm
def test_needs_an_hsm():
    pytest.skip("no HSM on this machine")

@pytest.mark.postgres
def test_needs_a_database():
    pytest.skip("no database on this machine")

@pytest.mark.xfail(reason="known")
@pytest.mark.softhsm
def test_expected_failure():
    raise AssertionError

def test_plain():
    pytest.skip("optional")
"""

INI = """[pytest]
addopts = -p no:cacheprovider -p no:randomly
markers =
    softhsm: needs SoftHSM2
    postgres: needs PostgreSQL
"""


def run_sample(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_skipped_mandatory_tests_fail_in_ci(tmp_path: Path) -> None:
    result = run_sample(tmp_path, ci="true")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "skipped tests that CI requires" in result.stdout
    assert "test_needs_an_hsm (softhsm)" in result.stdout
    assert "test_needs_a_database (postgres)" in result.stdout
    assert "test_expected_failure" not in result.stdout.split("skipped tests that CI requires")[1]
    assert "test_plain" not in result.stdout.split("skipped tests that CI requires")[1]


@pytest.mark.parametrize("ci", [None, "false"])
def test_skips_are_fine_outside_ci(tmp_path: Path, ci: str | None) -> None:
    result = run_sample(tmp_path, ci=ci)
    assert result.returncode == pytest.ExitCode.OK, result.stdout + result.stderr
    assert "skipped tests that CI requires" not in result.stdout
