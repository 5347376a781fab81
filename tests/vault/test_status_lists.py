"""Status-list slots and publication, on SQLite and PostgreSQL.

Every licence gets a (list, index) slot chosen at random among the free
indices, never reused, with a new list once the current one is 75 % full; the
published list says revoked (1) and suspended (2) at the licence's index; the
publisher re-signs only when the list changed or its token is older than ttl.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from schemas.errors import NotFound
from signing._status_list import status_at, verify_status_list_token
from tests._status_support import Issued, issue_with_status
from tests.vault.conftest import SettableClock
from vault import Vault
from vault._models import LicenceRecord, StatusListRecord
from vault._status_lists import DEFAULT_LIST_SIZE, allocate_status_slots, status_bytes
from vault._status_publisher import (
    KEY_PURPOSE_STATUS_LIST,
    StatusListPublisher,
    ensure_status_list_key,
    status_list_trust_store,
)


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def slots(issued: list[Issued]) -> list[tuple[str, int]]:
    return [(i.status_list, i.status_index) for i in issued]


def test_each_licence_gets_a_random_unique_slot_named_in_its_token(ready_vault: Vault) -> None:
    issued = issue_with_status(ready_vault, 600)

    indices = [i.status_index for i in issued]
    assert {i.status_list for i in issued} == {"1"}
    assert len(set(indices)) == 600
    # Spread over the whole list (600 uniform draws all below 10 % has probability 0.9**600) and in
    # no particular order: nothing about a neighbour's index follows from one's own.
    assert min(indices) < DEFAULT_LIST_SIZE // 10 and max(indices) > DEFAULT_LIST_SIZE * 9 // 10
    assert indices != sorted(indices)
    assert sum(b - a == 1 for a, b in zip(sorted(indices), sorted(indices)[1:], strict=False)) < 30
    for licence in issued[:20]:
        assert claims_of(licence.token)["status"] == {
            "status_list": {"idx": licence.status_index, "uri": "http://127.0.0.1:8000/v1/status-lists/1"}
        }
    with ready_vault.db.read() as s:
        stored = s.execute(select(LicenceRecord.status_list, LicenceRecord.status_index)).all()
        (size,) = s.execute(select(StatusListRecord.size)).scalars().all()
    assert sorted(stored) == sorted(slots(issued)) and size == DEFAULT_LIST_SIZE


def test_slots_are_never_reused_across_batches_and_lists(ready_vault: Vault) -> None:
    issued: list[Issued] = []
    for count in (30, 30, 1, 30, 50, 7):
        issued += issue_with_status(ready_vault, count, list_size=64)

    assert len(set(slots(issued))) == len(issued) == 148
    per_list = Counter(i.status_list for i in issued)
    # A list takes new licences until 75 % of its 64 entries are used, then the next one opens.
    assert set(per_list) == {"1", "2", "3", "4"}
    assert all(n <= 48 for n in per_list.values()) and per_list["1"] >= 40
    assert all(0 <= i.status_index < 64 for i in issued)
    with ready_vault.db.read() as s:
        names = s.execute(select(StatusListRecord.name).order_by(StatusListRecord.name)).scalars().all()
    assert names == ["1", "2", "3", "4"]


def test_the_same_random_draws_skip_indices_already_used(ready_vault: Vault) -> None:
    first = issue_with_status(ready_vault, 20, list_size=4096, rng=random.Random(7))
    second = issue_with_status(ready_vault, 20, list_size=4096, rng=random.Random(7))
    # Same seed, same candidates: the allocator checks them against the stored licences.
    assert not set(slots(first)) & set(slots(second))
    assert {i.status_list for i in first + second} == {"1"}


def test_a_batch_larger_than_a_list_spans_new_lists(ready_vault: Vault) -> None:
    issued = issue_with_status(ready_vault, 120, list_size=64)
    assert len(set(slots(issued))) == 120
    assert Counter(i.status_list for i in issued) == {"1": 48, "2": 48, "3": 24}


def test_the_newest_list_is_the_greatest_number_not_the_last_name_in_text_order(ready_vault: Vault) -> None:
    now = ready_vault.clock()
    with ready_vault.db.write() as s:
        for number in range(1, 12):  # "11" and "10" come before "2" and "9" as text
            s.add(StatusListRecord(name=str(number), size=64, created_at=now))
    with ready_vault.db.write() as s:
        assert {name for name, _ in allocate_status_slots(s, 3, now=now)} == {"11"}


def test_concurrent_batches_get_distinct_slots(ready_vault: Vault) -> None:
    results: list[list[Issued]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(issue_with_status(ready_vault, 100, list_size=256))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    everything = [slot for batch in results for slot in slots(batch)]
    assert len(everything) == len(set(everything)) == 400


def test_nothing_to_allocate_opens_no_list(ready_vault: Vault) -> None:
    with ready_vault.db.write() as s:
        assert allocate_status_slots(s, 0, now=ready_vault.clock()) == []
        assert s.execute(select(func.count()).select_from(StatusListRecord)).scalar_one() == 0


def test_status_bytes_say_revoked_and_suspended(ready_vault: Vault) -> None:
    revoked, suspended, valid = issue_with_status(ready_vault, 3)
    ready_vault.revoke(revoked.identifier, reason="违法经营", actor="test")
    ready_vault.suspend(suspended.identifier, reason="核查", actor="test")

    with ready_vault.db.read() as s:
        packed = status_bytes(s, "1")
        with pytest.raises(NotFound):
            status_bytes(s, "2")
        with pytest.raises(NotFound):
            status_bytes(s, "../1")
    assert len(packed) == DEFAULT_LIST_SIZE * 2 // 8
    assert [status_at(packed, i.status_index, 2) for i in (revoked, suspended, valid)] == [1, 2, 0]
    assert sum(1 for byte in packed if byte) == 2

    ready_vault.reinstate(suspended.identifier, reason="核查完毕", actor="test")
    with ready_vault.db.read() as s:
        assert status_at(status_bytes(s, "1"), suspended.status_index, 2) == 0


def test_status_list_key_is_a_service_key_outside_the_licence_trust_list(ready_vault: Vault) -> None:
    info = ensure_status_list_key(ready_vault)
    assert ensure_status_list_key(ready_vault).kid == info.kid
    assert (info.purpose, info.department_code, info.algorithm, info.state) == (
        KEY_PURPOSE_STATUS_LIST,
        None,
        "ES256",
        "active",
    )
    assert info.kid in status_list_trust_store(ready_vault)
    assert info.kid not in ready_vault.trust_store(refresh=True)  # it never verifies a licence
    assert all(key.kid == info.kid for key in status_list_trust_store(ready_vault))
    assert [e.action for e in ready_vault.audit_events(subject=info.kid)] == ["key.generate"]


def test_publisher_signs_once_and_again_only_when_the_list_changed(
    ready_vault: Vault, clock: SettableClock
) -> None:
    first, second = issue_with_status(ready_vault, 2)
    publisher = StatusListPublisher(ready_vault)
    token = publisher.token("1").token
    trust = status_list_trust_store(ready_vault)
    uri = "http://127.0.0.1:8000/v1/status-lists/1"

    assert publisher.token("1").token == token  # cached
    issue_with_status(ready_vault, 5)  # new licences are VALID: the list is unchanged
    clock.advance(seconds=10)
    assert publisher.token("1").token == token

    ready_vault.suspend(first.identifier, reason="核查", actor="test")
    changed = publisher.token("1")
    assert changed.token != token and changed.uri == uri
    verified = verify_status_list_token(changed.token, trust, now=clock(), expected_uri=uri)
    assert (verified.status(first.status_index), verified.status(second.status_index)) == (2, 0)
    assert verified.ttl == 300 and verified.issued_at == int(clock().timestamp())

    clock.advance(seconds=299)
    assert publisher.token("1").token == changed.token
    clock.advance(seconds=1)  # as old as ttl: signed afresh, same content
    renewed = publisher.token("1")
    assert renewed.token != changed.token and renewed.issued_at == clock()
    assert verify_status_list_token(renewed.token, trust, now=clock(), expected_uri=uri).statuses == (
        verified.statuses
    )

    for name in ("2", "0", "01", "abc", "1/../1"):
        with pytest.raises(NotFound):
            publisher.token(name)
