"""The key registry: which backend key signs licences for which department.

The backend holds the private halves; the registry holds each key's bound
algorithm, owner, state and public JWK, so verification needs no backend
round-trip and survives the key's later destruction.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from schemas.errors import DepartmentNotFound, KeyNotFound, NoActiveKey, YinxinError
from signing import TrustedKey, TrustStore, public_jwk, trusted_key_from_jwk
from vault._audit import AuditEntry, AuditLog
from vault._models import AuditHeadRecord, DepartmentRecord, KeyRecord
from vault._types import CHINA_TIME, KeyInfo

__all__ = ["KEY_PURPOSE_CA", "KEY_PURPOSE_LICENCE", "KEY_PURPOSE_SEAL", "KeyRegistry"]

log = logging.getLogger("yinxin.vault")

KEY_PURPOSE_LICENCE = "licence-signing"
KEY_PURPOSE_CA = "ca"  # signs the root certificate, seal certificates and CRLs
KEY_PURPOSE_SEAL = "seal"  # a department e-seal: signs PDFs (PAdES)


class KeyState:
    ACTIVE = "active"
    RETIRED = "retired"  # verifies, never signs


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
    )


class KeyRegistry:
    def __init__(self, backend: KeyBackend, audit: AuditLog) -> None:
        self._backend = backend
        self._audit = audit

    def new_kid(self, department_code: str, algorithm: SignatureAlgorithm, now: datetime) -> str:
        stamp = now.astimezone(CHINA_TIME).strftime("%Y%m%d")
        return f"{department_code}-{algorithm.value.lower()}-{stamp}-{secrets.token_hex(4)}"

    def generate(
        self,
        session: Session,
        department_code: str,
        algorithm: SignatureAlgorithm,
        *,
        actor: str,
        now: datetime,
    ) -> KeyInfo:
        """Generate a licence-signing key in the backend and make it the department's active key.

        A previously active key of the department is retired: it keeps
        verifying the tokens it signed and never signs again.
        """
        if session.get(DepartmentRecord, department_code) is None:
            raise DepartmentNotFound(
                f"department {department_code} is not registered: add it with "
                f"`yinxin dept add --code {department_code} --name NAME`"
            )
        kid = self.new_kid(department_code, algorithm, now)
        ref = self._backend.generate_key(algorithm, kid)
        try:
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
        except BaseException:
            self._backend.destroy_key(ref.kid)
            raise
        return self._register(session, ref, KEY_PURPOSE_LICENCE, department_code, actor, now, retired)

    def active_key(self, session: Session, department_code: str) -> KeyRef:
        row = session.execute(
            select(KeyRecord)
            .where(
                KeyRecord.department_code == department_code,
                KeyRecord.purpose == KEY_PURPOSE_LICENCE,
                KeyRecord.state == KeyState.ACTIVE,
            )
            .order_by(KeyRecord.activated_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        if row is None:
            raise NoActiveKey(
                f"department {department_code} has no active signing key: create one with "
                f"`yinxin keys generate --dept {department_code}`"
            )
        return KeyRef(row.kid, SignatureAlgorithm.parse(row.algorithm))

    def get(self, session: Session, kid: str) -> KeyInfo:
        row = session.get(KeyRecord, kid)
        if row is None:
            raise KeyNotFound(f"no key with kid {kid!r} in the registry; `yinxin keys list` shows them")
        return to_key_info(row)

    def list(self, session: Session) -> Sequence[KeyInfo]:
        rows = session.execute(select(KeyRecord).order_by(KeyRecord.created_at, KeyRecord.kid)).scalars()
        return [to_key_info(r) for r in rows]

    def trust_store(self, session: Session, purpose: str = KEY_PURPOSE_LICENCE) -> TrustStore:
        """Every key of *purpose* that verifies (active and retired), and nothing else."""
        rows = session.execute(
            select(KeyRecord).where(
                KeyRecord.purpose == purpose,
                KeyRecord.state.in_([KeyState.ACTIVE, KeyState.RETIRED]),
            )
        ).scalars()
        keys: list[TrustedKey] = []
        for row in rows:
            key = trusted_key_from_jwk(row.public_jwk)
            keys.append(TrustedKey(key.kid, key.algorithm, key.public_key, row.state))
        return TrustStore(keys)

    def ensure_system_key(
        self,
        session: Session,
        purpose: str,
        *,
        kid_prefix: str,
        algorithm: SignatureAlgorithm,
        actor: str,
        now: datetime,
    ) -> KeyInfo:
        """The active key of a service-wide *purpose* (no department), generated if there is none.

        Safe from several processes at once: the audit-chain head is locked first
        (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so one creates
        the key and the others find it.
        """
        session.execute(select(AuditHeadRecord.id).where(AuditHeadRecord.id == 1).with_for_update())
        row = session.execute(
            select(KeyRecord)
            .where(KeyRecord.purpose == purpose, KeyRecord.state == KeyState.ACTIVE)
            .order_by(KeyRecord.activated_at.desc(), KeyRecord.kid)
            .limit(1)
        ).scalar_one_or_none()
        if row is not None:
            return to_key_info(row)
        stamp = now.astimezone(CHINA_TIME).strftime("%Y%m%d")
        kid = f"{kid_prefix}-{algorithm.value.lower()}-{stamp}-{secrets.token_hex(4)}"
        info = self._register(
            session, self._backend.generate_key(algorithm, kid), purpose, None, actor, now, []
        )
        log.info("%s key %s created in the %s backend", purpose, kid, self._backend.name)
        return info

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
        stamp = now.astimezone(CHINA_TIME).strftime("%Y%m%d")
        kid = f"{kid_prefix}-{algorithm.value.lower()}-{stamp}-{secrets.token_hex(4)}"
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
    ) -> KeyInfo:
        """Record a key just generated in the backend, with its audit event; on failure remove it."""
        try:
            jwk = public_jwk(TrustedKey(ref.kid, ref.algorithm, self._backend.public_key(ref)))
            row = KeyRecord(
                kid=ref.kid,
                algorithm=ref.algorithm.value,
                backend=self._backend.name,
                purpose=purpose,
                department_code=department_code,
                state=KeyState.ACTIVE,
                public_jwk=jwk,
                created_at=now,
                activated_at=now,
                retired_at=None,
            )
            session.add(row)
            details = {
                "algorithm": ref.algorithm.value,
                "backend": self._backend.name,
                "department": department_code,
                "purpose": purpose,
                "retired": [*retired],
            }
            self._audit.append(session, AuditEntry(actor, "key.generate", ref.kid, details), at=now)
            session.flush()
        except BaseException:
            # The registry row did not make it: do not leave an orphan key in the backend.
            try:
                self._backend.destroy_key(ref.kid)
            except YinxinError:
                log.warning("could not remove orphan key %s from the backend", ref.kid)
            raise
        return to_key_info(row)
