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

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vault._db import DatabaseConflict
from vault._types import BulkOutcome

if TYPE_CHECKING:
    from vault._vault import BulkItem

__all__ = ["MAX_GROUP", "GroupCommit"]

log = logging.getLogger("yinxin.vault")

MAX_GROUP = 256  # requests in one transaction at most: bounds a group's commit time and memory


@dataclass(eq=False)
class _Ticket:
    item: BulkItem
    done: bool = False
    outcome: BulkOutcome | None = None
    error: BaseException | None = None
    alone: bool = False  # the group hit a conflict: issue this one by itself


class GroupCommit:
    """Leader/follower group commit over *issue_batch* (``Vault.issue_batch`` with per-item actors)."""

    def __init__(
        self,
        issue_batch: Callable[[Sequence[BulkItem]], list[BulkOutcome]],
        *,
        max_group: int = MAX_GROUP,
    ) -> None:
        if max_group < 1:
            raise ValueError("a group holds at least one request")
        self._issue_batch = issue_batch
        self.max_group = max_group
        self._cond = threading.Condition()
        self._pending: list[_Ticket] = []
        self._leading = False
        self.groups = 0  # transactions run (for tests and the curious)
        self.largest = 0  # the largest group so far

    def submit(self, item: BulkItem) -> BulkOutcome | None:
        """Issue *item* in the next group to commit; its outcome, or None when the group hit a
        database conflict and the caller must issue it alone. Raises what the transaction raised."""
        ticket = _Ticket(item)
        with self._cond:
            self._pending.append(ticket)
        while True:
            with self._cond:
                while self._leading and not ticket.done:
                    self._cond.wait()
                if ticket.done:
                    break
                self._leading = True
                group = self._pending[: self.max_group]
                del self._pending[: self.max_group]
            try:
                self._run(group)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if ticket.error is not None:
            raise ticket.error
        return None if ticket.alone else ticket.outcome

    def _run(self, group: list[_Ticket]) -> None:
        """Issue *group* in one transaction and settle every ticket; never raises."""
        self.groups += 1
        self.largest = max(self.largest, len(group))
        try:
            outcomes = self._issue_batch([t.item for t in group])
        except DatabaseConflict:
            log.info("group of %d issuances hit a database conflict: each is issued alone", len(group))
            for t in group:
                t.alone, t.done = True, True
            return
        except BaseException as exc:  # the transaction failed as a whole: each caller gets it
            for t in group:
                t.error, t.done = exc, True
            return
        for t, outcome in zip(group, outcomes, strict=True):
            t.outcome, t.done = outcome, True
