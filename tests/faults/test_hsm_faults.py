"""The key backend fails under a running service: a real SoftHSM2 token, real faults.

The faults are made through the same loaded module the service uses (python-pkcs11's handle, or
the library's own ``C_CloseAllSessions``): sessions closed from outside, the module finalised,
the token taken away and brought back, the user PIN changed behind the service's back. Each is
made while the module's lock is held: the module was initialised without locking
(``C_Initialize(NULL)``, see :mod:`hsm._pkcs11_module`), so a call made beside another would
crash the process rather than test it.

What a user notices: requests during an outage get a 503 problem (never a 500), the service
reconnects by itself within 5 s without a restart, signing works afterwards, and no failure in
the middle of an issuance leaves a licence or an audit event behind.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from hsm import PKCS11Backend
from hsm._pkcs11_module import SharedModule, acquire_module, release_module
from tests.faults._load import Answer, Load
from tests.faults._support import Service, assert_problem, check_invariants, licence_request, open_service
from vault._models import KeyRecord, SerialCounterRecord

if TYPE_CHECKING:
    from tests.conftest import SoftHSMToken

pytestmark = [
    pytest.mark.softhsm,
    # python-pkcs11 objects of the broken sessions report, when collected, that their session is
    # gone ("Exception ignored in ... __del__"): the breakage these tests make on purpose.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

RECOVERY_GOAL_SECONDS = 5.0
BACKEND_CODES = {"backend_error", "backend_unavailable"}


@dataclass
class HSMService:
    service: Service
    backend: PKCS11Backend
    token: SoftHSMToken
    module: SharedModule

    @contextmanager
    def module_held(self) -> Iterator[None]:
        """No call of the service runs inside the module meanwhile (see the module docstring)."""
        with self.module.lock:
            yield

    def close_all_sessions(self) -> None:
        """``C_CloseAllSessions`` on the token's slot: every session of the service is gone."""
        with self.module_held():
            slot_id = self.module.lib.get_token(token_label=self.token.label).slot.slot_id
            library = ctypes.CDLL(self.token.module)  # the loaded library: the same state
            library.C_CloseAllSessions.argtypes = [ctypes.c_ulong]
            library.C_CloseAllSessions.restype = ctypes.c_ulong
            assert library.C_CloseAllSessions(slot_id) == 0

    def finalise(self) -> None:
        """``C_Finalize``: the module is down; every session and the login are gone."""
        with self.module_held():
            self.module.lib.finalize()

    @contextmanager
    def token_gone(self, parked: Path) -> Iterator[None]:
        """The token is away (an HSM that restarts, a network HSM out of reach) until the block ends."""
        directory = _token_directory(self.token)
        with self.module_held():
            shutil.move(directory, parked)
            self.module.lib.finalize()
        try:
            yield
        finally:
            shutil.move(parked, directory)


def _token_directory(token: SoftHSMToken) -> Path:
    tokendir = Path(token.conf_path.read_text().split("directories.tokendir = ")[1].splitlines()[0])
    for candidate in tokendir.iterdir():
        token_object = candidate / "token.object"
        if token_object.is_file() and token.label.encode() in token_object.read_bytes():
            return candidate
    raise AssertionError(f"no directory for token {token.label}")


@pytest.fixture
def hsm_service(softhsm_token: SoftHSMToken, tmp_path: Path) -> Iterator[HSMService]:
    """The API over SQLite and a SoftHSM2 token: the licence, service, audit and holder-data keys
    all live in the token."""
    backend = PKCS11Backend(softhsm_token.module, softhsm_token.label, softhsm_token.pin)
    module = acquire_module(softhsm_token.module)  # the backend's own (shared) module
    try:
        with open_service(f"sqlite:///{tmp_path / 'yinxin.db'}", backend, tmp_path / "home") as service:
            yield HSMService(service, backend, softhsm_token, module)
    finally:
        backend.close()
        release_module(module)


def _check_answers(answers: list[Answer], *, secrets: tuple[str, ...]) -> list[Answer]:
    """Every answer is a licence or a 503 problem naming the key backend; returns the 503s."""
    failed = []
    for answer in answers:
        assert answer.status in (201, 503), answer
        if answer.status == 503:
            assert answer.problem is not None and answer.problem["code"] in BACKEND_CODES, answer
            assert "key backend" in answer.problem["detail"] and "Idempotency-Key" in answer.problem["detail"]
            for secret in secrets:
                assert secret not in str(answer.problem)
            failed.append(answer)
    return failed


def _retry_until_issued(service: Service, failed: list[Answer]) -> None:
    """The requests that got a 503, retried with their keys: each is issued, once."""
    for answer in failed:
        r = service.issue(answer.body, answer.key)
        assert r.status_code == 201, r.text  # nothing of the first attempt was stored
        again = service.issue(answer.body, answer.key)
        assert again.status_code == 200 and again.json()["identifier"] == r.json()["identifier"]


def _signatures_verify(service: Service, answers: list[Answer]) -> None:
    for answer in answers:
        assert answer.identifier is not None
        token = service.vault.get(answer.identifier).token
        verdict = service.vault.verify(token)
        assert verdict.valid, verdict.reasons


def _report(request: pytest.FixtureRequest, name: str, seconds: float) -> None:
    request.node.user_properties.append((name, round(seconds, 3)))
    print(f"{request.node.name}: {name} = {seconds * 1000:.0f} ms")  # shown with -s


@pytest.mark.parametrize("fault", ["C_CloseAllSessions", "C_Finalize"])
def test_sessions_lost_under_load_reconnect_without_a_restart(
    hsm_service: HSMService, fault: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="yinxin")
    service = hsm_service.service
    break_it: Callable[[], None] = (
        hsm_service.close_all_sessions if fault == "C_CloseAllSessions" else hsm_service.finalise
    )
    with Load(service, threads=4) as load:
        load.wait_for(8)
        break_it()
        broken_at = time.monotonic()
        load.wait_for(12, since=broken_at)
    after = load.select(since=broken_at)
    failed = _check_answers(load.answers, secrets=(hsm_service.token.pin,))
    recovered_at = min(a.finished for a in after if a.status == 201)
    _report(request, "recovery_seconds", recovered_at - broken_at)
    assert recovered_at - broken_at <= RECOVERY_GOAL_SECONDS
    # Once one request got through, all did: the backend reconnected once, for good.
    assert all(a.status == 201 for a in after if a.started >= recovered_at)
    assert caplog.text.count("recovered: new sessions opened") == 1
    assert hsm_service.token.pin not in caplog.text

    _signatures_verify(service, [a for a in after if a.status == 201][:5])
    _retry_until_issued(service, failed)
    counts = check_invariants(service.vault)
    assert counts["licences"] == len({a.key for a in load.answers})


def test_token_outage_under_load_is_503_then_reconnects_within_5_s(
    hsm_service: HSMService, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    service = hsm_service.service
    assert service.api.get("/readyz").status_code == 200
    with Load(service, threads=4) as load:
        load.wait_for(8)
        with hsm_service.token_gone(tmp_path / "parked-token"):
            gone_at = time.monotonic()
            load.wait_for(6, status=503, since=gone_at)
            ready = service.api.get("/readyz")
            body = assert_problem(ready, 503, secrets=(hsm_service.token.pin, hsm_service.token.label))
            assert body["backend"] == "unavailable" and body["database"] == "ok"
            assert service.api.get("/healthz").status_code == 200  # alive: no reason to restart it
        back_at = time.monotonic()
        load.wait_for(8, since=back_at)
    failed = _check_answers(load.answers, secrets=(hsm_service.token.pin,))
    assert failed, "no request saw the outage"
    recovered_at = min(a.finished for a in load.select(status=201, since=back_at))
    _report(request, "outage_seconds", back_at - gone_at)
    _report(request, "recovery_seconds", recovered_at - back_at)
    assert recovered_at - back_at <= RECOVERY_GOAL_SECONDS
    assert all(a.status == 201 for a in load.answers if a.started >= recovered_at)
    assert service.api.get("/readyz").status_code == 200

    _signatures_verify(service, load.select(status=201, since=recovered_at)[:5])
    _retry_until_issued(service, failed)
    counts = check_invariants(service.vault)
    assert counts["licences"] == len({a.key for a in load.answers})


@pytest.mark.parametrize("after", ["sign", "encrypt"])
def test_hsm_failure_in_the_middle_of_an_issuance_leaves_nothing(
    hsm_service: HSMService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: str
) -> None:
    """The token goes away right after the licence's signature (or the holder ID's encryption) was
    made: the signature exists, but neither the licence nor its audit event may be stored.

    The wrapper only chooses the moment: the operation before it and the failure after it are the
    token's own."""
    service, backend = hsm_service.service, hsm_service.backend
    before = check_invariants(service.vault)
    real = getattr(backend, after)
    with ExitStack() as outage:
        gone: list[bool] = []

        def then_the_token_goes(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)  # a real operation on the token ...
            if not gone:  # ... then the token is gone before the next one
                gone.append(True)
                outage.enter_context(hsm_service.token_gone(tmp_path / "parked-token"))
            return result

        monkeypatch.setattr(backend, after, then_the_token_goes)
        body = licence_request(1)
        r = service.issue(body, "mid-issuance")
        assert gone, f"the issuance never called {after}"
        problem = assert_problem(r, 503, secrets=(hsm_service.token.pin,))
        assert problem["code"] in BACKEND_CODES

        counts = check_invariants(service.vault)  # no licence, no audit event, the serial given back
        assert counts == before
        with service.vault.db.read() as s:
            assert s.execute(select(func.count()).select_from(SerialCounterRecord)).scalar_one() == 0
            assert all(k.signature_count == 0 for k in s.execute(select(KeyRecord)).scalars())
        monkeypatch.undo()
    # The token is back: the same request, retried, is issued with the first serial.
    retried = service.issue(body, "mid-issuance")
    assert retried.status_code == 201, retried.text
    assert retried.json()["identifier"].split(".")[-3].endswith("0000001")
    assert service.vault.verify(retried.json()["token"]).valid
    assert check_invariants(service.vault)["licences"] == 1


def test_a_pin_refused_after_reconnecting_fails_readiness_naming_the_pin(
    hsm_service: HSMService, caplog: pytest.LogCaptureFixture
) -> None:
    """The security officer changed the user PIN; the service keeps its login until the module
    restarts, then the token refuses the configured PIN. The service stays up, says why it is not
    ready, and does not try the wrong PIN again on every request (an HSM locks it after a few)."""
    caplog.set_level(logging.DEBUG, logger="yinxin")
    service, token = hsm_service.service, hsm_service.token
    assert service.api.get("/readyz").status_code == 200
    new_pin = "changed-" + token.pin
    with hsm_service.module_held():
        # A session of the logged-in application may change the user's PIN (C_SetPIN).
        session = hsm_service.module.lib.get_token(token_label=token.label).open(rw=True)
        session.set_pin(token.pin, new_pin)
        session.close()
    assert service.issue(licence_request(1), "before").status_code == 201  # the login still holds
    hsm_service.finalise()  # the module restarts: the login is gone

    ready = service.api.get("/readyz")
    body = assert_problem(ready, 503, secrets=(token.pin, new_pin, token.label))
    assert body["backend"] == "unavailable" and body["database"] == "ok"
    assert "PIN incorrect" in body["detail"] and "key backend" in body["detail"]
    generation = hsm_service.module.generation

    for n in range(3):  # requests and probes go on: answered at once, the PIN not tried again
        r = service.issue(licence_request(2), f"after-{n}")
        assert assert_problem(r, 503, secrets=(token.pin, new_pin))["code"] in BACKEND_CODES
        assert "PIN incorrect" in service.api.get("/readyz").json()["detail"]
    assert hsm_service.module.generation == generation  # no re-initialisation, no further login
    assert caplog.text.count("; recovering") == 1  # the restart of the module, once
    assert service.api.get("/healthz").status_code == 200
    for pin in (token.pin, new_pin):
        assert pin not in caplog.text
    counts = check_invariants(service.vault)
    assert counts["licences"] == 1
