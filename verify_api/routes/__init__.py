"""HTTP routes, one module per area; ``ROUTERS`` is what the app factory includes."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = []
