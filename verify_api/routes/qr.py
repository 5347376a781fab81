"""QR codes of licences: ``GET /v1/licences/{identifier}/qr.png`` and ``/qr.svg``.

The code holds ``{public_url}/v/{presentation token}`` (see ``signing._qr``):
whoever scans it sees the licence on the verification page, so minting one is
a licence read and needs the ``licence:read`` scope. Each response is a fresh
signature (``iat`` is now), hence ``Cache-Control: no-store``; ``X-QR-Version``
says which QR version (1-40, ISO/IEC 18004) the content needed at level M.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response

from schemas import LicenceIdentifier
from signing import QRImage, presentation_url, qr_png, qr_svg
from vault._presentation import presentation_for, public_url
from verify_api.auth import Principal, require_scope
from verify_api.deps import VaultDep
from verify_api.routes._docs import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["licences"])

IDENTIFIER_PATH = Path(min_length=20, max_length=128, description="GB/T 36904 licence identifier")


# The caller, holding the licence:read scope (401 without a token, 403 without the scope).
# Tests replace it through app.dependency_overrides[_reader].
_reader = require_scope("licence:read")

Reader = Annotated[Principal, Depends(_reader)]

# Errors are problem+json like everywhere else (without 422 listed, FastAPI would document its
# own application/json validation error, which this app never sends).
_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = problem_responses(401, 403, 404, 409, 422, 503)
_IMAGE_RESPONSES[409] = {
    **_IMAGE_RESPONSES[409],
    "description": "The key that issued the licence is no longer in the key backend",
}


def _image_response(image: QRImage, identifier: str, extension: str) -> Response:
    # Parsed again for the canonical spelling (presentation_for already accepted it):
    # dots, digits and capitals only, safe in a header.
    canonical = str(LicenceIdentifier.parse(identifier))
    headers = {
        "Cache-Control": "no-store",
        "X-QR-Version": str(image.version),
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{canonical}.{extension}"',
    }
    if extension == "svg":
        # An SVG opened on its own is a document: no scripts, no fetches, no framing.
        headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        )
    return Response(image.data, media_type=image.media_type, headers=headers)


@router.get(
    "/licences/{identifier}/qr.png",
    summary="QR code of a licence (PNG)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The QR code"}, **_IMAGE_RESPONSES},
)
def licence_qr_png(
    identifier: Annotated[str, IDENTIFIER_PATH], vault: VaultDep, _principal: Reader
) -> Response:
    image = qr_png(presentation_url(public_url(vault), presentation_for(vault, identifier)))
    return _image_response(image, identifier, "png")


@router.get(
    "/licences/{identifier}/qr.svg",
    summary="QR code of a licence (SVG)",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}, "description": "The QR code"}, **_IMAGE_RESPONSES},
)
def licence_qr_svg(
    identifier: Annotated[str, IDENTIFIER_PATH], vault: VaultDep, _principal: Reader
) -> Response:
    image = qr_svg(presentation_url(public_url(vault), presentation_for(vault, identifier)))
    return _image_response(image, identifier, "svg")
