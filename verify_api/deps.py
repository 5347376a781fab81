"""FastAPI dependencies: everything a route needs comes from here, built by the app factory."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError

from vault import Vault
from verify_api.settings import Settings

__all__ = ["SettingsDep", "VaultDep", "get_settings", "get_vault", "media_type", "now", "require_json"]


async def get_vault(request: Request) -> Vault:
    # async: an attribute read needs no worker thread (FastAPI runs a plain def dependency in one).
    vault: Vault = request.app.state.vault
    return vault


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def media_type(request: Request) -> str:
    """The request's ``Content-Type`` without its parameters, lower-cased ("" when there is none)."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def require_json(request: Request) -> None:
    """For a route that reads its own body: the 422 a declared JSON body gets unless it is sent as JSON
    (``application/json`` or ``application/…+json``)."""
    media = media_type(request)
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise RequestValidationError(
            [
                {
                    "type": "content_type",
                    "loc": ("body",),
                    "msg": 'send the body as JSON with "Content-Type: application/json"',
                    "input": None,
                }
            ]
        )


async def now(request: Request) -> datetime:
    return (await get_vault(request)).clock()


VaultDep = Annotated[Vault, Depends(get_vault)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
