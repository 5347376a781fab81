"""The correlation id of the request being served, for log records and error documents.

Kept apart from :mod:`verify_api.middleware` (which sets it) so that logging set-up can use it
without importing FastAPI. A context variable holds no state of its own: each request sets and
resets its value, and sync routes see it too (anyio copies the context into the worker thread).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token

__all__ = ["RequestIdFilter", "current_request_id"]

_request_id: ContextVar[str | None] = ContextVar("yinxin_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served (``X-Request-ID``), or ``None`` outside a request."""
    return _request_id.get()


def set_request_id(request_id: str) -> Token[str | None]:
    return _request_id.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``-`` outside a request) for a ``%(request_id)s`` format field."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get() or "-"
        return True
