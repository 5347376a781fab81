"""Group commit for licences issued one at a time by concurrent callers (``Vault.issue``).

Every issuance is a write transaction that ends in a durable commit, and a database has one
writer at a time (SQLite's write lock; PostgreSQL's serial-counter and audit-head row locks): so
requests that each commit alone queue for the lock, and a busy API issues no faster than one
transaction's fixed cost (the locks, the key look-ups, the commit's flush to disk) allows.

Here the caller that finds no transaction in flight *leads*: it takes every request queued so far
(up to ``max_batch``), issues them with :meth:`Vault.issue_batch` in one transaction, one commit,
gives each caller its own outcome and steps down; a caller still waiting then leads the next
group. Under light load a group is one request and nothing waits; under heavy load the groups
grow by themselves, to the requests that arrived while the previous commit ran. No timer, no
thread of its own.

What each caller gets is what it would get alone:

- its licence only once the transaction holding it has committed;
- its own refusal (bad face data, an idempotency key reused for another request, an issuer with
  no active key): one request's fault is not its neighbours';
- if the transaction itself fails (the database or the key backend is down), the same error as
  every other request in it, with nothing of any of them stored; a retry with the same
  ``Idempotency-Key`` is safe, as it is for a lone request;
- a database conflict (another process committed one of the group's idempotency keys first)
  sends each request of the group through the lone path, which reads the winner's result.

Serial numbers stay gapless: a group reserves its numbers inside its transaction, as a bulk batch
does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vault._db import DatabaseConflict
from vault._types import BulkOutcome

if TYPE_CHECKING:
    from vault._vault import BulkItem

__all__ = ["MAX_GROUP", "AsyncGroupCommit", "GroupCommit"]

log = logging.getLogger("yinxin.vault")

MAX_GROUP = 256  # requests in one transaction at most: bounds a group's commit time and memory


@dataclass(eq=False)
class _Ticket:
    item: BulkItem
    woken: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    lead: bool = False  # still queued, and handed the lead: run the next group
    outcome: BulkOutcome | None = None
    error: BaseException | None = None
    alone: bool = False  # the group hit a conflict: issue this one by itself


_Finish = Callable[[Sequence["BulkItem"], list[BulkOutcome]], list[BulkOutcome]]


class _Groups:
    """What both group commits keep: the batch to run, the finish step, the bound and counters."""

    def __init__(
        self,
        issue_batch: Callable[[Sequence[BulkItem]], list[BulkOutcome]],
        finish: _Finish | None,
        max_group: int,
    ) -> None:
        if max_group < 1:
            raise ValueError("a group holds at least one request")
        self._issue_batch = issue_batch
        self._finish = finish
        self.max_group = max_group
        self.groups = 0  # transactions run (for tests and the curious)
        self.largest = 0  # the largest group so far

    def _counted(self, size: int) -> None:
        self.groups += 1
        self.largest = max(self.largest, size)


class GroupCommit(_Groups):
    """Leader/follower group commit over *issue_batch* (``Vault.issue_batch`` with per-item actors).

    Each caller sleeps on an event of its own and is woken once: when its outcome is settled, or
    when it is handed the lead. (One condition notified to all would wake every waiting caller
    after every group, to find that nearly all of them must sleep again.)

    *finish*, if given, takes each committed group's items and outcomes and returns the outcomes
    to answer with (``Vault`` signs the presentation tokens asked for). It runs once the lead has
    passed to the next group, so its work overlaps the next transaction, and before any caller
    of the group is answered. It should not raise: what it raises is logged, and the outcomes go
    out as they were.
    """

    def __init__(
        self,
        issue_batch: Callable[[Sequence[BulkItem]], list[BulkOutcome]],
        *,
        finish: _Finish | None = None,
        max_group: int = MAX_GROUP,
    ) -> None:
        super().__init__(issue_batch, finish, max_group)
        self._lock = threading.Lock()
        self._pending: list[_Ticket] = []
        self._leading = False

    def submit(self, item: BulkItem) -> BulkOutcome | None:
        """Issue *item* in the next group to commit; its outcome, or None when the group hit a
        database conflict and the caller must issue it alone. Raises what the transaction raised."""
        ticket = _Ticket(item)
        with self._lock:
            self._pending.append(ticket)
            ticket.lead = not self._leading
            self._leading = True
        while not ticket.done:
            if ticket.lead:
                ticket.lead = False
                self._lead()
            else:
                ticket.woken.wait()
                ticket.woken.clear()
        if ticket.error is not None:
            raise ticket.error
        return None if ticket.alone else ticket.outcome

    def _lead(self) -> None:
        """Run the queue's first group, pass the lead on, then settle the group's tickets."""
        with self._lock:
            group = self._pending[: self.max_group]
            del self._pending[: self.max_group]
        try:
            outcomes = self._run(group)
        finally:
            with self._lock:
                successor = self._pending[0] if self._pending else None
                if successor is None:
                    self._leading = False
                else:
                    successor.lead = True
            if successor is not None:
                successor.woken.set()
        try:
            if outcomes is not None and self._finish is not None:
                self._finish_group(group, outcomes)
        finally:
            for t in group:
                t.done = True
                t.woken.set()

    def _finish_group(self, group: list[_Ticket], outcomes: list[BulkOutcome]) -> None:
        assert self._finish is not None
        try:
            finished = self._finish([t.item for t in group], outcomes)
            if len(finished) != len(group):
                raise ValueError(f"{len(finished)} outcomes for a group of {len(group)}")
        except Exception:
            log.exception("finishing a group of %d issuances failed: answered as committed", len(group))
            return
        for t, outcome in zip(group, finished, strict=True):
            t.outcome = outcome

    def _run(self, group: list[_Ticket]) -> list[BulkOutcome] | None:
        """Issue *group* in one transaction; its outcomes, or None with every ticket's error or
        conflict set. Never raises."""
        self._counted(len(group))
        try:
            outcomes = self._issue_batch([t.item for t in group])
        except DatabaseConflict:
            log.info("group of %d issuances hit a database conflict: each is issued alone", len(group))
            for t in group:
                t.alone = True
            return None
        except BaseException as exc:  # the transaction failed as a whole: each caller gets it
            for t in group:
                t.error = exc
            return None
        for t, outcome in zip(group, outcomes, strict=True):
            t.outcome = outcome
        return outcomes


class AsyncGroupCommit(_Groups):
    """The same group commit for callers on one event loop (``Vault.issue_async``).

    A caller awaits a future instead of holding a thread: the first caller to find no group in
    flight starts a leader task, which hands each group to *executor*'s threads (the transaction
    must not stall the loop) and takes the next group as soon as the previous one has committed,
    until none is waiting. A committed group's *finish* step runs on another of *executor*'s
    threads meanwhile, and its callers are answered once it is done. What each caller gets is
    what :class:`GroupCommit` gives it.

    Measured (benchmarks/README.md): the route's work on the event loop and the transaction on a
    thread of its own cost half the CPU of a request handed to the thread pool to wait there.
    """

    def __init__(
        self,
        issue_batch: Callable[[Sequence[BulkItem]], list[BulkOutcome]],
        executor: Callable[[], Executor],
        *,
        finish: _Finish | None = None,
        max_group: int = MAX_GROUP,
    ) -> None:
        super().__init__(issue_batch, finish, max_group)
        self._executor = executor
        self._pending: list[tuple[BulkItem, asyncio.Future[BulkOutcome | None]]] = []
        self._leader: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()

    async def submit(self, item: BulkItem) -> BulkOutcome | None:
        """:meth:`GroupCommit.submit` for a coroutine."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BulkOutcome | None] = loop.create_future()
        self._pending.append((item, future))
        if self._leader is None:
            self._leader = loop.create_task(self._lead())
        return await future

    async def _lead(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                group = self._pending[: self.max_group]
                del self._pending[: self.max_group]
                items = [item for item, _ in group]
                self._counted(len(group))
                try:
                    outcomes = await loop.run_in_executor(self._executor(), self._issue_batch, items)
                except DatabaseConflict:
                    log.info(
                        "group of %d issuances hit a database conflict: each is issued alone", len(group)
                    )
                    _settle(group, [None] * len(group))
                    continue
                except BaseException as exc:  # the transaction failed as a whole: each caller gets it
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                if self._finish is None:
                    _settle(group, outcomes)
                else:
                    task = loop.create_task(self._finish_group(group, items, outcomes))
                    self._finishing.add(task)
                    task.add_done_callback(self._finishing.discard)
        except asyncio.CancelledError:
            # The loop is closing: nobody can be answered any more; fail whoever still waits.
            for _, future in self._pending:
                future.cancel()
            self._pending.clear()
            raise
        finally:
            self._leader = None

    async def _finish_group(
        self,
        group: list[tuple[BulkItem, asyncio.Future[BulkOutcome | None]]],
        items: list[BulkItem],
        outcomes: list[BulkOutcome],
    ) -> None:
        assert self._finish is not None
        finished: list[BulkOutcome] = outcomes
        try:
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(self._executor(), self._finish, items, outcomes)
            if len(answer) != len(group):
                raise ValueError(f"{len(answer)} outcomes for a group of {len(group)}")
            finished = answer
        except Exception:
            log.exception("finishing a group of %d issuances failed: answered as committed", len(group))
        finally:
            _settle(group, finished)


def _settle(
    group: list[tuple[BulkItem, asyncio.Future[BulkOutcome | None]]], outcomes: Sequence[BulkOutcome | None]
) -> None:
    for (_, future), outcome in zip(group, outcomes, strict=True):
        if not future.done():  # a caller that went away (cancelled) needs no answer
            future.set_result(outcome)
