"""Licence keys through their life: rotation, destruction, compromise and re-issue, cryptoperiods,
pre-activation, the signed key-generation record, and who may do what.

Every test runs on SQLite and PostgreSQL; the ones that touch the private key run on the
software keystore and on a SoftHSM2 token (the ``key_vault`` fixture). What the token holds
after a destruction is read back through a raw python-pkcs11 session; fingerprints and
signatures are recomputed with ``cryptography`` and ``joserfc``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from joserfc import jws
from joserfc.jwk import KeySet
from sqlalchemy import select, update

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from schemas import LicenceIdentifier
from schemas.errors import (
    AuthenticationFailed,
    IllegalTransition,
    KeyNotFound,
    KeyNotUsable,
    PermissionDenied,
)
from signing import jwks_document
from tests._builders import example
from tests.vault._officer_support import (
    CST,
    DEPT,
    PASSWORD,
    active_licence_key,
    approve,
    approvers,
    audit_text,
    b64url_decode,
    b64url_encode,
    enrol,
    issue,
    licence_count,
    private_key_labels,
    security_officers,
    spki_sha256,
    token_serial,
    verify_es256_jws,
)
from tests.vault.conftest import SettableClock
from vault import BulkItem, Vault
from vault._keys import KeyPolicy
from vault._models import KeyCeremonyRecord, KeyRecord
from vault._officers import Role

ES256 = SignatureAlgorithm.ES256


def independently_verified(vault: Vault, token: str) -> dict[str, object]:
    """The claims of *token*, checked by joserfc against the published JWKS only."""
    keyset = KeySet.import_key_set(jwks_document(vault.trust_store(refresh=True)))  # type: ignore[arg-type]
    return json.loads(jws.deserialize_compact(token, keyset, algorithms=["ES256"]).payload)  # type: ignore[no-any-return]


# ---- rotation -----------------------------------------------------------------------------------


def test_rotation_retires_the_old_key_which_keeps_verifying_what_it_signed(
    key_vault: Vault, clock: SettableClock
) -> None:
    vault = key_vault
    old = issue(vault)
    old_kid = old.kid
    clock.advance(hours=1)

    new_key = vault.rotate_key(DEPT, officer=None, actor="t")

    assert new_key.kid != old_kid
    assert (new_key.state, new_key.algorithm, new_key.backend) == ("active", "ES256", vault.backend.name)
    keys = {k.kid: k for k in vault.list_keys()}
    assert keys[old_kid].state == "retired"
    assert keys[old_kid].retired_at == clock()
    assert keys[new_key.kid].state == "active"
    # The old token still verifies, now under a retired key.
    verdict = vault.verify(old.token)
    assert (verdict.valid, verdict.kid) == (True, old_kid)
    assert independently_verified(vault, old.token)["jti"] == old.identifier
    # New licences are signed by the new key.
    new = issue(vault)
    assert new.kid == new_key.kid
    assert vault.verify(new.token).valid
    assert independently_verified(vault, new.token)["jti"] == new.identifier
    # Both are published, each with its state.
    trust = vault.trust_store(refresh=True)
    assert old_kid in trust and new_key.kid in trust
    assert (trust.get(old_kid).state, trust.get(new_key.kid).state) == ("retired", "active")  # type: ignore[union-attr]
    licence_keys = {k.kid: k.state for k in vault.list_keys() if k.purpose == "licence-signing"}
    assert licence_keys == {old_kid: "retired", new_key.kid: "active"}
    generated = [e for e in vault.audit_events(subject=new_key.kid) if e.action == "key.generate"]
    assert generated[0].details["retired"] == [old_kid]
    assert generated[0].actor == "t"


# ---- destruction ------------------------------------------------------------------------------------


def test_destroy_deletes_the_private_key_but_not_what_it_signed(
    key_vault: Vault, backend: KeyBackend, request: pytest.FixtureRequest
) -> None:
    vault = key_vault
    old = issue(vault)
    old_kid = old.kid
    new_kid = vault.rotate_key(DEPT, officer=None, actor="t").kid
    public_before = vault.key_details(old_kid)[0].public_jwk
    a, b = security_officers(vault, 2)

    # The active key cannot be destroyed: it still signs.
    with pytest.raises(IllegalTransition, match=r"active and still signs: rotate first"):
        vault.approvals.request("key.destroy", {"kid": new_kid}, a)
    assert vault.approvals.list() == []

    done = approve(vault, "key.destroy", {"kid": old_kid}, [a, b])

    assert done.state == "executed"
    assert done.result == {"kid": old_kid, "state": "destroyed"}
    assert old_kid not in {k.kid for k in backend.list_keys()}
    assert new_kid in {k.kid for k in backend.list_keys()}
    with pytest.raises(KeyNotFound):
        backend.sign(KeyRef(old_kid, ES256), b"anything")
    with pytest.raises(KeyNotFound):
        backend.describe_key(old_kid)
    if backend.name == "pkcs11":
        # Seen from outside the backend: no private key object with that label is left on the token.
        labels = private_key_labels(request.getfixturevalue("softhsm_token"))
        assert old_kid not in labels
        assert new_kid in labels
    # The registry keeps the public key: what the key signed while trusted still verifies.
    info, _ = vault.key_details(old_kid)
    assert info.state == "destroyed" and info.destroyed_at is not None
    assert info.public_jwk == public_before
    assert vault.trust_store(refresh=True).get(old_kid).state == "destroyed"  # type: ignore[union-attr]
    verdict = vault.verify(old.token)
    assert (verdict.valid, verdict.status, verdict.kid) == (True, "valid", old_kid)
    (event,) = [e for e in vault.audit_events(subject=old_kid) if e.action == "key.destroy"]
    assert approvers(event.actor) == {"zhang.wei", "li.na"}
    assert event.details["private_key"] == "destroyed"
    # Destroyed is final.
    with pytest.raises(IllegalTransition, match="already destroyed"):
        vault.approvals.request("key.destroy", {"kid": old_kid}, a)


# ---- compromise and re-issue ----------------------------------------------------------------------------


def test_compromise_invalidates_everything_the_key_signed_and_reissue_replaces_it(
    key_vault: Vault, clock: SettableClock
) -> None:
    vault = key_vault
    licences = [issue(vault) for _ in range(3)]
    kid = licences[0].kid
    vault.suspend(licences[2].identifier, reason="经营场所核查", actor="operator-a")
    clock.advance(hours=2)
    since = (clock() - timedelta(hours=1)).astimezone(CST)
    a, b = security_officers(vault, 2)

    done = approve(
        vault,
        "key.compromise",
        {"kid": kid, "since": since.isoformat(), "reason": "备份介质丢失"},
        [a, b],
    )

    assert done.state == "executed", done.error
    assert done.result is not None
    replacement = done.result["replacement"]
    assert replacement and replacement != kid
    assert done.result["to_reissue"] == 3
    # Nothing the key signed verifies any more, whenever it was signed.
    for lic in licences:
        verdict = vault.verify(lic.token)
        assert (verdict.valid, verdict.codes) == (False, ("key_compromised",))
        assert "compromised" in verdict.reasons[0]
    assert kid not in vault.trust_store(refresh=True)
    # The department signs again at once, with a new key of the same algorithm.
    new_key = active_licence_key(vault)
    assert new_key.kid == replacement and new_key.algorithm == "ES256"
    assert vault.key_details(kid)[0].state == "compromised"
    assert vault.key_details(kid)[0].compromised_at == since
    assert issue(vault).kid == replacement

    report = vault.lifecycle.affected(kid)
    assert sorted(entry.identifier for entry in report.licences) == sorted(lic.identifier for lic in licences)
    assert all(entry.needs_reissue and not entry.after_compromise for entry in report.licences)
    assert report.to_reissue == 3

    reissued = approve(vault, "key.reissue", {"kid": kid}, [b, a])

    assert reissued.state == "executed", reissued.error
    assert reissued.result == {"kid": kid, "reissued": 3, "remaining": 0, "new_kid": replacement}
    for lic in licences:
        old_id = LicenceIdentifier.parse(lic.identifier)
        new_text = str(old_id.next_version())
        new_id = LicenceIdentifier.parse(new_text)  # the check character was recomputed
        assert (new_id.serial, new_id.version) == (old_id.serial, old_id.version + 1)
        new = vault.get(new_text)
        assert new.kid == replacement
        assert new.holder_name == lic.holder_name and new.data == lic.data
        assert independently_verified(vault, new.token)["jti"] == new_text
        was_suspended = lic.identifier == licences[2].identifier
        verdict = vault.verify(new.token)
        if was_suspended:  # re-issued as it stood: suspended
            assert (new.status, verdict.valid, verdict.status) == ("suspended", False, "suspended")
        else:
            assert (verdict.valid, verdict.kid) == (True, replacement)
        old_verdict = vault.verify(lic.token)
        assert old_verdict.codes == ("key_compromised",)
        assert any(f"re-issued as {new_text}" in reason for reason in old_verdict.reasons)
        assert vault.get(lic.identifier).status == "revoked"
    after = vault.lifecycle.affected(kid)
    assert after.to_reissue == 0
    assert not any(entry.needs_reissue for entry in after.licences)

    # Running it again finds nothing left to do.
    again = approve(vault, "key.reissue", {"kid": kid}, [a, b])
    assert again.state == "executed"
    assert again.result is not None and (again.result["reissued"], again.result["remaining"]) == (0, 0)
    assert vault.verify_audit().ok


def test_destroying_a_compromised_key_does_not_make_it_trusted_again(
    make_vault: Callable[..., Vault], clock: SettableClock
) -> None:
    vault = make_vault()
    lic = issue(vault)
    kid = lic.kid
    clock.advance(hours=1)
    a, b = security_officers(vault, 2)
    since = (clock() - timedelta(minutes=30)).astimezone(CST).isoformat()
    approve(vault, "key.compromise", {"kid": kid, "since": since, "reason": "令牌被盗"}, [a, b])
    assert vault.verify(lic.token).codes == ("key_compromised",)

    # Cleaning up: the stolen key's private half is destroyed (or the request is refused).
    with contextlib.suppress(IllegalTransition):
        approve(vault, "key.destroy", {"kid": kid}, [a, b])

    # Either way, a key once declared compromised never verifies anything again.
    assert kid not in vault.trust_store(refresh=True)
    assert kid not in {k["kid"] for k in jwks_document(vault.trust_store())["keys"]}
    verdict = vault.verify(lic.token)
    assert (verdict.valid, verdict.codes) == (False, ("key_compromised",))


# ---- cryptoperiod and signature budget ---------------------------------------------------------------------


def test_a_key_past_its_signing_period_stops_signing_until_rotated(
    make_vault: Callable[..., Vault], clock: SettableClock
) -> None:
    vault = make_vault(key_policy=KeyPolicy(signing_days={"licence-signing": 1}))
    kid = active_licence_key(vault).kid
    assert active_licence_key(vault).sign_until == clock() + timedelta(days=1)
    first = issue(vault)
    clock.advance(days=2)
    before = licence_count(vault)

    with pytest.raises(KeyNotUsable) as caught:
        issue(vault)

    message = str(caught.value)
    assert kid in message and "signing period" in message
    assert f"yinxin keys rotate --dept {DEPT}" in message
    assert licence_count(vault) == before
    # The end of signing is not the end of verifying.
    assert vault.verify(first.token).valid
    new_kid = vault.rotate_key(DEPT, officer=None, actor="t").kid
    assert issue(vault).kid == new_kid


def test_a_key_signs_no_more_than_its_signature_budget(make_vault: Callable[..., Vault]) -> None:
    vault = make_vault()
    budgeted = vault.generate_key(DEPT, ES256, actor="t", max_signatures=3)
    assert budgeted.max_signatures == 3
    assert issue(vault).kid == budgeted.kid
    # A batch that would pass the budget is refused whole, not signed in part.
    items = [BulkItem(i, example(vault), None) for i in range(3)]
    with pytest.raises(KeyNotUsable, match=f"{budgeted.kid} would pass its budget of 3 signatures"):
        vault.issue_batch(items, actor="t")
    assert vault.key_details(budgeted.kid)[0].signature_count == 1
    assert [issue(vault).kid for _ in range(2)] == [budgeted.kid] * 2
    before = licence_count(vault)
    events_before = len(audit_text(vault))

    with pytest.raises(KeyNotUsable, match=f"{budgeted.kid} has made 3 of its 3 allowed signatures"):
        issue(vault)

    assert licence_count(vault) == before
    assert len(audit_text(vault)) == events_before
    assert vault.key_details(budgeted.kid)[0].signature_count == 3
    assert vault.verify_audit().ok


def test_counting_signatures_refreshes_a_key_already_loaded_in_the_session(
    make_vault: Callable[..., Vault],
) -> None:
    # The count is a Core UPDATE (built once): an ORM object of that key loaded earlier in the
    # same transaction must not keep the old count (the seal path reads the key, then counts).
    vault = make_vault()
    kid = vault.generate_key(DEPT, ES256, actor="t", max_signatures=10).kid
    with vault.db.write() as s:
        # The key make_vault gave the department, retired by the one above.
        other = s.scalars(
            select(KeyRecord.kid).where(KeyRecord.department_code == DEPT, KeyRecord.kid != kid)
        ).one()
        loaded = s.get(KeyRecord, kid)
        untouched = s.get(KeyRecord, other)
        assert loaded is not None and untouched is not None
        assert loaded.signature_count == 0
        vault.keys.count_signatures(s, {kid: 4})
        assert loaded.signature_count == 4
        assert untouched.signature_count == 0
        vault.keys.count_signatures(s, {kid: 1, other: 2}, within_budget=True)  # 5 of 10: within
        assert (loaded.signature_count, untouched.signature_count) == (5, 2)
        with pytest.raises(KeyNotUsable, match=f"{kid} would pass its budget of 10 signatures"):
            vault.keys.count_signatures(s, {kid: 6}, within_budget=True)
        assert loaded.signature_count == 11  # counted in this transaction, which the caller rolls back
        s.rollback()
    assert vault.key_details(kid)[0].signature_count == 0


# ---- pre-activation ------------------------------------------------------------------------------


def test_a_pre_activation_key_waits_until_activated(
    make_vault: Callable[..., Vault], clock: SettableClock
) -> None:
    vault = make_vault()
    old_kid = active_licence_key(vault).kid
    waiting = vault.generate_key(DEPT, ES256, actor="t", pre_activation=True)

    assert waiting.state == "pre-activation"
    assert waiting.activated_at is None and waiting.sign_until is None
    assert waiting.kid not in vault.trust_store(refresh=True)
    before = issue(vault)
    assert before.kid == old_kid
    assert active_licence_key(vault).kid == old_kid

    clock.advance(hours=3)
    activated = vault.activate_key(waiting.kid, officer=None, actor="t")

    assert (activated.state, activated.activated_at) == ("active", clock())
    assert activated.sign_until == clock() + timedelta(days=365)  # the default cryptoperiod, from activation
    assert vault.key_details(old_kid)[0].state == "retired"
    assert waiting.kid in vault.trust_store(refresh=True)
    assert issue(vault).kid == waiting.kid
    assert vault.verify(before.token).valid
    with pytest.raises(IllegalTransition, match="only a pre-activation key can be activated"):
        vault.activate_key(waiting.kid, officer=None, actor="t")
    (event,) = [e for e in vault.audit_events(subject=waiting.kid) if e.action == "key.activate"]
    assert event.details["retired"] == [old_kid]


# ---- the key-generation (ceremony) record -------------------------------------------------------


def test_every_key_has_a_signed_generation_record_that_detects_tampering(
    key_vault: Vault, backend: KeyBackend, request: pytest.FixtureRequest
) -> None:
    vault = key_vault
    key = active_licence_key(vault)
    info, ceremony = vault.key_details(key.kid)
    assert ceremony is not None

    assert (ceremony.verified, ceremony.problem) == (True, None)
    record = ceremony.record
    assert record["kid"] == key.kid
    assert (record["algorithm"], record["purpose"], record["department"]) == (
        "ES256",
        "licence-signing",
        DEPT,
    )
    assert record["generated_by"] == "test"
    assert record["backend"] == backend.name
    assert record["module"]
    # The fingerprint is the public key's, recomputed here from the published JWK.
    assert record["public_key_sha256"] == spki_sha256(info.public_jwk)
    attributes = record["attributes"]
    if backend.name == "pkcs11":
        token = request.getfixturevalue("softhsm_token")
        assert record["module"] == token.module
        assert record["token_label"] == token.label
        assert record["token_serial"] == token_serial(token)
        assert attributes["CKA_SENSITIVE"] is True
        assert attributes["CKA_EXTRACTABLE"] is False
        assert attributes["CKA_ALWAYS_SENSITIVE"] is True
        assert attributes["CKA_NEVER_EXTRACTABLE"] is True
        assert attributes["CKA_LOCAL"] is True
    else:
        assert record["token_label"] is None and record["token_serial"] is None
        # A file keystore makes no claim about hardware protection.
        assert attributes["CKA_SENSITIVE"] is None and attributes["CKA_NEVER_EXTRACTABLE"] is None
        assert "software key" in record["protection"]

    # Signed by the audit key; checked here with cryptography alone.
    audit_jwk = vault.key_details(ceremony.signed_by)[0].public_jwk
    assert vault.key_details(ceremony.signed_by)[0].purpose == "audit"
    header, payload = verify_es256_jws(ceremony.token, audit_jwk)
    assert header == {"alg": "ES256", "kid": ceremony.signed_by, "typ": "key-ceremony+jwt"}
    assert payload == dict(record)
    # The audit key vouches for its own generation.
    _, audit_ceremony = vault.key_details(ceremony.signed_by)
    assert audit_ceremony is not None and audit_ceremony.verified
    assert audit_ceremony.signed_by == ceremony.signed_by

    # Edit the stored record (claim someone else generated it): the signature no longer holds.
    header_b64, payload_b64, signature_b64 = ceremony.token.split(".")
    forged = dict(json.loads(b64url_decode(payload_b64)), generated_by="someone-else")
    tampered = f"{header_b64}.{b64url_encode(json.dumps(forged).encode())}.{signature_b64}"
    with vault.db.write() as s:
        s.execute(update(KeyCeremonyRecord).where(KeyCeremonyRecord.kid == key.kid).values(token=tampered))
    _, after = vault.key_details(key.kid)
    assert after is not None
    assert after.verified is False
    assert "signature does not verify" in (after.problem or "")
    # Another key's genuine record does not pass for this one either.
    with vault.db.write() as s:
        s.execute(
            update(KeyCeremonyRecord)
            .where(KeyCeremonyRecord.kid == key.kid)
            .values(token=audit_ceremony.token)
        )
    _, swapped = vault.key_details(key.kid)
    assert swapped is not None and swapped.verified is False
    assert "describes key" in (swapped.problem or "")


# ---- officers and roles ------------------------------------------------------------------------------


def test_only_security_officers_run_keys_once_one_is_enrolled(make_vault: Callable[..., Vault]) -> None:
    vault = make_vault()
    old = issue(vault)
    retired = vault.rotate_key(DEPT, officer=None, actor="t")  # setup mode: the local user
    assert vault.setup_mode()
    boss = enrol(vault, "zhang.wei", acting=None)
    assert not vault.setup_mode()
    auditor = enrol(vault, "li.na", Role.AUDITOR, acting=boss)
    operator = enrol(vault, "wang.fang", Role.OPERATOR, acting=boss)

    for officer in (auditor, operator):
        with pytest.raises(PermissionDenied, match=f"officer {officer.name} is {officer.role}"):
            vault.approvals.request("key.destroy", {"kid": old.kid}, officer)
        with pytest.raises(PermissionDenied):
            vault.rotate_key(DEPT, officer=officer, actor="t")
        with pytest.raises(PermissionDenied):
            vault.activate_key(retired.kid, officer=officer, actor="t")
        with pytest.raises(PermissionDenied):
            vault.add_officer("zhao.lei", Role.OPERATOR, password=PASSWORD, acting=officer, actor="t")
    # Nobody acts anonymously any more.
    with pytest.raises(PermissionDenied, match="--officer"):
        vault.generate_key(DEPT, ES256, actor="t", officer=None)
    with pytest.raises(PermissionDenied, match="--officer"):
        vault.rotate_key(DEPT, officer=None, actor="t")
    with pytest.raises(PermissionDenied):
        vault.add_officer("zhao.lei", Role.SECURITY_OFFICER, password=PASSWORD, acting=None, actor="t")
    assert active_licence_key(vault).kid == retired.kid
    # The auditor may sign the audit head; the operator may not.
    assert vault.audit_checkpoint(officer=auditor, actor="t") is not None
    with pytest.raises(PermissionDenied):
        vault.audit_checkpoint(officer=operator, actor="t")
    # The security officer may, and is named in the log.
    rotated = vault.rotate_key(DEPT, officer=boss, actor="t")
    generated = [e for e in vault.audit_events(subject=rotated.kid) if e.action == "key.generate"]
    assert generated[0].actor == "officer:zhang.wei"


def test_a_wrong_password_is_refused_and_audited_without_the_password(
    make_vault: Callable[..., Vault],
) -> None:
    vault = make_vault()
    boss = enrol(vault, "zhang.wei", acting=None)
    enrol(vault, "li.na", acting=boss)
    wrong = "incorrect horse battery staple"

    with pytest.raises(AuthenticationFailed) as bad_password:
        vault.officer_login("zhang.wei", wrong)
    with pytest.raises(AuthenticationFailed) as unknown_name:
        vault.officer_login("nobody.here", PASSWORD)
    # The answer does not tell which officers exist.
    assert str(bad_password.value) == str(unknown_name.value)
    vault.disable_officer("li.na", acting=boss)
    with pytest.raises(AuthenticationFailed):
        vault.officer_login("li.na", PASSWORD)

    failures = [e for e in vault.audit_events(limit=1000) if e.action == "officer.login-failed"]
    assert [(e.actor, e.subject) for e in failures] == [
        ("anonymous", "zhang.wei"),
        ("anonymous", "nobody.here"),
        ("anonymous", "li.na"),
    ]
    for line in audit_text(vault):
        assert PASSWORD not in line and wrong not in line
    assert vault.verify_audit().ok
