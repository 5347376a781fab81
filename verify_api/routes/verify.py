"""Public verification: anyone holding a licence token can ask whether it is good now."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from signing import MAX_TOKEN_BYTES
from vault import Vault
from verify_api.deps import require_json
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


_rate_limit = rate_limited("verify")


@router.post(
    "/verify",
    response_model=VerifyResponse,
    summary="Verify a licence token (public, rate-limited per client address)",
    description="An invalid token is an answer (200, valid=false, with reasons), not an error. "
    'A body that is not {"token": string} sent as application/json is 422 problem+json.',
    responses=problem_responses(413, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": VerifyRequest.model_json_schema()}},
        }
    },
)
async def verify(request: Request) -> Response:
    """The hot path of the service, kept to what a verification needs (profile: benchmarks/README.md).

    The body is read and validated here rather than declared as a parameter, and the answer is
    encoded once: FastAPI's generic parameter solving and response validation cost more than the
    signature check. The look-up runs on the event loop, shared with the other verifications
    waiting at the same moment (``Vault.verify_async``, ``Database.batched_read``): on SQLite one
    statement per turn of the loop, on PostgreSQL one round trip on an asynchronous connection for
    the look-ups of a turn, or for all that queued while the connections were busy.
    """
    await _rate_limit(request)
    raw = await request.body()
    require_json(request)
    body = _verify_request(raw)
    vault: Vault = request.app.state.vault
    token = body.token.strip()
    verdict = await vault.verify_async(token)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.verified(verdict.status)
    # The verdict's fields are VerifyResponse's, JSON-ready: no second validation against the model.
    return Response(orjson.dumps(verdict.as_dict()), media_type="application/json")


def _verify_request(raw: bytes) -> VerifyRequest:
    """The body as a VerifyRequest, or the 422 a declared body parameter would get."""
    try:
        return VerifyRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None
