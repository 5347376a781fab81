"""Department API for licences: issue, look up (with a purpose), change status, access log.

Routes are thin: parse, call ``vault``, shape the answer. Authorisation is by
scope (``licence:issue``, ``licence:read``, ``licence:manage``); a department
issues and manages only its own licences, while any department holding
``licence:read`` may look a licence up for a stated purpose (用证事由), which is
recorded.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from hsm import KeyRef
from schemas import LicenceCreate, parse_licence_request
from schemas.errors import YinxinError
from signing import presentation_url
from vault import MAX_IDEMPOTENCY_KEY, Accessor, Licence, Vault, presentation_for
from verify_api.auth import Principal, authorise_async, authorises, require_own_department, require_scope
from verify_api.deps import VaultDep, require_json
from verify_api.routes._docs import json_body, problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["licences"])

ISSUE_SCOPE = "licence:issue"

IDENTIFIER_PATH = Path(min_length=20, max_length=128, description="GB/T 36904 licence identifier")
PURPOSE_QUERY = Query(
    min_length=1,
    max_length=200,
    description="用证事由: why the licence is needed (recorded in the access log)",
)

Reader = Annotated[Principal, Depends(require_scope("licence:read"))]
Manager = Annotated[Principal, Depends(require_scope("licence:manage"))]


class LicenceLinks(BaseModel):
    self_link: str = Field(serialization_alias="self")
    qr_png: str
    qr_svg: str
    access_log: str
    verification_page: str | None = Field(
        description="the page the licence's QR code opens (absent when no QR can be signed, e.g. expired)"
    )


class LicencePublic(BaseModel):
    """A licence as the API shows it: the holder ID only masked."""

    identifier: str
    version: int
    status: str = Field(description="valid | suspended | revoked | expired | not_yet_valid")
    stored_status: str = Field(description="valid | suspended | revoked (expiry is derived)")
    licence_type: str
    licence_type_name: str
    issuer: str
    issuer_name: str
    holder_name: str
    holder_id_type: str
    holder_id_masked: str
    valid_from: str
    valid_until: str | None
    issued_at: str
    kid: str
    data: dict[str, Any]
    token: str
    links: LicenceLinks


class StatusChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field(min_length=1, max_length=500, description="why (recorded in history and audit log)")


class AccessEntryPublic(BaseModel):
    at: str
    client_id: str
    department: str
    purpose: str
    action: str
    result_count: int


class AccessLogPublic(BaseModel):
    identifier: str
    entries: list[AccessEntryPublic]


class HolderLicences(BaseModel):
    holder_id_type: str
    holder_id_masked: str
    licences: list[LicencePublic]


def _page_link(vault: Vault, lic: Licence, key: KeyRef | None = None) -> str | None:
    try:
        return presentation_url(vault.public_url, presentation_for(vault, lic, key=key))
    except YinxinError:
        return None  # expired, or the department has no active key: no new QR code


def _public(lic: Licence, status: str, page: str | None = None) -> LicencePublic:
    base = f"/v1/licences/{lic.identifier}"
    summary = lic.summary()
    return LicencePublic(
        **summary,
        status=status,
        stored_status=lic.status,
        kid=lic.kid,
        data=dict(lic.data),
        token=lic.token,
        links=LicenceLinks(
            self_link=base,
            qr_png=f"{base}/qr.png",
            qr_svg=f"{base}/qr.svg",
            access_log=f"{base}/access-log",
            verification_page=page,
        ),
    )


@router.post(
    "/licences",
    status_code=201,
    response_model=LicencePublic,
    summary="Issue a licence",
    description="Needs scope licence:issue, for the issuer's own department. With an Idempotency-Key, "
    "the same key and body again answer 200 with the first licence (Idempotent-Replayed: true); the "
    "same key with another body is 409.",
    responses={
        200: {
            "description": "Replay of an earlier request with the same Idempotency-Key",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LicencePublic"}}},
        },
        **problem_responses(401, 403, 404, 409, 413, 422, 503),
    },
    openapi_extra={
        **json_body(LicenceCreate),
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
                "description": "makes a retry safe: the same key and body issue one licence",
            }
        ],
    },
)
@authorises(ISSUE_SCOPE)
async def issue_licence(request: Request) -> Response:
    """The API's write path, kept to what an issuance needs (profile: benchmarks/README.md).

    Like ``POST /v1/verify`` it reads its own request instead of declaring parameters (FastAPI's
    dependency solving and its hand-offs to the thread pool cost more than the issuance's own
    share of its transaction), and it runs on the event loop: the caller is checked there
    (``authorise_async``: a read the loop must not wait for goes to a read thread), the body
    parsed, and the issuance awaited (``Vault.issue_async``: the transaction, shared with the
    other issuances waiting, commits on a write thread). A request handed to the thread pool to
    wait for its commit there cost twice the CPU.
    """
    raw = await request.body()
    principal = await authorise_async(request, ISSUE_SCOPE)
    require_json(request)
    body = parse_licence_request(raw, max_bytes=request.app.state.settings.max_body_bytes)
    require_own_department(principal, body.issuer)
    vault: Vault = request.app.state.vault
    # Vault.issue_async checks the key's length (MAX_IDEMPOTENCY_KEY) before anything is written.
    idempotency_key = request.headers.get("idempotency-key")
    result = await vault.issue_async(
        body, idempotency_key=idempotency_key, actor=f"client:{principal.client_id}", presentation=True
    )
    headers = {"Location": f"/v1/licences/{result.licence.identifier}"}
    if result.created:
        request.app.state.metrics.issued(1)
    else:
        headers["Idempotent-Replayed"] = "true"
    lic = result.licence
    if result.presentation is not None:  # signed with the rest of its group (Vault.issue_async)
        page: str | None = presentation_url(vault.public_url, result.presentation)
    else:  # a replay: signed here, with the active key (a read), on a thread
        page = await run_in_threadpool(_page_link, vault, lic, result.key)
    public = _public(lic, lic.effective_status(vault.clock()), page)
    # The model was built and checked by _public: its JSON, without FastAPI validating it again.
    return Response(
        public.model_dump_json(by_alias=True),
        status_code=201 if result.created else 200,
        headers=headers,
        media_type="application/json",
    )


@router.get(
    "/licences/{identifier}",
    response_model=LicencePublic,
    summary="Look a licence up (purpose required, recorded)",
    responses=problem_responses(401, 403, 404, 422, 503),
)
def read_licence(
    principal: Reader,
    vault: VaultDep,
    identifier: Annotated[str, IDENTIFIER_PATH],
    purpose: Annotated[str, PURPOSE_QUERY],
) -> LicencePublic:
    who = Accessor(principal.client_id, principal.department_code, purpose)
    lic = vault.read_licence(identifier, who)
    return _public(lic, lic.effective_status(vault.clock()), _page_link(vault, lic))


@router.get(
    "/holders/{id_type}/{holder_id}/licences",
    response_model=HolderLicences,
    summary="A holder's licences, for 零材料 reuse (purpose required, recorded)",
    responses=problem_responses(401, 403, 422, 503),
)
def holder_licences(
    principal: Reader,
    vault: VaultDep,
    id_type: Annotated[str, Path(pattern=r"^(001|111)$", description="001 USCC, 111 citizen ID")],
    holder_id: Annotated[str, Path(min_length=18, max_length=18)],
    purpose: Annotated[str, PURPOSE_QUERY],
) -> HolderLicences:
    who = Accessor(principal.client_id, principal.department_code, purpose)
    found = vault.lookup_holder(id_type, holder_id, who)
    now = vault.clock()
    masked = found[0].holder_id_masked if found else _masked(id_type, holder_id)
    return HolderLicences(
        holder_id_type=id_type,
        holder_id_masked=masked,
        licences=[_public(lic, lic.effective_status(now)) for lic in found],
    )


def _masked(id_type: str, holder_id: str) -> str:
    from schemas import mask_holder_id

    return mask_holder_id(id_type, holder_id.upper())


@router.get(
    "/licences/{identifier}/access-log",
    response_model=AccessLogPublic,
    summary="Who looked at this licence and why (issuing department only)",
    responses=problem_responses(401, 403, 404, 422, 503),
)
def access_log(
    principal: Manager,
    vault: VaultDep,
    identifier: Annotated[str, IDENTIFIER_PATH],
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AccessLogPublic:
    lic = vault.get(identifier)
    require_own_department(principal, lic.issuer_code)
    entries = vault.access_log(identifier, limit=limit)
    return AccessLogPublic(
        identifier=identifier,
        entries=[
            AccessEntryPublic(
                at=e.at.astimezone(UTC).isoformat(),
                client_id=e.client_id,
                department=e.department_code,
                purpose=e.purpose,
                action=e.action,
                result_count=e.result_count,
            )
            for e in entries
        ],
    )


def _status_route(target: str, verb: str) -> None:
    def change(
        body: StatusChangeIn,
        principal: Manager,
        vault: VaultDep,
        identifier: Annotated[str, IDENTIFIER_PATH],
    ) -> LicencePublic:
        lic = vault.get(identifier)
        require_own_department(principal, lic.issuer_code)
        changed = vault.change_status(
            identifier, target, reason=body.reason, actor=f"client:{principal.client_id}"
        )
        return _public(changed, changed.effective_status(vault.clock()))

    change.__name__ = f"{verb}_licence"
    router.add_api_route(
        f"/licences/{{identifier}}/{verb}",
        change,
        methods=["POST"],
        response_model=LicencePublic,
        summary=f"{verb.capitalize()} a licence (issuing department only)",
        responses=problem_responses(401, 403, 404, 409, 413, 422, 503),
    )


_status_route("suspended", "suspend")
_status_route("revoked", "revoke")
_status_route("valid", "reinstate")
