"""``GET /docs``: the API reference as one self-contained HTML page, rendered from the OpenAPI document.

FastAPI's own ``/docs`` (Swagger UI) loads its scripts and styles from a CDN: a trust service does
not run third-party scripts, and the machines it runs on need not reach the internet. This page
has no script at all: operations by tag with their parameters, request bodies and responses, then
the schemas. Its CSP allows only its own stylesheet (by hash). ``/openapi.json`` stays the
machine-readable contract; the app factory turns FastAPI's ``/docs`` and ``/redoc`` off.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from verify_api.problems import Problem

__all__ = ["render_reference", "router"]

router = APIRouter()

_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "code,.m{font-family:ui-monospace,monospace}h3{margin-bottom:.2rem}"
    ".m{display:inline-block;min-width:4.5rem;font-weight:bold}"
    "table{border-collapse:collapse;margin:.3rem 0 1rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;"
    "text-align:left;vertical-align:top}article{border-top:1px solid #ddd;padding-top:.5rem}"
    ".d{color:#555}"
)
_CSP = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
    + "'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@router.get("/docs", include_in_schema=False)
def api_reference(request: Request) -> HTMLResponse:
    openapi_url = request.app.openapi_url
    if not openapi_url:
        raise Problem(404, "not_found", "the API reference is turned off")
    page = render_reference(request.app.openapi(), openapi_url)
    return HTMLResponse(page, headers={"Content-Security-Policy": _CSP})


def render_reference(spec: dict[str, Any], openapi_url: str) -> str:
    """The HTML page for an OpenAPI 3 document; every value from the document is escaped."""
    info = spec.get("info", {})
    title = escape(str(info.get("title", "API")))
    out = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}: API reference</title><style>{_STYLE}</style></head><body>",
        f"<h1>{title} <small>{escape(str(info.get('version', '')))}</small></h1>",
        f'<p class="d">{escape(str(info.get("description", "")))}</p>',
        f'<p>Machine-readable: <a href="{escape(openapi_url)}">{escape(openapi_url)}</a> '
        f"(OpenAPI {escape(str(spec.get('openapi', '')))}).</p>",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in spec.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is not None:
                tag = (operation.get("tags") or ["other"])[0]
                by_tag.setdefault(str(tag), []).append((method.upper(), path, operation))
    out.append("<nav><ul>")
    out.extend(f'<li><a href="#tag-{_anchor(tag)}">{escape(tag)}</a></li>' for tag in by_tag)
    out.append('<li><a href="#schemas">schemas</a></li></ul></nav>')
    for tag, operations in by_tag.items():
        out.append(f'<h2 id="tag-{_anchor(tag)}">{escape(tag)}</h2>')
        for method, path, operation in operations:
            out.extend(_operation(method, path, operation))
    out.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        out.extend(_schema(name, schema))
    out.append("</body></html>")
    return "\n".join(out)


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    anchor = _anchor(str(op.get("operationId", f"{method}-{path}")))
    out = [
        f'<article id="op-{anchor}"><h3><span class="m">{method}</span> <code>{escape(path)}</code></h3>',
        f"<p>{escape(str(op.get('summary', '')))}</p>",
    ]
    if op.get("description"):
        out.append(f'<p class="d">{escape(str(op["description"]))}</p>')
    security = [name for requirement in op.get("security", []) for name in requirement]
    if security:
        out.append(f"<p>Authorisation: {escape(', '.join(security))}</p>")
    parameters = op.get("parameters", [])
    if parameters:
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>")
        for p in parameters:
            required = " (required)" if p.get("required") else ""
            out.append(
                f"<tr><td><code>{escape(str(p.get('name', '')))}</code>{required}</td>"
                f"<td>{escape(str(p.get('in', '')))}</td><td>{_type(p.get('schema', {}))}</td>"
                f"<td>{escape(str(p.get('description', '')))}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            out.append(
                f"<p>Request body <code>{escape(media)}</code>: {_type(content.get('schema', {}))}</p>"
            )
    out.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
    for status, response in op.get("responses", {}).items():
        bodies = ", ".join(
            f"<code>{escape(media)}</code> {_type(content.get('schema', {}))}"
            for media, content in response.get("content", {}).items()
        )
        out.append(
            f"<tr><td>{escape(str(status))}</td><td>{escape(str(response.get('description', '')))}</td>"
            f"<td>{bodies}</td></tr>"
        )
    out.append("</table></article>")
    return out


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f'<h3 id="schema-{_anchor(name)}"><code>{escape(name)}</code></h3>']
    if schema.get("description"):
        out.append(f'<p class="d">{escape(str(schema["description"]))}</p>')
    properties = schema.get("properties", {})
    if not properties:
        out.append(f"<p>{_type(schema)}</p>")
        return out
    required = set(schema.get("required", []))
    out.append("<table><tr><th>field</th><th>type</th><th>description</th></tr>")
    for field, sub in properties.items():
        mark = " (required)" if field in required else ""
        out.append(
            f"<tr><td><code>{escape(field)}</code>{mark}</td><td>{_type(sub)}</td>"
            f"<td>{escape(str(sub.get('description', sub.get('title', ''))))}</td></tr>"
        )
    out.append("</table>")
    return out


def _type(schema: Any, depth: int = 0) -> str:
    """A short, escaped, human reading of a JSON Schema (links for ``$ref``)."""
    if not isinstance(schema, dict) or depth > 4:
        return ""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#schema-{_anchor(name)}">{escape(name)}</a>'
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            joiner = " and " if combinator == "allOf" else " | "
            return joiner.join(_type(s, depth + 1) for s in schema[combinator])
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{escape(str(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{escape(str(schema['const']))}</code>"
    kind = schema.get("type", "any")
    if kind == "array":
        return "array of " + (_type(schema.get("items", {}), depth + 1) or "any")
    text = escape(str(kind))
    if "format" in schema:
        text += f" ({escape(str(schema['format']))})"
    if "pattern" in schema:
        text += f" matching <code>{escape(str(schema['pattern']))}</code>"
    return text


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)
