"""The trust list: public keys that verify licences (and status lists), with their states."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from verify_api.deps import VaultDep
from verify_api.routes._docs import problem_responses

__all__ = ["router"]

router = APIRouter(tags=["trust list"])

# Key purposes an outside verifier needs; service keys for access tokens stay internal.
_PUBLISHED = ("licence-signing", "status-list")


@router.get(
    "/.well-known/jwks.json",
    summary="Trust list (RFC 7517 JWK Set) with key state",
    description="Every key that verifies licence tokens or status lists: `kid`, `alg`, `use`, and the "
    "non-standard members `state` (active: signs and verifies; retired: verifies only; destroyed: private "
    "key deleted, verifies what it signed before), `purpose` and `department` (the issuer's USCC). "
    "Compromised keys are never in `keys`; the top-level `compromised` member lists them with "
    "`compromised_since`: drop them, and trust nothing they signed.",
    responses=problem_responses(503),
)
def jwks(vault: VaultDep, response: Response) -> dict[str, Any]:
    keys = []
    compromised = []
    for info in vault.list_keys():
        if info.purpose not in _PUBLISHED:
            continue
        if info.state == "compromised":
            # Never in "keys" (a standard JOSE library would trust it); named so verifiers that
            # cached it learn to drop it, with the time from which nothing it signed is trusted.
            compromised.append(
                {
                    "kid": info.kid,
                    "purpose": info.purpose,
                    "compromised_since": info.compromised_at.isoformat() if info.compromised_at else None,
                }
            )
            continue
        if info.state not in ("active", "retired", "destroyed"):
            continue
        jwk = dict(info.public_jwk)
        jwk.update(state=info.state, purpose=info.purpose)
        if info.department_code:
            jwk["department"] = info.department_code
        keys.append(jwk)
    keys.sort(key=lambda k: str(k["kid"]))
    compromised.sort(key=lambda k: str(k["kid"]))
    # Public and cacheable for a short time: verifiers refresh on an unknown kid.
    response.headers["Cache-Control"] = "public, max-age=300"
    return {"keys": keys, "compromised": compromised}
