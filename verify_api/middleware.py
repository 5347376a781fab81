"""The HTTP platform's middleware: body limit, security headers, request id, metrics, access log.

Pure ASGI (no ``BaseHTTPMiddleware``): nothing is buffered, streaming responses stay streaming, no
extra task per request. ``install_middleware`` adds, outermost first:

1. ``PlatformMiddleware`` — takes a well-formed ``X-Request-ID`` (1–64 of ``[A-Za-z0-9._-]``) or makes
   one, echoes it and exposes it to log records (:func:`current_request_id`, :class:`RequestIdFilter`);
   adds the security headers to every response; times the request into :class:`Metrics` under the
   route *template*; writes one access-log line (``yinxin.http``; the template, never the raw path,
   which may carry a token or an identifier). An exception that escapes the app is answered here
   with the app's 500 handler, so that response too carries the headers and the request id.
2. ``BodyLimitMiddleware`` — refuses a body larger than ``YINXIN_MAX_BODY_BYTES``: from
   ``Content-Length`` before a byte of it is read, and while a chunked body streams in. Either way
   413 ``application/problem+json`` (code ``input_too_large``) with ``Connection: close``.

Security headers (OWASP Secure Headers): ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
no-referrer``, ``X-Frame-Options: DENY`` always; ``Strict-Transport-Security`` on https requests only
(RFC 6797 §7.2: never over plain http; behind a TLS-terminating proxy, see ``--forwarded-allow-ips``);
``Cache-Control: no-store`` and ``Content-Security-Policy: default-src 'none'; frame-ancestors
'none'`` unless the route set its own (licence data must never sit in a shared cache; an HTML page
sets the CSP it needs).
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verify_api._request_id import RequestIdFilter, current_request_id, reset_request_id, set_request_id
from verify_api.metrics import UNMATCHED_ROUTE, Metrics
from verify_api.problems import problem_response
from verify_api.settings import Settings

__all__ = [
    "BodyLimitMiddleware",
    "PlatformMiddleware",
    "RequestIdFilter",
    "current_request_id",
    "install_middleware",
    "route_template",
]

log = logging.getLogger("yinxin.api")
access_log = logging.getLogger("yinxin.http")

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")

_HSTS = (b"strict-transport-security", b"max-age=31536000")
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
_DEFAULTS = (
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


def install_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Add the platform middleware to *app* (call from the app factory, before the app starts)."""
    app.state.metrics = metrics
    # add_middleware puts each new one outside the previous: the body limit sits inside, so its 413
    # carries the headers and the request id and is counted.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        routes=app.router.routes,
        # Documents to seal or verify are larger than any JSON body: their own limit (20 MiB).
        overrides=[(pattern, settings.max_pdf_bytes) for pattern in PDF_BODY_PATHS],
    )
    app.add_middleware(PlatformMiddleware, metrics=metrics, exception_handlers=app.exception_handlers)


def route_template(scope: Scope) -> str:
    """The template of the route that served *scope* (``/v1/licences/{identifier}``), or a placeholder."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


# ---- request id, headers, metrics, access log -------------------------------------------


class PlatformMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, exception_handlers: Mapping[Any, Any] | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.exception_handlers = exception_handlers if exception_handlers is not None else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        token = set_request_id(request_id)
        https = scope.get("scheme") == "https"
        status = 0
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                message = {**message, "headers": _with_headers(message.get("headers", ()), request_id, https)}
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_headers)
            except Exception as exc:
                if started:
                    raise  # too late for another response: the server drops the connection
                response = await self._error_response(scope, exc, request_id)
                await response(scope, receive, send_with_headers)
        finally:
            # status 0: the request ended without a response (the client went away): counted as 499,
            # nginx's "client closed request", so it does not pass for a server error.
            self._record(scope, status or 499, time.perf_counter() - started_at, request_id)
            reset_request_id(token)

    async def _error_response(self, scope: Scope, exc: Exception, request_id: str) -> Any:
        handler = self.exception_handlers.get(Exception) or self.exception_handlers.get(500)
        if handler is not None:
            result = handler(Request(scope), exc)
            return await result if inspect.isawaitable(result) else result
        log.error(
            "internal error on %s %s (request id %s)",
            scope["method"],
            route_template(scope),
            request_id,
            exc_info=exc,
        )
        return problem_response(
            500,
            "internal_error",
            f"an internal error occurred; quote request id {request_id} to the operator",
            correlation_id=request_id,
        )

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        route = route_template(scope)
        method = str(scope["method"])
        self.metrics.request(method, route, status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access_log.info(
                "%s %s %s %d %.1fms request_id=%s",
                client[0] if client else "-",
                method[:16],
                route,
                status,
                seconds * 1000,
                request_id,
            )


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return value.decode("ascii") if _REQUEST_ID.fullmatch(value) else None
    return None


def _with_headers(
    raw: Iterable[tuple[bytes, bytes]], request_id: str, https: bool
) -> list[tuple[bytes, bytes]]:
    headers = [(name, value) for name, value in raw if name.lower() != b"x-request-id"]
    present = {name.lower() for name, _ in headers}
    for name, value in _ALWAYS:
        if name not in present:
            headers.append((name, value))
    for name, value in _DEFAULTS:
        if name not in present:
            headers.append((name, value))
    if https and _HSTS[0] not in present:
        headers.append(_HSTS)
    headers.append((b"x-request-id", request_id.encode("ascii")))
    return headers


# ---- request body limit -------------------------------------------------------------------


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once a streamed body passes the limit.

    An ``HTTPException`` on purpose: FastAPI re-raises those from its body reading (anything else
    becomes a 400), and the app's handler answers it as problem+json.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _too_large_detail(max_bytes), headers={"Connection": "close"})


# Raw paths whose bodies are PDFs (sealing, verification); they get ``max_pdf_bytes``.
PDF_BODY_PATHS: tuple[re.Pattern[str], ...] = (
    re.compile(r"^/v1/seals/[^/]{1,64}/pdf$"),
    re.compile(r"^/v1/pdf/verify$"),
)


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        routes: Iterable[BaseRoute] = (),
        overrides: Sequence[tuple[re.Pattern[str], int]] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = routes
        self.overrides = tuple(overrides)

    def _limit(self, path: str) -> int:
        for pattern, limit in self.overrides:
            if pattern.match(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self._limit(scope.get("path", "")) if self.overrides else self.max_bytes
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            # Answered without reading the body; Connection: close, so the server does not read it
            # either. The route is matched only to label the metrics.
            self._match_route(scope)
            await self._too_large(scope, receive, send, max_bytes)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    exceeded = True
                    raise BodyTooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Normally the app's handler has answered it already; a route that let it escape gets
            # the same answer here.
            if started:
                raise
            await self._too_large(scope, receive, send, max_bytes)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        response = problem_response(
            413,
            "input_too_large",
            _too_large_detail(max_bytes),
            # The route template, never the raw path: paths carry identifiers and ID numbers.
            instance=str(getattr(scope.get("route"), "path", None) or "unmatched"),
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

    def _match_route(self, scope: Scope) -> None:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                return


def _too_large_detail(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes; send less"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses a malformed Content-Length before us
    return None
