"""``POST /v1/oauth/token``: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4).

Clients authenticate with HTTP Basic (RFC 6749 §2.3.1, preferred) or with
``client_id``/``client_secret`` form fields, and receive an RFC 9068 access
token for the scopes they ask for (default: all they hold). Errors here are
OAuth error responses (RFC 6749 §5.2: ``{"error", "error_description"}``),
not problem+json: OAuth client libraries expect exactly that shape.

The body is ``application/x-www-form-urlencoded`` and parsed here, strictly and
within 4 KiB, with ``urllib.parse`` (python-multipart is not a dependency).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from vault._clients import DEFAULT_TOKEN_LIFETIME, SCOPES, AccessToken, InvalidScope
from verify_api.auth import REALM, access_token_trust, client_registry
from verify_api.ratelimit import rate_limited
from verify_api.routes._docs import problem_responses

__all__ = ["router"]

MAX_FORM_BYTES: Final = 4096
FORM_MEDIA_TYPE: Final = "application/x-www-form-urlencoded"
# RFC 6749 §5.1: token responses (and errors, which may echo request details) are never cached.
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}

router = APIRouter(tags=["oauth"])


class TokenResponse(BaseModel):
    """RFC 6749 §5.1."""

    access_token: str = Field(
        description="an RFC 9068 JWT (typ at+jwt); send it as 'Authorization: Bearer …'"
    )
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the token type of RFC 6750 §4
    expires_in: int = Field(description="seconds until the token expires", examples=[DEFAULT_TOKEN_LIFETIME])
    scope: str = Field(description="the granted scopes, space-separated", examples=["licence:read"])


class OAuthErrorResponse(BaseModel):
    """RFC 6749 §5.2 (not problem+json)."""

    error: str = Field(
        examples=["invalid_request", "invalid_client", "unsupported_grant_type", "invalid_scope"]
    )
    error_description: str


class _OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        # RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E only.
        self.description = "".join(c for c in description if 0x20 <= ord(c) <= 0x7E and c not in '"\\')

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.status == 401:
            # RFC 6749 §5.2: invalid_client → 401 with a challenge for the scheme clients use.
            headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers=headers)


def _invalid_request(description: str) -> _OAuthError:
    return _OAuthError(400, "invalid_request", description)


def _invalid_client() -> _OAuthError:
    # One answer for unknown id, wrong secret and disabled client: none tells an attacker more.
    return _OAuthError(401, "invalid_client", "client authentication failed")


async def _read_form(request: Request) -> dict[str, str]:
    media_type, _, params = request.headers.get("content-type", "").partition(";")
    if media_type.strip().lower() != FORM_MEDIA_TYPE:
        raise _invalid_request(f"send the token request as {FORM_MEDIA_TYPE} (RFC 6749 section 4.4.2)")
    charset = params.strip().lower()
    if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
        raise _invalid_request("the form must be UTF-8 (RFC 6749 appendix B)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise _invalid_request(f"the token request is larger than {MAX_FORM_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _invalid_request(f"the token request is larger than {MAX_FORM_BYTES} bytes")
    try:
        text = body.decode("ascii")  # percent-encoded form data is ASCII (RFC 6749 appendix B)
        fields = parse_qs(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=20,
        )
    except ValueError:  # UnicodeDecodeError included
        raise _invalid_request("the body is not a well-formed UTF-8 url-encoded form") from None
    form: dict[str, str] = {}
    for name, values in fields.items():
        if len(values) > 1:
            raise _invalid_request(f"parameter {name[:40]} appears more than once (RFC 6749 section 3.2)")
        if values[0] != "":  # empty parameters count as omitted (RFC 6749 §3.1)
            form[name] = values[0]
    return form


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    authorization = request.headers.getlist("authorization")
    if len(authorization) > 1:
        raise _invalid_request("send at most one Authorization header")
    if authorization:
        scheme, _, encoded = authorization[0].strip().partition(" ")
        if scheme.lower() != "basic":
            raise _invalid_client()
        if "client_secret" in form or form.get("client_id") not in (None, _basic_id(encoded)):
            raise _invalid_request(
                "use one client authentication method: HTTP Basic or form fields (RFC 6749 section 2.3)"
            )
        return _basic_credentials(encoded)
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    if client_id is None or client_secret is None:
        raise _invalid_client()
    return client_id, client_secret


def _basic_credentials(encoded: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: base64 of form-urlencoded client_id ':' form-urlencoded client_secret."""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise ValueError("no colon")
        return unquote_plus(client_id, errors="strict"), unquote_plus(secret, errors="strict")
    except (binascii.Error, ValueError):
        raise _invalid_request("the Basic credentials are not base64 of client_id:client_secret") from None


def _basic_id(encoded: str) -> str | None:
    try:
        return _basic_credentials(encoded)[0]
    except _OAuthError:
        return None


@dataclass(frozen=True, slots=True)
class _Grant:
    client_id: str
    client_secret: str
    scope: str | None


def _grant(request: Request, grant: _Grant) -> AccessToken:
    """The blocking part, in a worker thread: scrypt, database, the key backend's signature."""
    registry = client_registry(request)
    client = registry.authenticate(grant.client_id, grant.client_secret)
    if client is None:
        raise _invalid_client()
    try:
        issued = registry.issue_token(client, grant.scope)
    except InvalidScope as exc:
        raise _OAuthError(400, "invalid_scope", str(exc)) from None
    # The first token may have just created the service key: make sure this app trusts it.
    access_token_trust(request).refresh_for(issued.kid, force=True)
    return issued


_DESCRIPTION = f"""
OAuth 2.0 client-credentials grant (RFC 6749 §4.4). Send `grant_type=client_credentials` and,
optionally, `scope` (space-separated; a subset of the client's scopes, default all of them) as
`{FORM_MEDIA_TYPE}`. Authenticate with HTTP Basic (`client_id:client_secret`, RFC 6749 §2.3.1)
or with `client_id` and `client_secret` form fields — not both.

The access token is an RFC 9068 JWT (`typ: at+jwt`) valid for `expires_in` seconds; send it as
`Authorization: Bearer TOKEN`. Scopes: {", ".join(sorted(SCOPES))}.

**Errors on this endpoint are OAuth error responses (RFC 6749 §5.2)**, a JSON object
`{{"error", "error_description"}}` — not `application/problem+json` like the rest of the API,
because OAuth client libraries require this shape: `invalid_request`, `unsupported_grant_type`
and `invalid_scope` with status 400, `invalid_client` with status 401 and
`WWW-Authenticate: Basic`. Responses carry `Cache-Control: no-store`.
"""

_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "scope": {"type": "string", "description": "space-separated scopes", "example": "licence:read"},
        "client_id": {"type": "string", "description": "only without HTTP Basic"},
        "client_secret": {"type": "string", "description": "only without HTTP Basic"},
    },
}


@router.post(
    "/v1/oauth/token",
    summary="Get an access token (client credentials)",
    description=_DESCRIPTION,
    response_model=None,
    responses={
        200: {"model": TokenResponse, "description": "the access token"},
        400: {"model": OAuthErrorResponse, "description": "RFC 6749 §5.2 error (not problem+json)"},
        401: {"model": OAuthErrorResponse, "description": "invalid_client (not problem+json)"},
        # The body limit is enforced before this route runs, as for every route (problem+json).
        **problem_responses(413, 503),
        429: {"description": "too many attempts from this address; see Retry-After (problem+json)"},
    },
    # Every attempt costs a scrypt (~50 ms): a per-address budget keeps guessing and floods cheap.
    dependencies=[Depends(rate_limited("token"))],
    openapi_extra={"requestBody": {"required": True, "content": {FORM_MEDIA_TYPE: {"schema": _FORM_SCHEMA}}}},
)
async def token(request: Request) -> JSONResponse:
    try:
        form = await _read_form(request)
        client_id, client_secret = _client_credentials(request, form)
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise _invalid_request("grant_type is required (RFC 6749 section 4.4.2)")
        if grant_type != "client_credentials":
            raise _OAuthError(
                400, "unsupported_grant_type", "this server supports grant_type=client_credentials only"
            )
        grant = _Grant(client_id, client_secret, form.get("scope"))
        issued = await run_in_threadpool(_grant, request, grant)
    except _OAuthError as exc:
        return exc.response()
    body = TokenResponse(access_token=issued.token, expires_in=issued.expires_in, scope=issued.scope)
    return JSONResponse(body.model_dump(), headers=dict(_NO_STORE))
