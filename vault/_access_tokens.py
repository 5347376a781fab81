"""Access tokens (RFC 9068) and the service key that signs them, never licences.

The service key is a key-registry entry like a department's licence key, with purpose
``service-token`` and no department, so the licence trust store (and the
published licence JWKS) never contains it and a licence key never verifies an
access token. It lives in the key backend like every other key; the private
half never leaves it.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select

from hsm import KeyRef, SignatureAlgorithm
from schemas.errors import InvalidInput, YinxinError
from signing import TrustedKey, TrustStore, public_jwk, trusted_key_from_jwk
from signing._access_token import (
    ACCESS_TOKEN_AUDIENCE,
    ACCESS_TOKEN_ISSUER,
    new_token_id,
    sign_access_token,
)
from vault._audit import AuditEntry
from vault._keys import KeyState, to_key_info
from vault._models import AuditHeadRecord, KeyRecord
from vault._types import CHINA_TIME, KeyInfo

if TYPE_CHECKING:
    from vault._vault import Vault

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "KEY_PURPOSE_SERVICE_TOKEN",
    "AccessToken",
    "ensure_service_key",
    "service_trust_store",
    "sign_client_token",
]

log = logging.getLogger("yinxin.vault")

KEY_PURPOSE_SERVICE_TOKEN: Final = "service-token"  # noqa: S105 - a key purpose, not a secret
DEFAULT_TOKEN_LIFETIME: Final = 600  # seconds
MAX_TOKEN_LIFETIME: Final = 86400


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str = field(repr=False)
    expires_in: int
    scope: str
    kid: str


def sign_client_token(
    vault: Vault, key: KeyRef, client_id: str, department_code: str, scope: str, lifetime: int
) -> AccessToken:
    """Sign an access token for a client with service key *key*; *scope* is already checked.

    Claims per RFC 9068 §2.2: with no resource owner, ``sub`` is the client; ``dept`` is ours.
    """
    if not 1 <= lifetime <= MAX_TOKEN_LIFETIME:
        raise InvalidInput(f"an access token lives between 1 and {MAX_TOKEN_LIFETIME} seconds")
    issued = int(vault.clock().timestamp())
    claims = {
        "iss": ACCESS_TOKEN_ISSUER,
        "sub": client_id,
        "client_id": client_id,
        "aud": ACCESS_TOKEN_AUDIENCE,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": new_token_id(),
        "scope": scope,
        "dept": department_code,
    }
    return AccessToken(sign_access_token(vault.backend, key, claims), lifetime, scope, key.kid)


def ensure_service_key(
    vault: Vault, *, actor: str = "system", algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256
) -> KeyInfo:
    """The active service-token key; generated in the backend (and audited) if there is none.

    Safe to call from several processes at once: the transaction first locks the audit-chain
    head (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so only one
    of them creates the key and the others find it.
    """
    with vault.db.write() as s:
        s.execute(select(AuditHeadRecord.id).where(AuditHeadRecord.id == 1).with_for_update())
        row = s.execute(
            select(KeyRecord)
            .where(KeyRecord.purpose == KEY_PURPOSE_SERVICE_TOKEN, KeyRecord.state == KeyState.ACTIVE)
            .order_by(KeyRecord.activated_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        if row is not None:
            return to_key_info(row)
        now = vault.clock()
        stamp = now.astimezone(CHINA_TIME).strftime("%Y%m%d")
        kid = f"service-{algorithm.value.lower()}-{stamp}-{secrets.token_hex(4)}"
        ref = vault.backend.generate_key(algorithm, kid)
        try:
            jwk = public_jwk(TrustedKey(ref.kid, ref.algorithm, vault.backend.public_key(ref)))
            row = KeyRecord(
                kid=ref.kid,
                algorithm=ref.algorithm.value,
                backend=vault.backend.name,
                purpose=KEY_PURPOSE_SERVICE_TOKEN,
                department_code=None,
                state=KeyState.ACTIVE,
                public_jwk=jwk,
                created_at=now,
                activated_at=now,
                retired_at=None,
            )
            s.add(row)
            details: dict[str, Any] = {
                "algorithm": ref.algorithm.value,
                "backend": vault.backend.name,
                "department": None,
                "purpose": KEY_PURPOSE_SERVICE_TOKEN,
                "retired": [],
            }
            vault.audit.append(s, AuditEntry(actor, "key.generate", ref.kid, details), at=now)
            s.flush()
        except BaseException:
            # The registry row did not make it: do not leave an orphan key in the backend.
            try:
                vault.backend.destroy_key(ref.kid)
            except YinxinError:
                log.warning("could not remove orphan service key %s from the backend", ref.kid)
            raise
        log.info("service-token key %s created in the %s backend", ref.kid, vault.backend.name)
        return to_key_info(row)


def service_trust_store(vault: Vault) -> TrustStore:
    """Every service-token key that verifies access tokens (active and retired); nothing else."""
    with vault.db.read() as s:
        rows = s.execute(
            select(KeyRecord).where(
                KeyRecord.purpose == KEY_PURPOSE_SERVICE_TOKEN,
                KeyRecord.state.in_([KeyState.ACTIVE, KeyState.RETIRED]),
            )
        ).scalars()
        keys = []
        for row in rows:
            key = trusted_key_from_jwk(row.public_jwk)
            keys.append(TrustedKey(key.kid, key.algorithm, key.public_key, row.state))
    return TrustStore(keys)
