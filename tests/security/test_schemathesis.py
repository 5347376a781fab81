"""Bad inputs tried (issue 6): schemathesis against the app's own ``/openapi.json``.

Every operation of the document (34) gets generated requests — valid ones and deliberately
invalid ones (schemathesis's positive and negative modes), the schema's boundary values (the
coverage phase) and its examples — sent in-process to the ASGI app. Every answer must be below
500 and carry a status code, a media type, headers and a body the document declares for that
operation (checks not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance, response_headers_conformance).

Requests carry a real bearer token holding every scope (the market department's client, acting
for a security officer), so protected operations are exercised past authentication; a share of
the generated path parameters and bodies is replaced by real ones (licence identifiers, seal IDs,
kids, approval numbers, status list names, presentation tokens, issuance requests, PDFs), so
requests also reach the code that handles existing objects. A second, smaller run sends no token
at all, and a stateful run chains calls along the links schemathesis infers from the document
(the document declares none; inference finds the licence and approval flows).

``YINXIN_FUZZ_EXAMPLES`` sets the examples per operation: 100 by default (CI), 1000 for
``make fuzz``. Generation is derandomised (a fixed seed, derived per operation) and Hypothesis
keeps no example database, so a CI failure reproduces locally and nothing is written into the
repository. The world is SQLite and the software keystore (see ``_schemathesis_support``).

What the run found is fixed; the regression tests at the end replay each case as a plain request
and put the answer through the same checks:

* the QR routes documented FastAPI's application/json 422 but answer problem+json;
* the verification page did not document the router's 404 for a path with a line break;
* bodies over the limit (which the generator never makes, hence a test of its own) answer 413
  on eight operations that did not document it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from schemathesis import Case, HookContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security._schemathesis_support import FuzzWorld, fuzz_examples, fuzz_world
from verify_api.app import create_app
from verify_api.settings import Settings

CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SEED: Final = 20261123
PROBLEM_JSON: Final = "application/problem+json"
MAX_BODY_BYTES: Final = 64 * 1024  # Settings.max_body_bytes, the default
MAX_PDF_BYTES: Final = 20 * 1024 * 1024  # Settings.max_pdf_bytes, the default

# The PDF routes take the document itself as the body (not multipart): bytes, as they are.
schemathesis.serializer.alias("application/pdf", "application/octet-stream")


def _config(max_examples: int, *, stateful: bool = False) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            "generation": {
                "max-examples": max_examples,
                "deterministic": True,
                "database": "none",
                "mode": "all",  # positive and negative: valid requests and deliberately bad ones
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                # Stateful runs infer OpenAPI links from the document (dependency analysis).
                "stateful": {"enabled": stateful},
            },
        }
    )


# What /openapi.json serves: FastAPI answers it with app.openapi(), which needs no vault, so the
# schema (and one pytest item per operation) exists at collection; the world the requests go to
# is built by the fixture below. test_the_document_is_the_served_one checks they are the same.
DOCUMENT: Final = create_app(Settings(home=Path("unused"))).openapi()

# The world of the running module, for the seeding hooks (they run while examples are drawn).
_CURRENT: dict[str, FuzzWorld] = {}


def _schema(max_examples: int, *, stateful: bool = False) -> BaseSchema:
    config = _config(max_examples, stateful=stateful)
    schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT), config=config)

    @schema.hook
    def before_generate_path_parameters(
        context: HookContext, strategy: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[Any]:
        world, operation = _CURRENT.get("world"), context.operation
        if world is None or operation is None:
            return strategy
        names = sorted(p.name for p in operation.path_parameters)
        if names == ["holder_id", "id_type"]:
            pairs = zip(world.path_values["id_type"], world.path_values["holder_id"], strict=True)
            seeds: list[dict[str, Any]] = [{"id_type": t, "holder_id": h} for t, h in pairs]
        elif len(names) == 1:
            seeds = [{names[0]: value} for value in world.path_values[names[0]]]
        else:
            return strategy
        return strategy | st.sampled_from(seeds)

    @schema.hook
    def before_generate_body(
        context: HookContext, strategy: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[Any]:
        world, operation = _CURRENT.get("world"), context.operation
        seeds = world.bodies.get(operation.label) if world is not None and operation is not None else None
        if not seeds:
            return strategy
        return strategy | st.sampled_from(seeds)

    return schema


authorised = _schema(fuzz_examples())
anonymous = _schema(max(10, fuzz_examples() // 10))
workflows = _schema(fuzz_examples(), stateful=True)  # its own copy: link inference writes into the document


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzWorld]:
    with fuzz_world(tmp_path_factory.mktemp("schemathesis")) as built:
        _CURRENT["world"] = built
        try:
            yield built
        finally:
            _CURRENT.clear()


@pytest.fixture(scope="module")
def api(world: FuzzWorld) -> Iterator[TestClient]:
    with TestClient(world.app) as client:
        yield client


# ---- the generated requests --------------------------------------------------------------


@authorised.parametrize()
def test_every_operation_with_every_scope(case: Case[Any], world: FuzzWorld) -> None:
    case.call_and_validate(app=world.app, headers=world.headers, checks=CHECKS)


@anonymous.parametrize()
def test_every_operation_without_a_token(case: Case[Any], world: FuzzWorld) -> None:
    case.call_and_validate(app=world.app, checks=CHECKS)


def test_workflows_along_the_links(world: FuzzWorld) -> None:
    """Stateful: sequences of calls, each feeding the next one through the links schemathesis
    infers from the document (POST /v1/licences -> GET /v1/licences/{identifier}, -> suspend /
    revoke / reinstate, -> access log and QR codes; POST /v1/approvals -> GET /v1/approvals/{id}).

    The vault lives on across scenarios (as a real service's does), so replaying a scenario can
    take another path: Hypothesis then stops with ``Flaky``. Like schemathesis's own runner, that
    ends a round without a verdict rather than failing; the rounds go on until enough scenarios ran.
    """
    machine = workflows.as_state_machine()
    links = [
        f"{method.upper()} {path} -> {name}"
        for path, operations in workflows.raw_schema["paths"].items()
        for method, spec in operations.items()
        for response in spec.get("responses", {}).values()
        for name in response.get("links", {})
    ]
    assert links, "no links inferred: nothing for the stateful run to follow"
    scenarios = 0
    failures: list[FailureGroup] = []

    class Workflow(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            nonlocal scenarios
            scenarios += 1

        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"app": world.app, "headers": world.headers}

        def validate_response(
            self, response: Response, case: Case[Any], additional_checks: Any = None, **kwargs: Any
        ) -> None:
            try:
                case.validate_response(
                    response, checks=CHECKS, headers=world.headers, transport_kwargs=kwargs
                )
            except FailureGroup as exc:
                failures.append(exc)
                raise

    wanted = max(10, fuzz_examples() // 5)
    for _ in range(10):
        try:
            Workflow.run(
                settings=settings(
                    max_examples=wanted - scenarios,
                    stateful_step_count=6,
                    phases=[Phase.generate],  # no shrinking against a vault that has moved on
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
            )
        except Flaky:
            if failures:
                raise failures[0] from None
        if scenarios >= wanted:
            break
    assert not failures
    assert scenarios >= wanted, f"only {scenarios} of {wanted} scenarios ran"


def test_the_document_is_the_served_one(api: TestClient) -> None:
    """The fuzzed document is the one GET /openapi.json serves (built without a vault above)."""
    r = api.get("/openapi.json")
    assert r.status_code == 200
    assert r.json() == DOCUMENT


# ---- regressions: what the run found, as plain requests -------------------------------------------


def _validate(label: str, response: httpx.Response, **case: Any) -> None:
    """The schemathesis checks, on an answer to a request sent by hand."""
    authorised.find_operation_by_label(label).Case(**case).validate_response(  # type: ignore[union-attr]
        response, checks=CHECKS
    )


@pytest.mark.parametrize("extension", ["png", "svg"])
def test_qr_code_of_an_overlong_identifier(api: TestClient, world: FuzzWorld, extension: str) -> None:
    """Found: the QR routes answered their 422 as problem+json (as every route does) while their
    document promised FastAPI's application/json validation error; they now document problem+json
    for 401, 403, 404, 409 and 422."""
    identifier = "0" * 129
    r = api.get(f"/v1/licences/{identifier}/qr.{extension}", headers=world.headers)
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM_JSON
    _validate(
        f"GET /v1/licences/{{identifier}}/qr.{extension}", r, path_parameters={"identifier": identifier}
    )


def test_verification_page_path_with_a_line_break(api: TestClient) -> None:
    """Found: /v/ followed by a token with a line break (%0A) is not matched by the page's path
    pattern, and the router's 404 was not in the page's document; now it is."""
    token = "M<\u00bc\u00f8B\u0095\x1b\u0086g\u00f7\u00a8\n(\U000fbeff3"
    r = api.get("/v/" + quote(token, safe=""))
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM_JSON
    _validate("GET /v/{token}", r, path_parameters={"token": token})


BODY_OPERATIONS: Final = [
    (method.upper(), path, next(iter(spec["requestBody"]["content"])))
    for path, operations in DOCUMENT["paths"].items()
    for method, spec in operations.items()
    if "requestBody" in spec
]


@pytest.mark.parametrize(
    "method,path,media_type", BODY_OPERATIONS, ids=[f"{m} {p}" for m, p, _ in BODY_OPERATIONS]
)
def test_body_over_the_limit_is_a_documented_413(
    api: TestClient, world: FuzzWorld, method: str, path: str, media_type: str
) -> None:
    """Found (by sending what the generator never makes, a body over the limit): the token
    endpoint, suspend / revoke / reinstate, key rotation and the approval routes answered 413
    problem+json without documenting it."""
    limit = MAX_PDF_BYTES if media_type == "application/pdf" else MAX_BODY_BYTES
    values = {name: str(found[0]) for name, found in world.path_values.items()}
    url = path.format(**{name: quote(value, safe="") for name, value in values.items()})
    headers = {**world.headers, "Content-Type": media_type}
    r = api.request(method, url, content=b"a" * (limit + 1), headers=headers)
    assert r.status_code == 413, r.text
    params = {name: values[name] for name in re.findall(r"{(\w+)}", path)}
    _validate(f"{method} {path}", r, path_parameters=params)
