"""The read side of the licence repository: look-ups, the access log, holder data.

A mixin of :class:`vault.Vault` (it uses the vault's database, key backend,
licence types and clock); split out so each module keeps to one concern.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import bindparam, inspect, select
from sqlalchemy.orm import Session

from hsm import KeyBackend
from schemas import LicenceIdentifier, LicenceTypeRegistry, mask_holder_id, validate_citizen_id, validate_uscc
from schemas.errors import InvalidInput, LicenceNotFound, YinxinError
from vault._access import AccessEntry, Accessor, check_purpose, list_access, record_access
from vault._db import Database, PreparedRead
from vault._issuance import HOLDER_ENCRYPTION_LABEL, holder_index
from vault._models import DepartmentRecord, LicenceRecord, StatusChangeRecord
from vault._rows import AnySelect
from vault._types import Clock, Licence, LicenceState, StatusChange

__all__ = ["LicenceReader"]

_LAST_REASON = (
    select(StatusChangeRecord.reason)
    .where(StatusChangeRecord.identifier == LicenceRecord.identifier)
    .order_by(StatusChangeRecord.id.desc())
    .limit(1)
    .correlate(LicenceRecord)
    .scalar_subquery()
)

# What verification reads of a licence (a LicenceState: not its data), its issuer's name and the
# reason of its last status change, in one statement (compiled once per database: for one licence
# by Database.prepare, for the many of concurrent verifications by Database.batched_read).
_VERIFICATION_READ: AnySelect = select(
    LicenceRecord.identifier,
    LicenceRecord.version,
    LicenceRecord.type_code,
    LicenceRecord.issuer_code,
    DepartmentRecord.name.label("issuer_name"),
    LicenceRecord.holder_name,
    LicenceRecord.holder_id_type,
    LicenceRecord.holder_id_masked,
    LicenceRecord.valid_from,
    LicenceRecord.valid_until,
    LicenceRecord.issued_at,
    LicenceRecord.kid,
    LicenceRecord.token,
    LicenceRecord.status,
    _LAST_REASON.label("last_reason"),
).outerjoin(DepartmentRecord, DepartmentRecord.code == LicenceRecord.issuer_code)
_VERIFICATION_LOOKUP = _VERIFICATION_READ.where(LicenceRecord.identifier == bindparam("identifier"))


# A licence record's column attributes by name: what Licence.from_row reads from an ORM object.
_LICENCE_ATTRIBUTES = tuple(attribute.key for attribute in inspect(LicenceRecord).column_attrs)


class LicenceReader:
    db: Database
    _verification_lookup: PreparedRead | None = None
    backend: KeyBackend
    types: LicenceTypeRegistry
    clock: Clock

    def get(self, identifier: str) -> Licence:
        LicenceIdentifier.parse(identifier)
        with self.db.read() as s:
            row = s.get(LicenceRecord, identifier)
            if row is None:
                raise LicenceNotFound(f"no licence with identifier {identifier} in this vault")
            return self._to_licence(s, row)

    def licences_for_holder(self, id_type: str, holder_id: str) -> list[Licence]:
        index = holder_index(self.backend, id_type, holder_id)
        with self.db.read() as s:
            rows = s.execute(
                select(LicenceRecord)
                .where(LicenceRecord.holder_id_index == index, LicenceRecord.holder_id_type == id_type)
                .order_by(LicenceRecord.issued_at)
            ).scalars()
            return [self._to_licence(s, r) for r in rows]

    def read_licence(self, identifier: str, who: Accessor) -> Licence:
        """An API look-up of one licence: recorded in the access log, found or not."""
        LicenceIdentifier.parse(identifier)
        who = replace(who, purpose=check_purpose(who.purpose))
        with self.db.write() as s:
            row = s.get(LicenceRecord, identifier)
            record_access(
                s,
                who,
                action="licence.read",
                at=self.clock(),
                result_count=0 if row is None else 1,
                identifier=identifier,
            )
            licence = self._to_licence(s, row) if row is not None else None
        if licence is None:
            raise LicenceNotFound(f"no licence with identifier {identifier} in this vault")
        return licence

    def lookup_holder(self, id_type: str, holder_id: str, who: Accessor) -> list[Licence]:
        """零材料 reuse: a holder's licences, for a stated purpose; recorded in the access log."""
        if id_type == "001":
            holder_id = validate_uscc(holder_id)
        elif id_type == "111":
            holder_id = validate_citizen_id(holder_id)
        else:
            raise InvalidInput(f"holder ID type must be 001 (USCC) or 111 (citizen ID), not {id_type[:10]!r}")
        who = replace(who, purpose=check_purpose(who.purpose))
        index = holder_index(self.backend, id_type, holder_id)
        with self.db.write() as s:
            rows = (
                s.execute(
                    select(LicenceRecord)
                    .where(LicenceRecord.holder_id_index == index, LicenceRecord.holder_id_type == id_type)
                    .order_by(LicenceRecord.issued_at)
                )
                .scalars()
                .all()
            )
            record_access(
                s,
                who,
                action="holder.lookup",
                at=self.clock(),
                result_count=len(rows),
                holder_id_index=index,
                holder_id_masked=mask_holder_id(id_type, holder_id),
            )
            return [self._to_licence(s, r) for r in rows]

    def access_log(self, identifier: str, *, limit: int = 200) -> list[AccessEntry]:
        with self.db.read() as s:
            return list_access(s, identifier, limit=limit)

    def holder_id(self, identifier: str) -> str:
        """Decrypt a licence's full holder ID number (for authorised display only; never log it)."""
        with self.db.read() as s:
            row = s.get(LicenceRecord, identifier)
            if row is None:
                raise LicenceNotFound(f"no licence with identifier {identifier} in this vault")
            blob, id_type = row.holder_id_ciphertext, row.holder_id_type
        return self.backend.decrypt(HOLDER_ENCRYPTION_LABEL, blob, id_type.encode()).decode()

    def status_history(self, identifier: str) -> list[StatusChange]:
        with self.db.read() as s:
            rows = s.execute(
                select(StatusChangeRecord)
                .where(StatusChangeRecord.identifier == identifier)
                .order_by(StatusChangeRecord.id)
            ).scalars()
            return [
                StatusChange(r.identifier, r.from_status, r.to_status, r.reason, r.actor, r.changed_at)
                for r in rows
            ]

    def _licence_for_verification(self, identifier: str) -> tuple[LicenceState | None, str]:
        """The licence *identifier* as a verifier sees it, and the reason of its last status change
        ("" when it never changed): one indexed statement, no ORM session (the verification hot path)."""
        lookup = self._verification_lookup
        if lookup is None:
            lookup = self._verification_lookup = self.db.prepare(_VERIFICATION_LOOKUP)
        return self._verification_result(lookup.first(identifier=identifier))

    async def _licence_for_verification_async(self, identifier: str) -> tuple[LicenceState | None, str]:
        """:meth:`_licence_for_verification` for a coroutine: the read runs on the event loop, in one
        statement with the other verifications' waiting at the same time (``Database.batched_read``)."""
        reader = self.db.batched_read(_VERIFICATION_READ, LicenceRecord.identifier)
        return self._verification_result(await reader.get(identifier))

    def _verification_result(self, row: dict[str, Any] | None) -> tuple[LicenceState | None, str]:
        if row is None:
            return None, ""
        licence = LicenceState.from_row(
            row,
            type_name=self._type_name(row["type_code"]),
            issuer_name=row["issuer_name"] or row["issuer_code"],
        )
        return licence, row["last_reason"] or ""

    def _type_name(self, code: str) -> str:
        """The licence type's name, or its code for a type no longer in the registry."""
        try:
            return self.types.get(code).name
        except YinxinError:
            return code

    def _to_licence(self, s: Session, row: LicenceRecord) -> Licence:
        dept = s.get(DepartmentRecord, row.issuer_code)
        return Licence.from_row(
            {name: getattr(row, name) for name in _LICENCE_ATTRIBUTES},
            type_name=self._type_name(row.type_code),
            issuer_name=dept.name if dept else row.issuer_code,
        )
