"""Issuing licences with status-list slots, as ``Vault.issue_batch`` does once it allocates them.

The helper runs the issuance steps in one transaction (prepare, serials, slots,
sign, store, audit) so the status-list tests control the list size and the
random source; everything else is the production code path.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tests._builders import example
from vault import CHINA_TIME, BulkItem, Vault
from vault._issuance import PreparedLicence, allocate_serials, build_rows, store_rows
from vault._status_lists import DEFAULT_LIST_SIZE, allocate_status_slots, status_list_uri


@dataclass(frozen=True)
class Issued:
    identifier: str
    token: str
    status_list: str
    status_index: int


def issue_with_status(
    vault: Vault, count: int, *, list_size: int = DEFAULT_LIST_SIZE, rng: random.Random | None = None
) -> list[Issued]:
    now = vault.clock()
    year = now.astimezone(CHINA_TIME).year
    request = example(vault)
    with vault.db.write() as s:
        issuers: dict[str, Any] = {}
        prepared: list[PreparedLicence] = [
            vault._prepare(s, BulkItem(line, request, None), issuers) for line in range(count)
        ]
        groups = Counter((p.request.licence_type, p.request.issuer) for p in prepared)
        firsts = {
            (t, i, year): allocate_serials(s, vault.db.dialect, t, i, year, n) for (t, i), n in groups.items()
        }
        slots = allocate_status_slots(s, len(prepared), rng, now=now, list_size=list_size)
        rows, audit = build_rows(
            vault.backend,
            prepared,
            firsts,
            now=now,
            actor="test",
            slots=slots,
            status_uri=functools.partial(status_list_uri, vault.public_url),
        )
        store_rows(s, rows)
        vault.audit.append_many(s, audit, at=now)
    return [Issued(r["identifier"], r["token"], r["status_list"], r["status_index"]) for r in rows]
