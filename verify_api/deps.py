"""FastAPI dependencies: everything a route needs comes from here, built by the app factory."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from vault import Vault
from verify_api.settings import Settings

__all__ = ["SettingsDep", "VaultDep", "get_settings", "get_vault", "now"]


def get_vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def now(request: Request) -> datetime:
    return get_vault(request).clock()


VaultDep = Annotated[Vault, Depends(get_vault)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
