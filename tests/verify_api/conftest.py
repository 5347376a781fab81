from __future__ import annotations

from tests._db import database_url  # noqa: F401  (fixture)
