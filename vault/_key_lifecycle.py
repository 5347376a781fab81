"""The dangerous end of the key lifecycle: destruction, compromise, and re-issuing what a lost key signed.

These run only through dual control (``vault._approvals``): the CLI and the
API never call them directly.

- **destroy**: the private key is deleted from the backend (PKCS#11
  ``C_DestroyObject``); the registry keeps the public key, so what the key
  signed while it was trusted still verifies. Refused while the key signs.
- **compromise**: the key stops verifying anything, from any time, because a
  stolen key can backdate (NIST SP 800-57 Part 1 §5.5: a compromised key must
  not be relied on). A licence key that was active is replaced at once by a new
  one of the same algorithm; a seal is revoked with CRL reason keyCompromise;
  a CA is distrusted with all its seals; a service key is replaced.
- **re-issue affected**: every live licence the compromised key signed gets a
  new version (same serial, version + 1, new check character) signed by the
  department's active key; the old version is revoked as superseded. Batches
  commit one by one, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select

from hsm import KeyRef, SignatureAlgorithm
from schemas import LicenceIdentifier
from schemas.errors import IllegalTransition, InvalidInput, KeyNotFound, YinxinError
from signing import sign_licence_token
from vault._audit import AuditEntry
from vault._issuance import licence_claims
from vault._keys import (
    KEY_PURPOSE_CA,
    KEY_PURPOSE_LICENCE,
    KEY_PURPOSE_SEAL,
    SYSTEM_KEY_PREFIXES,
    KeyState,
    to_key_info,
)
from vault._models import (
    CertificateAuthorityRecord,
    DepartmentRecord,
    KeyRecord,
    LicenceRecord,
    SealRecord,
    StatusChangeRecord,
)
from vault._status_lists import allocate_status_slots, status_list_uri
from vault._types import CHINA_TIME, KeyInfo, LicenceStatus, licence_window

if TYPE_CHECKING:
    from vault._vault import Vault

__all__ = ["AffectedLicence", "AffectedReport", "CompromiseResult", "KeyLifecycle", "ReissueResult"]

log = logging.getLogger("yinxin.vault")

MAX_REASON_CHARS = 500
REISSUE_BATCH = 200


@dataclass(frozen=True, slots=True)
class AffectedLicence:
    identifier: str
    status: str
    issued_at: datetime
    after_compromise: bool  # issued at or after the time of compromise
    superseded_by: str | None
    needs_reissue: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "status": self.status,
            "issued_at": self.issued_at.isoformat(),
            "after_compromise": self.after_compromise,
            "superseded_by": self.superseded_by,
            "needs_reissue": self.needs_reissue,
        }


@dataclass(frozen=True, slots=True)
class AffectedReport:
    key: KeyInfo
    licences: list[AffectedLicence]
    seals: list[dict[str, Any]]
    to_reissue: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "kid": self.key.kid,
            "state": self.key.state,
            "purpose": self.key.purpose,
            "compromised_at": self.key.compromised_at.isoformat() if self.key.compromised_at else None,
            "licences": [a.as_dict() for a in self.licences],
            "seals": self.seals,
            "to_reissue": self.to_reissue,
        }


@dataclass(frozen=True, slots=True)
class CompromiseResult:
    key: KeyInfo
    replacement: str | None  # the new key that took over signing, if any
    seals_revoked: list[str] = field(default_factory=list)
    to_reissue: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kid": self.key.kid,
            "state": self.key.state,
            "compromised_at": self.key.compromised_at.isoformat() if self.key.compromised_at else None,
            "replacement": self.replacement,
            "seals_revoked": self.seals_revoked,
            "to_reissue": self.to_reissue,
        }


@dataclass(frozen=True, slots=True)
class ReissueResult:
    kid: str
    reissued: int
    remaining: int
    new_kid: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "reissued": self.reissued,
            "remaining": self.remaining,
            "new_kid": self.new_kid,
        }


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not 1 <= len(reason) <= MAX_REASON_CHARS:
        raise InvalidInput(f"a reason of 1-{MAX_REASON_CHARS} characters is required")
    return reason


def _live(query: Any, now: datetime) -> Any:
    """Licences a key signed that still stand: not revoked, not superseded, not past their validity."""
    today = now.astimezone(CHINA_TIME).date()
    return query.where(
        LicenceRecord.superseded_by.is_(None),
        LicenceRecord.status.in_([LicenceStatus.VALID, LicenceStatus.SUSPENDED]),
        or_(LicenceRecord.valid_until.is_(None), LicenceRecord.valid_until >= today),
    )


class KeyLifecycle:
    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    # ---- destroy ------------------------------------------------------------------------

    def check_destroy(self, kid: str) -> KeyInfo:
        """Whether *kid* may be destroyed now (request time and execution time)."""
        v = self._vault
        with v.db.read() as s:
            row = v.keys.record(s, kid)
            self._destroy_problem(s, row, v.clock())
            return to_key_info(row)

    def _destroy_problem(self, s: Any, row: KeyRecord, now: datetime) -> None:
        if row.state == KeyState.DESTROYED or row.destroyed_at is not None:
            raise IllegalTransition(f"key {row.kid} is already destroyed")
        if row.state != KeyState.ACTIVE:
            return
        if row.purpose == KEY_PURPOSE_SEAL:
            seal = s.execute(select(SealRecord).where(SealRecord.kid == row.kid)).scalar_one_or_none()
            if seal is not None and seal.not_after <= now:
                return  # an expired seal's key signs nothing any more
            raise IllegalTransition(
                f"key {row.kid} belongs to seal {seal.seal_id if seal else '?'}, which can still seal: "
                "revoke the seal first (`yinxin seal revoke`)"
            )
        if row.purpose == KEY_PURPOSE_CA:
            raise IllegalTransition(
                f"key {row.kid} is the active CA's key: it is destroyed only after the CA is replaced"
            )
        remedy = (
            f"rotate first (`yinxin keys rotate --dept {row.department_code}`)"
            if row.department_code
            else f"rotate first (`yinxin keys rotate --purpose {row.purpose}`)"
        )
        raise IllegalTransition(
            f"key {row.kid} is active and still signs: {remedy}, then destroy the old key"
        )

    def destroy(self, kid: str, *, actor: str) -> KeyInfo:
        v = self._vault
        now = v.clock()
        with v.db.write() as s:
            row = v.keys.record(s, kid, lock=True)
            self._destroy_problem(s, row, now)
            previous = row.state
            try:
                v.backend.destroy_key(kid)
                gone = "destroyed"
            except KeyNotFound:
                # Already gone (an earlier attempt destroyed it and then failed to commit).
                gone = "already absent"
                log.warning("key %s was already absent from the %s backend", kid, v.backend.name)
            if row.state != KeyState.COMPROMISED:
                # A compromised key stays compromised: destroying our copy does not make what
                # a thief's copy signed trustworthy again.
                row.state = KeyState.DESTROYED
            row.destroyed_at = now
            v.audit.append(
                s,
                AuditEntry(
                    actor,
                    "key.destroy",
                    kid,
                    {"purpose": row.purpose, "from": previous, "backend": row.backend, "private_key": gone},
                ),
                at=now,
            )
            s.flush()
            info = to_key_info(row)
        v.forget_trust()
        return info

    # ---- compromise ---------------------------------------------------------------------

    def check_compromise(self, kid: str, since: datetime) -> KeyInfo:
        v = self._vault
        now = v.clock()
        if since.tzinfo is None:
            raise InvalidInput("the time of compromise needs a time zone (e.g. 2026-11-20T08:00+08:00)")
        if since > now:
            raise InvalidInput("the time of compromise is in the future")
        with v.db.read() as s:
            row = v.keys.record(s, kid)
            if row.state == KeyState.COMPROMISED:
                raise IllegalTransition(f"key {kid} is already declared compromised")
            return to_key_info(row)

    def compromise(
        self, kid: str, *, since: datetime, reason: str, actor: str, resume: bool = False
    ) -> CompromiseResult:
        """Declare *kid* compromised. With *resume* (an approved request run again), a key
        already declared is not an error: the follow-up (revoking its seals) is finished."""
        v = self._vault
        reason = _reason(reason)
        now = v.clock()
        replacement: str | None = None
        seals_revoked: list[str] = []
        with v.db.write() as s:
            v.audit.lock_head(s)
            row = v.keys.record(s, kid, lock=True)
            if row.state == KeyState.COMPROMISED:
                if not resume:
                    raise IllegalTransition(f"key {kid} is already declared compromised")
                declared = False
            else:
                self.check_compromise(kid, since)
                declared = True
            if declared:
                replacement, seals_revoked = self._declare(s, row, since, reason, actor, now)
            info_row = to_key_info(row)
        if row.purpose == KEY_PURPOSE_SEAL:
            with v.db.read() as s:
                seal_ids = list(
                    s.execute(
                        select(SealRecord.seal_id).where(SealRecord.kid == kid, SealRecord.state != "revoked")
                    ).scalars()
                )
            for seal_id in seal_ids:
                v.seals.revoke(seal_id, f"key compromised: {reason}", crl_reason="keyCompromise", actor=actor)
                seals_revoked.append(seal_id)
        v.forget_trust()
        return CompromiseResult(info_row, replacement, seals_revoked, self.count_to_reissue(kid))

    def _declare(
        self, s: Any, row: KeyRecord, since: datetime, reason: str, actor: str, now: datetime
    ) -> tuple[str | None, list[str]]:
        """The state change and what follows in the same transaction; returns (replacement, seals)."""
        v = self._vault
        kid = row.kid
        replacement: str | None = None
        seals_revoked: list[str] = []
        previous = row.state
        # A key cannot have been stolen before it existed: an earlier time means "since generation".
        since = max(since, row.created_at)
        row.state = KeyState.COMPROMISED
        row.compromised_at = since
        row.state_reason = reason
        row.retired_at = row.retired_at or now
        v.audit.append(
            s,
            AuditEntry(
                actor,
                "key.compromise",
                kid,
                {"purpose": row.purpose, "from": previous, "since": since.isoformat(), "reason": reason},
            ),
            at=now,
        )
        s.flush()
        if row.purpose == KEY_PURPOSE_LICENCE and previous == KeyState.ACTIVE and row.department_code:
            info = v.keys.generate(
                s, row.department_code, SignatureAlgorithm.parse(row.algorithm), actor=actor, now=now
            )
            replacement = info.kid
        elif row.purpose in SYSTEM_KEY_PREFIXES and previous == KeyState.ACTIVE:
            info = v.keys.rotate_system_key(
                s, row.purpose, algorithm=SignatureAlgorithm.parse(row.algorithm), actor=actor, now=now
            )
            replacement = info.kid
        elif row.purpose == KEY_PURPOSE_CA:
            seals_revoked = self._distrust_ca(s, kid, reason, actor, now)
        return replacement, seals_revoked

    def _distrust_ca(self, s: Any, kid: str, reason: str, actor: str, now: datetime) -> list[str]:
        """A compromised CA key: the CA and every seal under it stop being trusted."""
        revoked: list[str] = []
        for ca in s.execute(
            select(CertificateAuthorityRecord).where(CertificateAuthorityRecord.kid == kid)
        ).scalars():
            ca.state = KeyState.COMPROMISED
            for seal in s.execute(
                select(SealRecord).where(SealRecord.ca_id == ca.ca_id, SealRecord.state != "revoked")
            ).scalars():
                previous = seal.state
                seal.state = "revoked"
                seal.state_changed_at = now
                seal.state_reason = f"CA key compromised: {reason}"
                seal.crl_reason = "cACompromise"
                self._vault.keys.retire(s, seal.kid, actor=actor, now=now, reason="CA key compromised")
                self._vault.audit.append(
                    s,
                    AuditEntry(
                        actor,
                        "seal.revoke",
                        seal.seal_id,
                        {
                            "from": previous,
                            "to": "revoked",
                            "reason": seal.state_reason,
                            "crl_reason": "cACompromise",
                        },
                    ),
                    at=now,
                )
                revoked.append(seal.seal_id)
        return revoked

    # ---- what a key signed ---------------------------------------------------------------

    def count_to_reissue(self, kid: str) -> int:
        v = self._vault
        with v.db.read() as s:
            return int(
                s.execute(
                    _live(
                        select(func.count()).select_from(LicenceRecord).where(LicenceRecord.kid == kid),
                        v.clock(),
                    )
                ).scalar_one()
            )

    def affected(self, kid: str, *, limit: int | None = None) -> AffectedReport:
        """Every licence and seal that relied on *kid* (listed with what still needs doing)."""
        v = self._vault
        now = v.clock()
        with v.db.read() as s:
            row = v.keys.record(s, kid)
            info = to_key_info(row)
            query = (
                select(
                    LicenceRecord.identifier,
                    LicenceRecord.status,
                    LicenceRecord.issued_at,
                    LicenceRecord.superseded_by,
                    LicenceRecord.valid_from,
                    LicenceRecord.valid_until,
                )
                .where(LicenceRecord.kid == kid)
                .order_by(LicenceRecord.issued_at, LicenceRecord.identifier)
            )
            if limit is not None:
                query = query.limit(limit)
            licences = []
            for identifier, status, issued_at, superseded_by, valid_from, valid_until in s.execute(query):
                _, end = licence_window(valid_from, valid_until)
                live = status in (LicenceStatus.VALID, LicenceStatus.SUSPENDED) and superseded_by is None
                after = row.compromised_at is not None and issued_at >= row.compromised_at
                licences.append(
                    AffectedLicence(
                        identifier,
                        status,
                        issued_at,
                        after,
                        superseded_by,
                        live and (end is None or end > now),
                    )
                )
            seal_query = select(SealRecord).where(SealRecord.kid == kid)
            if row.purpose == KEY_PURPOSE_CA:
                ca_ids = select(CertificateAuthorityRecord.ca_id).where(CertificateAuthorityRecord.kid == kid)
                seal_query = select(SealRecord).where(SealRecord.ca_id.in_(ca_ids))
            seals = [
                {
                    "seal_id": seal.seal_id,
                    "name": seal.name,
                    "department": seal.department_code,
                    "state": seal.state,
                    "crl_reason": seal.crl_reason,
                }
                for seal in s.execute(seal_query.order_by(SealRecord.seal_id)).scalars()
            ]
            to_reissue = int(
                s.execute(
                    _live(
                        select(func.count()).select_from(LicenceRecord).where(LicenceRecord.kid == kid), now
                    )
                ).scalar_one()
            )
        return AffectedReport(info, licences, seals, to_reissue)

    # ---- re-issue --------------------------------------------------------------------------

    def check_reissue(self, kid: str) -> KeyInfo:
        v = self._vault
        with v.db.read() as s:
            row = v.keys.record(s, kid)
            if row.purpose != KEY_PURPOSE_LICENCE:
                raise IllegalTransition(f"key {kid} is a {row.purpose} key: only licence keys sign licences")
            if row.state != KeyState.COMPROMISED:
                raise IllegalTransition(
                    f"key {kid} is {row.state}: licences are re-issued only after their key is declared "
                    "compromised (`yinxin keys compromise`)"
                )
            return to_key_info(row)

    def reissue_affected(
        self,
        kid: str,
        *,
        actor: str,
        batch: int = REISSUE_BATCH,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReissueResult:
        """Re-issue every live licence *kid* signed; resumable (each batch commits on its own)."""
        v = self._vault
        info = self.check_reissue(kid)
        department = info.department_code
        assert department is not None
        total = self.count_to_reissue(kid)
        done = 0
        new_kid: str | None = None
        if progress is not None:
            progress(0, total)
        while True:
            now = v.clock()
            with v.db.write() as s:
                rows = (
                    s.execute(
                        _live(select(LicenceRecord).where(LicenceRecord.kid == kid), now)
                        .order_by(LicenceRecord.identifier)
                        .limit(batch)
                        .with_for_update()
                    )
                    .scalars()
                    .all()
                )
                if not rows:
                    break
                # Issuance's lock order (status list, then audit head), and the active key read
                # under the head lock: a rotation takes the head first, so the key read here
                # cannot be retired before this batch commits.
                slots = allocate_status_slots(s, len(rows), now=now)
                v.audit.lock_head(s)
                key = v.keys.active_key(s, department, now=now, count=len(rows))
                if key.kid == kid:  # cannot happen: a compromised key is never active
                    raise IllegalTransition(f"department {department} still signs with {kid}")
                new_kid = key.kid
                self._reissue_batch(s, rows, slots, key, kid, actor, now)
                done += len(rows)
            if progress is not None:
                progress(done, total)
        remaining = self.count_to_reissue(kid)
        with v.db.write() as s:
            v.audit.append(
                s,
                AuditEntry(actor, "key.reissue-affected", kid, {"reissued": done, "remaining": remaining}),
                at=v.clock(),
            )
        return ReissueResult(kid, done, remaining, new_kid)

    def _reissue_batch(
        self,
        s: Any,
        rows: Sequence[LicenceRecord],
        slots: Sequence[tuple[str, int]],
        key: KeyRef,
        old_kid: str,
        actor: str,
        now: datetime,
    ) -> None:
        v = self._vault
        iat = int(now.timestamp())
        names: dict[str, str] = {}
        events: list[AuditEntry] = []
        for row, (slot_list, slot_index) in zip(rows, slots, strict=True):
            new_id = LicenceIdentifier.parse(row.identifier).next_version()
            identifier = str(new_id)
            if row.issuer_code not in names:
                dept = s.get(DepartmentRecord, row.issuer_code)
                names[row.issuer_code] = dept.name if dept is not None else row.issuer_code
            try:
                type_name = v.types.get(row.type_code).name
            except YinxinError:
                type_name = row.type_code
            claims = licence_claims(
                identifier=identifier,
                issuer=row.issuer_code,
                issuer_name=names[row.issuer_code],
                licence_type=row.type_code,
                licence_type_name=type_name,
                holder_name=row.holder_name,
                holder_id_type=row.holder_id_type,
                holder_id_masked=row.holder_id_masked,
                valid_from=row.valid_from,
                valid_until=row.valid_until,
                data=row.data,
                iat=iat,
                version=new_id.version_text,
                status_slot=(slot_index, status_list_uri(v.public_url, slot_list)),
            )
            token = sign_licence_token(v.backend, key, claims)
            idempotency_key = row.idempotency_key
            previous = row.status
            # The old version: revoked as superseded; its idempotency key moves to the new version,
            # so a retried issuance request finds the licence that stands now.
            row.superseded_by = identifier
            row.status = LicenceStatus.REVOKED
            row.status_changed_at = now
            row.idempotency_key = None
            s.flush()
            why = f"re-issued as {identifier}: signing key {old_kid} compromised"
            s.add(
                StatusChangeRecord(
                    identifier=row.identifier,
                    from_status=previous,
                    to_status=LicenceStatus.REVOKED,
                    reason=why,
                    actor=actor,
                    changed_at=now,
                )
            )
            s.add(
                LicenceRecord(
                    identifier=identifier,
                    type_code=row.type_code,
                    issuer_code=row.issuer_code,
                    serial_year=row.serial_year,
                    serial_sequence=row.serial_sequence,
                    version=new_id.version,
                    holder_name=row.holder_name,
                    holder_id_type=row.holder_id_type,
                    holder_id_ciphertext=row.holder_id_ciphertext,
                    holder_id_index=row.holder_id_index,
                    holder_id_masked=row.holder_id_masked,
                    data=row.data,
                    valid_from=row.valid_from,
                    valid_until=row.valid_until,
                    issued_at=now,
                    kid=key.kid,
                    token=token,
                    status=previous,
                    status_changed_at=now if previous != LicenceStatus.VALID else None,
                    idempotency_key=idempotency_key,
                    request_hash=row.request_hash,
                    status_list=slot_list,
                    status_index=slot_index,
                    superseded_by=None,
                )
            )
            events.append(
                AuditEntry(
                    actor,
                    "licence.supersede",
                    row.identifier,
                    {
                        "from": previous,
                        "to": LicenceStatus.REVOKED,
                        "reason": why,
                        "superseded_by": identifier,
                    },
                )
            )
            events.append(
                AuditEntry(
                    actor,
                    "licence.reissue",
                    identifier,
                    {
                        "replaces": row.identifier,
                        "kid": key.kid,
                        "compromised_kid": old_kid,
                        "status": previous,
                        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                    },
                )
            )
        v.keys.count_signatures(s, {key.kid: len(rows)})
        v.audit.append_many(s, events, at=now)
        s.flush()
