"""E-seals over HTTP: seal a PDF, verify a sealed PDF, the CA certificate and CRL, printed licences.

* ``POST /v1/seals/{seal_id}/pdf`` (scope ``seal:use``; the department owns the seal): the body
  is the PDF (``application/pdf``, ≤ 20 MiB), the answer the sealed PDF.
* ``POST /v1/pdf/verify`` (public, ≤ 20 MiB): the verdict on a PDF's seals.
* ``GET /v1/ca/root.pem``, ``GET /v1/ca/crl`` (public): what an outside validator needs.
* ``GET /v1/licences/{identifier}.pdf`` (scope ``licence:manage``; the issuing department):
  the printable licence (照面) sealed with the department's seal.

Sealing and verification are CPU- and HSM-bound: they run in the thread pool, not on the
event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from schemas.errors import InvalidInput
from signing import StampPlacement
from vault import licence_pdf
from verify_api.auth import Principal, require_own_department, require_scope
from verify_api.deps import VaultDep, media_type
from verify_api.metrics import MetricsDep
from verify_api.problems import Problem
from verify_api.ratelimit import rate_limited
from verify_api.routes._docs import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["seals"])

SealUser = Annotated[Principal, Depends(require_scope("seal:use"))]
Manager = Annotated[Principal, Depends(require_scope("licence:manage"))]

PDF_MEDIA_TYPE = "application/pdf"
_PDF_BODY = {
    "required": True,
    "content": {PDF_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    "description": "the PDF itself (not multipart), at most 20 MiB",
}
_PDF_RESPONSE = {"content": {PDF_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}


class SealSummary(BaseModel):
    seal_id: str | None
    seal_name: str | None
    department_name: str | None
    department_code: str | None
    certificate_serial: str | None
    certificate_fingerprint: str | None


class SignatureVerdictPublic(BaseModel):
    field_name: str
    valid: bool
    codes: list[str]
    reasons: list[str]
    seal: SealSummary
    signing_time: str | None = Field(
        description="claimed by the signer (PDF /M); trusted only with a timestamp"
    )
    timestamp: str | None = Field(description="from a trusted RFC 3161 timestamp (PAdES B-T)")
    certified: bool
    coverage: str
    modification_level: str | None


class PdfVerdictPublic(BaseModel):
    valid: bool
    codes: list[str] = Field(
        description="not_pdf, too_large, no_signature, signature_invalid, untrusted, unknown_certificate, "
        "key_usage, revoked, suspended, modified, partial_coverage"
    )
    reasons: list[str]
    seal: SealSummary | None = Field(description="the first signature's seal")
    signing_time: str | None
    timestamp: str | None
    signatures: list[SignatureVerdictPublic]


async def _pdf_body(request: Request, *, strict_type: bool = False) -> bytes:
    """The PDF in the body; with *strict_type*, only as ``application/pdf`` (415 otherwise)."""
    if strict_type:
        sent = media_type(request)
        if sent != PDF_MEDIA_TYPE:
            raise Problem(
                415,
                "unsupported_media_type",
                f"send the PDF itself with Content-Type: {PDF_MEDIA_TYPE}, not {sent[:60] or 'none'}",
            )
    body = await request.body()  # bounded by the body-limit middleware (max_pdf_bytes)
    if not body:
        raise InvalidInput("the request body is empty: send the PDF itself as application/pdf")
    return body


def _pdf_response(pdf: bytes, filename: str) -> Response:
    return Response(
        pdf,
        media_type=PDF_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post(
    "/seals/{seal_id}/pdf",
    summary="Seal a PDF (PAdES certification signature with a visible stamp)",
    openapi_extra={"requestBody": _PDF_BODY},
    response_class=Response,
    responses={
        200: {**_PDF_RESPONSE, "description": "the sealed PDF"},
        **problem_responses(401, 403, 404, 409, 413, 415, 422, 503),
    },
)
async def seal_pdf(
    request: Request,
    principal: SealUser,
    vault: VaultDep,
    metrics: MetricsDep,
    seal_id: Annotated[str, Path(min_length=1, max_length=64, description="the seal, e.g. seal-0123456789")],
    page: Annotated[int, Query(ge=1, le=100_000, description="page for the stamp, from 1")] = 1,
    box: Annotated[
        str | None,
        Query(max_length=100, description="stamp box x1,y1,x2,y2 in PDF points (default: lower right)"),
    ] = None,
    reason: Annotated[str | None, Query(max_length=200, description="the signature's /Reason")] = None,
    location: Annotated[str | None, Query(max_length=200, description="the signature's /Location")] = None,
) -> Response:
    seal = await run_in_threadpool(vault.seals.get, seal_id)
    require_own_department(principal, seal.department_code)
    placement = StampPlacement.parse(page, box)
    pdf = await _pdf_body(request, strict_type=True)
    sealed = await run_in_threadpool(
        lambda: vault.seals.seal_document(
            seal_id,
            pdf,
            placement=placement,
            reason=reason,
            location=location,
            actor=f"client:{principal.client_id}",
        )
    )
    metrics.sealed("document")
    return _pdf_response(sealed.pdf, "sealed.pdf")


@router.post(
    "/pdf/verify",
    response_model=PdfVerdictPublic,
    summary="Verify the seals of a PDF (public)",
    openapi_extra={"requestBody": _PDF_BODY},
    responses=problem_responses(409, 413, 422, 429, 503),
    # The same per-address budget as POST /v1/verify: verification is public.
    dependencies=[Depends(rate_limited("verify"))],
)
async def verify_pdf(request: Request, vault: VaultDep, metrics: MetricsDep) -> dict[str, Any]:
    pdf = await _pdf_body(request)
    verdict = await run_in_threadpool(vault.seals.verify_document, pdf)
    metrics.pdf_verified(verdict.valid, verdict.codes)
    return verdict.to_dict()


@router.get(
    "/ca/root.pem",
    response_class=Response,
    summary="The root CA certificate (PEM): the trust anchor for sealed PDFs",
    responses={200: {"content": {"application/x-pem-file": {}}}, **problem_responses(409, 503)},
)
def ca_root(vault: VaultDep) -> Response:
    ca = vault.seals.ca()
    return Response(
        ca.pem, media_type="application/x-pem-file", headers={"Cache-Control": "public, max-age=3600"}
    )


@router.get(
    "/ca/crl",
    response_class=Response,
    summary="The current CRL (DER, RFC 5280): revoked and suspended seal certificates",
    responses={200: {"content": {"application/pkix-crl": {}}}, **problem_responses(409, 503)},
)
def ca_crl(vault: VaultDep) -> Response:
    der = vault.seals.crl()
    return Response(der, media_type="application/pkix-crl", headers={"Cache-Control": "public, max-age=300"})


@router.get(
    "/licences/{identifier}.pdf",
    response_class=Response,
    summary="The printable licence (照面), sealed by the issuing department (issuer only)",
    responses={
        200: {**_PDF_RESPONSE, "description": "the sealed licence PDF"},
        **problem_responses(401, 403, 404, 409, 422, 503),
    },
)
def licence_pdf_route(
    principal: Manager,
    vault: VaultDep,
    metrics: MetricsDep,
    identifier: Annotated[
        str, Path(min_length=20, max_length=128, description="GB/T 36904 licence identifier")
    ],
) -> Response:
    lic = vault.get(identifier)
    require_own_department(principal, lic.issuer_code)
    sealed = licence_pdf(vault, identifier, actor=f"client:{principal.client_id}")
    metrics.sealed("licence")
    return _pdf_response(sealed.pdf, f"{identifier}.pdf")
