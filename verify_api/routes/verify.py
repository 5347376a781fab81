"""Public verification: anyone holding a licence token can ask whether it is good now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from signing import MAX_TOKEN_BYTES
from verify_api.deps import VaultDep
from verify_api.ratelimit import rate_limited
from verify_api.routes._docs import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["verification"])


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=MAX_TOKEN_BYTES, description="a licence token (JWS compact)")


class VerifyResponse(BaseModel):
    valid: bool
    status: str = Field(description="valid | suspended | revoked | expired | not_yet_valid | invalid")
    reasons: list[str]
    codes: list[str]
    kid: str | None
    licence: dict[str, Any] | None = Field(description="licence summary; the holder ID only masked")
    checked_at: str


@router.post(
    "/verify",
    response_model=VerifyResponse,
    summary="Verify a licence token (public, rate-limited per client address)",
    description="An invalid token is an answer (200, valid=false, with reasons), not an error. "
    'A body that is not {"token": string} is 422 problem+json.',
    responses=problem_responses(413, 422, 429, 503),
    dependencies=[Depends(rate_limited("verify"))],
)
def verify(body: VerifyRequest, vault: VaultDep, request: Request) -> VerifyResponse:
    verdict = vault.verify(body.token.strip())
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.verified(verdict.status)
    data = verdict.as_dict()
    return VerifyResponse(**data)
