"""The key registry: which backend key signs for whom, in which lifecycle state.

The backend holds the private halves; the registry holds each key's bound
algorithm, owner, state and public JWK, so verification needs no backend
round-trip and survives the key's later destruction.

Lifecycle (NIST SP 800-57 Part 1 Rev. 5 §7.1): ``pre-activation`` (generated,
neither signs nor verifies) → ``active`` (signs and verifies, until the end of
its signing period or signature budget) → ``retired`` (verifies what it
signed, never signs again) → ``destroyed`` (private key deleted from the
backend; the public key stays for verification history). ``compromised``
can be reached from any state: nothing the key signed verifies any more,
because a stolen key can backdate.

Every key generated gets a key-generation record (the ceremony record): who,
when, which backend and token, the protection attributes read back from the
device, the public key fingerprint; signed by the audit key.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Row, Table, bindparam, select, update
from sqlalchemy.orm import Session

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from schemas.errors import (
    DepartmentNotFound,
    IllegalTransition,
    InvalidInput,
    KeyNotFound,
    KeyNotUsable,
    NoActiveKey,
    YinxinError,
)
from signing import (
    CEREMONY_TYP,
    RecordRejected,
    TrustedKey,
    TrustStore,
    public_jwk,
    record_kid,
    sign_record,
    trusted_key_from_jwk,
    verify_record,
)
from vault._audit import KEY_PURPOSE_AUDIT, AuditEntry, AuditLog
from vault._models import DepartmentRecord, KeyCeremonyRecord, KeyRecord
from vault._types import CHINA_TIME, KeyInfo

__all__ = [
    "KEY_PURPOSE_AUDIT",
    "KEY_PURPOSE_CA",
    "KEY_PURPOSE_LICENCE",
    "KEY_PURPOSE_SEAL",
    "CeremonyRecord",
    "KeyPolicy",
    "KeyRegistry",
    "KeyState",
]

log = logging.getLogger("yinxin.vault")

KEY_PURPOSE_LICENCE = "licence-signing"
KEY_PURPOSE_CA = "ca"  # signs the root certificate, seal certificates and CRLs
KEY_PURPOSE_SEAL = "seal"  # a department e-seal: signs PDFs (PAdES)


class KeyState:
    PRE_ACTIVATION = "pre-activation"  # generated; neither signs nor verifies yet
    ACTIVE = "active"
    RETIRED = "retired"  # verifies, never signs
    DESTROYED = "destroyed"  # private key gone from the backend; the public key still verifies
    COMPROMISED = "compromised"  # nothing it signed verifies

    # States whose public key verifies what the key signed before.
    VERIFYING = (ACTIVE, RETIRED, DESTROYED)


# Service-wide keys (no department) and the kid prefix each gets.
SYSTEM_KEY_PREFIXES: Mapping[str, str] = {
    KEY_PURPOSE_AUDIT: "audit",
    "service-token": "service",
    "status-list": "status-list",
}

DEFAULT_SIGNING_DAYS: Mapping[str, int | None] = {KEY_PURPOSE_LICENCE: 365}


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """Cryptoperiods (NIST SP 800-57 Part 1 §5.3: the originator-usage period) per key purpose.

    ``signing_days[purpose]`` days of signing from activation; a purpose that is not
    listed (or None) has no time limit. Seal keys are bounded by their certificate's
    validity instead, the CA key by the root's. ``max_signatures`` is the default budget
    for new licence keys (None: unlimited); ``keys generate --max-signatures`` overrides it.
    """

    signing_days: Mapping[str, int | None] = field(default_factory=lambda: dict(DEFAULT_SIGNING_DAYS))
    max_signatures: int | None = None

    def sign_until(self, purpose: str, activated: datetime) -> datetime | None:
        days = self.signing_days.get(purpose)
        return None if days is None else activated + timedelta(days=days)


@dataclass(frozen=True, slots=True)
class CeremonyRecord:
    """The key-generation record as signed, and whether its signature checks out now."""

    kid: str
    record: Mapping[str, Any]
    token: str
    signed_by: str
    verified: bool
    problem: str | None


def to_key_info(row: KeyRecord) -> KeyInfo:
    return KeyInfo(
        kid=row.kid,
        algorithm=row.algorithm,
        backend=row.backend,
        purpose=row.purpose,
        department_code=row.department_code,
        state=row.state,
        created_at=row.created_at,
        activated_at=row.activated_at,
        retired_at=row.retired_at,
        public_jwk=dict(row.public_jwk),
        sign_until=row.sign_until,
        max_signatures=row.max_signatures,
        signature_count=int(row.signature_count or 0),
        destroyed_at=row.destroyed_at,
        compromised_at=row.compromised_at,
        state_reason=row.state_reason,
    )


# The statements of every issuance transaction, built once: constructing a statement costs
# several times what executing it does (they are Core statements on the table, so no ORM
# objects are loaded or left stale in the session's identity map).
_KEYS = cast(Table, KeyRecord.__table__)
_ACTIVE_LICENCE_KEY = (
    select(_KEYS)
    .where(
        _KEYS.c.department_code == bindparam("department"),
        _KEYS.c.purpose == KEY_PURPOSE_LICENCE,
        _KEYS.c.state == KeyState.ACTIVE,
    )
    .order_by(_KEYS.c.activated_at.desc())
    .limit(1)
)
_ADD_SIGNATURES = (
    update(_KEYS)
    .where(_KEYS.c.kid == bindparam("key"))
    .values(signature_count=_KEYS.c.signature_count + bindparam("n"))
)
_ADD_SIGNATURES_COUNTED = _ADD_SIGNATURES.returning(_KEYS.c.max_signatures, _KEYS.c.signature_count)


def usable_problem(row: KeyRecord | Row[Any], now: datetime, count: int = 1) -> str | None:
    """Why *row* may not make *count* more signatures at *now*, or None."""
    if row.state != KeyState.ACTIVE:
        return f"key {row.kid} is {row.state}: only an active key signs"
    if row.sign_until is not None and now >= row.sign_until:
        return (
            f"key {row.kid} reached the end of its signing period on "
            f"{row.sign_until.astimezone(CHINA_TIME):%Y-%m-%d %H:%M} CST (its cryptoperiod)"
        )
    if row.max_signatures is not None and int(row.signature_count or 0) + count > row.max_signatures:
        return f"key {row.kid} has made {row.signature_count} of its {row.max_signatures} allowed signatures"
    return None


def new_kid(prefix: str, algorithm: SignatureAlgorithm, now: datetime) -> str:
    """``PREFIX-alg-YYYYMMDD-random``: the label of every key Yinxin generates."""
    stamp = now.astimezone(CHINA_TIME).strftime("%Y%m%d")
    return f"{prefix}-{algorithm.value.lower()}-{stamp}-{secrets.token_hex(4)}"


def active_key_of(session: Session, purpose: str) -> KeyRecord | None:
    """The newest active key of a service-wide *purpose* (audit, status-list, service-token, ca)."""
    return session.execute(
        select(KeyRecord)
        .where(KeyRecord.purpose == purpose, KeyRecord.state == KeyState.ACTIVE)
        .order_by(KeyRecord.activated_at.desc(), KeyRecord.kid)
        .limit(1)
    ).scalar_one_or_none()


class KeyRegistry:
    def __init__(self, backend: KeyBackend, audit: AuditLog, policy: KeyPolicy | None = None) -> None:
        self._backend = backend
        self._audit = audit
        self.policy = policy or KeyPolicy()

    def generate(
        self,
        session: Session,
        department_code: str,
        algorithm: SignatureAlgorithm,
        *,
        actor: str,
        now: datetime,
        pre_activation: bool = False,
        max_signatures: int | None = None,
    ) -> KeyInfo:
        """Generate a licence-signing key in the backend and make it the department's active key.

        A previously active key of the department is retired: it keeps verifying the
        tokens it signed and never signs again. With *pre_activation* the new key waits
        in ``pre-activation`` until :meth:`activate` (and nothing is retired yet).
        """
        if session.get(DepartmentRecord, department_code) is None:
            raise DepartmentNotFound(
                f"department {department_code} is not registered: add it with "
                f"`yinxin dept add --code {department_code} --name NAME`"
            )
        if max_signatures is None:
            max_signatures = self.policy.max_signatures
        if max_signatures is not None and not 1 <= max_signatures <= 10**12:
            raise InvalidInput("--max-signatures must be between 1 and 10^12")
        kid = new_kid(department_code, algorithm, now)
        ref = self._backend.generate_key(algorithm, kid)
        try:
            # The audit head first, like every key state change: two rotations at once then run one
            # after the other (the second retires the key the first made, never a second active
            # one), and an issuance, which re-reads its keys under this lock, never signs with a
            # key retired before it commits. Taken after the (slow) key generation.
            self._audit.lock_head(session)
            retired = [] if pre_activation else self._retire_active(session, department_code, now)
        except BaseException:
            self._backend.destroy_key(ref.kid)
            raise
        return self._register(
            session,
            ref,
            KEY_PURPOSE_LICENCE,
            department_code,
            actor,
            now,
            retired,
            state=KeyState.PRE_ACTIVATION if pre_activation else KeyState.ACTIVE,
            max_signatures=max_signatures,
        )

    def _retire_active(self, session: Session, department_code: str, now: datetime) -> list[str]:
        retired = list(
            session.execute(
                select(KeyRecord.kid).where(
                    KeyRecord.department_code == department_code,
                    KeyRecord.purpose == KEY_PURPOSE_LICENCE,
                    KeyRecord.state == KeyState.ACTIVE,
                )
            )
            .scalars()
            .all()
        )
        if retired:
            session.execute(
                update(KeyRecord)
                .where(KeyRecord.kid.in_(retired))
                .values(state=KeyState.RETIRED, retired_at=now)
            )
        return retired

    def activate(self, session: Session, kid: str, *, actor: str, now: datetime) -> KeyInfo:
        """A ``pre-activation`` licence key becomes the department's active key; the old one retires."""
        self._audit.lock_head(session)  # before any key row: the order of generate()
        row = self.record(session, kid, lock=True)
        if row.state != KeyState.PRE_ACTIVATION:
            raise IllegalTransition(f"key {kid} is {row.state}: only a pre-activation key can be activated")
        if row.purpose != KEY_PURPOSE_LICENCE or row.department_code is None:
            raise IllegalTransition(
                f"key {kid} is a {row.purpose} key: only licence keys wait for activation"
            )
        retired = self._retire_active(session, row.department_code, now)
        row.state = KeyState.ACTIVE
        row.activated_at = now
        row.sign_until = self.policy.sign_until(row.purpose, now)
        self._audit.append(
            session,
            AuditEntry(actor, "key.activate", kid, {"department": row.department_code, "retired": retired}),
            at=now,
        )
        session.flush()
        return to_key_info(row)

    def retire(self, session: Session, kid: str, *, actor: str, now: datetime, reason: str) -> None:
        """An active key stops signing (a seal revoked, a system key replaced); audited."""
        row = self.record(session, kid, lock=True)
        if row.state != KeyState.ACTIVE:
            return
        row.state = KeyState.RETIRED
        row.retired_at = now
        row.state_reason = reason
        self._audit.append(session, AuditEntry(actor, "key.retire", kid, {"reason": reason}), at=now)

    def record(self, session: Session, kid: str, *, lock: bool = False) -> KeyRecord:
        """The registry row of *kid* (for this package's lifecycle code); ``KeyNotFound`` if absent."""
        row = session.get(KeyRecord, kid, with_for_update=lock) if isinstance(kid, str) else None
        if row is None:
            raise KeyNotFound(
                f"no key with kid {str(kid)[:128]!r} in the registry; `yinxin keys list` shows them"
            )
        return row

    def check_usable(self, session: Session, kid: str, now: datetime, count: int = 1) -> KeyRef:
        """The key, if it may make *count* more signatures now; else ``KeyNotUsable`` saying why."""
        row = self.record(session, kid)
        problem = usable_problem(row, now, count)
        if problem is not None:
            raise KeyNotUsable(problem + _remedy(row))
        return KeyRef(row.kid, SignatureAlgorithm.parse(row.algorithm))

    def count_signatures(
        self, session: Session, counts: Mapping[str, int], *, within_budget: bool = False
    ) -> None:
        """Add to each key's signature count, in the transaction that stores what was signed.

        With *within_budget*, a key that has now counted more signatures than its budget allows
        raises ``KeyNotUsable`` (the caller's rollback undoes the count): each key's new count
        comes back from its UPDATE, with no second statement to read it.
        """
        if not counts:
            return
        passed: list[tuple[str, int]] = []  # (kid, budget) of keys now past their budget
        if within_budget:
            for kid, n in counts.items():
                row = session.execute(_ADD_SIGNATURES_COUNTED, {"key": kid, "n": n}).first()
                if row is not None and row[0] is not None and int(row[1]) > int(row[0]):
                    passed.append((kid, int(row[0])))
        else:
            session.execute(_ADD_SIGNATURES, [{"key": kid, "n": n} for kid, n in counts.items()])
        # A Core UPDATE leaves objects already loaded in this session as they were: their
        # count is read again on next use.
        for obj in list(session.identity_map.values()):
            if isinstance(obj, KeyRecord) and obj.kid in counts:
                session.expire(obj, ["signature_count"])
        for kid, budget in passed:
            record = self.record(session, kid)
            raise KeyNotUsable(f"key {kid} would pass its budget of {budget} signatures{_remedy(record)}")

    def active_key(
        self, session: Session, department_code: str, *, now: datetime | None = None, count: int = 1
    ) -> KeyRef:
        """The department's active licence key; with *now*, also checks it may sign *count* more."""
        row = session.execute(_ACTIVE_LICENCE_KEY, {"department": department_code}).first()
        if row is None:
            raise NoActiveKey(
                f"department {department_code} has no active signing key: create one with "
                f"`yinxin keys generate --dept {department_code}`"
            )
        if now is not None:
            problem = usable_problem(row, now, count)
            if problem is not None:
                raise KeyNotUsable(f"department {department_code} cannot sign: {problem}{_remedy(row)}")
        return KeyRef(row.kid, SignatureAlgorithm.parse(row.algorithm))

    def get(self, session: Session, kid: str) -> KeyInfo:
        return to_key_info(self.record(session, kid))

    def list(self, session: Session) -> Sequence[KeyInfo]:
        rows = session.execute(select(KeyRecord).order_by(KeyRecord.created_at, KeyRecord.kid)).scalars()
        return [to_key_info(r) for r in rows]

    def trust_store(self, session: Session, purpose: str = KEY_PURPOSE_LICENCE) -> TrustStore:
        """Every key of *purpose* that verifies (active, retired, destroyed), and nothing else.

        Pre-activation keys have signed nothing; compromised keys verify nothing.
        """
        rows = session.execute(
            select(KeyRecord).where(
                KeyRecord.purpose == purpose,
                KeyRecord.state.in_(KeyState.VERIFYING),
            )
        ).scalars()
        keys: list[TrustedKey] = []
        for row in rows:
            key = trusted_key_from_jwk(row.public_jwk)
            keys.append(TrustedKey(key.kid, key.algorithm, key.public_key, row.state))
        return TrustStore(keys)

    def compromised(self, session: Session, purpose: str = KEY_PURPOSE_LICENCE) -> dict[str, KeyInfo]:
        """Compromised keys of *purpose* by kid: their tokens get a reason, not just "unknown key"."""
        rows = session.execute(
            select(KeyRecord).where(KeyRecord.purpose == purpose, KeyRecord.state == KeyState.COMPROMISED)
        ).scalars()
        return {row.kid: to_key_info(row) for row in rows}

    def ensure_system_key(
        self,
        session: Session,
        purpose: str,
        *,
        algorithm: SignatureAlgorithm,
        actor: str,
        now: datetime,
    ) -> KeyInfo:
        """The active key of a service-wide *purpose* (no department), generated if there is none.

        Safe from several processes at once: the audit-chain head is locked first
        (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so one creates
        the key and the others find it.
        """
        prefix = _system_prefix(purpose)
        self._audit.lock_head(session)
        row = active_key_of(session, purpose)
        if row is not None:
            return to_key_info(row)
        kid = new_kid(prefix, algorithm, now)
        info = self._register(
            session, self._backend.generate_key(algorithm, kid), purpose, None, actor, now, []
        )
        log.info("%s key %s created in the %s backend", purpose, kid, self._backend.name)
        return info

    def rotate_system_key(
        self, session: Session, purpose: str, *, algorithm: SignatureAlgorithm, actor: str, now: datetime
    ) -> KeyInfo:
        """A new active key for a service-wide *purpose*; the active one retires (verifies only)."""
        prefix = _system_prefix(purpose)
        self._audit.lock_head(session)
        old = list(
            session.execute(
                select(KeyRecord).where(KeyRecord.purpose == purpose, KeyRecord.state == KeyState.ACTIVE)
            ).scalars()
        )
        ref = self._backend.generate_key(algorithm, new_kid(prefix, algorithm, now))
        for row in old:
            row.state = KeyState.RETIRED
            row.retired_at = now
        return self._register(session, ref, purpose, None, actor, now, [r.kid for r in old])

    def generate_for(
        self,
        session: Session,
        purpose: str,
        *,
        department_code: str | None,
        algorithm: SignatureAlgorithm,
        kid_prefix: str,
        actor: str,
        now: datetime,
    ) -> KeyInfo:
        """A new key of *purpose* (a CA or seal key) that replaces nothing: each has its own certificate."""
        kid = new_kid(kid_prefix, algorithm, now)
        return self._register(
            session, self._backend.generate_key(algorithm, kid), purpose, department_code, actor, now, []
        )

    def _register(
        self,
        session: Session,
        ref: KeyRef,
        purpose: str,
        department_code: str | None,
        actor: str,
        now: datetime,
        retired: Sequence[str],
        *,
        state: str = KeyState.ACTIVE,
        max_signatures: int | None = None,
    ) -> KeyInfo:
        """Record a key just generated in the backend, with its audit event and ceremony record;
        on failure remove it from the backend."""
        try:
            public = self._backend.public_key(ref)
            jwk = public_jwk(TrustedKey(ref.kid, ref.algorithm, public))
            active = state == KeyState.ACTIVE
            row = KeyRecord(
                kid=ref.kid,
                algorithm=ref.algorithm.value,
                backend=self._backend.name,
                purpose=purpose,
                department_code=department_code,
                state=state,
                public_jwk=jwk,
                created_at=now,
                activated_at=now if active else None,
                retired_at=None,
                sign_until=self.policy.sign_until(purpose, now) if active else None,
                max_signatures=max_signatures,
                signature_count=0,
            )
            session.add(row)
            fingerprint = hashlib.sha256(
                public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            ).hexdigest()
            details = {
                "algorithm": ref.algorithm.value,
                "backend": self._backend.name,
                "department": department_code,
                "purpose": purpose,
                "state": state,
                "retired": [*retired],
                "public_key_sha256": fingerprint,
            }
            self._audit.append(session, AuditEntry(actor, "key.generate", ref.kid, details), at=now)
            session.flush()
            self._write_ceremony(session, ref, purpose, department_code, actor, now, fingerprint)
        except BaseException:
            # The registry row did not make it: do not leave an orphan key in the backend.
            try:
                self._backend.destroy_key(ref.kid)
            except YinxinError:
                log.warning("could not remove orphan key %s from the backend", ref.kid)
            raise
        return to_key_info(row)

    # ---- key-generation records (ceremony) ----------------------------------------------

    def _write_ceremony(
        self,
        session: Session,
        ref: KeyRef,
        purpose: str,
        department_code: str | None,
        actor: str,
        now: datetime,
        fingerprint: str,
    ) -> None:
        provenance = self._backend.describe_key(ref.kid)
        record = {
            "kid": ref.kid,
            "algorithm": ref.algorithm.value,
            "purpose": purpose,
            "department": department_code,
            "generated_at": now.astimezone(CHINA_TIME).isoformat(),
            "generated_by": actor,
            "public_key_sha256": fingerprint,
            **provenance.as_dict(),
        }
        if purpose == KEY_PURPOSE_AUDIT:
            signer = ref  # an audit key vouches for its own generation
        else:
            info = self.ensure_system_key(
                session, KEY_PURPOSE_AUDIT, algorithm=SignatureAlgorithm.ES256, actor=actor, now=now
            )
            signer = KeyRef(info.kid, SignatureAlgorithm.parse(info.algorithm))
        token = sign_record(self._backend, signer, record, typ=CEREMONY_TYP)
        session.add(KeyCeremonyRecord(kid=ref.kid, token=token))
        session.flush()

    def ceremony(self, session: Session, kid: str) -> CeremonyRecord | None:
        """The key's generation record, its signature checked against the audit key it names."""
        row = session.get(KeyCeremonyRecord, kid)
        if row is None:
            return None
        signed_by = ""
        try:
            signed_by = record_kid(row.token)
            signer = session.get(KeyRecord, signed_by)
            if signer is None or signer.purpose != KEY_PURPOSE_AUDIT:
                raise RecordRejected(f"the record names {signed_by!r}, which is not an audit key")
            if signer.state == KeyState.COMPROMISED:
                raise RecordRejected(f"audit key {signed_by} was declared compromised")
            record = verify_record(row.token, trusted_key_from_jwk(signer.public_jwk), typ=CEREMONY_TYP)
            if record.get("kid") != kid:
                raise RecordRejected(f"the record describes key {record.get('kid')!r}, not {kid!r}")
            return CeremonyRecord(kid, record, row.token, signed_by, True, None)
        except RecordRejected as exc:
            return CeremonyRecord(kid, {}, row.token, signed_by, False, str(exc))


def _system_prefix(purpose: str) -> str:
    prefix = SYSTEM_KEY_PREFIXES.get(purpose)
    if prefix is None:
        raise InvalidInput(
            f"purpose {str(purpose)[:40]!r} has no service-wide key: use one of "
            f"{', '.join(sorted(SYSTEM_KEY_PREFIXES))} (licence keys: --dept USCC)"
        )
    return prefix


def _remedy(row: KeyRecord | Row[Any]) -> str:
    if row.purpose == KEY_PURPOSE_LICENCE and row.department_code:
        return f"; rotate with `yinxin keys rotate --dept {row.department_code}`"
    if row.purpose not in (KEY_PURPOSE_LICENCE, KEY_PURPOSE_CA, KEY_PURPOSE_SEAL):
        return f"; rotate with `yinxin keys rotate --purpose {row.purpose}`"
    return ""
