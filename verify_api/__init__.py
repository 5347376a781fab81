"""The composition root: settings, wiring of backend + database + clock, and the ``yinxin`` CLI.

Nothing is built at import time; ``verify_api.cli.main`` and (later) the app
factory read settings once and compose the rest.
"""

from __future__ import annotations

__all__: list[str] = []
