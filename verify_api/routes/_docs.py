"""OpenAPI descriptions shared by the routes: the problem+json error responses (RFC 9457), and the
JSON bodies of routes that read their own body (the hot paths, which skip FastAPI's body solving)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

__all__ = ["PROBLEM_SCHEMA", "document_json_bodies", "json_body", "problem_responses"]

_COMPONENT = "#/components/schemas/{model}"
# The models that json_body() referred to, by name: document_json_bodies() adds their schemas.
_BODY_MODELS: dict[str, type[BaseModel]] = {}

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


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads and validates its own JSON body as *model*.

    The operation refers to the model by name, as it would for a declared body parameter; the
    app's OpenAPI document gets the schema (and those of the models it uses) from
    :func:`document_json_bodies`.
    """
    known = _BODY_MODELS.setdefault(model.__name__, model)
    if known is not model:
        raise ValueError(f"two request body models are named {model.__name__}")
    schema = {"$ref": _COMPONENT.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def document_json_bodies(app: FastAPI) -> None:
    """Make *app*'s OpenAPI document hold the schemas that :func:`json_body` operations refer to."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()  # FastAPI's document, which it also keeps as app.openapi_schema
            _, found = models_json_schema(
                [(model, "validation") for model in _BODY_MODELS.values()], ref_template=_COMPONENT
            )
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in found.get("$defs", {}).items():
                if schemas.setdefault(name, schema) != schema:
                    app.openapi_schema = None
                    raise ValueError(f"two different schemas are named {name} in the OpenAPI document")
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
