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
from typing import TYPE_CHECKING, Final

from hsm import KeyRef, SignatureAlgorithm
from schemas.errors import InvalidInput
from signing import (
    ACCESS_TOKEN_AUDIENCE,
    ACCESS_TOKEN_ISSUER,
    TrustStore,
    sign_access_token,
)
from vault._types import KeyInfo

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
        "jti": secrets.token_urlsafe(16),  # RFC 7519 §4.1.7: 128 random bits
        "scope": scope,
        "dept": department_code,
    }
    return AccessToken(sign_access_token(vault.backend, key, claims), lifetime, scope, key.kid)


def ensure_service_key(
    vault: Vault, *, actor: str = "system", algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256
) -> KeyInfo:
    """The active service-token key; generated in the backend (and audited) if there is none."""
    return vault.ensure_system_key(KEY_PURPOSE_SERVICE_TOKEN, actor=actor, algorithm=algorithm)


def service_trust_store(vault: Vault) -> TrustStore:
    """Every service-token key that verifies access tokens (active and retired); nothing else."""
    with vault.db.read() as s:
        return vault.keys.trust_store(s, KEY_PURPOSE_SERVICE_TOKEN)
