"""Group commit of concurrent single issuances (vault._group_commit), on SQLite and PostgreSQL.

To make a group deterministic the tests hold the database's write lock from outside (SQLite:
``BEGIN IMMEDIATE`` on a connection of their own; PostgreSQL: the serial counter's row lock), so
that the first caller's transaction waits while the others queue behind it; once the lock goes,
the first commits alone and the rest commit together, in one transaction.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select, text

from schemas import LicenceCreate
from schemas.errors import BackendError, IdempotencyConflict, InvalidInput, YinxinError
from tests._builders import example
from tests.faults._support import check_invariants
from vault import IssueResult, Vault
from vault import _vault as vault_module
from vault._db import DatabaseConflict
from vault._group_commit import GroupCommit
from vault._models import AuditEventRecord
from vault._presentation import verify_presentation_token
from vault._vault import BulkItem


@contextmanager
def write_lock_held(vault: Vault, request: LicenceCreate) -> Iterator[None]:
    """Hold what every issuance of *request*'s kind must lock first, until the block ends."""
    with vault.db.engine.execution_options(yinxin_write=True).connect() as conn:
        if vault.db.dialect == "sqlite":
            conn.exec_driver_sql("SELECT 1")  # begins the transaction: BEGIN IMMEDIATE, the write lock
        else:
            conn.execute(
                text("SELECT 1 FROM serial_counters WHERE type_code = :t AND issuer_code = :i FOR UPDATE"),
                {"t": request.licence_type, "i": request.issuer},
            )
        try:
            yield
        finally:
            conn.rollback()


def _queued(vault: Vault, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(vault._group_commit._pending) < n:
        assert time.monotonic() < deadline, f"only {len(vault._group_commit._pending)} of {n} queued"
        time.sleep(0.01)


def _in_one_group(
    vault: Vault, first: Callable[[], IssueResult], rest: list[Callable[[], IssueResult]]
) -> tuple[Future[IssueResult], list[Future[IssueResult]]]:
    """Run *first*, let it block on the held lock, queue *rest* behind it, then release."""
    with ThreadPoolExecutor(max_workers=len(rest) + 1) as pool:
        with write_lock_held(vault, example(vault)):
            head = pool.submit(first)
            deadline = time.monotonic() + 20
            while not vault._group_commit._leading:  # the first caller leads and waits for the lock
                assert time.monotonic() < deadline
                time.sleep(0.01)
            futures = [pool.submit(call) for call in rest]
            _queued(vault, len(rest))
        return head, futures


def _warm(vault: Vault) -> None:
    """One licence first: the serial counter row exists (PostgreSQL locks it in write_lock_held)."""
    vault.issue(example(vault), actor="warm-up")


def test_concurrent_issuances_share_one_transaction_each_with_its_own_outcome(ready_vault: Vault) -> None:
    _warm(ready_vault)
    base = example(ready_vault)
    bad_data = example(ready_vault, data={"unexpected": "face data"})
    requests: list[Callable[[], IssueResult]] = [
        *(
            (lambda n=n: ready_vault.issue(base, idempotency_key=f"k-{n}", actor=f"client:c{n}"))
            for n in range(6)
        ),
        lambda: ready_vault.issue(bad_data, actor="client:bad"),  # refused: its own answer
        lambda: ready_vault.issue(base, idempotency_key="k-0", actor="client:c0"),  # same key, same body
        lambda: ready_vault.issue(bad_data, idempotency_key="k-1", actor="client:c1"),  # key reused
    ]
    groups_before = ready_vault._group_commit.groups
    head, futures = _in_one_group(
        ready_vault, lambda: ready_vault.issue(base, idempotency_key="head", actor="client:head"), requests
    )
    assert head.result().created
    assert ready_vault._group_commit.groups - groups_before == 2  # the head alone, then the rest together
    assert ready_vault._group_commit.largest == len(requests)

    results: list[IssueResult | BaseException] = []
    for f in futures:
        try:
            results.append(f.result())
        except YinxinError as exc:
            results.append(exc)
    issued = [r for r in results[:6] if isinstance(r, IssueResult)]
    assert len(issued) == 6 and all(r.created for r in issued)
    assert isinstance(results[6], InvalidInput)
    replay = results[7]
    assert isinstance(replay, IssueResult) and not replay.created
    assert replay.licence.identifier == issued[0].licence.identifier
    assert isinstance(results[8], IdempotencyConflict)

    # Each licence as returned is the one stored, and its audit event names its own caller.
    for n, r in enumerate(issued):
        assert r.licence == ready_vault.get(r.licence.identifier)
        assert ready_vault.verify(r.licence.token).valid
        with ready_vault.db.read() as s:
            event = s.execute(
                select(AuditEventRecord).where(AuditEventRecord.subject == r.licence.identifier)
            ).scalar_one()
        assert (event.actor, event.action) == (f"client:c{n}", "licence.issue")
        assert json.loads(event.details)["kid"] == r.licence.kid
    counts = check_invariants(ready_vault)  # gapless serials, one audit event per licence
    assert counts["licences"] == 1 + 1 + 6
    assert ready_vault.verify_audit().ok


def test_a_transaction_that_fails_fails_every_request_in_it_and_stores_none(ready_vault: Vault) -> None:
    _warm(ready_vault)
    base = example(ready_vault)
    backend = ready_vault.backend
    real_sign_many = backend.sign_many
    failing = threading.Event()

    def sign_many(key: Any, messages: Any) -> Any:
        if failing.is_set():
            raise BackendError("the key backend stopped answering (test)")
        return real_sign_many(key, messages)

    backend.sign_many = sign_many  # type: ignore[method-assign]
    try:
        failing.set()
        calls = [
            lambda n=n: ready_vault.issue(base, idempotency_key=f"f-{n}", actor="client:x") for n in range(5)
        ]
        head, futures = _in_one_group(
            ready_vault, lambda: ready_vault.issue(base, idempotency_key="f-head", actor="client:x"), calls
        )
        for f in [head, *futures]:
            with pytest.raises(YinxinError, match="stopped answering"):
                f.result()
        assert check_invariants(ready_vault)["licences"] == 1  # the warm-up only
        failing.clear()
        # The retries, with the same keys, issue each once.
        again = [ready_vault.issue(base, idempotency_key=f"f-{n}", actor="client:x") for n in range(5)]
        assert all(r.created for r in again)
        assert not ready_vault.issue(base, idempotency_key="f-0", actor="client:x").created
    finally:
        backend.sign_many = real_sign_many  # type: ignore[method-assign]
    assert check_invariants(ready_vault)["licences"] == 6


@pytest.mark.parametrize("threads", [16])
def test_a_burst_of_callers_issues_every_licence_once_in_fewer_transactions(
    ready_vault: Vault, threads: int
) -> None:
    base = example(ready_vault)
    groups_before = ready_vault._group_commit.groups
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(
            pool.map(
                lambda n: ready_vault.issue(base, idempotency_key=f"b-{n}", actor=f"client:{n % 3}"),
                range(threads * 8),
            )
        )
    assert all(r.created for r in results)
    assert len({r.licence.identifier for r in results}) == threads * 8
    assert check_invariants(ready_vault)["licences"] == threads * 8
    groups = ready_vault._group_commit.groups - groups_before
    # Callers that arrive while a transaction commits wait for the next one and share it.
    assert groups < threads * 8
    print(f"{threads * 8} issuances in {groups} transactions (largest {ready_vault._group_commit.largest})")


# ---- presentation tokens, signed for the group once it is stored -------------------------------


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_callers_who_ask_get_a_presentation_token_signed_with_their_group(ready_vault: Vault) -> None:
    base = example(ready_vault)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(
            pool.map(
                lambda n: ready_vault.issue(
                    base, idempotency_key=f"p-{n}", actor="client:x", presentation=n % 2 == 0
                ),
                range(64),
            )
        )
    for n, result in enumerate(results):
        if n % 2:
            assert result.presentation is None
            continue
        assert result.presentation is not None
        verdict = verify_presentation_token(ready_vault, result.presentation)
        assert (verdict.valid, verdict.status, verdict.kid) == (True, "valid", result.licence.kid)
        claims = _claims(result.presentation)
        assert claims["sub"] == result.licence.identifier
        assert claims["iat"] == int(ready_vault.clock().timestamp())
    # A replay has no new licence to present: the caller signs one itself (the route's fallback).
    replay = ready_vault.issue(base, idempotency_key="p-0", actor="client:x", presentation=True)
    assert (replay.created, replay.presentation) == (False, None)


def test_a_presentation_the_backend_refuses_leaves_the_licence_issued(
    ready_vault: Vault, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*args: Any, **kwargs: Any) -> list[str]:
        raise BackendError("the key backend stopped answering (test)")

    monkeypatch.setattr(vault_module, "sign_presentations", refused)
    result = ready_vault.issue(
        example(ready_vault), idempotency_key="r-1", actor="client:x", presentation=True
    )
    assert result.created and result.presentation is None
    assert ready_vault.verify(result.licence.token).valid
    assert "could not sign presentation tokens for 1 new licences: backend_error" in caplog.text


def test_a_finish_step_that_fails_answers_every_caller_as_committed(
    ready_vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(items: Any, outcomes: Any) -> Any:
        return outcomes[:-1]  # one outcome short: a bug, not to be passed on

    group_commit = GroupCommit(functools.partial(ready_vault.issue_batch, actor=""), finish=broken)
    outcome = group_commit.submit(
        BulkItem(0, example(ready_vault), "g-1", actor="client:x", presentation=True)
    )
    assert outcome is not None and outcome.created and outcome.presentation is None
    assert "finishing a group of 1 issuances failed" in caplog.text
    assert check_invariants(ready_vault)["licences"] == 1


# ---- the same on an event loop: Vault.issue_async ------------------------------------------------


def test_issuances_awaited_together_share_transactions_each_with_its_own_outcome(ready_vault: Vault) -> None:
    base = example(ready_vault)

    async def everyone() -> list[IssueResult]:
        return await asyncio.gather(
            *(
                ready_vault.issue_async(
                    base, idempotency_key=f"a-{n}", actor=f"client:{n % 3}", presentation=True
                )
                for n in range(64)
            )
        )

    results = asyncio.run(everyone())
    assert all(r.created for r in results)
    assert len({r.licence.identifier for r in results}) == 64
    for result in results:
        assert result.presentation is not None
        assert verify_presentation_token(ready_vault, result.presentation).valid
        assert ready_vault.verify(result.licence.token).valid
    counts = check_invariants(ready_vault)  # gapless serials, one audit event per licence
    assert counts["licences"] == 64
    # Replays, a conflicting body and a bad key, as Vault.issue answers them.
    body = base.model_dump(mode="json")
    other = LicenceCreate.model_validate({**body, "holder": {**body["holder"], "name": "另一位申请人"}})

    async def again() -> tuple[IssueResult, BaseException | None, BaseException | None]:
        replay = await ready_vault.issue_async(
            base, idempotency_key="a-7", actor="client:1", presentation=True
        )
        errors: list[BaseException | None] = []
        for request, key in ((other, "a-7"), (base, "k" * 201)):
            try:
                await ready_vault.issue_async(request, idempotency_key=key, actor="client:1")
                errors.append(None)
            except YinxinError as exc:
                errors.append(exc)
        return replay, errors[0], errors[1]

    replay, conflict, bad_key = asyncio.run(again())
    assert (replay.created, replay.presentation) == (False, None)
    assert replay.licence.identifier == results[7].licence.identifier
    assert isinstance(conflict, IdempotencyConflict)
    assert isinstance(bad_key, InvalidInput)
    assert check_invariants(ready_vault)["licences"] == 64


def test_an_awaited_transaction_that_fails_fails_every_caller_and_stores_none(ready_vault: Vault) -> None:
    base = example(ready_vault)
    backend = ready_vault.backend
    real_sign_many = backend.sign_many

    def sign_many(key: Any, messages: Any) -> Any:
        raise BackendError("the key backend stopped answering (test)")

    async def everyone() -> list[Any]:
        calls = (ready_vault.issue_async(base, idempotency_key=f"af-{n}", actor="client:x") for n in range(8))
        return await asyncio.gather(*calls, return_exceptions=True)

    backend.sign_many = sign_many  # type: ignore[method-assign]
    try:
        outcomes = asyncio.run(everyone())
    finally:
        backend.sign_many = real_sign_many  # type: ignore[method-assign]
    assert all(isinstance(o, BackendError) and "stopped answering" in str(o) for o in outcomes)
    assert check_invariants(ready_vault)["licences"] == 0
    retried = asyncio.run(everyone())
    assert all(isinstance(r, IssueResult) and r.created for r in retried)
    assert check_invariants(ready_vault)["licences"] == 8


def test_an_awaited_group_that_meets_a_conflict_issues_each_alone(
    ready_vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = example(ready_vault)
    real = ready_vault.issue_batch
    conflicts: list[int] = []

    def once_in_conflict(items: Any, *, actor: str) -> Any:
        if not conflicts:
            conflicts.append(len(items))
            raise DatabaseConflict("another process committed one of these keys first (test)")
        return real(items, actor=actor)

    monkeypatch.setattr(ready_vault, "issue_batch", once_in_conflict)

    async def everyone() -> list[IssueResult]:
        calls = (ready_vault.issue_async(base, idempotency_key=f"ac-{n}", actor="client:x") for n in range(6))
        return await asyncio.gather(*calls)

    results = asyncio.run(everyone())
    assert conflicts and all(r.created for r in results)
    assert check_invariants(ready_vault)["licences"] == 6
