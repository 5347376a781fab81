"""The vault's key administration: officers, key lifecycle, dual control, the signed audit log.

A mixin of :class:`vault.Vault` (as ``LicenceReader`` is): each public method is one
transaction, and every key operation is attributed to an officer — or, in setup
mode (before the first security officer is enrolled), to the local user who
runs the installation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from sqlalchemy import select, text

from hsm import SignatureAlgorithm
from schemas.errors import AuthenticationFailed, InvalidInput, PermissionDenied
from signing import public_jwk, trusted_key_from_jwk
from vault._audit import KEY_PURPOSE_AUDIT, AuditEntry, AuditLog, AuditReport, canonical_json, timestamp_text
from vault._audit_checkpoints import Checkpoint, CheckpointSigner
from vault._audit_crosscheck import cross_check
from vault._db import Database
from vault._keys import CeremonyRecord, KeyRegistry, KeyState, active_key_of, to_key_info
from vault._models import KeyRecord
from vault._officers import Officer, OfficerRegistry, Role, require_role
from vault._types import Clock, KeyInfo

__all__ = ["AUDIT_EXPORT_FORMAT", "KeyAdministration"]

AUDIT_EXPORT_FORMAT = "yinxin-audit-export/1"


class KeyAdministration:
    """Mixed into Vault (which provides these attributes)."""

    db: Database
    clock: Clock
    audit: AuditLog
    keys: KeyRegistry
    officers: OfficerRegistry
    checkpoints: CheckpointSigner

    def forget_trust(self) -> None:  # pragma: no cover - Vault's own
        raise NotImplementedError

    def generate_key(
        self,
        department_code: str,
        algorithm: SignatureAlgorithm,
        *,
        actor: str,
        officer: Officer | None = None,
        pre_activation: bool = False,
        max_signatures: int | None = None,
    ) -> KeyInfo:  # pragma: no cover - Vault's own
        raise NotImplementedError

    # ---- who is acting ---------------------------------------------------------------------

    def acting(self, officer: Officer | None, roles: Sequence[str], what: str, fallback: str) -> str:
        """The audit actor for an operation: *officer* if they hold one of *roles*; in setup mode,
        with no officer, the local user (*fallback*)."""
        if officer is not None:
            require_role(officer, roles, what)
            return officer.actor
        with self.db.read() as s:
            setup = self.officers.setup_mode(s)
        if not setup:
            raise PermissionDenied(
                f"security officers are enrolled, so only an officer may {what}: "
                "give --officer NAME (password from the prompt or YINXIN_OFFICER_PASSWORD)"
            )
        return fallback

    def setup_mode(self) -> bool:
        with self.db.read() as s:
            return self.officers.setup_mode(s)

    def officer_login(self, name: str, password: str) -> Officer:
        """The officer, if the password is theirs; a failed attempt is audited (never the password)."""
        try:
            with self.db.read() as s:
                return self.officers.authenticate(s, name, password)
        except AuthenticationFailed:
            with self.db.write() as s:
                self.audit.append(
                    s,
                    AuditEntry("anonymous", "officer.login-failed", str(name)[:64] or "-", {}),
                    at=self.clock(),
                )
            raise

    def officer_for_client(self, client_id: str) -> Officer | None:
        with self.db.read() as s:
            return self.officers.for_client(s, client_id)

    def add_officer(
        self,
        name: str,
        role: str,
        *,
        password: str | None,
        client_id: str | None = None,
        acting: Officer | None,
        actor: str,
    ) -> Officer:
        with self.db.write() as s:
            return self.officers.add(
                s,
                name,
                role,
                password=password,
                client_id=client_id,
                acting=acting,
                actor=actor,
                now=self.clock(),
            )

    def list_officers(self) -> list[Officer]:
        with self.db.read() as s:
            return self.officers.list(s)

    def disable_officer(self, name: str, *, acting: Officer) -> Officer:
        with self.db.write() as s:
            return self.officers.disable(s, name, acting=acting, now=self.clock())

    # ---- key lifecycle (single officer) ------------------------------------------------------

    def rotate_key(
        self,
        department_code: str,
        algorithm: SignatureAlgorithm | None = None,
        *,
        officer: Officer | None,
        actor: str,
        max_signatures: int | None = None,
    ) -> KeyInfo:
        """A new active licence key for the department; the old one retires (same algorithm by default)."""
        if algorithm is None:
            with self.db.read() as s:
                current = s.execute(
                    select(KeyRecord.algorithm)
                    .where(
                        KeyRecord.department_code == department_code,
                        KeyRecord.purpose == "licence-signing",
                        KeyRecord.state == KeyState.ACTIVE,
                    )
                    .limit(1)
                ).scalar_one_or_none()
            algorithm = SignatureAlgorithm.parse(current) if current else SignatureAlgorithm.ES256
        return self.generate_key(
            department_code, algorithm, actor=actor, officer=officer, max_signatures=max_signatures
        )

    def rotate_system_key(
        self,
        purpose: str,
        algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256,
        *,
        officer: Officer | None,
        actor: str,
    ) -> KeyInfo:
        who = self.acting(officer, (Role.SECURITY_OFFICER,), "rotate keys", actor)
        with self.db.write() as s:
            info = self.keys.rotate_system_key(s, purpose, algorithm=algorithm, actor=who, now=self.clock())
        self.forget_trust()
        return info

    def activate_key(self, kid: str, *, officer: Officer | None, actor: str) -> KeyInfo:
        who = self.acting(officer, (Role.SECURITY_OFFICER,), "activate keys", actor)
        with self.db.write() as s:
            info = self.keys.activate(s, kid, actor=who, now=self.clock())
        self.forget_trust()
        return info

    def key_details(self, kid: str) -> tuple[KeyInfo, CeremonyRecord | None]:
        with self.db.read() as s:
            return self.keys.get(s, kid), self.keys.ceremony(s, kid)

    # ---- the signed audit log ------------------------------------------------------------------

    def audit_checkpoint(self, *, officer: Officer | None, actor: str) -> Checkpoint | None:
        """Sign the chain head now (auditors and security officers)."""
        who = self.acting(officer, (Role.SECURITY_OFFICER, Role.AUDITOR), "make audit checkpoints", actor)
        self.ensure_audit_key(actor=who)
        with self.db.write() as s:
            cp = self.checkpoints.checkpoint_now(s, self.clock())
        return cp

    def ensure_system_key(
        self, purpose: str, *, actor: str = "system", algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256
    ) -> KeyInfo:
        """The active key of a service-wide *purpose*, generated (and audited) if there is none.

        Looked up in a read transaction first: only a missing key takes the write lock.
        """
        with self.db.read() as s:
            row = active_key_of(s, purpose)
            if row is not None:
                return to_key_info(row)
        with self.db.write() as s:
            return self.keys.ensure_system_key(s, purpose, algorithm=algorithm, actor=actor, now=self.clock())

    def ensure_audit_key(self, *, actor: str = "system") -> KeyInfo:
        return self.ensure_system_key(KEY_PURPOSE_AUDIT, actor=actor)

    def verify_audit(self) -> AuditReport:
        """The chain, every checkpoint signature, and the records since the newest checkpoint."""
        with self.db.read() as s:
            if self.db.dialect == "postgresql":
                # One snapshot for chain, head, checkpoints and records: concurrent writers must
                # not look like a cut tail (SQLite's read transaction is a snapshot already).
                s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            check = self.checkpoints.check(s)
            report = self.audit.verify(s, signed_heads=check.signed_heads)
            since = check.last.at if check.last is not None else None
            crossed = cross_check(s, since, check.last.seq if check.last is not None else 0)
        problems = (*report.problems, *check.problems, *crossed)
        return AuditReport(
            not problems,
            report.events_checked,
            report.head_seq,
            report.head_hash,
            tuple(problems),
            check.warnings,
            check.checked,
            check.last.seq if check.last is not None else None,
        )

    def export_audit(self, since_seq: int = 1) -> Iterator[str]:
        """JSON lines: a header (with the audit keys' public JWKs), the events from *since_seq* on
        with their hashes, and the signed checkpoints among them. See docs/audit.md."""
        if not isinstance(since_seq, int) or since_seq < 1:
            raise InvalidInput("--since is an event sequence number, 1 or more")
        with self.db.read() as s:
            keys = s.execute(select(KeyRecord).where(KeyRecord.purpose == KEY_PURPOSE_AUDIT)).scalars().all()
            jwks = []
            for key_row in keys:
                jwk = dict(public_jwk(trusted_key_from_jwk(key_row.public_jwk)))
                jwk["state"] = key_row.state
                jwks.append(jwk)
            head_seq, head_hash = self.audit.head(s)
            prev_hash = self.audit.hash_before(s, since_seq)
            header = {
                "format": AUDIT_EXPORT_FORMAT,
                "since": since_seq,
                "prev_hash": prev_hash,
                "head_seq": head_seq,
                "head_hash": head_hash,
                "exported_at": timestamp_text(self.clock()),
                "audit_keys": jwks,
            }
            yield canonical_json({"type": "header", **header})
            checkpoints = {cp.seq: cp for cp in CheckpointSigner.all(s, since_seq=since_seq)}
            for row in self.audit.since(s, since_seq):
                yield json.dumps(
                    {
                        "type": "event",
                        "seq": row.seq,
                        "at": row.at,
                        "actor": row.actor,
                        "action": row.action,
                        "subject": row.subject,
                        "details": row.details,
                        "prev_hash": row.prev_hash,
                        "hash": row.hash,
                    },
                    ensure_ascii=False,
                    separators=(",", ":"),
                )
                cp = checkpoints.get(row.seq)
                if cp is not None:
                    yield canonical_json({"type": "checkpoint", **cp.as_dict()})
