"""Attack matrix over every route of the HTTP API.

The routes come from the app's own OpenAPI document (``app.openapi()["paths"]``, plus the two
unlisted public pages ``/openapi.json`` and ``/docs``), so a new route is attacked without anyone
editing this file. A route is *protected* when its dependencies include ``require_scope`` (the
scope is read from the dependency); every other route must be one of the known public routes
(``PUBLIC``), and a test fails the day an unlisted route appears without a scope.

One world is built per module (SQLite in a temporary file, software keystore, real OAuth tokens):
two departments, each with a licence key, a seal and a client holding every scope; the first
client is bound to a security officer. Rate limits are set far out of reach, so no answer is a 429
that hides another one.

Every answer must be below 500, within the expected statuses, and free of stack traces, SQL and
file paths. Error answers are ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and ``code`` — except where another shape is the documented contract: the token
endpoint answers 400/401 with RFC 6749 §5.2 OAuth errors, and the verification page ``/v/…``
answers with HTML. After the whole matrix the audit chain still verifies and no licence,
department, key, client, seal, officer or approval request was created, and the licence the
attacks aimed at is still valid.

Test counts per category (36 operations for the current app: 23 protected, 13 public):

* authentication — no credentials, expired token, token signed by a foreign key under the
  service key's kid, malformed header — on every operation: 144
* authorisation / scope — a token holding every scope but the route's: 23
* department boundary — a full-scope token of another department: 23
* injection into path parameters — two SQL, three traversal, NUL, 10 000 characters — on
  every path parameter: 133
* injection into query parameters, the same seven payloads: 70
* body size and shape — over the limit on every operation (64 KiB; 20 MiB on the PDF routes),
  and on the 12 that take a body 10 000 levels of nesting, not JSON, empty; plus a PDF route
  taking more than 64 KiB: 74
* content type — the route's good body under four wrong media types: 48
* wrong method on every path: 35
* public routes — junk on each public route, and no unscoped route outside ``PUBLIC``: 15
* invariants after the matrix — audit chain, nothing created, the target untouched: 1

Three production bugs this matrix found (raw path in the 413 ``instance``, 400 for deeply nested
JSON, sealing that ignored Content-Type) are fixed; their cases pass.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hsm import SignatureAlgorithm, SoftwareBackend
from schemas import load_licence_types
from signing._access_token import sign_access_token
from tests._pdf import simple_pdf
from tests.verify_api._api_support import bearer_tokens
from tests.verify_api._presentation_support import SettableClock
from vault import CLIENT_SCOPES, Database, Vault
from vault._access_tokens import ensure_service_key
from vault._clients import ClientRegistry
from vault._models import (
    ApiClientRecord,
    ApprovalRequestRecord,
    DepartmentRecord,
    KeyRecord,
    LicenceRecord,
    OfficerRecord,
    SealRecord,
)
from vault._status_publisher import ensure_status_list_key
from verify_api.app import create_app
from verify_api.settings import Settings

MARKET: Final = "11110101000000123B"
HEALTH: Final = "11110101000000456Q"
BUSINESS: Final = "11100000000013101Q001"
PROBLEM_JSON: Final = "application/problem+json"
JSON: Final = "application/json"
PDF: Final = "application/pdf"
FORM: Final = "application/x-www-form-urlencoded"
MAX_BODY: Final = 64 * 1024
MAX_PDF: Final = 20 * 1024 * 1024

# What an attack may get back. 200/201 only where a route says so (public answers, cross-department
# reads, free-text parameters taken as text).
ERRORS: Final = frozenset({401, 403, 404, 405, 413, 415, 422, 429})

# Never in an answer: traces, SQL, driver names, server paths, the file a traversal aims at.
LEAKS: Final = (
    "Traceback",
    'File "',
    "site-packages",
    "/work/",
    "sqlalchemy",
    "sqlite3",
    "psycopg",
    "OperationalError",
    "ProgrammingError",
    "IntegrityError",
    "SELECT ",
    "INSERT INTO",
    "UPDATE licences",
    "root:x:0:0",
)

TOKEN_URL: Final = "/v1/oauth/token"
PAGE_PATH: Final = "/v/{token}"

# Public routes and their answer to a harmless request without credentials.
PUBLIC: Final[dict[str, int]] = {
    "GET /healthz": 200,
    "GET /readyz": 200,
    "GET /metrics": 200,
    f"POST {TOKEN_URL}": 401,  # no client credentials: invalid_client (RFC 6749 §5.2)
    "POST /v1/pdf/verify": 200,
    "GET /v1/ca/root.pem": 200,
    "GET /v1/ca/crl": 200,
    "POST /v1/verify": 200,
    "GET /v1/status-lists/{name}": 200,
    "GET /.well-known/jwks.json": 200,
    f"GET {PAGE_PATH}": 200,
    "GET /openapi.json": 200,
    "GET /docs": 200,
}

# Reads any department holding licence:read may make (looking a licence up for a stated purpose).
CROSS_DEPARTMENT_READS: Final = frozenset(
    {
        "GET /v1/licences/{identifier}",
        "GET /v1/holders/{id_type}/{holder_id}/licences",
        "GET /v1/licences/{identifier}/qr.png",
        "GET /v1/licences/{identifier}/qr.svg",
    }
)

# (label, URL fragment): each goes into the URL as is, so the pre-encoded ones stay encoded.
PAYLOADS: Final = (
    ("sql-or", quote("' OR '1'='1", safe="")),
    ("sql-drop", quote("1; DROP TABLE licences;--", safe="")),
    ("traversal", quote("../../etc/passwd", safe="")),
    ("encoded-traversal", "%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
    ("half-encoded-traversal", "..%2f..%2fetc%2fpasswd"),
    ("nul", "abc%00def"),
    ("overlong", "A" * 10_000),
)


# ---- the routes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the OpenAPI template
    scope: str | None  # None: public
    path_params: tuple[str, ...] = ()
    query_params: tuple[tuple[str, dict[str, Any], bool], ...] = ()  # name, schema, required
    body_media: str | None = None
    body_required: bool = False

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def oauth(self) -> bool:
        return self.path == TOKEN_URL

    @property
    def page(self) -> bool:
        return self.path == PAGE_PATH


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """The app's API routes; FastAPI keeps included routers' routes behind a wrapper."""
    for route in app.routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "effective_route_contexts"):  # fastapi.routing._IncludedRouter
            yield from route.effective_route_contexts()


def _scope_of(route: Any) -> str | None:
    """The scope a route's ``require_scope`` dependency demands (its name says which), or the one
    a route that checks its caller itself is marked with (``verify_api.auth.authorises``)."""
    marked = getattr(route.endpoint, "required_scope", None)
    if marked is not None:
        assert marked in CLIENT_SCOPES, route.path
        return str(marked)
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        name = getattr(dependency.call, "__name__", "")
        if name.startswith("require_scope_"):
            scope = name.removeprefix("require_scope_").replace("_", ":", 1)
            assert scope in CLIENT_SCOPES, name
            return scope
        pending.extend(dependency.dependencies)
    return None


def _operations() -> list[Operation]:
    app = create_app(Settings(home=Path("unused")))  # nothing is opened before the app starts
    routes = {(method, route.path_format): route for route in _api_routes(app) for method in route.methods}
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method, spec in operations.items():
            route = routes[(method.upper(), path)]
            params = spec.get("parameters", [])
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    scope=_scope_of(route),
                    path_params=tuple(p["name"] for p in params if p["in"] == "path"),
                    query_params=tuple(
                        (p["name"], p.get("schema", {}), bool(p.get("required")))
                        for p in params
                        if p["in"] == "query"
                    ),
                    body_media=next(iter(spec.get("requestBody", {}).get("content", {})), None),
                    body_required=bool(spec.get("requestBody", {}).get("required")),
                )
            )
    # Served by the app but kept out of its own document.
    found += [Operation("GET", "/openapi.json", None), Operation("GET", "/docs", None)]
    return found


OPERATIONS: Final = _operations()
TEMPLATES: Final = {op.path for op in OPERATIONS} | {"unmatched", "/v/{token:path}"}
PROTECTED: Final = [op for op in OPERATIONS if op.scope is not None]
WITH_BODY: Final = [op for op in OPERATIONS if op.body_media is not None]
PATH_CASES: Final = [(op, name) for op in OPERATIONS for name in op.path_params]
QUERY_CASES: Final = [(op, name, schema) for op in OPERATIONS for name, schema, _ in op.query_params]


def _ids(ops: list[Operation]) -> list[str]:
    return [op.id for op in ops]


# ---- the world -------------------------------------------------------------------------------


@dataclass
class World:
    api: TestClient
    vault: Vault
    tokens: dict[str, str]
    values: dict[str, str]  # plausible path parameter values
    identifier: str
    counts: dict[str, int] = field(default_factory=dict)

    def url(
        self, op: Operation, *, path: dict[str, str] | None = None, query: dict[str, str] | None = None
    ) -> str:
        """The operation's URL: path parameters plausible unless given (as URL fragments), required
        query parameters filled in, *query* (fragments too) added."""
        url = op.path
        for name in op.path_params:
            fragment = (path or {}).get(name, quote(self.values.get(name, "1"), safe=""))
            url = url.replace("{" + name + "}", fragment)
        params = {name: quote("用证核查", safe="") for name, _, required in op.query_params if required}
        params.update(query or {})
        if params:
            url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        return url

    def body(self, op: Operation) -> tuple[bytes | None, dict[str, str]]:
        """A good body for the operation, and its Content-Type header."""
        if op.body_media is None:
            return None, {}
        if op.body_media == PDF:
            return simple_pdf(), {"Content-Type": PDF}
        if op.body_media == FORM:
            return b"grant_type=client_credentials", {"Content-Type": FORM}
        good: dict[str, Any] = GOOD_BODIES.get(op.id, {})
        if op.id == "POST /v1/licences":
            good = json.loads(json.dumps(load_licence_types().get(BUSINESS).example))
        elif op.id == "POST /v1/approvals":
            good = {"operation": "key.destroy", "params": {"kid": self.values["kid"]}}
        return json.dumps(good).encode(), {"Content-Type": JSON}

    def send(
        self,
        op: Operation,
        *,
        who: str | None = None,
        authorization: str | None = None,
        url: str | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        method: str | None = None,
    ) -> httpx.Response:
        good, headers = self.body(op)
        if content is None:
            content = good
        if content_type is not None:
            headers = {"Content-Type": content_type}
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        if authorization is not None:
            headers["Authorization"] = authorization
        response: httpx.Response = self.api.request(
            method or op.method, url or self.url(op), content=content, headers=headers
        )
        return response


GOOD_BODIES: Final[dict[str, dict[str, Any]]] = {
    "POST /v1/licences/{identifier}/suspend": {"reason": "attack matrix"},
    "POST /v1/licences/{identifier}/revoke": {"reason": "attack matrix"},
    "POST /v1/licences/{identifier}/reinstate": {"reason": "attack matrix"},
    "POST /v1/verify": {"token": "not.a.token"},
    "POST /v1/keys/rotate": {"department": MARKET},
    "POST /v1/approvals/{request_id}/approve": {"comment": "attack matrix"},
    "POST /v1/approvals/{request_id}/reject": {"reason": "attack matrix"},
}


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def _header(token: str) -> dict[str, Any]:
    header = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    return decoded


def _counts(vault: Vault) -> dict[str, int]:
    records = {
        "licences": LicenceRecord,
        "departments": DepartmentRecord,
        "keys": KeyRecord,
        "clients": ApiClientRecord,
        "seals": SealRecord,
        "officers": OfficerRecord,
        "approvals": ApprovalRequestRecord,
    }
    with vault.db.read() as s:
        return {name: int(s.scalar(select(func.count()).select_from(r)) or 0) for name, r in records.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("attacks")
    backend = SoftwareBackend(tmp / "keystore", b"attack-test")
    vault = Vault(
        Database(f"sqlite:///{tmp / 'yinxin.db'}"), backend, load_licence_types(), clock=SettableClock()
    )
    vault.initialise(actor="test")
    ensure_service_key(vault, actor="test")
    ensure_status_list_key(vault)
    vault.add_department(MARKET, "北京市东城区市场监督管理局", actor="test")
    vault.add_department(HEALTH, "北京市东城区卫生健康委员会", actor="test")
    licence_key = vault.generate_key(MARKET, SignatureAlgorithm.ES256, actor="test")
    vault.generate_key(HEALTH, SignatureAlgorithm.ES256, actor="test")
    vault.seals.init_ca(actor="test")
    seal = vault.seals.create(MARKET, "北京市东城区市场监督管理局行政审批专用章", actor="test")
    vault.seals.create(HEALTH, "北京市东城区卫生健康委员会公章", actor="test")
    registry = ClientRegistry(vault)
    every = " ".join(sorted(CLIENT_SCOPES))
    market = registry.add(MARKET, every, actor="test")
    other = registry.add(HEALTH, every, actor="test")
    vault.add_officer(
        "alice", "security-officer", password=None, client_id=market.client_id, acting=None, actor="test"
    )
    settings = Settings(
        home=tmp / "home",
        public_url="http://127.0.0.1:8000",
        verify_rate_per_minute=100_000,
        verify_burst=10_000,
        token_rate_per_minute=100_000,
        token_burst=10_000,
    )
    app = create_app(settings, vault=vault)
    with TestClient(app) as api:
        tokens = bearer_tokens(api, {"market": market, "other": other})
        for scope in sorted(CLIENT_SCOPES):
            r = api.post(
                TOKEN_URL,
                data={"grant_type": "client_credentials", "scope": " ".join(sorted(CLIENT_SCOPES - {scope}))},
                auth=(market.client_id, market.client_secret),
            )
            assert r.status_code == 200, r.text
            tokens[f"without:{scope}"] = r.json()["access_token"]
        # An expired token, signed by the real service key ...
        claims = _claims(tokens["market"])
        service_kid = _header(tokens["market"])["kid"]
        now = int(vault.clock().timestamp())
        expired = {**claims, "iat": now - 7200, "exp": now - 3600}
        tokens["expired"] = sign_access_token(backend, backend.get_key(service_kid), expired)
        # ... and a good one signed by a stranger's key under the service key's kid.
        foreign_backend = SoftwareBackend(tmp / "foreign", b"foreign")
        foreign_key = foreign_backend.generate_key(SignatureAlgorithm.ES256, service_kid)
        tokens["foreign"] = sign_access_token(foreign_backend, foreign_key, claims)
        foreign_backend.close()

        example = json.loads(json.dumps(load_licence_types().get(BUSINESS).example))
        r = api.post("/v1/licences", json=example, headers={"Authorization": f"Bearer {tokens['market']}"})
        assert r.status_code == 201, r.text
        issued = r.json()
        status_uri = _claims(issued["token"])["status"]["status_list"]["uri"]
        values = {
            "identifier": issued["identifier"],
            "seal_id": seal.seal_id,
            "kid": licence_key.kid,
            "id_type": example["holder"]["id_type"],
            "holder_id": example["holder"]["id"],
            "name": status_uri.rsplit("/", 1)[1],
            "request_id": "1",
            "token": "not-a-presentation-token",
        }
        built = World(api, vault, tokens, values, issued["identifier"])
        built.counts = _counts(vault)
        yield built
    vault.close()
    backend.close()


# ---- what an answer must look like ---------------------------------------------------------


def check(op: Operation, r: httpx.Response, allowed: set[int] | frozenset[int]) -> dict[str, Any] | None:
    """Below 500, an allowed status, nothing leaked, errors in the route's documented shape;
    the problem document when there is one."""
    text = r.text
    assert r.status_code < 500, f"{op.id}: {r.status_code} {text[:500]}"
    assert r.status_code in allowed, f"{op.id}: {r.status_code} not in {sorted(allowed)}: {text[:500]}"
    for leak in LEAKS:
        assert leak not in text, f"{op.id}: the answer holds {leak!r}: {text[:500]}"
    if r.status_code < 400:
        return None
    content_type = r.headers.get("content-type", "")
    if op.oauth and r.status_code in (400, 401):
        # RFC 6749 §5.2, the documented shape of this one endpoint.
        assert content_type == JSON, content_type
        assert set(r.json()) == {"error", "error_description"}, text
        return None
    if op.page and content_type.startswith("text/html"):
        return None
    assert content_type.startswith(PROBLEM_JSON), f"{op.id}: {r.status_code} {content_type}: {text[:300]}"
    body: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body), body
    assert body["status"] == r.status_code, body
    assert body["type"] == f"urn:yinxin:problem:{body['code']}", body
    assert body["title"] and body["detail"], body
    # The route template, never the raw path: paths carry identifiers and ID numbers (DESIGN §5.10).
    assert body.get("instance", "unmatched") in TEMPLATES, f"{op.id}: instance {body.get('instance')!r}"
    return body


def public_allowed(op: Operation) -> set[int]:
    return {PUBLIC[op.id]} | set(ERRORS)


# ---- authentication --------------------------------------------------------------------------

AUTH_ATTACKS: Final = ("none", "expired", "foreign", "malformed")


@pytest.mark.parametrize("attack", AUTH_ATTACKS)
@pytest.mark.parametrize("op", OPERATIONS, ids=_ids(OPERATIONS))
def test_authentication(world: World, op: Operation, attack: str) -> None:
    if attack == "none":
        r = world.send(op)
    elif attack == "malformed":
        r = world.send(op, authorization="Bearer not a token")
    else:
        r = world.send(op, who=attack)
    if op.scope is None:
        # A public route ignores a bad bearer token (the token endpoint takes Basic only).
        assert r.status_code == PUBLIC[op.id], f"{op.id}: {r.status_code} {r.text[:300]}"
        check(op, r, public_allowed(op))
        return
    body = check(op, r, {401})
    assert body is not None and body["code"] in ("invalid_token", "unauthorised"), body
    reason = {"expired": "expired", "foreign": "signature"}.get(attack)
    if reason is not None:
        assert reason in body["detail"], body
    assert r.headers["www-authenticate"].startswith('Bearer realm="yinxin"'), r.headers


# ---- authorisation: scopes and departments ---------------------------------------------------


@pytest.mark.parametrize("op", PROTECTED, ids=_ids(PROTECTED))
def test_token_without_the_scope(world: World, op: Operation) -> None:
    r = world.send(op, who=f"without:{op.scope}")
    body = check(op, r, {403})
    assert body is not None and body["code"] == "insufficient_scope", body
    assert f'scope="{op.scope}"' in r.headers["www-authenticate"]


@pytest.mark.parametrize("op", PROTECTED, ids=_ids(PROTECTED))
def test_other_department(world: World, op: Operation) -> None:
    """A full-scope client of another department, aimed at this department's licence, seal, keys."""
    r = world.send(op, who="other")
    if op.id in CROSS_DEPARTMENT_READS:
        check(op, r, {200})
        return
    body = check(op, r, {403})
    assert body is not None and body["code"] in ("other_department", "permission_denied"), body


# ---- injection -------------------------------------------------------------------------------


@pytest.mark.parametrize("label,fragment", PAYLOADS, ids=[p[0] for p in PAYLOADS])
@pytest.mark.parametrize("op,name", PATH_CASES, ids=[f"{op.id}:{name}" for op, name in PATH_CASES])
def test_injection_in_path(world: World, op: Operation, name: str, label: str, fragment: str) -> None:
    r = world.send(op, who="market", url=world.url(op, path={name: fragment}))
    if op.page:
        # The page answers every code with HTML: "invalid", or 414 for a path over 2 KiB.
        check(op, r, {200, 404, 414})
        if r.status_code != 404:
            assert "无效 / Invalid" in r.text
        return
    check(op, r, ERRORS)


def _strict(schema: dict[str, Any]) -> bool:
    """A query parameter no payload can satisfy: a number, an enumeration."""
    options = schema.get("anyOf", [schema])
    return all(o.get("type") in ("integer", "number", "null") or "enum" in o for o in options)


@pytest.mark.parametrize("label,fragment", PAYLOADS, ids=[p[0] for p in PAYLOADS])
@pytest.mark.parametrize(
    "op,name,schema", QUERY_CASES, ids=[f"{op.id}:{name}" for op, name, _ in QUERY_CASES]
)
def test_injection_in_query(
    world: World, op: Operation, name: str, schema: dict[str, Any], label: str, fragment: str
) -> None:
    r = world.send(op, who="market", url=world.url(op, query={name: fragment}))
    limit = next((o.get("maxLength") for o in schema.get("anyOf", [schema]) if "maxLength" in o), None)
    if _strict(schema) or (label == "overlong" and limit is not None):
        check(op, r, {422})
        return
    # Free text (a purpose, a reason) is text: taken as such, or refused; never run.
    check(op, r, ERRORS | {200})
    if r.status_code == 200 and op.id == "GET /v1/licences/{identifier}":
        assert r.json()["identifier"] == world.identifier


# ---- bodies ----------------------------------------------------------------------------------

BODY_ATTACKS: Final = ("oversized", "nested", "not-json", "empty")


def _expected_for_body(op: Operation, attack: str) -> set[int]:
    if attack == "oversized":
        return {413}
    if attack == "empty" and not op.body_required:
        return set(ERRORS)  # no body is a good body here: the route's own answer
    if op.oauth:
        return {400, 401}  # a malformed form, or a Bearer token where Basic belongs
    if op.id in PUBLIC:
        return {200, 422}  # a PDF verifier's verdict on junk is "not a PDF"
    return {422}


# FastAPI parses JSON with json.loads; 10 000 levels raise RecursionError, which FastAPI answers
# as HTTPException(400) "There was an error parsing the body", not as a validation error.


# BodyLimitMiddleware answers a declared Content-Length over the limit itself, with
# ``instance=scope["path"]``: the raw path, where every other problem names the route template.


def _body_cases() -> Iterator[Any]:
    # Every operation gets an oversized body (the limit holds whatever the method); operations
    # that take a body get the malformed ones too.
    for op in OPERATIONS:
        for attack in BODY_ATTACKS if op.body_media is not None else ("oversized",):
            yield pytest.param(op, attack, id=f"{op.id}-{attack}")


@pytest.mark.parametrize("op,attack", list(_body_cases()))
def test_body(world: World, op: Operation, attack: str) -> None:
    media = op.body_media or JSON
    limit = MAX_PDF if media == PDF else MAX_BODY
    if attack == "oversized":
        content = b"%PDF-1.7\n" + b"0" * limit if media == PDF else b'{"x": "' + b"A" * limit + b'"}'
    elif attack == "nested":
        content = b"[" * 10_000 + b"]" * 10_000
    elif attack == "not-json":
        content = b"this is not JSON {'"
    else:
        content = b""
    r = world.send(op, who="market", content=content, content_type=media)
    check(op, r, _expected_for_body(op, attack))
    if op.id in PUBLIC and r.status_code == 200:
        assert r.json()["valid"] is False


PDF_OPS: Final = [op for op in WITH_BODY if op.body_media == PDF]


@pytest.mark.parametrize("op", PDF_OPS, ids=_ids(PDF_OPS))
def test_pdf_routes_take_more_than_the_json_limit(world: World, op: Operation) -> None:
    """PDF routes have their own limit (20 MiB): 64 KiB + 1 of junk is not refused for its size."""
    r = world.send(op, who="market", content=b"%PDF-1.7\n" + b"0" * MAX_BODY, content_type=PDF)
    check(op, r, {200, 422})


# ---- content types ---------------------------------------------------------------------------

WRONG_TYPES: Final = ("text/plain", "application/xml", "multipart/form-data; boundary=x", "image/png")


def _content_type_cases() -> Iterator[Any]:
    for op in WITH_BODY:
        for content_type in WRONG_TYPES:
            yield pytest.param(op, content_type, id=f"{op.id}-{content_type}")


@pytest.mark.parametrize("op,content_type", list(_content_type_cases()))
def test_wrong_content_type(world: World, op: Operation, content_type: str) -> None:
    r = world.send(op, who="market", content_type=content_type)
    if op.oauth:
        check(op, r, {400})
    elif op.id in PUBLIC:
        check(op, r, {200, 415, 422})
    else:
        check(op, r, {415, 422})


# ---- methods ---------------------------------------------------------------------------------

PATHS: Final = sorted({op.path for op in OPERATIONS})


@pytest.mark.parametrize("path", PATHS)
def test_wrong_method(world: World, path: str) -> None:
    ops = [op for op in OPERATIONS if op.path == path]
    op = ops[0]
    r = world.send(op, who="market", method="DELETE", content=b"")
    check(op, r, {405})


# ---- public routes ---------------------------------------------------------------------------


def test_every_unscoped_route_is_a_known_public_route() -> None:
    assert {op.id for op in OPERATIONS if op.scope is None} == set(PUBLIC)


def test_every_operation_that_reads_the_vault_documents_503() -> None:
    """The database or the key backend can be down for any route that touches them (tests/faults
    shows the 503s): a client generated from /openapi.json must be told so. Only liveness and the
    metrics page answer without either."""
    spec = create_app(Settings(home=Path("unused"))).openapi()
    missing = {
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if "503" not in operation.get("responses", {})
    }
    assert missing == {"GET /healthz", "GET /metrics"}


PUBLIC_JUNK: Final = [
    ("GET", "/v/eyJhbGciOiJub25lIn0.e30.", 200, "无效 / Invalid"),
    ("GET", "/v/" + "A" * 10_000, 414, "无效 / Invalid"),
    ("GET", "/v1/status-lists/..%2f..%2fetc%2fpasswd", 404, None),
    ("GET", "/v1/status-lists/' OR '1'='1", 404, None),
    ("GET", "/v1/status-lists/" + "A" * 10_000, 404, None),
    ("GET", "/healthz?x=' OR '1'='1", 200, None),
    ("GET", "/readyz?x=%00", 200, None),
    ("GET", "/metrics?name[]=../../etc/passwd", 200, None),
    ("GET", "/.well-known/jwks.json?kid=' OR '1'='1", 200, None),
    ("GET", "/v1/ca/root.pem?x=%00", 200, "BEGIN CERTIFICATE"),
    ("GET", "/v1/ca/crl?x=../../etc/passwd", 200, None),
    ("GET", "/openapi.json?x=%00", 200, None),
    ("GET", "/docs?x=<script>", 200, None),
]


@pytest.mark.parametrize("method,url,status,marker", PUBLIC_JUNK, ids=[u[:60] for _, u, _, _ in PUBLIC_JUNK])
def test_public_route_with_junk(world: World, method: str, url: str, status: int, marker: str | None) -> None:
    r = world.api.request(method, url)
    op = Operation(method, PAGE_PATH if url.startswith("/v/") else url.split("?")[0], None)
    check(op, r, {status})
    if marker is not None:
        assert marker in r.text
    assert "<script>" not in r.text


def test_public_verification_of_junk_is_an_answer(world: World) -> None:
    (op,) = [op for op in OPERATIONS if op.id == "POST /v1/verify"]
    for token in ("' OR '1'='1", "../../etc/passwd", "a\x00b", "x.y.z", "A" * 4000):
        r = world.api.post("/v1/verify", json={"token": token})
        check(op, r, {200, 422})
        if r.status_code == 200:
            assert r.json()["valid"] is False
    (token_op,) = [op for op in OPERATIONS if op.oauth]
    for form in (
        "grant_type=client_credentials&client_id=' OR '1'='1&client_secret=x",
        "grant_type=client_credentials&client_id=%00&client_secret=%00",
        "grant_type=../../etc/passwd",
    ):
        r = world.api.post(TOKEN_URL, content=form.encode(), headers={"Content-Type": FORM})
        check(token_op, r, {400, 401})


# ---- after the matrix ------------------------------------------------------------------------


def test_zz_after_the_matrix_nothing_changed(world: World) -> None:
    """Last in the module: the attacks above left the vault as they found it."""
    report = world.vault.verify_audit()
    assert report.ok, report
    assert _counts(world.vault) == world.counts
    r = world.api.post("/v1/verify", json={"token": world.vault.get(world.identifier).token})
    assert r.json()["valid"] is True, r.text
