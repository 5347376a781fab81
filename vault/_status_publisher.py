"""Publishing status lists: the status-list key and the signed Status List Tokens, cached.

The status-list key is a key-registry entry with purpose ``status-list`` and no
department, like the service key: one key speaks for every department's
licences, and it is the only key an offline verifier may accept a status list
from (a department's licence key must never vouch for another department's
licences). It is published in the JWKS with ``purpose: "status-list"``.

:class:`StatusListPublisher` keeps the last token of each list and signs a new
one only when it is older than ``ttl`` or a licence of that list changed status
since. Changes are detected through the audit chain: its head sequence grows in
commit order (appends lock the head row), and every suspension, reinstatement
and revocation appends a ``licence.*`` event in the transaction that makes it.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsm import KeyRef, SignatureAlgorithm
from schemas.errors import YinxinError
from signing import TrustedKey, TrustStore, public_jwk, sign_status_list_token, trusted_key_from_jwk
from vault._audit import AuditEntry
from vault._keys import KeyState, to_key_info
from vault._models import AuditEventRecord, AuditHeadRecord, KeyRecord, LicenceRecord
from vault._status_lists import STATUS_BITS, check_list_name, status_bytes, status_list_uri
from vault._types import CHINA_TIME, KeyInfo

if TYPE_CHECKING:
    from vault._vault import Vault

__all__ = [
    "KEY_PURPOSE_STATUS_LIST",
    "STATUS_LIST_TTL",
    "STATUS_LIST_VALIDITY",
    "PublishedStatusList",
    "StatusListPublisher",
    "ensure_status_list_key",
    "status_list_trust_store",
]

log = logging.getLogger("yinxin.vault")

KEY_PURPOSE_STATUS_LIST: Final = "status-list"
STATUS_LIST_TTL: Final = 300  # seconds a consumer may cache a list (§5.1 ttl); also the cache age here
STATUS_LIST_VALIDITY: Final = timedelta(days=1)  # exp = iat + 1 day: offline verifiers tolerate outages
# Past this many audit events since the cached token, re-signing is cheaper than looking.
_SCAN_LIMIT: Final = 50_000


def _active_key(session: Session) -> KeyRecord | None:
    return session.execute(
        select(KeyRecord)
        .where(KeyRecord.purpose == KEY_PURPOSE_STATUS_LIST, KeyRecord.state == KeyState.ACTIVE)
        .order_by(KeyRecord.activated_at.desc(), KeyRecord.kid)
        .limit(1)
    ).scalar_one_or_none()


def ensure_status_list_key(
    vault: Vault, *, actor: str = "system", algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256
) -> KeyInfo:
    """The active status-list key; generated in the backend (and audited) if there is none.

    Safe to call from several processes at once: the creating transaction first locks
    the audit-chain head, so only one of them creates the key and the others find it.
    """
    with vault.db.read() as s:
        row = _active_key(s)
        if row is not None:
            return to_key_info(row)
    with vault.db.write() as s:
        s.execute(select(AuditHeadRecord.id).where(AuditHeadRecord.id == 1).with_for_update())
        row = _active_key(s)
        if row is not None:
            return to_key_info(row)
        now = vault.clock()
        stamp = now.astimezone(CHINA_TIME).strftime("%Y%m%d")
        kid = f"status-list-{algorithm.value.lower()}-{stamp}-{secrets.token_hex(4)}"
        ref = vault.backend.generate_key(algorithm, kid)
        try:
            row = KeyRecord(
                kid=ref.kid,
                algorithm=ref.algorithm.value,
                backend=vault.backend.name,
                purpose=KEY_PURPOSE_STATUS_LIST,
                department_code=None,
                state=KeyState.ACTIVE,
                public_jwk=public_jwk(TrustedKey(ref.kid, ref.algorithm, vault.backend.public_key(ref))),
                created_at=now,
                activated_at=now,
                retired_at=None,
            )
            s.add(row)
            details: dict[str, Any] = {
                "algorithm": ref.algorithm.value,
                "backend": vault.backend.name,
                "department": None,
                "purpose": KEY_PURPOSE_STATUS_LIST,
                "retired": [],
            }
            vault.audit.append(s, AuditEntry(actor, "key.generate", ref.kid, details), at=now)
            s.flush()
        except BaseException:
            # The registry row did not make it: do not leave an orphan key in the backend.
            try:
                vault.backend.destroy_key(ref.kid)
            except YinxinError:
                log.warning("could not remove orphan status-list key %s from the backend", ref.kid)
            raise
        log.info("status-list key %s created in the %s backend", ref.kid, vault.backend.name)
        return to_key_info(row)


def status_list_trust_store(vault: Vault) -> TrustStore:
    """Every status-list key that verifies status lists (active and retired); nothing else."""
    with vault.db.read() as s:
        rows = s.execute(
            select(KeyRecord).where(
                KeyRecord.purpose == KEY_PURPOSE_STATUS_LIST,
                KeyRecord.state.in_([KeyState.ACTIVE, KeyState.RETIRED]),
            )
        ).scalars()
        keys = []
        for row in rows:
            key = trusted_key_from_jwk(row.public_jwk)
            keys.append(TrustedKey(key.kid, key.algorithm, key.public_key, row.state))
    return TrustStore(keys)


@dataclass(frozen=True, slots=True)
class PublishedStatusList:
    """A signed Status List Token as served: ``token`` with media type application/statuslist+jwt."""

    name: str
    uri: str
    token: str
    ttl: int
    issued_at: datetime
    audit_seq: int  # the audit head the list is known to be current at


class StatusListPublisher:
    """Signed Status List Tokens for one vault, re-signed only when stale (thread-safe)."""

    def __init__(
        self,
        vault: Vault,
        *,
        ttl: int = STATUS_LIST_TTL,
        valid_for: timedelta = STATUS_LIST_VALIDITY,
    ) -> None:
        self.vault = vault
        self.ttl = ttl
        self.valid_for = valid_for
        self._cache: dict[str, PublishedStatusList] = {}
        self._build_lock = threading.Lock()

    def uri(self, name: str) -> str:
        return status_list_uri(self.vault.public_url, name)

    def token(self, name: str) -> PublishedStatusList:
        """The current token of list *name*; ``NotFound`` for a list that does not exist."""
        check_list_name(name)
        now = self.vault.clock()
        with self.vault.db.read() as s:
            head = _audit_head(s)
            current = self._current(s, name, now, head)
        if current is not None:
            return current
        with self._build_lock:  # one signer at a time; a waiting request takes its result
            with self.vault.db.read() as s:
                current = self._current(s, name, now, _audit_head(s))
            return current if current is not None else self._build(name, now)

    def _current(self, s: Session, name: str, now: datetime, head: int) -> PublishedStatusList | None:
        cached = self._cache.get(name)
        if cached is None or not timedelta(0) <= now - cached.issued_at < timedelta(seconds=self.ttl):
            return None
        if cached.audit_seq >= head:
            return cached
        if head - cached.audit_seq > _SCAN_LIMIT or _status_changed(s, name, cached.audit_seq, head):
            return None
        current = replace(cached, audit_seq=head)
        self._cache[name] = current
        return current

    def _build(self, name: str, now: datetime) -> PublishedStatusList:
        with self.vault.db.read() as s:
            # The head first: everything up to it is committed, so the list read next includes it.
            head = _audit_head(s)
            statuses = status_bytes(s, name)
        info = ensure_status_list_key(self.vault)
        uri = self.uri(name)
        token = sign_status_list_token(
            self.vault.backend,
            KeyRef(info.kid, SignatureAlgorithm.parse(info.algorithm)),
            uri=uri,
            statuses=statuses,
            issued_at=now,
            bits=STATUS_BITS,
            ttl=self.ttl,
            valid_for=self.valid_for,
        )
        published = PublishedStatusList(name, uri, token, self.ttl, now, head)
        self._cache[name] = published
        return published


def _audit_head(s: Session) -> int:
    return int(s.execute(select(AuditHeadRecord.seq).where(AuditHeadRecord.id == 1)).scalar_one())


def _status_changed(s: Session, name: str, after: int, upto: int) -> bool:
    """Whether an audit event in ``(after, upto]`` changed the status of a licence in list *name*.

    Any ``licence.*`` action but issuance counts (suspend, reinstate, revoke, and whatever
    is added later): a needless re-sign costs little, a missed change would not. A new
    licence is VALID, which its slot already says.
    """
    hit = s.execute(
        select(AuditEventRecord.seq)
        .join(LicenceRecord, LicenceRecord.identifier == AuditEventRecord.subject)
        .where(
            AuditEventRecord.seq > after,
            AuditEventRecord.seq <= upto,
            AuditEventRecord.action.like("licence.%"),
            AuditEventRecord.action != "licence.issue",
            LicenceRecord.status_list == name,
        )
        .limit(1)
    ).first()
    return hit is not None
