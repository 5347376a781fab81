"""The department API over HTTP (httpx TestClient), on SQLite and PostgreSQL.

Real vault, real software keystore, real OAuth client credentials: every
request carries a bearer token obtained from /v1/oauth/token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jws
from joserfc.jwk import KeySet

from hsm import SignatureAlgorithm, SoftwareBackend
from schemas import load_licence_types
from tests.verify_api._api_support import bearer_tokens
from tests.verify_api._presentation_support import SettableClock
from vault import Database, Vault
from vault._access_tokens import ensure_service_key
from vault._clients import ClientRegistry
from vault._status_publisher import ensure_status_list_key
from verify_api.app import create_app
from verify_api.settings import Settings

MARKET = "11110101000000123B"  # issues 个体工商户营业执照
HEALTH = "11110101000000456Q"  # issues 生育登记服务单 and the hygiene/medical licences
VERIFIER = "111101010000007896"  # 用证部门
BUSINESS = "11100000000013101Q001"
BIRTH = "11100000000013202H003"


@dataclass
class World:
    api: TestClient
    vault: Vault
    tokens: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def example(code: str) -> dict[str, Any]:
    return json.loads(json.dumps(load_licence_types().get(code).example))


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    backend = SoftwareBackend(tmp_path / "keystore", b"api-test")
    vault = Vault(Database(database_url), backend, load_licence_types(), clock=SettableClock())
    vault.initialise(actor="test")
    ensure_service_key(vault, actor="test")
    ensure_status_list_key(vault)
    for code, name in (
        (MARKET, "北京市东城区市场监督管理局"),
        (HEALTH, "北京市东城区卫生健康委员会"),
        (VERIFIER, "北京市东城区人力资源和社会保障局"),
    ):
        vault.add_department(code, name, actor="test")
    vault.generate_key(MARKET, SignatureAlgorithm.ES256, actor="test")
    vault.generate_key(HEALTH, SignatureAlgorithm.ES256, actor="test")
    registry = ClientRegistry(vault)
    clients = {
        "market": registry.add(MARKET, "licence:issue licence:read licence:manage", actor="test"),
        "health": registry.add(HEALTH, "licence:issue licence:read licence:manage", actor="test"),
        "verifier": registry.add(VERIFIER, "licence:read licence:verify", actor="test"),
    }
    app = create_app(Settings(home=tmp_path / "home", public_url="http://127.0.0.1:8000"), vault=vault)
    with TestClient(app) as api:
        tokens = bearer_tokens(api, clients)
        yield World(api, vault, tokens)
    vault.close()
    backend.close()


def assert_problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:yinxin:problem:{code}" and body["status"] == status and body["detail"]
    assert "Traceback" not in r.text
    return body


def issue(w: World, body: dict[str, Any], who: str = "market", **headers: str) -> Any:
    return w.api.post("/v1/licences", json=body, headers={**w.auth(who), **headers})


def test_issue_returns_201_with_links_and_a_token_any_jose_library_verifies(world: World) -> None:
    r = issue(world, example(BUSINESS))
    assert r.status_code == 201, r.text
    body = r.json()
    ident = body["identifier"]
    assert r.headers["location"] == f"/v1/licences/{ident}"
    assert body["status"] == "valid"
    links = body["links"]
    page = links.pop("verification_page")
    assert links == {
        "self": f"/v1/licences/{ident}",
        "qr_png": f"/v1/licences/{ident}/qr.png",
        "qr_svg": f"/v1/licences/{ident}/qr.svg",
        "access_log": f"/v1/licences/{ident}/access-log",
    }
    assert page.startswith("http://127.0.0.1:8000/v/")
    shown = world.api.get(page.removeprefix("http://127.0.0.1:8000"))
    assert shown.status_code == 200 and "有效 / Valid" in shown.text
    assert r.headers["cache-control"] == "no-store"
    jwks_doc = world.api.get("/.well-known/jwks.json").json()
    keyset = KeySet.import_key_set(
        {
            "keys": [
                {k: v for k, v in key.items() if k not in ("state", "purpose", "department")}
                for key in jwks_doc["keys"]
            ]
        }
    )
    claims = json.loads(jws.deserialize_compact(body["token"], keyset, algorithms=["ES256"]).payload)
    assert claims["jti"] == ident
    ref = claims["status"]["status_list"]
    assert ref["uri"].startswith("http://127.0.0.1:8000/v1/status-lists/") and isinstance(ref["idx"], int)


def test_idempotency_key_replays_and_conflicts(world: World) -> None:
    body = example(BUSINESS)
    first = issue(world, body, **{"Idempotency-Key": "req-1"})
    again = issue(world, body, **{"Idempotency-Key": "req-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["identifier"] == first.json()["identifier"]
    other = {**body, "holder": {**body["holder"], "name": "另一家店"}}
    assert_problem(issue(world, other, **{"Idempotency-Key": "req-1"}), 409, "idempotency_conflict")


def test_issue_reads_its_body_like_a_declared_body_parameter(world: World) -> None:
    """POST /v1/licences reads its own request (the write path's profile, benchmarks/README.md): the
    caller is checked first, the body is JSON only by its Content-Type and goes through the same
    strict parser as `yinxin issue-bulk`, and a bad Idempotency-Key is refused before any write."""
    before = world.vault.verify_audit().events_checked
    raw = json.dumps(example(BUSINESS)).encode()
    # No bearer token: 401, whatever the body.
    no_token = world.api.post("/v1/licences", content=b"{not json", headers={"Content-Type": "text/plain"})
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"].startswith("Bearer")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**world.auth("market"), **({"Content-Type": content_type} if content_type else {})}
        problem = assert_problem(
            world.api.post("/v1/licences", content=raw, headers=headers), 422, "invalid_input"
        )
        assert "Content-Type: application/json" in problem["detail"], problem
    json_headers = {**world.auth("market"), "Content-Type": "application/json"}
    # Duplicate member names: refused (the CLI's parser), not "last one wins".
    twice = raw[:-1] + b', "issuer": "11110101000000456Q"}'
    problem = assert_problem(
        world.api.post("/v1/licences", content=twice, headers=json_headers), 422, "invalid_input"
    )
    assert "issuer" in problem["detail"], problem
    missing = {**example(BUSINESS), "holder": {"id_type": "001", "id": example(BUSINESS)["holder"]["id"]}}
    problem = assert_problem(issue(world, missing), 422, "invalid_input")
    assert problem["detail"].startswith("holder.name: "), problem
    assert {"field": "holder.name", "message": "Field required"} in problem["errors"]
    for key in ("", "k" * 201):
        problem = assert_problem(
            issue(world, example(BUSINESS), **{"Idempotency-Key": key}), 422, "invalid_input"
        )
        assert "idempotency key must be 1-200 characters" in problem["detail"], problem
    assert world.vault.verify_audit().events_checked == before  # nothing was written
    # The answer is the documented LicencePublic, field for field, as JSON.
    r = issue(world, example(BUSINESS), **{"Idempotency-Key": "k" * 200})
    assert r.status_code == 201 and r.headers["content-type"] == "application/json", r.text
    assert list(r.json()) == [
        "identifier", "version", "status", "stored_status", "licence_type", "licence_type_name", "issuer",
        "issuer_name", "holder_name", "holder_id_type", "holder_id_masked", "valid_from", "valid_until",
        "issued_at", "kid", "data", "token", "links",
    ]  # fmt: skip


def test_openapi_documents_the_issuance_body_and_header(world: World) -> None:
    spec = world.api.get("/openapi.json").json()
    operation = spec["paths"]["/v1/licences"]["post"]
    assert operation["requestBody"]["required"] is True
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/LicenceCreate"}
    schemas = spec["components"]["schemas"]
    assert set(schemas["LicenceCreate"]["required"]) == {
        "licence_type",
        "issuer",
        "holder",
        "data",
        "valid_from",
    }
    assert schemas["LicenceCreate"]["additionalProperties"] is False
    (header,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header" and header["schema"]["maxLength"] == 200
    for status in ("200", "201"):
        answer = operation["responses"][status]["content"]["application/json"]["schema"]
        assert answer == {"$ref": "#/components/schemas/LicencePublic"}
    # Every reference in the document resolves (a client generator follows them all).
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert schemas["LicenceCreate"]["properties"]["holder"] == {"$ref": "#/components/schemas/HolderIn"}
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


def test_authorisation_rules(world: World) -> None:
    body = example(BUSINESS)
    r = world.api.post("/v1/licences", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = world.api.post("/v1/licences", json=body, headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    assert_problem(issue(world, body, who="verifier"), 403, "insufficient_scope")  # no licence:issue
    assert_problem(issue(world, body, who="health"), 403, "other_department")  # another department's issuer


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 422, "invalid_input"),
        (json.dumps({**example(BUSINESS), "surprise": 1}).encode(), 422, "invalid_input"),
        (json.dumps({**example(BUSINESS), "issuer": "123"}).encode(), 422, "invalid_input"),
        (json.dumps({**example(BUSINESS), "data": {"x": "y"}}).encode(), 422, "face_data_invalid"),
        (
            json.dumps({**example(BUSINESS), "licence_type": "11100000000013101Q999"}).encode(),
            422,
            "unknown_licence_type",
        ),
        (b'{"pad": "' + b"x" * 70_000 + b'"}', 413, "input_too_large"),
    ],
    ids=["malformed", "unknown-field", "bad-uscc", "face-data", "unknown-type", "too-large"],
)
def test_bad_bodies_are_problems_and_change_nothing(
    world: World, content: bytes, status: int, code: str
) -> None:
    before = world.vault.verify_audit().events_checked
    r = world.api.post(
        "/v1/licences", content=content, headers={**world.auth("market"), "Content-Type": "application/json"}
    )
    assert_problem(r, status, code)
    assert world.vault.verify_audit().events_checked == before


def test_look_up_requires_a_purpose_and_is_recorded(world: World) -> None:
    ident = issue(world, example(BUSINESS)).json()["identifier"]
    r = world.api.get(f"/v1/licences/{ident}", headers=world.auth("verifier"))
    assert_problem(r, 422, "invalid_input")
    r = world.api.get(
        f"/v1/licences/{ident}", params={"purpose": "办理食品经营许可"}, headers=world.auth("verifier")
    )
    assert r.status_code == 200 and r.json()["identifier"] == ident
    missing = ident[:-5] + "9.001"  # wrong check character: 422, not 404
    assert (
        world.api.get(
            f"/v1/licences/{missing}", params={"purpose": "x"}, headers=world.auth("verifier")
        ).status_code
        == 422
    )
    log = world.api.get(f"/v1/licences/{ident}/access-log", headers=world.auth("market"))
    assert log.status_code == 200
    entries = log.json()["entries"]
    assert [(e["department"], e["purpose"], e["action"]) for e in entries] == [
        (VERIFIER, "办理食品经营许可", "licence.read")
    ]
    # Only the issuing department sees who looked.
    assert_problem(
        world.api.get(f"/v1/licences/{ident}/access-log", headers=world.auth("health")),
        403,
        "other_department",
    )


def test_holder_look_up_for_zero_material_reuse(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = example(BIRTH)
    full_id = body["holder"]["id"]
    ident = issue(world, body, who="health").json()["identifier"]
    r = world.api.get(
        f"/v1/holders/111/{full_id}/licences",
        params={"purpose": "办理生育津贴"},
        headers=world.auth("verifier"),
    )
    assert r.status_code == 200, r.text
    found = r.json()
    assert [x["identifier"] for x in found["licences"]] == [ident]
    assert found["holder_id_masked"] == full_id[:3] + "*" * 11 + full_id[-4:]
    assert full_id not in r.text
    wrong = full_id[:-1] + ("0" if full_id[-1] != "0" else "1")
    bad = world.api.get(
        f"/v1/holders/111/{wrong}/licences", params={"purpose": "x"}, headers=world.auth("verifier")
    )
    assert_problem(bad, 422, "invalid_citizen_id")
    assert wrong not in bad.text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("yinxin"))
    assert ours and full_id not in ours and wrong not in ours


def test_status_changes_by_the_issuing_department_only(world: World) -> None:
    ident = issue(world, example(BUSINESS)).json()["identifier"]
    url = f"/v1/licences/{ident}"
    assert_problem(
        world.api.post(f"{url}/suspend", json={"reason": "核查"}, headers=world.auth("health")),
        403,
        "other_department",
    )
    r = world.api.post(f"{url}/suspend", json={"reason": "核查"}, headers=world.auth("market"))
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    assert (
        world.api.post(f"{url}/reinstate", json={"reason": "通过"}, headers=world.auth("market")).json()[
            "status"
        ]
        == "valid"
    )
    assert (
        world.api.post(f"{url}/revoke", json={"reason": "吊销"}, headers=world.auth("market")).json()[
            "status"
        ]
        == "revoked"
    )
    assert_problem(
        world.api.post(f"{url}/reinstate", json={"reason": "x"}, headers=world.auth("market")),
        409,
        "illegal_transition",
    )
    assert_problem(
        world.api.post(f"{url}/suspend", json={}, headers=world.auth("market")), 422, "invalid_input"
    )


def test_public_verify_follows_the_live_status(world: World) -> None:
    issued = issue(world, example(BUSINESS)).json()
    r = world.api.post("/v1/verify", json={"token": issued["token"]})
    assert r.status_code == 200
    verdict = r.json()
    assert (verdict["valid"], verdict["status"], verdict["reasons"]) == (True, "valid", [])
    assert verdict["licence"]["holder_id_masked"] and verdict["checked_at"].startswith("2026-11-23")
    world.api.post(
        f"/v1/licences/{issued['identifier']}/revoke",
        json={"reason": "违法经营"},
        headers=world.auth("market"),
    )
    verdict = world.api.post("/v1/verify", json={"token": issued["token"]}).json()
    assert (verdict["valid"], verdict["status"]) == (False, "revoked") and "违法经营" in verdict["reasons"][0]
    h, p, s = issued["token"].split(".")
    tampered = f"{h}.{p[:-2]}{'A' if p[-2] != 'A' else 'B'}{p[-1]}.{s}"
    verdict = world.api.post("/v1/verify", json={"token": tampered}).json()
    assert (verdict["valid"], verdict["status"]) == (False, "invalid")
    assert world.api.post("/v1/verify", json={"token": "garbage"}).json()["valid"] is False


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"[]",
        b'{"token": 123}',
        b'{"token": ""}',
        b'{"tok": "x"}',
        b'{"token": "x", "more": 1}',
        b"\xff\xfe",
        json.dumps({"token": "x" * 9000}).encode(),
    ],
)
def test_verify_garbage_is_422_never_500(world: World, content: bytes) -> None:
    r = world.api.post("/v1/verify", content=content, headers={"Content-Type": "application/json"})
    assert_problem(r, 422, "invalid_input")


def test_verify_reads_its_body_like_a_declared_body_parameter(world: World) -> None:
    """The verify route reads its body itself (the hot path); its answers to bad bodies name the
    field and the fix as every other route's do, and the body is JSON only by its Content-Type."""
    issued = issue(world, example(BUSINESS)).json()
    body = json.dumps({"token": issued["token"]}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        problem = assert_problem(
            world.api.post("/v1/verify", content=body, headers=headers), 422, "invalid_input"
        )
        assert "Content-Type: application/json" in problem["detail"], problem
    for content_type in ("application/json; charset=utf-8", "APPLICATION/JSON", "application/jose+json"):
        r = world.api.post("/v1/verify", content=body, headers={"Content-Type": content_type})
        assert r.status_code == 200 and r.json()["valid"] is True, (content_type, r.text)
    missing = assert_problem(world.api.post("/v1/verify", json={"tok": "x"}), 422, "invalid_input")
    assert missing["detail"].startswith("token: "), missing
    assert {e["field"] for e in missing["errors"]} == {"token", "tok"}
    wrong = assert_problem(world.api.post("/v1/verify", json={"token": 7}), 422, "invalid_input")
    assert wrong["errors"] == [{"field": "token", "message": "Input should be a valid string"}]
    malformed = world.api.post(
        "/v1/verify", content=b'{"token": "x"', headers={"Content-Type": "application/json"}
    )
    assert assert_problem(malformed, 422, "invalid_input")["detail"].startswith("body: ")
    # The answer is the documented VerifyResponse, field for field.
    verdict = world.api.post("/v1/verify", content=body, headers={"Content-Type": "application/json"})
    assert verdict.headers["content-type"] == "application/json"
    assert list(verdict.json()) == ["valid", "status", "reasons", "codes", "kid", "licence", "checked_at"]


def test_openapi_documents_the_verify_body_and_answer(world: World) -> None:
    operation = world.api.get("/openapi.json").json()["paths"]["/v1/verify"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert operation["requestBody"]["required"] is True
    assert schema["required"] == ["token"] and schema["additionalProperties"] is False
    assert schema["properties"]["token"]["type"] == "string"
    assert {"200", "413", "422", "429", "503"} <= operation["responses"].keys()
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/VerifyResponse"
    }


def test_trust_list_shows_keys_with_state(world: World) -> None:
    old = issue(world, example(BUSINESS)).json()
    world.vault.generate_key(MARKET, SignatureAlgorithm.EDDSA, actor="test")
    doc = world.api.get("/.well-known/jwks.json").json()
    by_kid = {k["kid"]: k for k in doc["keys"]}
    assert by_kid[old["kid"]]["state"] == "retired"
    assert {k["purpose"] for k in doc["keys"]} == {"licence-signing", "status-list"}
    assert all(k["use"] == "sig" and k["alg"] for k in doc["keys"])
    assert not any("d" in k for k in doc["keys"])  # public keys only
    # The retired key's token still verifies.
    assert world.api.post("/v1/verify", json={"token": old["token"]}).json()["valid"] is True


def test_openapi_documents_errors(world: World) -> None:
    spec = world.api.get("/openapi.json").json()
    responses = spec["paths"]["/v1/licences"]["post"]["responses"]
    assert {"201", "401", "403", "409", "413", "422"} <= responses.keys()
    assert "application/problem+json" in responses["422"]["content"]


def test_key_backend_failure_is_503_and_counted(world: World) -> None:
    world.vault.backend.close()  # the keystore is gone: signing fails
    r = issue(world, example(BUSINESS))
    assert_problem(r, 503, r.json()["code"])
    assert "Traceback" not in r.text
    metrics = world.api.get("/metrics").text
    assert 'yinxin_backend_errors_total{kind="hsm"} 1.0' in metrics


def test_token_endpoint_is_rate_limited_per_address(world: World) -> None:
    statuses = [
        world.api.post(
            "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("yx_0000000000000000", "wrong"),
        ).status_code
        for _ in range(25)
    ]
    assert statuses[0] == 401 and 429 in statuses
    limited = world.api.post(
        "/v1/oauth/token", data={"grant_type": "client_credentials"}, auth=("yx_0000000000000000", "wrong")
    )
    assert_problem(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
