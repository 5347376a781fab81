"""Request builders shared by the vault and CLI tests (the licence types' own examples)."""

from __future__ import annotations

from typing import Any

from schemas import LicenceCreate
from vault import Vault


def example(vault: Vault, holder_id_type: str = "001", **changes: Any) -> LicenceCreate:
    """The first licence type's example for this holder kind, with *changes* applied."""
    t = next(t for t in vault.types.all() if t.holder_id_type == holder_id_type)
    return LicenceCreate.model_validate({**t.example, **changes})
