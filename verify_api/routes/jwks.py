"""The trust list: public keys that verify licences (and status lists), with their states."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from verify_api.deps import VaultDep

__all__ = ["router"]

router = APIRouter(tags=["trust list"])

# Key purposes an outside verifier needs; service keys for access tokens stay internal.
_PUBLISHED = ("licence-signing", "status-list")


@router.get(
    "/.well-known/jwks.json",
    summary="Trust list (RFC 7517 JWK Set) with key state",
    description="Every key that verifies licence tokens or status lists: `kid`, `alg`, `use`, and the "
    "non-standard members `state` (active: signs and verifies; retired: verifies only), `purpose` and "
    "`department` (the issuer's USCC).",
)
def jwks(vault: VaultDep, response: Response) -> dict[str, Any]:
    keys = []
    for info in vault.list_keys():
        if info.purpose not in _PUBLISHED or info.state not in ("active", "retired"):
            continue
        jwk = dict(info.public_jwk)
        jwk.update(state=info.state, purpose=info.purpose)
        if info.department_code:
            jwk["department"] = info.department_code
        keys.append(jwk)
    keys.sort(key=lambda k: str(k["kid"]))
    # Public and cacheable for a short time: verifiers refresh on an unknown kid.
    response.headers["Cache-Control"] = "public, max-age=300"
    return {"keys": keys}
