"""Status lists: ``GET /v1/status-lists/{name}`` serves the signed Status List Token.

draft-ietf-oauth-status-list §8: the response is the Status List Token itself
with media type ``application/statuslist+jwt``; ``Cache-Control`` lets caches
and CDNs keep it for the token's ``ttl`` (§8.3, RFC 9111). Public and
unauthenticated: a list reveals no licence's identity (indices are random and
lists hold 131 072 entries), and offline verifiers must be able to fetch it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from signing import STATUS_LIST_MEDIA_TYPE
from vault import StatusListPublisher, Vault
from verify_api.deps import VaultDep
from verify_api.problems import PROBLEM_JSON
from verify_api.routes._docs import problem_responses

__all__ = ["router"]

router = APIRouter(tags=["status lists"])


def _publisher(request: Request, vault: Vault) -> StatusListPublisher:
    """The app's publisher (its token cache lives as long as the app)."""
    publisher = getattr(request.app.state, "status_list_publisher", None)
    if not isinstance(publisher, StatusListPublisher) or publisher.vault is not vault:
        publisher = StatusListPublisher(vault)
        request.app.state.status_list_publisher = publisher
    return publisher


@router.get(
    "/v1/status-lists/{name}",
    summary="A Token Status List (draft-ietf-oauth-status-list), signed",
    description="The Status List Token of list `name` (the `uri` in a licence's `status.status_list` "
    "claim): a JWT with `typ: statuslist+jwt`, signed by the status-list key published in "
    "`/.well-known/jwks.json`. Two bits per licence: 0 valid, 1 revoked, 2 suspended.",
    response_class=Response,
    responses={
        200: {"content": {STATUS_LIST_MEDIA_TYPE: {"schema": {"type": "string"}}}},
        404: {"description": "No such list", "content": {PROBLEM_JSON: {}}},
        **problem_responses(503),
    },
)
def get_status_list(name: str, request: Request, vault: VaultDep) -> Response:
    published = _publisher(request, vault).token(name)
    return Response(
        content=published.token,
        media_type=STATUS_LIST_MEDIA_TYPE,
        headers={"Cache-Control": f"public, max-age={published.ttl}"},
    )
