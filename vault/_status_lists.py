"""Token Status List slots (draft-ietf-oauth-status-list): which list and index carry a licence's status.

Every licence gets a slot ``(list name, index)`` at issuance, written into its
token as the Referenced Token claim ``status: {status_list: {idx, uri}}``
(§6.1). The index is drawn uniformly at random among the list's free indices
(herd privacy, §12.2: neighbouring indices say nothing about issuance order or
issuer) and never reused (§13.2): the unique constraint on
``(status_list, status_index)`` guarantees it, and the allocator checks the
candidates against the stored licences in the same transaction. Lists hold
2**17 = 131 072 entries of 2 bits; a new list ("2", "3", …) is opened once the
current one is more than 75 % full, so random draws keep finding free indices.

Allocation is serialised per list by a row lock on the list (``SELECT … FOR
UPDATE`` on PostgreSQL; SQLite writers are serialised by ``BEGIN IMMEDIATE``),
taken after the serial counters and before the audit head, the same order in
every issuing transaction.

Fast for bulk issuance: a batch draws a few random candidates per licence and
asks the database which of them are taken (one indexed look-up), instead
of loading the list's used indices. The share of taken candidates estimates
how full the list is; only when that estimate comes near 75 % does the batch
count the list's licences exactly.
"""

from __future__ import annotations

import math
import random
import secrets
from array import array
from datetime import datetime
from typing import Any, Final

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from schemas.errors import InvalidInput, NotFound
from signing import StatusType, pack_statuses
from vault._db import DatabaseConflict
from vault._models import LicenceRecord, StatusListRecord

__all__ = [
    "DEFAULT_LIST_SIZE",
    "FILL_LIMIT",
    "STATUS_BITS",
    "STATUS_LIST_PATH",
    "allocate_status_slots",
    "check_list_name",
    "status_bytes",
    "status_list_uri",
]

STATUS_BITS: Final = 2  # 0 VALID, 1 INVALID (revoked), 2 SUSPENDED (§7.1)
DEFAULT_LIST_SIZE: Final = 2**17  # entries per list: 32 KiB uncompressed, a few hundred bytes as lst
FILL_LIMIT: Final = 0.75  # open a new list past this share of used indices
STATUS_LIST_PATH: Final = "/v1/status-lists/"

# Random candidates: the first draw assumes a list with room (a quarter more than wanted, and at
# least 256 so the fullness estimate has a standard error of at most 1/(2*sqrt(256))); later
# draws scale by the free share seen so far, never assuming less than the 25 % a list keeps.
_FIRST_DRAW_MARGIN: Final = 1.25
_MIN_DRAW: Final = 256
_MAX_ROUNDS: Final = 6
# One bound parameter per look-up, whatever the number of candidates: a JSON array (SQLite's
# json_each) or an integer array (PostgreSQL's unnest), instead of thousands of IN parameters.
# On PostgreSQL each candidate is probed in the (status_list, status_index) index by a LATERAL
# subquery with LIMIT, a plan that does not depend on the table's statistics. The plain
# "status_list = :name AND status_index = ANY(:candidates)", planned with statistics from when the
# table was small (a new or fast-growing database, before autovacuum analyses it), became a
# scan of every licence of the list, filtered: 3.7 ms at 4 000 licences and growing with each
# one, against 0.7 ms for 256 probes.
_USED_AMONG: Final = {
    "sqlite": text(
        "SELECT status_index FROM licences WHERE status_list = :name "
        "AND status_index IN (SELECT value FROM json_each(:candidates))"
    ),
    "postgresql": text(
        "SELECT c.i FROM unnest(CAST(:candidates AS integer[])) AS c(i) CROSS JOIN LATERAL "
        "(SELECT 1 FROM licences WHERE status_list = :name AND status_index = c.i LIMIT 1) AS used"
    ),
}

_LIST_CODE: Final = {"revoked": StatusType.INVALID, "suspended": StatusType.SUSPENDED}


def status_list_uri(public_url: str, name: str) -> str:
    """The URI of list *name* (the ``uri`` in licences, ``sub`` of the list's token, §5.1, §6.1)."""
    return public_url.rstrip("/") + STATUS_LIST_PATH + name


def check_list_name(name: str) -> str:
    """*name* if it can be a list name ("1", "2", …); ``NotFound`` otherwise."""
    if not (isinstance(name, str) and 1 <= len(name) <= 9 and name.isdigit() and name[0] != "0"):
        raise NotFound(f"there is no status list {str(name)[:40]!r}; lists are numbered 1, 2, 3, …")
    return name


def allocate_status_slots(
    session: Session,
    count: int,
    rng: random.Random | None = None,
    *,
    now: datetime,
    list_size: int = DEFAULT_LIST_SIZE,
) -> list[tuple[str, int]]:
    """Reserve *count* slots ``(list name, index)`` for licences stored in this transaction.

    The indices are uniformly random among the free ones, distinct, and in
    random order. *rng* defaults to ``secrets.SystemRandom()``; *list_size*
    applies to lists this call opens (existing lists keep their size).
    """
    if count <= 0:
        return []
    if list_size < 64 or list_size % 8:
        raise InvalidInput(f"a status list size must be a multiple of 8 and at least 64, not {list_size}")
    rng = rng if rng is not None else secrets.SystemRandom()
    name, size = _lock_current_list(session, now, list_size)
    slots: list[tuple[str, int]] = []
    taken: set[int] = set()  # indices of the current list given out by this call
    while len(slots) < count:
        want = count - len(slots)
        picked, drawn, busy = _sample_free(session, name, size, want, rng, taken)
        limit = math.floor(size * FILL_LIMIT)
        # Upper bound on the list's fullness: the share of taken candidates plus four
        # standard errors (at most 2/sqrt(n)), plus what this call adds.
        bound = busy / max(drawn, 1) + 2 / math.sqrt(max(drawn, 1)) + (len(taken) + want) / size
        if bound >= FILL_LIMIT:
            room = limit - _used(session, name) - len(taken)
            picked = picked[: max(room, 0)]
        taken.update(picked)
        slots.extend((name, index) for index in picked)
        if len(picked) < want:
            name, size = _open_next_list(session, name, now, list_size)
            taken = set()
    return slots


def status_bytes(session: Session, name: str) -> bytes:
    """List *name* as its packed byte array (§4.1): revoked → 1, suspended → 2, else 0.

    Expiry is not a status-list matter: a verifier reads it from the licence's own ``exp``.
    """
    record = session.get(StatusListRecord, check_list_name(name))
    if record is None:
        raise NotFound(f"there is no status list {name!r} in this vault")
    rows = session.execute(
        select(LicenceRecord.status_index, LicenceRecord.status).where(
            LicenceRecord.status_list == name, LicenceRecord.status.in_(tuple(_LIST_CODE))
        )
    ).all()
    return pack_statuses(
        record.size,
        ((index, _LIST_CODE[status]) for index, status in rows if index is not None),
        bits=STATUS_BITS,
    )


# --- lists ---------------------------------------------------------------------------------


def _number(name: str) -> int:
    return int(name) if name.isdigit() else 0


# Every issuance runs this: built once (constructing a statement costs more than running it).
# The newest list is the one with the greatest number; names are decimal without leading zeros
# (check_list_name), so a longer name is a greater number and names of one length sort as numbers.
_NAME = StatusListRecord.__table__.c.name
_LOCK_NEWEST = (
    select(_NAME, StatusListRecord.__table__.c.size)
    .order_by(func.length(_NAME).desc(), _NAME.desc())
    .limit(1)
    .with_for_update()
)


def _lock_current_list(session: Session, now: datetime, list_size: int) -> tuple[str, int]:
    """Lock the newest list (creating list "1" on first use); returns its name and size.

    One statement, as it is part of every issuance and runs with the serial counter held. A
    transaction that waited for the lock while the holder opened a newer list gets the list it
    waited for (now past its fill limit): its draws find too little room, and it opens (finds)
    and locks the next one, as when it fills a list itself.
    """
    for _ in range(2):
        row = session.execute(_LOCK_NEWEST).first()
        if row is not None:
            return str(row.name), int(row.size)
        _insert_list(session, "1", list_size, now)
    raise DatabaseConflict("no status list could be opened or locked; retry")


def _open_next_list(session: Session, full: str, now: datetime, list_size: int) -> tuple[str, int]:
    _insert_list(session, str(_number(full) + 1), list_size, now)
    name, size = _lock_current_list(session, now, list_size)
    if name == full:  # cannot happen: the insert above made a newer list, or found one
        raise DatabaseConflict(f"status list {full} is full and no newer list could be locked; retry")
    return name, size


def _insert_list(session: Session, name: str, size: int, now: datetime) -> None:
    dialect = session.get_bind().dialect.name
    values = {"name": name, "size": size, "created_at": now}
    stmt: Any = (pg_insert if dialect == "postgresql" else sqlite_insert)(StatusListRecord).values(**values)
    session.execute(stmt.on_conflict_do_nothing())


def _used(session: Session, name: str) -> int:
    return int(
        session.execute(
            select(func.count()).select_from(LicenceRecord).where(LicenceRecord.status_list == name)
        ).scalar_one()
    )


# --- sampling ----------------------------------------------------------------------------------


def _random_indices(rng: random.Random, size: int, n: int) -> list[int]:
    """About *n* independent uniform indices in ``[0, size)`` from one call to the generator."""
    words = array("I", rng.getrandbits(32 * n).to_bytes(4 * n, "little"))
    bound = (1 << 32) // size * size  # reject the uneven top so every index is equally likely
    return [word % size for word in words if word < bound]


def _sample_free(
    session: Session, name: str, size: int, want: int, rng: random.Random, taken: set[int]
) -> tuple[list[int], int, int]:
    """Up to *want* free indices in random order, with how many candidates were drawn and busy.

    Candidates are independent and uniform, so the free ones, kept in draw order
    without repeats, are a uniform random sample of the free indices.
    """
    dialect = session.get_bind().dialect.name
    picked: list[int] = []
    seen: set[int] = set()
    drawn = busy = 0
    for _ in range(_MAX_ROUNDS):
        missing = want - len(picked)
        free_share = max(1 - busy / drawn, 1 - FILL_LIMIT) if drawn else 1.0
        draw = max(_MIN_DRAW, math.ceil(missing / free_share * _FIRST_DRAW_MARGIN) + 64)
        candidates = [index for index in dict.fromkeys(_random_indices(rng, size, draw)) if index not in seen]
        seen.update(candidates)
        asked = [index for index in candidates if index not in taken]
        values: Any = orjson.dumps(asked).decode() if dialect == "sqlite" else asked
        used = set(session.execute(_USED_AMONG[dialect], {"name": name, "candidates": values}).scalars())
        drawn += len(candidates)
        for index in candidates:
            if index in used or index in taken:
                busy += 1
            elif len(picked) < want:
                picked.append(index)
        if len(picked) == want:
            break
    return picked, drawn, busy
