"""Issuance: identifiers, serials, tokens, idempotency, holder data protection, nothing half-written."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import KeySet
from sqlalchemy import func, select, text, update

from hsm import SignatureAlgorithm
from schemas import LicenceCreate, LicenceIdentifier
from schemas.errors import (
    DepartmentNotFound,
    FaceDataInvalid,
    IdempotencyConflict,
    InvalidInput,
    NoActiveKey,
    UnknownLicenceType,
)
from signing import jwks_document
from tests._builders import example
from vault import BulkItem, Vault
from vault._models import AuditEventRecord, LicenceRecord, SerialCounterRecord


def counts(vault: Vault) -> tuple[int, int]:
    with vault.db.read() as s:
        licences = s.execute(select(func.count()).select_from(LicenceRecord)).scalar_one()
        events = s.execute(select(func.count()).select_from(AuditEventRecord)).scalar_one()
    return licences, events


def test_issued_licence_has_gbt36904_identifier_and_a_standard_jws(ready_vault: Vault) -> None:
    request = example(ready_vault)
    result = ready_vault.issue(request, actor="test")
    lic = result.licence
    assert result.created
    ident = LicenceIdentifier.parse(lic.identifier)
    assert (ident.type_code, ident.issuer_code, ident.year, ident.sequence, ident.version) == (
        request.licence_type,
        request.issuer,
        2026,
        1,
        1,
    )
    assert lic.identifier.startswith("1.2.156.3005.2.")

    # Independent verifier: joserfc holding only the published JWKS, algorithm pinned.
    keyset = KeySet.import_key_set(jwks_document(ready_vault.trust_store()))  # type: ignore[arg-type]
    obj = jws.deserialize_compact(lic.token, keyset, algorithms=["ES256"])
    assert obj.protected == {"alg": "ES256", "kid": lic.kid, "typ": "licence+jwt"}
    import json

    claims = json.loads(obj.payload)
    assert claims["iss"] == request.issuer
    assert claims["sub"] == claims["jti"] == lic.identifier
    assert claims["licence_type"] == request.licence_type
    assert claims["holder"]["name"] == request.holder.name
    assert claims["data"] == request.data
    assert {"iat", "nbf"} <= claims.keys()


def test_serials_are_sequential_per_type_issuer_and_year(ready_vault: Vault) -> None:
    ids = [
        LicenceIdentifier.parse(ready_vault.issue(example(ready_vault), actor="t").licence.identifier)
        for _ in range(3)
    ]
    assert [i.sequence for i in ids] == [1, 2, 3]
    other = example(ready_vault, "111")
    first_other = LicenceIdentifier.parse(ready_vault.issue(other, actor="t").licence.identifier)
    assert first_other.sequence == 1  # another type/issuer has its own counter


def test_a_batch_past_the_yearly_maximum_is_refused_whole_and_takes_no_number(ready_vault: Vault) -> None:
    """GB/T 36904 gives a type, issuer and year 9 999 999 serials: a batch that would pass the last
    one stores nothing, and the counter stays where it was."""
    request = example(ready_vault)
    first = LicenceIdentifier.parse(ready_vault.issue(request, actor="t").licence.identifier)
    counter = (
        SerialCounterRecord.type_code == request.licence_type,
        SerialCounterRecord.issuer_code == request.issuer,
        SerialCounterRecord.year == first.year,
    )
    with ready_vault.db.write() as s:
        s.execute(update(SerialCounterRecord).where(*counter).values(last_sequence=9_999_998))
    before = counts(ready_vault)
    items = [BulkItem(n, example(ready_vault), None) for n in (1, 2)]
    with pytest.raises(InvalidInput, match="exhausted"):
        ready_vault.issue_batch(items, actor="t")
    assert counts(ready_vault) == before
    with ready_vault.db.read() as s:
        assert s.execute(select(SerialCounterRecord.last_sequence).where(*counter)).scalar_one() == 9_999_998
    last = ready_vault.issue(example(ready_vault), actor="t").licence
    assert LicenceIdentifier.parse(last.identifier).sequence == 9999999


def test_citizen_id_is_masked_in_token_and_encrypted_at_rest(ready_vault: Vault) -> None:
    request = example(ready_vault, "111")
    full_id = request.holder.id
    lic = ready_vault.issue(request, actor="t").licence
    assert full_id not in lic.token
    import base64

    payload = base64.urlsafe_b64decode(lic.token.split(".")[1] + "==").decode()
    assert full_id not in payload
    assert lic.holder_id_masked != full_id and lic.holder_id_masked[-4:] == full_id[-4:]
    with ready_vault.db.read() as s:
        raw = s.execute(text("SELECT * FROM licences")).mappings().one()
    assert full_id.encode() not in bytes(raw["holder_id_ciphertext"])
    assert full_id not in str(dict(raw))
    # Authorised look-ups still work through the backend keys.
    assert ready_vault.holder_id(lic.identifier) == full_id
    assert [x.identifier for x in ready_vault.licences_for_holder("111", full_id)] == [lic.identifier]
    assert ready_vault.licences_for_holder("111", full_id[:-1] + "0") == []


def test_idempotency_key_returns_first_result_and_refuses_other_body(ready_vault: Vault) -> None:
    request = example(ready_vault)
    first = ready_vault.issue(request, idempotency_key="req-42", actor="t")
    again = ready_vault.issue(request, idempotency_key="req-42", actor="t")
    assert again.licence.identifier == first.licence.identifier
    assert again.licence.token == first.licence.token
    assert first.created and not again.created
    before = counts(ready_vault)
    other = example(ready_vault, holder={**request.holder.model_dump(), "name": "另一个人"})
    with pytest.raises(IdempotencyConflict, match="already used for a different request"):
        ready_vault.issue(other, idempotency_key="req-42", actor="t")
    assert counts(ready_vault) == before


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"licence_type": "91350100M000100Y43999"}, UnknownLicenceType, "91350100M000100Y43999"),
        ({"data": {"unexpected": "x"}}, FaceDataInvalid, "data"),
    ],
)
def test_bad_requests_leave_the_vault_unchanged(
    ready_vault: Vault, change: dict[str, Any], error: type[Exception], message: str
) -> None:
    ready_vault.issue(example(ready_vault), actor="t")
    before = counts(ready_vault)
    with pytest.raises(error, match=message):
        ready_vault.issue(example(ready_vault, **change), actor="t")
    assert counts(ready_vault) == before
    # No serial was burnt: the next good licence takes the next number.
    nxt = LicenceIdentifier.parse(ready_vault.issue(example(ready_vault), actor="t").licence.identifier)
    assert nxt.sequence == 2


def test_unknown_issuer_and_issuer_without_key(vault: Vault) -> None:
    request = example(vault)
    with pytest.raises(DepartmentNotFound, match="yinxin dept add"):
        vault.issue(request, actor="t")
    vault.add_department(request.issuer, "某市市场监督管理局", actor="t")
    with pytest.raises(NoActiveKey, match="yinxin keys generate"):
        vault.issue(request, actor="t")
    assert counts(vault)[0] == 0


def test_holder_kind_must_match_the_licence_type(ready_vault: Vault) -> None:
    person = example(ready_vault, "111")
    org_type = next(t for t in ready_vault.types.all() if t.holder_id_type == "001")
    body = {**org_type.example, "holder": person.holder.model_dump()}
    with pytest.raises(InvalidInput, match=r"holder\.id_type"):
        ready_vault.issue(LicenceCreate.model_validate(body), actor="t")


def test_new_key_retires_old_one_and_old_tokens_still_verify(ready_vault: Vault) -> None:
    request = example(ready_vault)
    old = ready_vault.issue(request, actor="t").licence
    new_key = ready_vault.generate_key(request.issuer, SignatureAlgorithm.EDDSA, actor="t")
    states = {k.kid: k.state for k in ready_vault.list_keys()}
    assert states[old.kid] == "retired" and states[new_key.kid] == "active"
    new = ready_vault.issue(request, actor="t").licence
    assert new.kid == new_key.kid
    assert ready_vault.verify(old.token).valid
    assert ready_vault.verify(new.token).valid


def test_concurrent_issuers_get_distinct_gapless_serials(ready_vault: Vault) -> None:
    request = example(ready_vault)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                results.append(ready_vault.issue(request, actor="t").licence.identifier)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    sequences = sorted(LicenceIdentifier.parse(i).sequence for i in results)
    assert sequences == list(range(1, 21))
    assert ready_vault.verify_audit().ok


def test_batch_reports_bad_items_and_issues_the_rest_once(ready_vault: Vault) -> None:
    good = example(ready_vault)
    bad = example(ready_vault, data={"nope": 1})
    person = example(ready_vault, "111")
    items = [
        BulkItem(1, good, "k1"),
        BulkItem(2, bad, "k2"),
        BulkItem(3, person, "k3"),
        BulkItem(4, good, "k1"),
    ]
    first = ready_vault.issue_batch(items, actor="t")
    assert [o.created for o in first] == [True, False, True, False]
    assert first[1].error_code == "face_data_invalid"
    assert first[3].identifier == first[0].identifier  # same key twice: one licence
    again = ready_vault.issue_batch(items, actor="t")
    assert [o.identifier for o in again] == [o.identifier for o in first]
    assert not any(o.created for o in again)
    assert counts(ready_vault)[0] == 2


def test_batch_outcomes_carry_the_licence_unless_asked_not_to(ready_vault: Vault) -> None:
    [with_licence] = ready_vault.issue_batch([BulkItem(1, example(ready_vault), "a")], actor="t")
    assert with_licence.licence == ready_vault.get(with_licence.identifier)
    [bare] = ready_vault.issue_batch([BulkItem(1, example(ready_vault), "b")], actor="t", licences=False)
    assert bare.created and bare.licence is None and bare.key is not None
    assert ready_vault.get(bare.identifier).identifier == bare.identifier  # stored all the same


def test_timestamps_come_back_timezone_aware_in_utc(ready_vault: Vault) -> None:
    """SQLite has no timezone type: read-back times must still be aware UTC, not naive wall time."""
    from datetime import UTC

    lic = ready_vault.issue(example(ready_vault), actor="t").licence
    stored = ready_vault.get(lic.identifier)
    assert stored.issued_at.tzinfo is not None
    assert stored.issued_at == ready_vault.clock()
    assert stored.issued_at.utcoffset() == UTC.utcoffset(None)
    assert stored.summary()["issued_at"].endswith("+00:00")
    assert all(k.created_at.tzinfo is not None for k in ready_vault.list_keys())


def test_concurrent_retries_with_one_idempotency_key_make_one_licence(ready_vault: Vault) -> None:
    request = example(ready_vault)
    barrier = threading.Barrier(4)
    identifiers: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            identifiers.append(
                ready_vault.issue(request, idempotency_key="same", actor="t").licence.identifier
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(identifiers)) == 1 and len(identifiers) == 4
    assert counts(ready_vault)[0] == 1


def test_issuance_look_ups_probe_their_index_whatever_the_statistics(ready_vault: Vault) -> None:
    """The idempotency and status-slot look-ups of every issuance use their unique index even
    when the database's statistics date from an empty table (a new database filling fast, before
    autovacuum analyses it), instead of reading every licence of the issuer or list."""
    from vault._status_lists import _USED_AMONG
    from vault._vault import _EARLIER_FOR_KEYS

    db = ready_vault.db
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE licences"))  # statistics of the empty table
    base = example(ready_vault)
    for start in range(0, 600, 200):
        items = [BulkItem(n, base, f"plan-{n}") for n in range(start, start + 200)]
        ready_vault.issue_batch(items, actor="test")
    keys = [f"plan-{n}" for n in range(590, 610)]
    candidates = list(range(0, 4096, 16))
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            plans = {
                "idempotency": _EARLIER_FOR_KEYS["postgresql"],
                "status slots": _USED_AMONG["postgresql"],
            }
            params = {"issuer": base.issuer, "keys": keys, "name": "1", "candidates": candidates}
            for what, statement in plans.items():
                plan = "\n".join(conn.execute(text("EXPLAIN " + statement.text), params).scalars())
                assert "Nested Loop" in plan and "Index" in plan, (what, plan)
                assert "Bitmap Heap Scan" not in plan and "Seq Scan on licences" not in plan, (what, plan)
            found = conn.execute(_EARLIER_FOR_KEYS["postgresql"], params).all()
        else:
            earlier = _EARLIER_FOR_KEYS["sqlite"].params(issuer=base.issuer, keys=keys)
            compiled = str(earlier.compile(db.engine, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled))
            assert "USING INDEX" in plan and "SCAN licences" not in plan, plan
            used = _USED_AMONG["sqlite"].text.replace(":name", "'1'").replace(":candidates", "'[1,2,3]'")
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + used))
            assert "USING COVERING INDEX" in plan and "SCAN licences" not in plan, plan
            found = conn.execute(earlier).all()
    # And the look-up answers: the ten keys issued above, with their licences.
    assert sorted(row[0] for row in found) == [f"plan-{n}" for n in range(590, 600)]
