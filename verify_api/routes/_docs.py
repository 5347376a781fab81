"""OpenAPI descriptions of the problem+json error responses (RFC 9457), shared by the routes."""

from __future__ import annotations

from typing import Any

__all__ = ["PROBLEM_SCHEMA", "problem_responses"]

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "stable URN: urn:yinxin:problem:<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what is wrong and how to fix it"},
        "code": {"type": "string", "description": "stable machine code"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, malformed, expired or badly signed bearer token",
    403: "The token lacks the scope, or the licence belongs to another department",
    404: "No such licence (or list)",
    409: "Conflict: illegal status transition, or an Idempotency-Key reused with another body",
    413: "Request body over the size limit",
    414: "URI too long",
    415: "The body is not of the media type the route takes (PDF routes: application/pdf)",
    422: "The request failed validation: the detail names the field",
    429: "Rate limit exceeded; see Retry-After",
    503: "The database or the key backend is unavailable",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "description": _DESCRIPTIONS.get(status, "Error"),
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
