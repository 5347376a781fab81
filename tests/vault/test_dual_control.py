"""Dual control (四眼原则): a dangerous key operation runs only when M distinct security officers approve.

One officer is never enough; the same officer twice is never two; a rejection or expiry kills
the request; every step is in the audit log under the officer's name. The operation used is
``key.destroy`` on a retired key (visible in the backend), and ``seal.revoke`` on a seal
(visible on the CRL). Runs on SQLite and PostgreSQL with the software keystore.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography import x509

from hsm import KeyRef, SignatureAlgorithm
from schemas.errors import Conflict, IllegalTransition, InvalidInput, KeyNotFound, PermissionDenied
from tests.vault._officer_support import DEPT, PASSWORD, approve, approvers, enrol, issue, security_officers
from tests.vault.conftest import SettableClock
from vault import Vault
from vault._officers import Officer, Role

ES256 = SignatureAlgorithm.ES256
SEAL_NAME = "北京市市场监督管理局行政审批专用章"


def retired_key(vault: Vault, officer: Officer | None = None) -> str:
    """Rotate the department's licence key; the kid of the key that retired."""
    old = issue(vault).kid
    vault.rotate_key(DEPT, officer=officer, actor="t")
    assert vault.key_details(old)[0].state == "retired"
    return old


def in_backend(vault: Vault, kid: str) -> bool:
    return kid in {k.kid for k in vault.backend.list_keys()}


def approval_events(vault: Vault, request_id: int) -> list[tuple[str, str]]:
    return [(e.action, e.actor) for e in vault.audit_events(subject=f"approval-{request_id}")]


# ---- M of N -----------------------------------------------------------------------------------


def test_one_officer_is_not_enough_and_the_same_officer_twice_is_not_two(
    make_vault: Callable[..., Vault], clock: SettableClock
) -> None:
    vault = make_vault()
    kid = retired_key(vault)
    a, b, _ = security_officers(vault, 3)

    pending = vault.approvals.request("key.destroy", {"kid": kid}, a)

    assert (pending.state, pending.approvals, pending.required) == ("pending", ("zhang.wei",), 2)
    assert pending.requested_by == "zhang.wei"
    assert kid in pending.summary and "destroy" in pending.summary
    assert pending.expires_at == clock() + timedelta(hours=24)
    assert in_backend(vault, kid) and vault.key_details(kid)[0].state == "retired"
    # The requester approving again is still one officer.
    with pytest.raises(Conflict, match="already approved") as twice:
        vault.approvals.approve(pending.id, a)
    assert not isinstance(twice.value, IllegalTransition)
    assert vault.approvals.get(pending.id).state == "pending"
    assert in_backend(vault, kid)
    # A second request for the same thing is pointed at the first.
    with pytest.raises(Conflict, match=f"request {pending.id} .* already pending"):
        vault.approvals.request("key.destroy", {"kid": kid}, b)

    clock.advance(minutes=5)
    done = vault.approvals.approve(pending.id, b, comment="核对密钥清单无误")

    assert done.state == "executed"
    assert done.approvals == ("zhang.wei", "li.na")
    assert done.result == {"kid": kid, "state": "destroyed"}
    assert not in_backend(vault, kid)
    with pytest.raises(KeyNotFound):
        vault.backend.sign(KeyRef(kid, ES256), b"x")
    assert approval_events(vault, done.id) == [
        ("approval.request", "officer:zhang.wei"),
        ("approval.approve", "officer:li.na"),
        ("approval.execute", "officers:zhang.wei,li.na"),
    ]
    request_event = vault.audit_events(subject=f"approval-{done.id}")[0]
    assert request_event.details == {"operation": "key.destroy", "params": {"kid": kid}, "required": 2}
    (destroyed,) = [e for e in vault.audit_events(subject=kid) if e.action == "key.destroy"]
    assert destroyed.actor == "officers:zhang.wei,li.na"
    # Once executed, nothing more can be decided.
    with pytest.raises(IllegalTransition, match="is executed"):
        vault.approvals.approve(done.id, vault.officer_login("wang.fang", PASSWORD))
    assert vault.verify_audit().ok


def test_any_rejection_kills_the_request(make_vault: Callable[..., Vault]) -> None:
    vault = make_vault()
    kid = retired_key(vault)
    a, b, c = security_officers(vault, 3)
    auditor = enrol(vault, "zhao.lei", Role.AUDITOR, acting=a)

    pending = vault.approvals.request("key.destroy", {"kid": kid}, a)
    # Only security officers decide.
    with pytest.raises(PermissionDenied):
        vault.approvals.approve(pending.id, auditor)
    with pytest.raises(PermissionDenied):
        vault.approvals.reject(pending.id, auditor, reason="不同意")
    with pytest.raises(PermissionDenied):
        vault.approvals.request("key.destroy", {"kid": kid}, auditor)
    assert vault.approvals.get(pending.id).state == "pending"
    rejected = vault.approvals.reject(pending.id, b, reason="未经变更审批")

    assert rejected.state == "rejected"
    assert rejected.rejections == ("li.na",) and rejected.decided_at is not None
    with pytest.raises(IllegalTransition, match="is rejected"):
        vault.approvals.approve(pending.id, c)
    assert vault.approvals.get(pending.id).state == "rejected"
    assert in_backend(vault, kid) and vault.key_details(kid)[0].state == "retired"
    assert approval_events(vault, pending.id) == [
        ("approval.request", "officer:zhang.wei"),
        ("approval.reject", "officer:li.na"),
    ]
    assert vault.audit_events(subject=f"approval-{pending.id}")[-1].details["reason"] == "未经变更审批"

    # The requester changing their mind kills it too; a new request may then be made.
    again = vault.approvals.request("key.destroy", {"kid": kid}, a)
    assert vault.approvals.reject(again.id, a, reason="申请有误").state == "rejected"
    with pytest.raises(IllegalTransition):
        vault.approvals.approve(again.id, b)
    with pytest.raises(InvalidInput, match="reason"):
        vault.approvals.reject(vault.approvals.request("key.destroy", {"kid": kid}, a).id, b, reason=" ")
    assert in_backend(vault, kid)
    # Requests are checked before anyone is asked.
    with pytest.raises(InvalidInput, match="not known"):
        vault.approvals.request("key.obliterate", {"kid": kid}, a)
    with pytest.raises(InvalidInput, match="unknown: force"):
        vault.approvals.request("key.destroy", {"kid": kid, "force": True}, b)


def test_a_request_expires_unapproved(make_vault: Callable[..., Vault], clock: SettableClock) -> None:
    vault = make_vault()
    kid = retired_key(vault)
    a, b = security_officers(vault, 2)
    pending = vault.approvals.request("key.destroy", {"kid": kid}, a)

    clock.advance(hours=25)

    with pytest.raises(IllegalTransition, match="expired"):
        vault.approvals.approve(pending.id, b)
    assert vault.approvals.get(pending.id).state == "expired"
    assert in_backend(vault, kid)
    assert approval_events(vault, pending.id) == [
        ("approval.request", "officer:zhang.wei"),
        ("approval.expire", "system"),
    ]
    # Listing also closes requests that ran out of time.
    other = vault.approvals.request("key.destroy", {"kid": kid}, a)
    clock.advance(hours=24)
    assert [r.state for r in vault.approvals.list()] == ["expired", "expired"]
    with pytest.raises(IllegalTransition):
        vault.approvals.reject(other.id, b, reason="太迟")


def test_three_approvals_when_three_are_required(make_vault: Callable[..., Vault]) -> None:
    vault = make_vault(approvals_required=3)
    kid = retired_key(vault)
    a = enrol(vault, "zhang.wei", acting=None)
    b = enrol(vault, "li.na", acting=a)

    # Too few officers to ever reach three approvals: refused at once, and nothing is pending.
    with pytest.raises(Conflict, match=r"needs 3 security officers' approval but only 2 is enrolled.*enrol"):
        vault.approvals.request("key.destroy", {"kid": kid}, a)
    assert vault.approvals.list() == []
    c = enrol(vault, "wang.fang", acting=a)

    request = vault.approvals.request("key.destroy", {"kid": kid}, a)
    request = vault.approvals.approve(request.id, b)
    assert (request.state, set(request.approvals), request.required) == ("pending", {"zhang.wei", "li.na"}, 3)
    assert in_backend(vault, kid)

    request = vault.approvals.approve(request.id, c)

    assert request.state == "executed"
    assert not in_backend(vault, kid)
    approvals = [
        e for e in vault.audit_events(subject=f"approval-{request.id}") if e.action == "approval.approve"
    ]
    assert [(e.details["approvals"], e.details["required"]) for e in approvals] == [(2, 3), (3, 3)]


# ---- seal revocation under dual control ----------------------------------------------------------


def test_seal_revocation_through_approvals_revokes_the_seal_and_retires_its_key(
    make_vault: Callable[..., Vault],
) -> None:
    vault = make_vault()
    vault.seals.init_ca(actor="installer")  # setup mode: the installation ceremony
    seal = vault.seals.create(DEPT, SEAL_NAME, actor="installer")
    a, b = security_officers(vault, 2)
    assert vault.key_details(seal.kid)[0].state == "active"
    with pytest.raises(IllegalTransition, match="revoke the seal first"):
        vault.approvals.request("key.destroy", {"kid": seal.kid}, a)

    done = approve(
        vault,
        "seal.revoke",
        {"seal_id": seal.seal_id, "reason": "印章遗失", "crl_reason": "keyCompromise"},
        [a, b],
    )

    assert done.state == "executed", done.error
    assert done.result == {"seal_id": seal.seal_id, "state": "revoked"}
    assert vault.seals.get(seal.seal_id).state == "revoked"
    assert vault.key_details(seal.kid)[0].state == "retired"
    crl = x509.load_der_x509_crl(vault.seals.crl())
    entry = crl.get_revoked_certificate_by_serial_number(seal.certificate.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    revoked = [e for e in vault.audit_events(subject=seal.seal_id) if e.action == "seal.revoke"]
    assert approvers(revoked[0].actor) == {"zhang.wei", "li.na"}
    with pytest.raises(IllegalTransition, match="already revoked"):
        vault.approvals.request("seal.revoke", {"seal_id": seal.seal_id, "reason": "再次"}, a)
    # Its key no longer signs, so it may now be destroyed (again under dual control).
    assert approve(vault, "key.destroy", {"kid": seal.kid}, [b, a]).state == "executed"
    assert not in_backend(vault, seal.kid)


def test_a_seal_revocation_that_cannot_run_is_refused_when_requested(
    make_vault: Callable[..., Vault],
) -> None:
    vault = make_vault()
    vault.seals.init_ca(actor="installer")
    seal = vault.seals.create(DEPT, SEAL_NAME, actor="installer")
    a, b = security_officers(vault, 2)

    # certificateHold is a suspension, not a revocation: refuse it before anyone is asked to approve.
    with pytest.raises(InvalidInput, match=r"certificateHold|CRL reason"):
        approve(
            vault,
            "seal.revoke",
            {"seal_id": seal.seal_id, "reason": "暂停使用", "crl_reason": "certificateHold"},
            [a, b],
        )
    assert vault.seals.get(seal.seal_id).state == "active"


# ---- concurrency -------------------------------------------------------------------------------------------


def run_together(*calls: Callable[[], object]) -> list[object]:
    """Run *calls* in threads released at the same moment; each result or the exception raised."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.parametrize("required", [2, 3])
def test_concurrent_approvals_run_the_operation_exactly_once(
    make_vault: Callable[..., Vault], required: int
) -> None:
    vault = make_vault(approvals_required=required)
    a, b, c = security_officers(vault, 3)
    for _ in range(2):
        kid = retired_key(vault, officer=a)
        request_id = vault.approvals.request("key.destroy", {"kid": kid}, a).id

        results = run_together(
            lambda rid=request_id: vault.approvals.approve(rid, b),  # type: ignore[misc]
            lambda rid=request_id: vault.approvals.approve(rid, c),  # type: ignore[misc]
        )

        errors = [r for r in results if isinstance(r, Exception)]
        if required == 3:
            assert errors == []  # both votes were needed, and both count
        else:
            # The slower approval finds the request already decided.
            assert len(errors) == 1 and isinstance(errors[0], IllegalTransition), results
        final = vault.approvals.get(request_id)
        assert final.state == "executed"
        assert len(final.approvals) == required
        actions = [action for action, _ in approval_events(vault, request_id)]
        assert actions.count("approval.execute") == 1
        assert actions.count("approval.approve") == required - 1
        assert len([e for e in vault.audit_events(subject=kid) if e.action == "key.destroy"]) == 1
        assert not in_backend(vault, kid)
    assert vault.verify_audit().ok
