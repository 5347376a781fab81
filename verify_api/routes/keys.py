"""Key management over HTTP (scope ``keys:manage``): inventory, rotation, dual control, audit checkpoints.

The calling API client must be bound to an enabled officer (``yinxin officer add
NAME --role security-officer --client CLIENT_ID``): the officer is who acts, and
two approvals of one request must come from two different officers, hence two
different clients. Long operations (re-issuing thousands of licences) run in the
request; the approval that completes a re-issue answers when it is done.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from hsm import SignatureAlgorithm
from schemas.errors import Conflict, InvalidInput, PermissionDenied
from vault import APPROVAL_OPERATIONS, ApprovalRequest, KeyInfo, Officer, Role, Vault
from verify_api import _render as render
from verify_api.auth import Principal, require_scope
from verify_api.deps import VaultDep
from verify_api.routes._docs import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["key management"])

KeyManager = Annotated[Principal, Depends(require_scope("keys:manage"))]
KID_PATH = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
REQUEST_PATH = Path(ge=1, le=2**62, description="approval request number")
Operation = Literal["key.destroy", "key.compromise", "key.reissue", "seal.revoke", "ca.init"]
assert set(Operation.__args__) == set(APPROVAL_OPERATIONS)  # type: ignore[attr-defined]


def _officer(
    vault: Vault, principal: Principal, roles: tuple[str, ...] = (Role.SECURITY_OFFICER,)
) -> Officer:
    officer = vault.officer_for_client(principal.client_id)
    if officer is None:
        raise PermissionDenied(
            f"API client {principal.client_id} acts for no officer: bind it with "
            f"`yinxin officer add NAME --role security-officer --client {principal.client_id}`"
        )
    if officer.role not in roles:
        raise PermissionDenied(
            f"officer {officer.name} is {officer.role}: only a {' or '.join(roles)} may do this"
        )
    return officer


class KeyPublic(BaseModel):
    kid: str
    algorithm: str
    backend: str
    purpose: str
    department: str | None
    state: str = Field(description="pre-activation | active | retired | destroyed | compromised")
    created_at: str
    activated_at: str | None
    retired_at: str | None
    sign_until: str | None = Field(description="end of the signing period (cryptoperiod)")
    max_signatures: int | None
    signature_count: int
    destroyed_at: str | None
    compromised_at: str | None
    state_reason: str | None


class KeyDetails(KeyPublic):
    ceremony: dict[str, Any] | None = Field(description="the signed key-generation record and its check")


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    department: str | None = Field(
        default=None, min_length=18, max_length=18, description="licence key of USCC"
    )
    purpose: Literal["audit", "status-list", "service-token"] | None = Field(default=None)
    algorithm: Literal["ES256", "EdDSA", "PS256"] | None = None
    max_signatures: int | None = Field(default=None, ge=1, le=10**12)


class ApprovalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operation: Operation
    params: dict[str, str] = Field(
        max_length=8,
        description="key.destroy {kid}; key.compromise {kid, since (ISO 8601 with zone), reason}; "
        "key.reissue {kid}; seal.revoke {seal_id, reason, crl_reason}; ca.init {algorithm}",
    )


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=500)


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class ApprovalPublic(BaseModel):
    id: int
    operation: str
    params: dict[str, Any]
    subject: str
    summary: str
    requested_by: str
    requested_at: str
    expires_at: str
    required: int
    state: str = Field(description="pending | approved | executed | failed | rejected | expired")
    approvals: list[str]
    rejections: list[str]
    decided_at: str | None
    result: dict[str, Any] | None
    error: str | None


class CheckpointPublic(BaseModel):
    seq: int
    head_hash: str
    at: str
    kid: str
    token: str = Field(description="compact JWS (typ audit-checkpoint+jwt) signed by the audit key")


class AuditReportPublic(BaseModel):
    valid: bool
    events_checked: int
    head_seq: int
    head_hash: str
    checkpoints_checked: int
    last_checkpoint_seq: int | None
    reasons: list[str]
    warnings: list[str]


def _key(info: KeyInfo) -> KeyPublic:
    return KeyPublic(**render.key_document(info))


def _approval(request: ApprovalRequest) -> ApprovalPublic:
    return ApprovalPublic(**request.as_dict())


_ERRORS = problem_responses(401, 403, 404, 409, 422, 503)
# Routes that take a body: one over the limit is refused before the route runs.
_BODY_ERRORS = problem_responses(401, 403, 404, 409, 413, 422, 503)


@router.get("/keys", response_model=list[KeyPublic], summary="Key inventory", responses=_ERRORS)
def list_keys(principal: KeyManager, vault: VaultDep) -> list[KeyPublic]:
    _officer(vault, principal, (Role.SECURITY_OFFICER, Role.AUDITOR))
    return [_key(k) for k in vault.list_keys()]


@router.get(
    "/keys/{kid}", response_model=KeyDetails, summary="A key and its generation record", responses=_ERRORS
)
def show_key(principal: KeyManager, vault: VaultDep, kid: Annotated[str, KID_PATH]) -> KeyDetails:
    _officer(vault, principal, (Role.SECURITY_OFFICER, Role.AUDITOR))
    info, ceremony = vault.key_details(kid)
    return KeyDetails(**render.key_document(info), ceremony=render.ceremony_document(ceremony))


@router.get("/keys/{kid}/affected", summary="Licences and seals that relied on a key", responses=_ERRORS)
def affected(
    principal: KeyManager,
    vault: VaultDep,
    kid: Annotated[str, KID_PATH],
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    _officer(vault, principal, (Role.SECURITY_OFFICER, Role.AUDITOR))
    return vault.lifecycle.affected(kid, limit=limit).as_dict()


@router.post(
    "/keys/rotate",
    status_code=201,
    response_model=KeyPublic,
    summary="New active key; the old one retires (verifies only)",
    responses=_BODY_ERRORS,
)
def rotate(body: RotateIn, principal: KeyManager, vault: VaultDep) -> KeyPublic:
    officer = _officer(vault, principal)
    if (body.department is None) == (body.purpose is None):
        raise InvalidInput("give either department (a licence key) or purpose (a service key)")
    algorithm = SignatureAlgorithm.parse(body.algorithm) if body.algorithm else None
    if body.department is not None:
        info = vault.rotate_key(
            body.department,
            algorithm,
            officer=officer,
            actor=officer.actor,
            max_signatures=body.max_signatures,
        )
    else:
        assert body.purpose is not None
        info = vault.rotate_system_key(
            body.purpose, algorithm or SignatureAlgorithm.ES256, officer=officer, actor=officer.actor
        )
    return _key(info)


@router.post(
    "/approvals",
    status_code=201,
    response_model=ApprovalPublic,
    summary="Request a dual-control operation (the requester's approval counts once)",
    responses=_BODY_ERRORS,
)
async def request_approval(body: ApprovalIn, principal: KeyManager, vault: VaultDep) -> ApprovalPublic:
    officer = _officer(vault, principal)
    request = await run_in_threadpool(vault.approvals.request, body.operation, body.params, officer)
    return _approval(request)


@router.get("/approvals", response_model=list[ApprovalPublic], summary="Approval requests", responses=_ERRORS)
def list_approvals(
    principal: KeyManager,
    vault: VaultDep,
    state: Annotated[
        Literal["pending", "approved", "executed", "failed", "rejected", "expired"] | None, Query()
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ApprovalPublic]:
    _officer(vault, principal, (Role.SECURITY_OFFICER, Role.AUDITOR))
    return [_approval(r) for r in vault.approvals.list(state=state, limit=limit)]


@router.get(
    "/approvals/{request_id}", response_model=ApprovalPublic, summary="One request", responses=_ERRORS
)
def get_approval(
    principal: KeyManager, vault: VaultDep, request_id: Annotated[int, REQUEST_PATH]
) -> ApprovalPublic:
    _officer(vault, principal, (Role.SECURITY_OFFICER, Role.AUDITOR))
    return _approval(vault.approvals.get(request_id))


@router.post(
    "/approvals/{request_id}/approve",
    response_model=ApprovalPublic,
    summary="Approve; the M-th distinct officer's approval runs the operation",
    responses=_BODY_ERRORS,
)
async def approve(
    principal: KeyManager,
    vault: VaultDep,
    request_id: Annotated[int, REQUEST_PATH],
    body: ApproveIn | None = None,
) -> ApprovalPublic:
    officer = _officer(vault, principal)
    comment = body.comment if body is not None else None
    request = await run_in_threadpool(lambda: vault.approvals.approve(request_id, officer, comment=comment))
    return _approval(request)


@router.post(
    "/approvals/{request_id}/reject",
    response_model=ApprovalPublic,
    summary="Reject: the request is dead",
    responses=_BODY_ERRORS,
)
def reject(
    body: RejectIn, principal: KeyManager, vault: VaultDep, request_id: Annotated[int, REQUEST_PATH]
) -> ApprovalPublic:
    officer = _officer(vault, principal)
    return _approval(vault.approvals.reject(request_id, officer, reason=body.reason))


@router.post(
    "/approvals/{request_id}/execute",
    response_model=ApprovalPublic,
    summary="Run an approved request again after a failure or interruption",
    responses=_ERRORS,
)
async def execute(
    principal: KeyManager, vault: VaultDep, request_id: Annotated[int, REQUEST_PATH]
) -> ApprovalPublic:
    officer = _officer(vault, principal)
    return _approval(await run_in_threadpool(vault.approvals.execute, request_id, officer))


@router.post(
    "/audit/checkpoint",
    status_code=201,
    response_model=CheckpointPublic,
    summary="Sign the audit chain head now",
    responses=_ERRORS,
)
def checkpoint(principal: KeyManager, vault: VaultDep) -> CheckpointPublic:
    officer = _officer(vault, principal, (Role.SECURITY_OFFICER, Role.AUDITOR))
    cp = vault.audit_checkpoint(officer=officer, actor=officer.actor)
    if cp is None:
        raise Conflict("the audit log is empty: nothing to checkpoint")
    return CheckpointPublic(seq=cp.seq, head_hash=cp.head_hash, at=cp.at, kid=cp.kid, token=cp.token)


@router.get(
    "/audit/verify",
    response_model=AuditReportPublic,
    summary="Check the chain, the signed checkpoints and the records",
    responses=_ERRORS,
)
async def verify_audit(principal: KeyManager, vault: VaultDep) -> AuditReportPublic:
    _officer(vault, principal, (Role.SECURITY_OFFICER, Role.AUDITOR))
    report = await run_in_threadpool(vault.verify_audit)
    return AuditReportPublic(
        valid=report.ok,
        events_checked=report.events_checked,
        head_seq=report.head_seq,
        head_hash=report.head_hash,
        checkpoints_checked=report.checkpoints_checked,
        last_checkpoint_seq=report.last_checkpoint_seq,
        reasons=list(report.problems),
        warnings=list(report.warnings),
    )
