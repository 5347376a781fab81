"""Issuance: serial allocation, identifier, signature, licence row and audit event, in one transaction.

Serials are gapless per (type, issuer, year): the counter row is locked
(``SELECT … FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite) and
advanced in the same transaction that stores the licences, so a rollback
gives the numbers back and no two transactions can take the same one.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from hsm import KeyBackend, KeyRef
from schemas import LicenceCreate, LicenceIdentifier, LicenceType, mask_holder_id
from schemas.errors import DepartmentNotFound, InvalidInput
from signing import sign_licence_tokens
from vault._audit import AuditEntry, canonical_json
from vault._db import insert_rows
from vault._models import LicenceRecord, SerialCounterRecord
from vault._types import CHINA_TIME, licence_window

__all__ = [
    "HOLDER_ENCRYPTION_LABEL",
    "HOLDER_INDEX_LABEL",
    "PreparedLicence",
    "allocate_serials",
    "licence_claims",
]

# Backend secret keys protecting holder ID numbers (created by `yinxin init`).
HOLDER_ENCRYPTION_LABEL = "yinxin-holder-id-enc-1"
HOLDER_INDEX_LABEL = "yinxin-holder-id-index-1"

MAX_SEQUENCE = 9_999_999  # GB/T 36904 serial: 7-digit sequence per year


def request_hash(request: LicenceCreate) -> str:
    return hashlib.sha256(canonical_json(request.model_dump(mode="json")).encode()).hexdigest()


def allocate_serials(
    session: Session, dialect: str, type_code: str, issuer_code: str, year: int, count: int
) -> int:
    """Reserve *count* consecutive sequence numbers; returns the first.

    One statement: the counter row is created at *count* or advanced by it, and locked until the
    transaction ends (an upsert takes the row lock as an UPDATE does). Past the yearly maximum
    this raises, and the caller's rollback gives the numbers back.
    """
    last = session.execute(
        _RESERVE[dialect], {"c_type": type_code, "c_issuer": issuer_code, "c_year": year, "n": count}
    ).scalar_one()
    if last > MAX_SEQUENCE:
        raise InvalidInput(
            f"serial numbers for type {type_code}, issuer {issuer_code}, year {year} are exhausted "
            f"({MAX_SEQUENCE} per year, GB/T 36904)"
        )
    return int(last - count + 1)


# Built once (constructing a statement costs more than running it), on the table itself. The
# parameters are not named after columns: an INSERT reserves those names for its VALUES.
_COUNTERS = cast(Table, SerialCounterRecord.__table__)
_NEW_COUNTER: dict[str, Any] = {
    "type_code": bindparam("c_type"),
    "issuer_code": bindparam("c_issuer"),
    "year": bindparam("c_year"),
    "last_sequence": bindparam("n"),
}


def _reserve(insert: Any) -> Any:
    stmt = insert(_COUNTERS).values(_NEW_COUNTER)
    return stmt.on_conflict_do_update(
        index_elements=[_COUNTERS.c.type_code, _COUNTERS.c.issuer_code, _COUNTERS.c.year],
        set_={"last_sequence": _COUNTERS.c.last_sequence + stmt.excluded.last_sequence},
    ).returning(_COUNTERS.c.last_sequence)


_RESERVE: dict[str, Any] = {"postgresql": _reserve(pg_insert), "sqlite": _reserve(sqlite_insert)}


@dataclass(frozen=True, slots=True)
class PreparedLicence:
    """A validated request with everything but its serial."""

    request: LicenceCreate
    licence_type: LicenceType
    issuer_name: str
    key: KeyRef
    idempotency_key: str | None
    request_hash: str
    actor: str = ""  # who asked, when not the batch's actor (a group commit mixes callers)


def check_request(request: LicenceCreate, licence_type: LicenceType) -> None:
    """Type-level checks beyond the edge model: holder kind and face data schema."""
    if request.holder.id_type != licence_type.holder_id_type:
        kinds = {"001": "an organisation (USCC, 001)", "111": "a natural person (citizen ID, 111)"}
        raise InvalidInput(
            f"holder.id_type: {licence_type.name} is held by "
            f"{kinds.get(licence_type.holder_id_type, licence_type.holder_id_type)}, "
            f"not {request.holder.id_type}"
        )
    licence_type.validate_data(request.data)


def licence_claims(
    *,
    identifier: str,
    issuer: str,
    issuer_name: str,
    licence_type: str,
    licence_type_name: str,
    holder_name: str,
    holder_id_type: str,
    holder_id_masked: str,
    valid_from: date,
    valid_until: date | None,
    data: Mapping[str, Any],
    iat: int,
    version: str,
    status_slot: tuple[int, str] | None,
) -> dict[str, Any]:
    """The licence token's claims (issuance and re-issuance share them)."""
    nbf, exp = licence_window(valid_from, valid_until)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": identifier,
        "jti": identifier,
        "iat": iat,
        "nbf": int(nbf.timestamp()),
    }
    if exp is not None:
        claims["exp"] = int(exp.timestamp())
    if status_slot is not None:
        # The Referenced Token claim (draft-ietf-oauth-status-list §6.1).
        claims["status"] = {"status_list": {"idx": status_slot[0], "uri": status_slot[1]}}
    claims["licence_type"] = licence_type
    claims["licence_type_name"] = licence_type_name
    claims["issuer_name"] = issuer_name
    claims["holder"] = {"name": holder_name, "id_type": holder_id_type, "id_masked": holder_id_masked}
    claims["valid_from"] = valid_from.isoformat()
    claims["valid_until"] = valid_until.isoformat() if valid_until else None
    claims["ver"] = version
    claims["data"] = data
    return claims


def build_rows(
    backend: KeyBackend,
    items: Sequence[PreparedLicence],
    first_sequences: Mapping[tuple[str, str, int], int],
    *,
    now: datetime,
    actor: str,
    slots: Sequence[tuple[str, int]] | None = None,
    status_uri: Callable[[str], str] | None = None,
) -> tuple[list[dict[str, Any]], list[AuditEntry]]:
    """Sign and shape every item; *first_sequences* holds each group's first reserved number.

    *slots* (one ``(status list, index)`` per item, from ``allocate_status_slots``) and
    *status_uri* (list name → URI) give each licence its Token Status List reference.
    """
    if (slots is None) != (status_uri is None) or (slots is not None and len(slots) != len(items)):
        raise ValueError("build_rows needs one status slot per item and a status_uri, or neither")
    uris: dict[str, str] = {}
    year = now.astimezone(CHINA_TIME).year
    # Identifiers for each group's reserved range, formatted in one go (GB/T 36904).
    sizes = Counter((item.request.licence_type, item.request.issuer, year) for item in items)
    pending = {
        group: iter(
            zip(
                range(first, first + sizes[group]),
                LicenceIdentifier.format_range(group[0], group[1], year, first, sizes[group]),
                strict=True,
            )
        )
        for group, first in first_sequences.items()
    }
    rows: list[dict[str, Any]] = []
    to_sign: list[tuple[KeyRef, dict[str, Any]]] = []
    iat = int(now.timestamp())
    for position, item in enumerate(items):
        req = item.request
        group = (req.licence_type, req.issuer, year)
        seq, identifier = next(pending[group])
        masked = mask_holder_id(req.holder.id_type, req.holder.id)
        slot_list: str | None = None
        slot_index: int | None = None
        uri: str | None = None
        if slots is not None and status_uri is not None:
            slot_list, slot_index = slots[position]
            uri = uris.get(slot_list)
            if uri is None:
                uri = uris[slot_list] = status_uri(slot_list)
        claims = licence_claims(
            identifier=identifier,
            issuer=req.issuer,
            issuer_name=item.issuer_name,
            licence_type=req.licence_type,
            licence_type_name=item.licence_type.name,
            holder_name=req.holder.name,
            holder_id_type=req.holder.id_type,
            holder_id_masked=masked,
            valid_from=req.valid_from,
            valid_until=req.valid_until,
            data=req.data,
            iat=iat,
            version="001",
            status_slot=(slot_index, uri) if slot_index is not None and uri is not None else None,
        )
        to_sign.append((item.key, claims))
        rows.append(
            {
                "identifier": identifier,
                "type_code": req.licence_type,
                "issuer_code": req.issuer,
                "serial_year": year,
                "serial_sequence": seq,
                "version": 1,
                "holder_name": req.holder.name,
                "holder_id_type": req.holder.id_type,
                "holder_id_ciphertext": None,  # below, after the signatures
                "holder_id_index": None,
                "holder_id_masked": masked,
                "data": req.data,
                "valid_from": req.valid_from,
                "valid_until": req.valid_until,
                "issued_at": now,
                "kid": item.key.kid,
                "token": None,  # signed below, all in one go
                "status": "valid",
                "status_changed_at": None,
                "idempotency_key": item.idempotency_key,
                "request_hash": item.request_hash,
                "status_list": slot_list,
                "status_index": slot_index,
            }
        )
    # One backend call per key for the whole batch: the software keystore signs on two threads.
    # Signatures first, then the holder IDs' encryption and keyed hash: a backend failing at any
    # point after a signature still fails the batch before anything is stored.
    tokens = sign_licence_tokens(backend, to_sign)
    audit: list[AuditEntry] = []
    for item, row, token in zip(items, rows, tokens, strict=True):
        holder = item.request.holder
        row["holder_id_ciphertext"] = backend.encrypt(
            HOLDER_ENCRYPTION_LABEL, holder.id.encode(), holder.id_type.encode()
        )
        row["holder_id_index"] = holder_index(backend, holder.id_type, holder.id)
        row["token"] = token
        audit.append(
            AuditEntry(
                item.actor or actor,
                "licence.issue",
                row["identifier"],
                {
                    "licence_type": row["type_code"],
                    "issuer": row["issuer_code"],
                    "holder_id_masked": row["holder_id_masked"],
                    "kid": row["kid"],
                    "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                },
            )
        )
    return rows, audit


def holder_index(backend: KeyBackend, id_type: str, holder_id: str) -> str:
    return backend.mac(HOLDER_INDEX_LABEL, f"{id_type}:{holder_id}".encode()).hex()


def store_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        # Straight to the table: the ORM bulk path adds per-row bookkeeping we do not need.
        insert_rows(session, cast(Table, LicenceRecord.__table__), rows)


def missing_issuer(code: str) -> DepartmentNotFound:
    return DepartmentNotFound(
        f"issuer {code} is not a registered department: add it with "
        f"`yinxin dept add --code {code} --name NAME`"
    )
