"""The licence repository (证照库): one object over database, key backend, licence types and clock."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from hsm import KeyBackend, KeyRef, SecretPurpose, SignatureAlgorithm
from schemas import (
    LicenceCreate,
    LicenceIdentifier,
    LicenceTypeRegistry,
    validate_uscc,
)
from schemas.errors import (
    AlreadyExists,
    IdempotencyConflict,
    IllegalTransition,
    InvalidInput,
    InvalidUSCC,
    LicenceNotFound,
    YinxinError,
)
from signing import (
    MAX_TOKEN_BYTES,
    TokenVerdict,
    TrustStore,
    b64url_decode,
    sign_presentations,
    verify_token,
)
from vault._administration import KeyAdministration
from vault._approvals import ApprovalBook
from vault._audit import AuditEntry, AuditEvent, AuditLog
from vault._audit_checkpoints import CheckpointSigner
from vault._batched_read import TurnCalls
from vault._db import Database, DatabaseConflict
from vault._group_commit import AsyncGroupCommit, GroupCommit
from vault._issuance import (
    HOLDER_ENCRYPTION_LABEL,
    HOLDER_INDEX_LABEL,
    PreparedLicence,
    allocate_serials,
    build_rows,
    check_request,
    missing_issuer,
    request_hash,
    store_rows,
)
from vault._key_lifecycle import KeyLifecycle
from vault._keys import KeyPolicy, KeyRegistry
from vault._models import DepartmentRecord, LicenceRecord, StatusChangeRecord
from vault._officers import Officer, OfficerRegistry, Role
from vault._reading import LicenceReader
from vault._seal_types import SealSettings
from vault._seals import SealRegistry
from vault._status_lists import allocate_status_slots, status_list_uri
from vault._types import (
    CHINA_TIME,
    BulkOutcome,
    Clock,
    Department,
    IssueResult,
    KeyInfo,
    Licence,
    LicenceStatus,
    Verdict,
    licence_window,
    system_clock,
)
from vault._verification import judge, signature_holds

__all__ = ["BulkItem", "Vault"]

log = logging.getLogger("yinxin.vault")

MAX_REASON_CHARS = 500
# A token naming a key this process's trust store lacks re-reads the store, at most this often.
UNKNOWN_KEY_REFRESH_SECONDS = 1.0

# Allowed status transitions (target → allowed sources). Revocation is final.
_TRANSITIONS: dict[str, tuple[str, ...]] = {
    LicenceStatus.SUSPENDED: (LicenceStatus.VALID,),
    LicenceStatus.VALID: (LicenceStatus.SUSPENDED,),  # reinstate
    LicenceStatus.REVOKED: (LicenceStatus.VALID, LicenceStatus.SUSPENDED),
}
_ACTIONS = {
    LicenceStatus.SUSPENDED: "suspend",
    LicenceStatus.VALID: "reinstate",
    LicenceStatus.REVOKED: "revoke",
}


# Issuance's own look-ups, built once (constructing a statement costs more than running it).
_LICENCES = LicenceRecord.__table__.c
# Earlier licences for idempotency keys of one issuer, by the (issuer_code, idempotency_key) index.
# On PostgreSQL a LATERAL subquery with LIMIT probes the index once per key whatever the table's
# statistics say; "issuer_code = :issuer AND idempotency_key IN (…)", planned with statistics
# from when the table was small, read every licence of the issuer and filtered them (4.8 ms at
# 4 000 licences, growing with each; 0.1 ms probed). SQLite's planner probes the index either way.
_EARLIER_FOR_KEYS: dict[str, Any] = {
    "sqlite": select(_LICENCES.idempotency_key, _LICENCES.identifier, _LICENCES.request_hash).where(
        _LICENCES.issuer_code == bindparam("issuer"),
        _LICENCES.idempotency_key.in_(bindparam("keys", expanding=True)),
    ),
    "postgresql": text(
        "SELECT k.key, earlier.identifier, earlier.request_hash "
        "FROM unnest(CAST(:keys AS text[])) AS k(key) CROSS JOIN LATERAL "
        "(SELECT identifier, request_hash FROM licences "
        "WHERE issuer_code = :issuer AND idempotency_key = k.key LIMIT 1) AS earlier"
    ),
}
_DEPARTMENT_NAME = select(DepartmentRecord.__table__.c.name).where(
    DepartmentRecord.__table__.c.code == bindparam("code")
)


MAX_IDEMPOTENCY_KEY = 200  # characters: the licences.idempotency_key column's length


@dataclass(frozen=True, slots=True)
class BulkItem:
    line: int
    request: LicenceCreate
    idempotency_key: str | None
    request_hash: str = ""  # computed when empty; bulk import passes the one it keyed on
    actor: str = ""  # who asks, when not the batch's actor (Vault.issue's group commit)
    presentation: bool = False  # Vault.issue: sign a presentation token once the licence is stored

    def digest(self) -> str:
        return self.request_hash or request_hash(self.request)


class Vault(LicenceReader, KeyAdministration):
    """Every licence operation; each public method is one transaction."""

    def __init__(
        self,
        db: Database,
        backend: KeyBackend,
        licence_types: LicenceTypeRegistry,
        *,
        clock: Clock = system_clock,
        public_url: str = "http://127.0.0.1:8000",
        seal_settings: SealSettings | None = None,
        key_policy: KeyPolicy | None = None,
        approvals_required: int = 2,
        approval_ttl: timedelta = timedelta(hours=24),
        audit_checkpoint_interval: int = 100,
        trust_refresh_seconds: float = 5.0,
    ) -> None:
        self.db = db
        # Where this service is reachable: status list URIs and QR links are built on it.
        self.public_url = public_url.rstrip("/")
        self.backend = backend
        self.types = licence_types
        self.clock = clock
        self.audit = AuditLog()
        self.checkpoints = CheckpointSigner(backend, audit_checkpoint_interval)
        if audit_checkpoint_interval > 0:
            self.audit.checkpoints = self.checkpoints
        self.keys = KeyRegistry(backend, self.audit, key_policy)
        self.officers = OfficerRegistry(self.audit)
        self.lifecycle = KeyLifecycle(self)
        self.approvals = ApprovalBook(self, required=approvals_required, ttl=approval_ttl)
        self.seals = SealRegistry(
            db, backend, self.keys, self.audit, clock, self.public_url, seal_settings or SealSettings()
        )
        # The trust store is cached per process and re-read at most every trust_refresh_seconds,
        # so a key compromised or destroyed through another process stops verifying here too.
        self._trust: TrustStore | None = None
        self._compromised: dict[str, KeyInfo] = {}
        self._trust_loaded = 0.0
        self._trust_refresh = trust_refresh_seconds
        self._trust_lock = threading.Lock()
        # Vault.verify_async: the token checks of one turn of an event loop run back to back.
        self._token_checks_by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, TurnCalls[str | bytes, tuple[TokenVerdict, datetime]]
        ] = weakref.WeakKeyDictionary()
        # Bumped whenever this process changes key states; other caches (access-token trust) watch it.
        self.trust_generation = 0
        # Vault.issue: concurrent single issuances share transactions (vault._group_commit).
        self._group_commit = GroupCommit(
            functools.partial(self.issue_batch, actor=""), finish=self._with_presentations
        )
        # Vault.issue_async: the same, for coroutines, per event loop.
        self._async_group_commits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGroupCommit] = (
            weakref.WeakKeyDictionary()
        )

    # ---- setup --------------------------------------------------------------

    def initialise(self, *, actor: str = "system") -> list[str]:
        """Migrate the schema and create the holder-data keys; safe to run again."""
        done = [f"database schema at revision {self.db.migrate()}"]
        created = []
        for label, purpose in (
            (HOLDER_ENCRYPTION_LABEL, SecretPurpose.ENCRYPTION),
            (HOLDER_INDEX_LABEL, SecretPurpose.MAC),
        ):
            if not self.backend.has_secret(label):
                self.backend.generate_secret(label, purpose)
                created.append((label, purpose))
        if created:
            with self.db.write() as s:
                self.audit.append_many(
                    s,
                    [
                        AuditEntry(actor, "secret.generate", label, {"purpose": purpose.value})
                        for label, purpose in created
                    ],
                    at=self.clock(),
                )
            done.append("holder-data keys created in the " + self.backend.name + " backend")
        else:
            done.append("holder-data keys present")
        audit_key = self.ensure_audit_key(actor=actor)
        done.append(f"audit key {audit_key.kid}")
        return done

    # ---- departments ----------------------------------------------------------

    def add_department(self, code: str, name: str, *, actor: str) -> Department:
        code = _department_code(code)
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise InvalidInput("department name must be 1-200 characters")
        now = self.clock()
        try:
            with self.db.write() as s:
                if s.get(DepartmentRecord, code) is not None:
                    raise AlreadyExists(f"department {code} is already registered")
                s.add(DepartmentRecord(code=code, name=name, created_at=now))
                self.audit.append(s, AuditEntry(actor, "department.add", code, {"name": name}), at=now)
        except DatabaseConflict as exc:
            raise AlreadyExists(f"department {code} is already registered") from exc
        return Department(code, name, now)

    def departments(self) -> list[Department]:
        with self.db.read() as s:
            rows = s.execute(select(DepartmentRecord).order_by(DepartmentRecord.code)).scalars()
            return [Department(r.code, r.name, r.created_at) for r in rows]

    # ---- keys ---------------------------------------------------------------

    def generate_key(
        self,
        department_code: str,
        algorithm: SignatureAlgorithm,
        *,
        actor: str,
        officer: Officer | None = None,
        pre_activation: bool = False,
        max_signatures: int | None = None,
    ) -> KeyInfo:
        """A new licence key for the department (the active one retires unless *pre_activation*).

        Needs a security officer once one is enrolled (setup mode: the local *actor*).
        """
        department_code = _department_code(department_code)
        who = self.acting(officer, (Role.SECURITY_OFFICER,), "generate keys", actor)
        with self.db.write() as s:
            info = self.keys.generate(
                s,
                department_code,
                algorithm,
                actor=who,
                now=self.clock(),
                pre_activation=pre_activation,
                max_signatures=max_signatures,
            )
        self.forget_trust()
        return info

    def list_keys(self) -> Sequence[KeyInfo]:
        with self.db.read() as s:
            return self.keys.list(s)

    def forget_trust(self) -> None:
        """Key states changed in this process: every cached trust store re-reads the registry."""
        with self._trust_lock:
            self._trust = None
            self.trust_generation += 1

    def trust_store(self, *, refresh: bool = False) -> TrustStore:
        with self._trust_lock:
            trust = self._trust
            if trust is None or refresh or self._trust_due():
                with self.db.read() as s:
                    trust = self._trust = self.keys.trust_store(s)
                    self._compromised = self.keys.compromised(s)
                self._trust_loaded = time.monotonic()
            return trust

    def _refresh_for_unknown_key(self) -> bool:
        """Re-read the trust store for a token naming a key it lacks, unless it was read less than
        ``UNKNOWN_KEY_REFRESH_SECONDS`` ago: tokens naming made-up keys cost at most one registry
        read a second, not one each. Returns whether it was re-read."""
        with self._trust_lock:
            if time.monotonic() - self._trust_loaded < UNKNOWN_KEY_REFRESH_SECONDS:
                return False
        self.trust_store(refresh=True)
        return True

    def _trust_due(self) -> bool:
        """Whether the trust store must be (re-)read: never loaded, or older than the refresh interval."""
        return self._trust is None or time.monotonic() - self._trust_loaded > self._trust_refresh

    def _fresh_trust_store(self) -> TrustStore | None:
        """The cached trust store if it needs no refresh now (no database read), else None."""
        return None if self._trust_due() else self._trust

    def compromised_key(self, kid: str | None) -> KeyInfo | None:
        """The registry entry of *kid* if it is a compromised licence key (as of the trust store)."""
        if kid is None:
            return None
        self.trust_store()
        return self._compromised.get(kid)

    # ---- issuance ---------------------------------------------------------------

    def _prepare(self, s: Session, item: BulkItem, issuers: dict[str, Any]) -> PreparedLicence:
        req = item.request
        licence_type = self.types.get(req.licence_type)
        check_request(req, licence_type)
        if req.issuer not in issuers:
            name = s.execute(_DEPARTMENT_NAME, {"code": req.issuer}).scalar_one_or_none()
            if name is None:
                raise missing_issuer(req.issuer)
            issuers[req.issuer] = (name, self.keys.active_key(s, req.issuer, now=self.clock()))
        name, key = issuers[req.issuer]
        return PreparedLicence(req, licence_type, name, key, item.idempotency_key, item.digest(), item.actor)

    def issue(
        self,
        request: LicenceCreate,
        *,
        idempotency_key: str | None = None,
        actor: str,
        presentation: bool = False,
    ) -> IssueResult:
        """Issue one licence; with an idempotency key a retry returns the first result.

        Concurrent calls in this process share transactions (group commit, see
        :mod:`vault._group_commit`): each returns once its licence is committed, with the
        outcome it would have had alone. With *presentation*, a licence created now comes with a
        presentation token for its QR code (``IssueResult.presentation``), signed with the
        other licences of its group once they are stored; None when there is none to sign (a
        replay, a licence already expired) or the backend refused.
        """
        item = _single_item(request, idempotency_key, actor, presentation)
        outcome = self._group_commit.submit(item)
        if outcome is None:  # the group met a conflicting commit of another process
            outcome = self._issue_alone(item)
        if outcome.error is not None:
            raise outcome.extra["exception"]
        assert outcome.identifier is not None
        licence = outcome.licence if outcome.licence is not None else self.get(outcome.identifier)
        return IssueResult(licence, outcome.created, outcome.key, outcome.presentation)

    async def issue_async(
        self,
        request: LicenceCreate,
        *,
        idempotency_key: str | None = None,
        actor: str,
        presentation: bool = False,
    ) -> IssueResult:
        """:meth:`issue` for a coroutine, without holding a thread while the licence commits.

        The issuances awaited on one event loop share transactions as :meth:`issue`'s do
        (``vault._group_commit.AsyncGroupCommit``); each transaction runs on one of the
        database's write threads (``Database.write_executor``) and the callers wait on the loop.
        Same arguments, answers and errors as :meth:`issue`.
        """
        item = _single_item(request, idempotency_key, actor, presentation)
        loop = asyncio.get_running_loop()
        outcome = await self._async_group_commit(loop).submit(item)
        if outcome is None:  # the group met a conflicting commit of another process
            outcome = await loop.run_in_executor(self.db.write_executor(), self._issue_alone, item)
        if outcome.error is not None:
            raise outcome.extra["exception"]
        assert outcome.identifier is not None
        licence = outcome.licence
        if licence is None:  # a replay: the earlier licence, read on a thread
            licence = await loop.run_in_executor(self.db.write_executor(), self.get, outcome.identifier)
        return IssueResult(licence, outcome.created, outcome.key, outcome.presentation)

    def _async_group_commit(self, loop: asyncio.AbstractEventLoop) -> AsyncGroupCommit:
        group_commit = self._async_group_commits.get(loop)
        if group_commit is None:
            group_commit = self._async_group_commits[loop] = AsyncGroupCommit(
                functools.partial(self.issue_batch, actor=""),
                self.db.write_executor,
                finish=self._with_presentations,
            )
        return group_commit

    def _with_presentations(
        self, items: Sequence[BulkItem], outcomes: list[BulkOutcome]
    ) -> list[BulkOutcome]:
        """A group's *outcomes*, with presentation tokens for the licences it created whose callers
        asked for one, all signed together (``signing.sign_presentations``: one backend call per
        key) with the key that signed each licence, as :func:`vault._presentation.presentation_for`
        would one at a time. Unchanged where there is none to sign, or if the backend refuses."""
        now = self.clock()
        wanted: list[tuple[int, KeyRef, str, datetime | None]] = []
        for index, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
            licence, key = outcome.licence, outcome.key
            if item.presentation and outcome.created and licence is not None and key is not None:
                _, end = licence_window(licence.valid_from, licence.valid_until)
                if end is None or end > now:  # an expired licence gets no QR code
                    wanted.append((index, key, licence.identifier, end))
        if not wanted:
            return outcomes
        try:
            tokens = sign_presentations(self.backend, [(key, name, now, end) for _, key, name, end in wanted])
        except YinxinError as exc:
            # Each caller then asks for its own (vault._presentation), and gets the same answer.
            log.warning("could not sign presentation tokens for %d new licences: %s", len(wanted), exc.code)
            return outcomes
        finished = list(outcomes)
        for (index, *_), token in zip(wanted, tokens, strict=True):
            finished[index] = replace(finished[index], presentation=token)
        return finished

    def _issue_alone(self, item: BulkItem) -> BulkOutcome:
        try:
            return self.issue_batch([item], actor=item.actor)[0]
        except DatabaseConflict:
            if item.idempotency_key is None:
                raise
            # A concurrent request with the same idempotency key won the race: this time the
            # batch finds its licence and answers with it (a second conflict is raised).
            return self.issue_batch([item], actor=item.actor)[0]

    def issue_batch(
        self, items: Sequence[BulkItem], *, actor: str, licences: bool = True
    ) -> list[BulkOutcome]:
        """Issue many licences in ONE transaction; per-item problems become outcomes, not failures.

        Items whose idempotency key was used before come back as the earlier
        licence (``created=False``) or as an idempotency conflict. With
        ``licences=False`` created outcomes carry the identifier but no ``Licence``
        (a bulk import, which writes identifiers only, saves building one each).
        """
        now = self.clock()
        year = now.astimezone(CHINA_TIME).year
        outcomes: dict[int, BulkOutcome] = {}
        duplicates: dict[int, int] = {}  # index -> index of the first item with the same key
        with self.db.write() as s:
            existing = self._existing_for_keys(s, items)
            issuers: dict[str, Any] = {}
            prepared: list[PreparedLicence] = []
            prepared_index: dict[int, int] = {}  # item index -> position in prepared
            first_with_key: dict[tuple[str, str], int] = {}
            for index, item in enumerate(items):
                key = (item.request.issuer, item.idempotency_key) if item.idempotency_key else None
                try:
                    if key is not None and key in existing:
                        outcomes[index] = self._replay(item, *existing[key])
                        continue
                    if key is not None and key in first_with_key:
                        duplicates[index] = first_with_key[key]
                        continue
                    p = self._prepare(s, item, issuers)
                except YinxinError as exc:
                    outcomes[index] = _failure(item.line, exc)
                    continue
                if key is not None:
                    first_with_key[key] = index
                prepared_index[index] = len(prepared)
                prepared.append(p)
            groups = Counter((p.request.licence_type, p.request.issuer) for p in prepared)
            firsts = {
                (t, i, year): allocate_serials(s, self.db.dialect, t, i, year, n)
                for (t, i), n in sorted(groups.items())
            }
            # Lock order: serial counters, then the status list, then the audit head.
            slots = allocate_status_slots(s, len(prepared), now=now) if prepared else []
            sign = functools.partial(
                build_rows,
                self.backend,
                first_sequences=firsts,
                now=now,
                actor=actor,
                slots=slots,
                status_uri=functools.partial(status_list_uri, self.public_url),
            )
            rows, audit = sign(prepared)
            head: tuple[int, str] | None = None
            if prepared:
                # A key rotation may have committed since the keys were read: read them again
                # under the audit head lock, which rotations take first (so the keys stay active
                # until this commits, and no rotation holds a key row counted below); in the
                # rare case one changed, sign again.
                head = self.audit.lock_head(s)
                current = self._with_current_keys(s, prepared, now)
                if any(a.key.kid != b.key.kid for a, b in zip(current, prepared, strict=True)):
                    prepared = current
                    rows, audit = sign(prepared)
            store_rows(s, rows)
            if prepared:
                self._count_signatures(s, prepared, now)
            self.audit.append_many(s, audit, at=now, locked_head=head)
        for index, item in enumerate(items):
            if index in prepared_index:
                position = prepared_index[index]
                row = rows[position]
                outcomes[index] = BulkOutcome(
                    item.line,
                    row["identifier"],
                    True,
                    licence=Licence.from_row(
                        row,
                        type_name=prepared[position].licence_type.name,
                        issuer_name=prepared[position].issuer_name,
                    )
                    if licences
                    else None,
                    key=prepared[position].key,
                )
        for index, first in duplicates.items():
            # The same key twice in one batch: a replay of the first (or a conflict).
            first_outcome = outcomes[first]
            if first_outcome.identifier is None:
                outcomes[index] = BulkOutcome(
                    items[index].line,
                    error=first_outcome.error,
                    error_code=first_outcome.error_code,
                    extra=first_outcome.extra,
                )
            else:
                outcomes[index] = self._replay(items[index], first_outcome.identifier, items[first].digest())
        return [outcomes[i] for i in range(len(items))]

    def _with_current_keys(
        self, s: Session, prepared: list[PreparedLicence], now: Any
    ) -> list[PreparedLicence]:
        current = {
            issuer: self.keys.active_key(s, issuer, now=now)
            for issuer in {p.request.issuer for p in prepared}
        }
        return [
            p if p.key.kid == current[p.request.issuer].kid else replace(p, key=current[p.request.issuer])
            for p in prepared
        ]

    def _count_signatures(self, s: Session, prepared: Sequence[PreparedLicence], now: Any) -> None:
        # A key with a signature budget must not pass it: the whole batch rolls back if it would.
        self.keys.count_signatures(s, Counter(p.key.kid for p in prepared), within_budget=True)

    def _existing_for_keys(
        self, s: Session, items: Sequence[BulkItem]
    ) -> dict[tuple[str, str], tuple[str, str]]:
        """Earlier licences for these items' idempotency keys, by (issuer, key).

        Queried per issuer so the (issuer_code, idempotency_key) unique index serves it:
        bulk imports of 100 000 lines stay linear.
        """
        wanted: dict[str, set[str]] = {}
        for item in items:
            if item.idempotency_key is not None:
                wanted.setdefault(item.request.issuer, set()).add(item.idempotency_key)
        found: dict[tuple[str, str], tuple[str, str]] = {}
        statement = _EARLIER_FOR_KEYS[self.db.dialect]
        for issuer, keys in wanted.items():
            ordered = sorted(keys)
            for start in range(0, len(ordered), 500):
                rows = s.execute(statement, {"issuer": issuer, "keys": ordered[start : start + 500]}).all()
                for key, identifier, rhash in rows:
                    if key is not None:
                        found[(issuer, key)] = (identifier, rhash)
        return found

    def _replay(self, item: BulkItem, identifier: str, first_hash: str) -> BulkOutcome:
        if first_hash != item.digest():
            return _failure(item.line, IdempotencyConflict(_conflict_message(item)))
        return BulkOutcome(item.line, identifier, False)

    # ---- status ---------------------------------------------------------------

    def change_status(self, identifier: str, target: str, *, reason: str, actor: str) -> Licence:
        reason = reason.strip()
        if not 1 <= len(reason) <= MAX_REASON_CHARS:
            raise InvalidInput(f"reason must be 1-{MAX_REASON_CHARS} characters")
        LicenceIdentifier.parse(identifier)
        now = self.clock()
        action = _ACTIONS[target]
        with self.db.write() as s:
            row = s.execute(
                select(LicenceRecord).where(LicenceRecord.identifier == identifier).with_for_update()
            ).scalar_one_or_none()
            if row is None:
                raise LicenceNotFound(f"no licence with identifier {identifier} in this vault")
            if row.status not in _TRANSITIONS[target]:
                raise IllegalTransition(_transition_message(identifier, row.status, action))
            previous = row.status
            row.status = target
            row.status_changed_at = now
            s.add(
                StatusChangeRecord(
                    identifier=identifier,
                    from_status=previous,
                    to_status=target,
                    reason=reason,
                    actor=actor,
                    changed_at=now,
                )
            )
            self.audit.append(
                s,
                AuditEntry(
                    actor, f"licence.{action}", identifier, {"from": previous, "to": target, "reason": reason}
                ),
                at=now,
            )
            s.flush()
            return self._to_licence(s, row)

    def suspend(self, identifier: str, *, reason: str, actor: str) -> Licence:
        return self.change_status(identifier, LicenceStatus.SUSPENDED, reason=reason, actor=actor)

    def reinstate(self, identifier: str, *, reason: str, actor: str) -> Licence:
        return self.change_status(identifier, LicenceStatus.VALID, reason=reason, actor=actor)

    def revoke(self, identifier: str, *, reason: str, actor: str) -> Licence:
        return self.change_status(identifier, LicenceStatus.REVOKED, reason=reason, actor=actor)

    # ---- verification -------------------------------------------------------------

    def verify(self, token: str | bytes) -> Verdict:
        """Signature, key, time and live status; never raises for a bad token."""
        now = self.clock()
        tv = verify_token(token, self.trust_store(), now=now)
        if signature_holds(tv):
            licence, last_reason = self._licence_for_verification(_licence_id(tv))
            return judge(tv, token, licence, last_reason, now)
        return self._unheld_verdict(tv, token, now)

    async def verify_async(self, token: str | bytes) -> Verdict:
        """:meth:`verify` for a coroutine, without blocking its event loop on a network database.

        The verifications that reach this point in the same turn of the event loop have their
        tokens checked back to back once that turn is done (``TurnCalls``: a signature check costs
        a fifth less with the CPU's caches warm from the one before), then read their licences
        together (``Database.batched_read``). On SQLite, an in-process library, everything runs on
        the event loop, and the look-ups of one turn of the loop share one statement. On PostgreSQL the
        common case, a token whose signature holds under a trust store this process has loaded
        recently, runs on the event loop too, its look-up awaited on an asynchronous connection and
        shared with the other look-ups of its turn of the loop, or with all that queue while the
        connections are busy. What needs a blocking read there (a trust store due for its periodic
        re-read; a token whose signature does not hold, which may name a key another process
        added, or a compromised one) runs on one of the database's read threads.
        """
        checked = await self._token_checks().get(token)
        if checked is None:  # PostgreSQL, trust store due for its re-read: a blocking read, on a thread
            loop = asyncio.get_running_loop()
            trust = await loop.run_in_executor(self.db.read_executor(), self.trust_store)
            now = self.clock()
            checked = verify_token(token, trust, now=now), now
        tv, now = checked
        if not signature_holds(tv):
            if self.db.in_process:
                return self._unheld_verdict(tv, token, now)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.db.read_executor(), self._unheld_verdict, tv, token, now)
        licence, last_reason = await self._licence_for_verification_async(_licence_id(tv))
        return judge(tv, token, licence, last_reason, now)

    def _token_checks(self) -> TurnCalls[str | bytes, tuple[TokenVerdict, datetime]]:
        """This event loop's batch of token checks (see :meth:`_check_tokens`)."""
        loop = asyncio.get_running_loop()
        calls = self._token_checks_by_loop.get(loop)
        if calls is None:
            calls = self._token_checks_by_loop[loop] = TurnCalls(self._check_tokens)
        return calls

    def _check_tokens(self, tokens: list[str | bytes]) -> dict[str | bytes, tuple[TokenVerdict, datetime]]:
        """The token checks of one turn of the event loop, back to back, at one instant.

        On PostgreSQL, with the trust store due for its re-read (a blocking read), nothing: each
        waiting verification then re-reads it on a read thread and checks its own token.
        """
        trust = self.trust_store() if self.db.in_process else self._fresh_trust_store()
        if trust is None:
            return {}
        now = self.clock()
        return {token: (verify_token(token, trust, now=now), now) for token in tokens}

    def _unheld_verdict(self, tv: TokenVerdict, token: str | bytes, now: datetime) -> Verdict:
        """The verdict on a token whose signature did not hold under the cached trust store."""
        claimed_kid = unverified_member(token, 0, "kid") if "unknown_key" in tv.codes else None
        if claimed_kid is not None and self._refresh_for_unknown_key():
            # Another process (a worker, the CLI) may have added the key since this one cached the
            # trust store. The kid is the header's, unverified: it only decides whether to look.
            trust = self.trust_store()
            if trust.get(claimed_kid) is not None:
                tv = verify_token(token, trust, now=now)
                if signature_holds(tv):
                    licence, last_reason = self._licence_for_verification(_licence_id(tv))
                    return judge(tv, token, licence, last_reason, now)
        compromised = self.compromised_key(claimed_kid)
        if compromised is not None:
            return self.compromised_verdict(compromised, token, now)
        return judge(tv, token, None, "", now)

    def compromised_verdict(self, key: KeyInfo, presented: str | bytes, now: Any) -> Verdict:
        """Invalid: signed by a compromised key. Names the re-issued version when the token is ours."""
        since = (
            key.compromised_at.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M CST")
            if key.compromised_at
            else "?"
        )
        reasons = [
            f"signed by key {key.kid}, which was declared compromised (since {since}): "
            "a stolen key can backdate, so nothing it signed is trusted"
        ]
        text = presented.decode("ascii", "replace") if isinstance(presented, bytes | bytearray) else presented
        text = text.strip()
        summary = None
        identifier = unverified_member(text, 1, "jti")
        with self.db.read() as s:
            # Only a token that is byte-for-byte the one on record is ours; its successor is named.
            row = s.get(LicenceRecord, identifier) if identifier else None
            if row is not None and row.kid == key.kid and row.token == text:
                summary = self._to_licence(s, row).summary()
                if row.superseded_by:
                    reasons.append(f"the licence was re-issued as {row.superseded_by}")
                else:
                    reasons.append("the licence is being re-issued with a new key")
        return Verdict(
            False, LicenceStatus.INVALID, tuple(reasons), ("key_compromised",), now, key.kid, summary
        )

    # ---- audit -------------------------------------------------------------------------

    def audit_events(self, *, subject: str | None = None, limit: int = 100) -> list[AuditEvent]:
        with self.db.read() as s:
            return self.audit.events(s, subject=subject, limit=limit)

    def close(self) -> None:
        self.db.dispose()


def unverified_member(token: str | bytes, part: int, name: str) -> str | None:
    """A string member of a token's header (*part* 0) or payload (1), read WITHOUT trusting it:
    only to find the record or key to compare against."""
    if isinstance(token, bytes | bytearray):
        token = bytes(token).decode("ascii", "replace")
    token = token.strip()
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN_BYTES:
        return None
    raw = b64url_decode(parts[part])
    if raw is None:
        return None
    try:
        value = orjson.loads(raw).get(name)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) and len(value) <= 128 else None


def _licence_id(tv: TokenVerdict) -> str:
    return str((tv.claims or {}).get("jti", ""))


def _department_code(code: str) -> str:
    try:
        return validate_uscc(code)
    except InvalidUSCC as exc:
        raise InvalidUSCC(f"department code (USCC) {str(code)[:40]!r}: {exc}") from None


def _conflict_message(item: BulkItem) -> str:
    return (
        f"idempotency key {item.idempotency_key!r} was already used for a different request; "
        "use a new key for a new licence"
    )


def _transition_message(identifier: str, current: str, action: str) -> str:
    if current == LicenceStatus.REVOKED:
        return f"licence {identifier} is revoked; revocation is final and it cannot be {action}d"
    return f"cannot {action} licence {identifier}: it is {current}"


def _single_item(
    request: LicenceCreate, idempotency_key: str | None, actor: str, presentation: bool
) -> BulkItem:
    """The group commit's item for one issuance (``Vault.issue``, ``Vault.issue_async``)."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidInput(f"idempotency key must be 1-{MAX_IDEMPOTENCY_KEY} characters")
    return BulkItem(0, request, idempotency_key, actor=actor, presentation=presentation)


def _failure(line: int, exc: YinxinError) -> BulkOutcome:
    return BulkOutcome(line, error=str(exc), error_code=exc.code, extra={"exception": exc})
