"""Shared fixtures: SoftHSM2 tokens and open key backends; the CI skip policy.

SoftHSM2 reads ``SOFTHSM2_CONF`` when the module is initialised
(``C_Initialize``), which happens once per process and is shared by every
python-pkcs11 user of the module. So one configuration and one token
directory serve the whole session, and each test gets a token of its own
(a fresh label) inside it. ``PKCS11Backend`` finalises the module when its
last user closes and re-reads the slot list when a token is missing, so a
token created by ``softhsm2-util`` after an earlier test is found.

Under ``CI=true`` nothing that needs SoftHSM2 or PostgreSQL may be skipped:
a skipped test marked ``softhsm`` or ``postgres`` fails the run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hsm import KeyBackend, PKCS11Backend, SoftwareBackend, find_softhsm_module

TEST_PASSPHRASE = b"yinxin-test-keystore-passphrase"

_MANDATORY_MARKS = ("softhsm", "postgres")
_skipped_mandatory: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


# -- SoftHSM2 ------------------------------------------------------------------


@dataclass(frozen=True)
class SoftHSMToken:
    """A freshly initialised SoftHSM2 token for one test."""

    module: str
    label: str
    pin: str = field(repr=False)
    so_pin: str = field(repr=False)
    conf_path: Path


def _softhsm_util(*args: str) -> None:
    result = subprocess.run(["softhsm2-util", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"softhsm2-util {args[0]} failed: {result.stdout}{result.stderr}")


@pytest.fixture(scope="session")
def softhsm_module() -> str:
    """Path of SoftHSM2's PKCS#11 module; skips (fails under CI=true) without it."""
    path = find_softhsm_module()
    missing = None
    if path is None:
        missing = "SoftHSM2 is not installed (no libsofthsm2.so found)"
    elif shutil.which("softhsm2-util") is None:
        missing = "softhsm2-util is not on PATH"
    if missing is not None or path is None:
        message = f"{missing}: run `make system-deps` or install the softhsm2 package"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def softhsm_conf(softhsm_module: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session-wide token directory, with SOFTHSM2_CONF pointing at it."""
    root = tmp_path_factory.mktemp("softhsm")
    tokens = root / "tokens"
    tokens.mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        yield conf


@pytest.fixture
def make_softhsm_token(softhsm_module: str, softhsm_conf: Path) -> Iterator[Callable[[], SoftHSMToken]]:
    """Create new, empty tokens (own label, random PINs); all deleted after the test."""
    created: list[SoftHSMToken] = []

    def make() -> SoftHSMToken:
        token = SoftHSMToken(
            module=softhsm_module,
            label=f"yinxin-test-{secrets.token_hex(4)}",
            pin=f"user-{secrets.token_hex(6)}",
            so_pin=f"so-{secrets.token_hex(6)}",
            conf_path=softhsm_conf,
        )
        _softhsm_util(
            "--init-token", "--free", "--label", token.label, "--pin", token.pin, "--so-pin", token.so_pin
        )
        created.append(token)
        return token

    yield make
    for token in created:
        with contextlib.suppress(RuntimeError):  # a test may have moved a token away on purpose
            _softhsm_util("--delete-token", "--token", token.label)


@pytest.fixture
def softhsm_token(make_softhsm_token: Callable[[], SoftHSMToken]) -> SoftHSMToken:
    """A new, empty SoftHSM2 token for this test."""
    return make_softhsm_token()


# -- backends ------------------------------------------------------------------------


def _open_backend(kind: str, request: pytest.FixtureRequest) -> KeyBackend:
    if kind == "software":
        tmp_path: Path = request.getfixturevalue("tmp_path")
        return SoftwareBackend(tmp_path / "keystore", TEST_PASSPHRASE)
    token: SoftHSMToken = request.getfixturevalue("softhsm_token")
    return PKCS11Backend(token.module, token.label, token.pin)


@pytest.fixture(params=["software", pytest.param("pkcs11", marks=pytest.mark.softhsm)])
def backend(request: pytest.FixtureRequest) -> Iterator[KeyBackend]:
    """An open, empty key backend: the software keystore, then a SoftHSM2 token."""
    opened = _open_backend(request.param, request)
    yield opened
    opened.close()


@pytest.fixture
def reopen_backend(backend: KeyBackend, request: pytest.FixtureRequest) -> Iterator[Callable[[], KeyBackend]]:
    """Open another backend over the same keystore or token (a restart, when the first is closed)."""
    opened: list[KeyBackend] = []

    def reopen() -> KeyBackend:
        again = _open_backend(backend.name, request)
        opened.append(again)
        return again

    yield reopen
    for again in opened:
        again.close()


# -- CI: mandatory tests must not skip -----------------------------------------------------


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        marks = [mark for mark in _MANDATORY_MARKS if mark in report.keywords]
        if marks:
            _skipped_mandatory.append(f"{report.nodeid} ({', '.join(marks)})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _in_ci() and _skipped_mandatory and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _in_ci() and _skipped_mandatory:
        terminalreporter.section("skipped tests that CI requires", red=True)
        terminalreporter.line(
            f"CI=true: {len(_skipped_mandatory)} test(s) needing SoftHSM2/PostgreSQL were skipped; "
            "install them (make system-deps) - the run fails:"
        )
        for nodeid in _skipped_mandatory:
            terminalreporter.line(f"  {nodeid}")
