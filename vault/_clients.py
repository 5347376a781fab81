"""API clients of departments (OAuth 2.0 client credentials, RFC 6749 §4.4) and their access tokens.

A client belongs to one department and holds scopes from :data:`SCOPES`. Its
secret is shown once, at creation; the vault keeps only a scrypt hash
(RFC 7914), so a stolen database does not yield usable credentials. scrypt
is slow on purpose, so successful authentications are cached for a short
time, keyed by client id and the SHA-256 of the secret; disabling a client
drops its cache entries in this process (other processes forget it within
the cache lifetime).

Access tokens are JWTs (RFC 9068) signed through the key backend by the
service key: a key-registry entry with purpose ``service-token`` and no
department, created on first need or by :func:`ensure_service_key`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsm import KeyRef, SignatureAlgorithm
from schemas import validate_uscc
from schemas.errors import (
    DepartmentNotFound,
    IllegalTransition,
    InvalidInput,
    InvalidUSCC,
    NotFound,
)
from vault._access_tokens import DEFAULT_TOKEN_LIFETIME, AccessToken, ensure_service_key, sign_client_token
from vault._audit import AuditEntry
from vault._models import ApiClientRecord, DepartmentRecord

if TYPE_CHECKING:
    from vault._vault import Vault

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "SCOPES",
    "AccessToken",
    "AuthenticatedClient",
    "ClientInfo",
    "ClientRegistry",
    "InvalidScope",
    "NewClient",
    "hash_client_secret",
    "parse_scopes",
    "secret_matches",
]

log = logging.getLogger("yinxin.vault")

SCOPES: Final = frozenset(
    {"licence:issue", "licence:read", "licence:manage", "licence:verify", "seal:use", "keys:manage"}
)
MAX_SECRET_CHARS: Final = 256

# scrypt (RFC 7914) at N=2^14, r=8, p=1: 16 MiB and tens of milliseconds per check, the
# interactive-login parameters of RFC 7914 §2; a 16-byte salt, a 32-byte hash.
_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_SALT_BYTES: Final = 16
_HASH_BYTES: Final = 32
_SCRYPT_MAXMEM: Final = 64 * 1024 * 1024
# Checked for unknown client ids, so they cost one scrypt like known ones and timing does not
# tell which ids exist; no secret hashes to 32 zero bytes (a 2^-256 chance).
_UNKNOWN_CLIENT_HASH: Final = f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${'A' * 22}==${'A' * 43}="
_CLIENT_ID_RE: Final = re.compile(r"yx_[0-9a-f]{16}")
# scope-token of RFC 6749 §3.3: printable ASCII except space, '"' and '\'.
_SCOPE_TOKEN_RE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class InvalidScope(InvalidInput):
    """A requested scope is unknown, malformed or not granted to the client (RFC 6749 §5.2)."""

    code = "invalid_scope"


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    client_id: str
    department_code: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    client_id: str
    department_code: str
    scopes: frozenset[str]
    created_at: datetime
    disabled_at: datetime | None

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True, slots=True)
class NewClient:
    """A client just created: the only time its secret exists outside its holder's hands."""

    client_id: str
    client_secret: str = field(repr=False)
    department_code: str
    scopes: frozenset[str]


# ---- secrets ---------------------------------------------------------------------------


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=_HASH_BYTES
    )


def hash_client_secret(secret: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (standard base64) of *secret* under a fresh random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(secret, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return "$".join(("scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)))


def secret_matches(secret: str, stored: str) -> bool:
    """Whether *secret* hashes to *stored*; False for a stored value this code did not write."""
    parts = stored.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("not an scrypt hash")
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        # Parameters come from the database: bound them so an edited row cannot stall a worker.
        if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 4):
            raise ValueError("scrypt parameters out of range")
        salt, expected = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        log.warning("an API client's stored secret hash is not in the scrypt$N$r$p$salt$hash form")
        return False
    return hmac.compare_digest(_scrypt(secret, salt, n, r, p), expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---- scopes ----------------------------------------------------------------------------


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[str]:
    """Scopes from a space-separated string (RFC 6749 §3.3) or an iterable; each must be known."""
    items = scopes.split(" ") if isinstance(scopes, str) else list(scopes)
    found: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise InvalidScope(f"a scope is text, not {type(item).__name__}")
        if item == "":
            continue  # doubled or trailing spaces
        if _SCOPE_TOKEN_RE.fullmatch(item) is None or item not in SCOPES:
            shown = ascii(item[:40])
            raise InvalidScope(f"unknown scope {shown}: use one or more of {', '.join(sorted(SCOPES))}")
        found.add(item)
    if not found:
        raise InvalidScope(f"give at least one scope: {', '.join(sorted(SCOPES))}")
    return frozenset(found)


def _scope_text(scopes: Iterable[str]) -> str:
    return " ".join(sorted(scopes))


def _to_info(row: ApiClientRecord) -> ClientInfo:
    return ClientInfo(
        row.client_id, row.department_code, frozenset(row.scopes.split()), row.created_at, row.disabled_at
    )


# ---- the registry ----------------------------------------------------------------------


class ClientRegistry:
    """Create, list, disable and authenticate API clients; issue their access tokens.

    One per process (the API keeps it on ``app.state``): it holds the authentication
    cache and the service key's reference. Thread-safe.
    """

    def __init__(self, vault: Vault, *, cache_seconds: float = 60.0, cache_size: int = 1024) -> None:
        self._vault = vault
        self._ttl = timedelta(seconds=cache_seconds)
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, bytes], tuple[AuthenticatedClient, datetime]] = OrderedDict()
        self._enabled: dict[str, datetime] = {}  # client id -> when it was last seen enabled
        self._lock = threading.Lock()

    # ---- management ------------------------------------------------------------

    def add(self, department_code: str, scopes: str | Iterable[str], *, actor: str) -> NewClient:
        """Create a client; its secret is in the result and nowhere else, ever."""
        department_code = _department_code(department_code)
        granted = parse_scopes(scopes)
        client_id = "yx_" + secrets.token_hex(8)
        client_secret = secrets.token_urlsafe(32)
        now = self._vault.clock()
        with self._vault.db.write() as s:
            if s.get(DepartmentRecord, department_code) is None:
                raise DepartmentNotFound(
                    f"department {department_code} is not registered: add it with "
                    f"`yinxin dept add --code {department_code} --name NAME`"
                )
            s.add(
                ApiClientRecord(
                    client_id=client_id,
                    department_code=department_code,
                    secret_hash=hash_client_secret(client_secret),
                    scopes=_scope_text(granted),
                    created_at=now,
                    disabled_at=None,
                )
            )
            self._vault.audit.append(
                s, _audit_entry(actor, "client.add", client_id, department_code, granted), at=now
            )
        return NewClient(client_id, client_secret, department_code, granted)

    def list(self, *, department_code: str | None = None) -> list[ClientInfo]:
        query = select(ApiClientRecord).order_by(ApiClientRecord.created_at, ApiClientRecord.client_id)
        if department_code is not None:
            query = query.where(ApiClientRecord.department_code == _department_code(department_code))
        with self._vault.db.read() as s:
            return [_to_info(row) for row in s.execute(query).scalars()]

    def get(self, client_id: str) -> ClientInfo:
        with self._vault.db.read() as s:
            return _to_info(_client_row(s, client_id))

    def disable(self, client_id: str, *, actor: str) -> ClientInfo:
        """Disable a client for good: it can no longer obtain or use access tokens."""
        now = self._vault.clock()
        with self._vault.db.write() as s:
            row = _client_row(s, client_id, lock=True)
            if row.disabled_at is not None:
                raise IllegalTransition(f"client {client_id} is already disabled")
            row.disabled_at = now
            info = _to_info(row)
            self._vault.audit.append(
                s, _audit_entry(actor, "client.disable", client_id, info.department_code, info.scopes), at=now
            )
        self._forget(client_id)
        return info

    # ---- authentication -----------------------------------------------------------

    def authenticate(self, client_id: str, client_secret: str) -> AuthenticatedClient | None:
        """The client, if *client_secret* is its secret and it is enabled; otherwise None.

        Unknown ids cost one scrypt as well, so timing does not tell which ids exist.
        """
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            return None
        client_secret = client_secret[: MAX_SECRET_CHARS + 1]
        cache_key = (client_id, hashlib.sha256(client_secret.encode("utf-8")).digest())
        now = self._vault.clock()
        with self._lock:
            hit = self._cache.get(cache_key)
            if hit is not None and hit[1] <= now < hit[1] + self._ttl:
                return hit[0]
        row: ApiClientRecord | None = None
        if _CLIENT_ID_RE.fullmatch(client_id) is not None:
            with self._vault.db.read() as s:
                row = s.get(ApiClientRecord, client_id)
        stored = row.secret_hash if row is not None else _UNKNOWN_CLIENT_HASH
        matches = secret_matches(client_secret, stored) and len(client_secret) <= MAX_SECRET_CHARS
        if row is None or not matches or row.disabled_at is not None:
            return None
        client = AuthenticatedClient(row.client_id, row.department_code, frozenset(row.scopes.split()))
        with self._lock:
            self._cache[cache_key] = (client, now)
            self._enabled[client_id] = now
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return client

    def is_enabled(self, client_id: str) -> bool:
        """Whether the client exists and is not disabled; cached like authentications."""
        if self.enabled_if_known(client_id):
            return True
        now = self._vault.clock()
        with self._vault.db.read() as s:
            row = s.get(ApiClientRecord, client_id) if _CLIENT_ID_RE.fullmatch(client_id) else None
            enabled = row is not None and row.disabled_at is None
        with self._lock:
            if enabled:
                self._enabled[client_id] = now
                if len(self._enabled) > self._cache_size:
                    self._enabled.pop(next(iter(self._enabled)))
            else:
                self._enabled.pop(client_id, None)
        return enabled

    def enabled_if_known(self, client_id: str) -> bool:
        """True when the cache of :meth:`is_enabled` says the client is enabled; False when only a
        database read can tell (an event loop then asks on a thread)."""
        now = self._vault.clock()
        with self._lock:
            seen = self._enabled.get(client_id)
            return seen is not None and seen <= now < seen + self._ttl

    def _forget(self, client_id: str) -> None:
        with self._lock:
            for key in [k for k in self._cache if k[0] == client_id]:
                del self._cache[key]
            self._enabled.pop(client_id, None)

    # ---- access tokens --------------------------------------------------------------

    def issue_token(
        self, client: AuthenticatedClient, scope: str | None = None, *, lifetime: int = DEFAULT_TOKEN_LIFETIME
    ) -> AccessToken:
        """An RFC 9068 access token for *client* with *scope* (default: every scope it holds).

        Raises :class:`InvalidScope` when *scope* asks for more than the client was granted.
        """
        if scope is None:
            granted = client.scopes
        else:
            granted = parse_scopes(scope)
            missing = granted - client.scopes
            if missing:
                raise InvalidScope(
                    f"scope {_scope_text(missing)} is not granted to client {client.client_id}; "
                    f"it holds {_scope_text(client.scopes)}"
                )
        scope_text = _scope_text(granted)
        return sign_client_token(
            self._vault, self.service_key(), client.client_id, client.department_code, scope_text, lifetime
        )

    def service_key(self) -> KeyRef:
        """The active service-token key, created on first need.

        Read from the registry on every token (one indexed query beside a ~50 ms scrypt):
        a key rotated, destroyed or declared compromised through another process must
        stop signing here at once.
        """
        info = ensure_service_key(self._vault, actor="system")
        return KeyRef(info.kid, SignatureAlgorithm.parse(info.algorithm))


def _audit_entry(
    actor: str, action: str, client_id: str, department: str, scopes: Iterable[str]
) -> AuditEntry:
    # Never the secret nor its hash (DESIGN §5.10).
    return AuditEntry(actor, action, client_id, {"department": department, "scopes": sorted(scopes)})


def _client_row(s: Session, client_id: str, *, lock: bool = False) -> ApiClientRecord:
    row = None
    if isinstance(client_id, str) and _CLIENT_ID_RE.fullmatch(client_id) is not None:
        query = select(ApiClientRecord).where(ApiClientRecord.client_id == client_id)
        row = s.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no API client {str(client_id)[:40]!r}: `yinxin client list` shows them")
    return row


def _department_code(code: str) -> str:
    try:
        return validate_uscc(code)
    except InvalidUSCC as exc:
        raise InvalidUSCC(f"department code (USCC) {str(code)[:40]!r}: {exc}") from None
