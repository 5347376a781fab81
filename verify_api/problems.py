"""RFC 9457 problem details for every error the HTTP API returns.

``type`` is a stable URN per error code (``urn:yinxin:problem:<code>``), ``title``
a short summary, ``detail`` the one-line message that says what is wrong and how
to fix it. Internal details go to the log with a correlation id, never to the
client.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import BackendError, YinxinError
from verify_api._request_id import current_request_id

__all__ = ["PROBLEM_JSON", "Problem", "install_problem_handlers", "problem_response", "problem_type"]

log = logging.getLogger("yinxin.api")

PROBLEM_JSON = "application/problem+json"

# Retry-After on a 503 (RFC 9110 §10.2.3): the key backend reconnects within this.
RETRY_AFTER_SECONDS = 5

_TITLES = {
    400: "Bad request",
    401: "Unauthorised",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorised",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "input_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def problem_type(code: str) -> str:
    return f"urn:yinxin:problem:{code}"


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem_type(code),
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _instance(request: Request) -> str:
    """The route template, not the raw path: paths can carry ID numbers and tokens (DESIGN §5.10)."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    return str(template) if template else "unmatched"


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _unavailable(request: Request, exc: YinxinError) -> JSONResponse:
    """503: the key backend or the database failed. The message names the database URL or the
    token and says how to repair it: that is for the operator's log. The client learns what is
    down, that retrying is safe, and the correlation id that finds the log line."""
    kind = "hsm" if isinstance(exc, BackendError) else "database"
    correlation = current_request_id() or uuid.uuid4().hex[:12]
    log.warning(
        "%s unavailable on %s %s (correlation id %s): %s",
        kind,
        request.method,
        _instance(request),
        correlation,
        exc.message,
    )
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.backend_error(kind)
    what = "the key backend (HSM)" if kind == "hsm" else "the database"
    return problem_response(
        503,
        exc.code,
        f"{what} is unavailable: retry in a few seconds (a licence issuance retried with the same "
        f"Idempotency-Key is issued at most once); if it persists, quote correlation id {correlation} "
        "to the operator",
        instance=_instance(request),
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        correlation_id=correlation,
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(YinxinError)
    async def _yinxin(request: Request, exc: YinxinError) -> JSONResponse:
        if exc.http_status == 503:  # the key backend or the database failed
            return _unavailable(request, exc)
        # A validation error's field list ({field, message} each, as a RequestValidationError's).
        errors = exc.details.get("errors")
        extra: dict[str, Any] = {"errors": errors} if isinstance(errors, list) else {}
        return problem_response(exc.http_status, exc.code, exc.message, instance=_instance(request), **extra)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.code, exc.detail, instance=_instance(request), headers=exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_path(tuple(e.get("loc", ()))), "message": str(e.get("msg", "invalid"))}
            for e in exc.errors()[:20]
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        detail = f"{first['field']}: {first['message']}"
        return problem_response(422, "invalid_input", detail, instance=_instance(request), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer when json.loads fails outright (e.g. RecursionError on 10 000 nested
            # arrays): a body that is not usable JSON, like every other malformed body, is a 422.
            return problem_response(
                422,
                "invalid_input",
                "the body is not a JSON document this service can read (malformed or nested too deeply)",
                instance=_instance(request),
            )
        code = _HTTP_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "error")
        return problem_response(
            exc.status_code, code, detail, instance=_instance(request), headers=dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        correlation = current_request_id() or uuid.uuid4().hex[:12]  # the X-Request-ID, when there is one
        log.exception(
            "internal error on %s %s (correlation id %s)", request.method, _instance(request), correlation
        )
        return problem_response(
            500,
            "internal_error",
            f"an internal error occurred; quote correlation id {correlation} to the operator",
            instance=_instance(request),
            correlation_id=correlation,
        )
