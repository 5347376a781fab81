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
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsm import KeyRef, SignatureAlgorithm
from signing import TrustStore, sign_status_list_token
from vault._models import AuditEventRecord, AuditHeadRecord, LicenceRecord
from vault._status_lists import STATUS_BITS, check_list_name, status_bytes, status_list_uri
from vault._types import KeyInfo

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


def ensure_status_list_key(
    vault: Vault, *, actor: str = "system", algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256
) -> KeyInfo:
    """The active status-list key; generated in the backend (and audited) if there is none."""
    return vault.ensure_system_key(KEY_PURPOSE_STATUS_LIST, actor=actor, algorithm=algorithm)


def status_list_trust_store(vault: Vault) -> TrustStore:
    """Every status-list key that verifies status lists (active and retired); nothing else."""
    with vault.db.read() as s:
        return vault.keys.trust_store(s, KEY_PURPOSE_STATUS_LIST)


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
        # The key first: creating it is an audit event, which must not count as news after the head.
        info = ensure_status_list_key(self.vault)
        with self.vault.db.read() as s:
            # The head first: everything up to it is committed, so the list read next includes it.
            head = _audit_head(s)
            statuses = status_bytes(s, name)
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
    # A key event (rotation, compromise, destruction) may have changed the list's signing key.
    key_event = s.execute(
        select(AuditEventRecord.seq)
        .where(
            AuditEventRecord.seq > after,
            AuditEventRecord.seq <= upto,
            AuditEventRecord.action.in_(("key.compromise", "key.retire", "key.destroy", "key.generate")),
        )
        .limit(1)
    ).first()
    if key_event is not None:
        return True
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
