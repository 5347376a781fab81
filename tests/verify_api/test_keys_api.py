"""Key management over HTTP (scope keys:manage), on SQLite and PostgreSQL: the key inventory, rotation,
dual control (四眼原则) between two API clients bound to two security officers, audit checkpoints.

Real vault, real software keystore, real OAuth client-credential tokens; tokens and checkpoints are
checked with joserfc against the published public keys.
"""

from __future__ import annotations

import base64
import json
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
from vault import Database, NewClient, Vault
from vault._access_tokens import ensure_service_key
from vault._clients import ClientRegistry
from vault._status_publisher import ensure_status_list_key
from verify_api.app import create_app
from verify_api.settings import Settings

MARKET = "11110101000000123B"
BUSINESS = "11100000000013101Q001"
SINCE = "2026-11-20T08:00+08:00"


@dataclass
class World:
    api: TestClient
    vault: Vault
    tokens: dict[str, str]
    clients: dict[str, NewClient]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, path: str, who: str = "alice") -> Any:
        return self.api.get(path, headers=self.auth(who))

    def post(self, path: str, body: Any = None, who: str = "alice") -> Any:
        return self.api.post(path, json=body, headers=self.auth(who))

    def issue(self) -> dict[str, Any]:
        example = json.loads(json.dumps(load_licence_types().get(BUSINESS).example))
        r = self.post("/v1/licences", example, who="issuer")
        assert r.status_code == 201, r.text
        issued: dict[str, Any] = r.json()
        return issued

    def verify(self, token: str) -> dict[str, Any]:
        r = self.api.post("/v1/verify", json={"token": token})
        assert r.status_code == 200, r.text
        verdict: dict[str, Any] = r.json()
        return verdict

    def dual(self, operation: str, params: dict[str, str]) -> dict[str, Any]:
        """alice requests, bob approves; the executed request."""
        r = self.post("/v1/approvals", {"operation": operation, "params": params})
        assert r.status_code == 201, r.text
        r = self.post(f"/v1/approvals/{r.json()['id']}/approve", who="bob")
        assert r.status_code == 200 and r.json()["state"] == "executed", r.text
        done: dict[str, Any] = r.json()
        return done

    def active_key(self, purpose: str) -> str:
        (kid,) = [
            k["kid"] for k in self.get("/v1/keys").json() if (k["purpose"], k["state"]) == (purpose, "active")
        ]
        return str(kid)

    def licence_key(self) -> str:
        return self.active_key("licence-signing")


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    backend = SoftwareBackend(tmp_path / "keystore", b"api-test")
    vault = Vault(Database(database_url), backend, load_licence_types(), clock=SettableClock())
    vault.initialise(actor="test")
    ensure_service_key(vault, actor="test")
    ensure_status_list_key(vault)
    vault.add_department(MARKET, "北京市东城区市场监督管理局", actor="test")
    vault.generate_key(MARKET, SignatureAlgorithm.ES256, actor="test")  # setup mode
    registry = ClientRegistry(vault)
    clients = {
        "alice": registry.add(MARKET, "keys:manage", actor="test"),
        "bob": registry.add(MARKET, "keys:manage", actor="test"),
        "carol": registry.add(MARKET, "keys:manage", actor="test"),
        "unbound": registry.add(MARKET, "keys:manage", actor="test"),
        "issuer": registry.add(MARKET, "licence:issue licence:read", actor="test"),
    }
    alice = vault.add_officer(
        "alice",
        "security-officer",
        password=None,
        client_id=clients["alice"].client_id,
        acting=None,
        actor="test",
    )
    for name, role in (("bob", "security-officer"), ("carol", "auditor")):
        vault.add_officer(
            name, role, password=None, client_id=clients[name].client_id, acting=alice, actor="test"
        )
    app = create_app(Settings(home=tmp_path / "home", public_url="http://127.0.0.1:8000"), vault=vault)
    with TestClient(app) as api:
        tokens = bearer_tokens(api, clients)
        yield World(api, vault, tokens, clients)
    vault.close()
    backend.close()


def header_kid(token: str) -> str:
    """The kid a compact JWS names in its protected header (RFC 7515 §4.1.4)."""
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def assert_problem(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    if code is not None:
        assert body["type"] == f"urn:yinxin:problem:{code}", body
    assert "Traceback" not in r.text
    return body


# ---- who may do what ------------------------------------------------------------------------------


def test_key_management_needs_the_scope_and_a_bound_officer(world: World) -> None:
    assert_problem(world.api.get("/v1/keys"), 401)
    assert_problem(world.api.post("/v1/keys/rotate", json={"department": MARKET}), 401)
    assert_problem(world.get("/v1/keys", who="issuer"), 403)

    unbound = world.clients["unbound"].client_id
    body = assert_problem(world.get("/v1/keys", who="unbound"), 403, "permission_denied")
    assert f"--client {unbound}" in body["detail"] and "yinxin officer add" in body["detail"]
    assert_problem(world.post("/v1/approvals", {"operation": "ca.init", "params": {}}, who="unbound"), 403)

    # An auditor reads the inventory and the requests, and signs checkpoints; nothing more.
    r = world.get("/v1/keys", who="carol")
    assert r.status_code == 200 and any(k["purpose"] == "licence-signing" for k in r.json())
    assert world.get("/v1/approvals", who="carol").status_code == 200
    body = assert_problem(world.post("/v1/keys/rotate", {"department": MARKET}, who="carol"), 403)
    assert "carol is auditor" in body["detail"]
    kid = world.licence_key()
    params = {"kid": kid, "since": SINCE, "reason": "x"}
    r = world.post("/v1/approvals", {"operation": "key.compromise", "params": params}, who="carol")
    assert_problem(r, 403, "permission_denied")
    assert world.get("/v1/approvals").json() == []
    assert world.post("/v1/audit/checkpoint", who="carol").status_code == 201
    assert world.licence_key() == kid


# ---- dual control ------------------------------------------------------------------------------------


def test_compromise_then_reissue_with_two_officers(world: World) -> None:
    issued = world.issue()
    token, identifier = issued["token"], issued["identifier"]
    kid = world.licence_key()

    params = {"kid": kid, "since": SINCE, "reason": "备份介质遗失"}
    r = world.post("/v1/approvals", {"operation": "key.compromise", "params": params})
    assert r.status_code == 201, r.text
    request = r.json()
    assert (request["state"], request["approvals"], request["required"]) == ("pending", ["alice"], 2)
    assert request["params"]["kid"] == kid and "summary" not in request["params"]
    assert world.verify(token)["valid"] is True  # nothing changes before the second approval

    body = assert_problem(world.post(f"/v1/approvals/{request['id']}/approve"), 409)
    assert "different security officer" in body["detail"]
    r = world.post(f"/v1/approvals/{request['id']}/approve", {"comment": "核实"}, who="bob")
    assert r.status_code == 200, r.text
    done = r.json()
    assert (done["state"], done["approvals"]) == ("executed", ["alice", "bob"])
    replacement = done["result"]["replacement"]
    assert replacement and replacement != kid

    verdict = world.verify(token)
    assert verdict["valid"] is False and "key_compromised" in verdict["codes"]
    jwks_doc = world.api.get("/.well-known/jwks.json").json()
    assert kid not in [k["kid"] for k in jwks_doc["keys"]]
    assert replacement in [k["kid"] for k in jwks_doc["keys"]]
    (listed,) = [c for c in jwks_doc["compromised"] if c["kid"] == kid]
    assert listed["compromised_since"]

    affected = world.get(f"/v1/keys/{kid}/affected").json()
    assert affected["state"] == "compromised" and affected["to_reissue"] == 1
    assert [(a["identifier"], a["needs_reissue"]) for a in affected["licences"]] == [(identifier, True)]
    assert world.get(f"/v1/keys/{kid}/affected", who="carol").status_code == 200

    r = world.post("/v1/approvals", {"operation": "key.reissue", "params": {"kid": kid}}, who="bob")
    assert r.status_code == 201 and r.json()["state"] == "pending", r.text
    reissue_id = r.json()["id"]
    r = world.post(f"/v1/approvals/{reissue_id}/approve")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["result"]["reissued"]) == ("executed", 1)

    successor = world.get(f"/v1/keys/{kid}/affected").json()["licences"][0]["superseded_by"]
    assert successor and successor.split(".")[-2] == "002"
    verdict = world.verify(token)
    assert verdict["valid"] is False and any(f"re-issued as {successor}" in r for r in verdict["reasons"])
    r = world.get(f"/v1/licences/{successor}?purpose=核对换发证照", who="issuer")
    assert r.status_code == 200, r.text
    new_token = r.json()["token"]
    assert world.verify(new_token)["valid"] is True
    keyset = KeySet.import_key_set(
        {
            "keys": [
                {k: v for k, v in key.items() if k not in ("state", "purpose", "department")}
                for key in world.api.get("/.well-known/jwks.json").json()["keys"]
            ]
        }
    )
    assert jws.deserialize_compact(new_token, keyset, algorithms=["ES256"]).headers()["kid"] == replacement

    report = world.get("/v1/audit/verify").json()
    assert report["valid"] is True and report["reasons"] == [], report

    executed = world.get("/v1/approvals?state=executed").json()
    assert [(a["id"], a["operation"]) for a in executed] == [
        (reissue_id, "key.reissue"),
        (request["id"], "key.compromise"),
    ]
    assert world.get("/v1/approvals?state=pending").json() == []
    assert world.get(f"/v1/approvals/{request['id']}", who="carol").json()["state"] == "executed"


def test_a_rejected_or_expired_request_is_dead(world: World) -> None:
    old = world.licence_key()
    assert world.post("/v1/keys/rotate", {"department": MARKET}).status_code == 201
    r = world.post("/v1/approvals", {"operation": "key.destroy", "params": {"kid": old}})
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]
    assert_problem(world.post(f"/v1/approvals/{request_id}/reject", {}, who="bob"), 422, "invalid_input")
    r = world.post(f"/v1/approvals/{request_id}/reject", {"reason": "仍需保留"}, who="bob")
    assert r.status_code == 200 and r.json()["state"] == "rejected" and r.json()["rejections"] == ["bob"]
    assert_problem(world.post(f"/v1/approvals/{request_id}/approve", who="bob"), 409)
    assert_problem(world.post(f"/v1/approvals/{request_id}/execute", who="bob"), 409)
    assert world.get(f"/v1/keys/{old}").json()["state"] == "retired"

    # A request nobody decides on within 24 hours expires; a new one can then be made.
    r = world.post("/v1/approvals", {"operation": "key.destroy", "params": {"kid": old}}, who="bob")
    assert r.status_code == 201, r.text
    late_id = r.json()["id"]
    clock: SettableClock = world.vault.clock  # type: ignore[assignment]
    clock.advance(hours=25)
    world.tokens = bearer_tokens(world.api, world.clients)  # the old access tokens expired too
    body = assert_problem(world.post(f"/v1/approvals/{late_id}/approve"), 409)
    assert "expired" in body["detail"]
    assert [a["id"] for a in world.get("/v1/approvals?state=expired").json()] == [late_id]
    assert world.get(f"/v1/keys/{old}").json()["state"] == "retired"
    r = world.post("/v1/approvals", {"operation": "key.destroy", "params": {"kid": old}}, who="bob")
    assert r.status_code == 201 and r.json()["state"] == "pending", r.text
    r = world.post(f"/v1/approvals/{r.json()['id']}/approve")
    assert r.status_code == 200 and r.json()["state"] == "executed", r.text
    assert world.get(f"/v1/keys/{old}").json()["state"] == "destroyed"


# ---- rotation ----------------------------------------------------------------------------------------


def test_rotation_makes_a_new_active_key_and_the_old_tokens_still_verify(world: World) -> None:
    issued = world.issue()
    old = world.licence_key()
    r = world.post("/v1/keys/rotate", {"department": MARKET})
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["kid"] != old and (new["state"], new["department"]) == ("active", MARKET)
    assert new["algorithm"] == "ES256"

    assert world.verify(issued["token"])["valid"] is True
    assert world.issue()["token"] != issued["token"]
    shown = world.get(f"/v1/keys/{new['kid']}").json()
    assert shown["ceremony"]["verified"] is True and shown["ceremony"]["record"]["kid"] == new["kid"]
    assert world.get(f"/v1/keys/{old}", who="carol").json()["state"] == "retired"
    states = {k["kid"]: k["state"] for k in world.get("/v1/keys").json()}
    assert (states[old], states[new["kid"]]) == ("retired", "active")
    counts = {k["kid"]: k["signature_count"] for k in world.get("/v1/keys").json()}
    assert (counts[old], counts[new["kid"]]) == (1, 1)


def test_bad_input_is_a_problem_document(world: World) -> None:
    kid = world.licence_key()
    for body, status, fragment in (
        ({"operation": "key.explode", "params": {}}, 422, "operation"),
        ({"operation": "key.destroy", "params": {"kid": kid, "colour": "red"}}, 422, "colour"),
        (
            {
                "operation": "key.compromise",
                "params": {"kid": kid, "since": "2026-11-20T08:00", "reason": "x"},
            },
            422,
            "time zone",
        ),
        ({"operation": "key.compromise", "params": {"kid": kid, "reason": "x"}}, 422, "since"),
        ({"operation": "key.destroy", "params": {"kid": "no-such-key"}}, 404, "no-such-key"),
        ({"operation": "key.destroy", "params": {"kid": kid}}, 409, "rotate first"),
        ({"operation": "key.reissue", "params": {"kid": kid}}, 409, "compromised"),
        ({"operation": "key.destroy"}, 422, "params"),
    ):
        body_doc = assert_problem(world.post("/v1/approvals", body), status)
        assert fragment in body_doc["detail"], (body, body_doc)
    assert world.get("/v1/approvals").json() == []

    for path, status in (
        ("/v1/approvals/0", 422),
        ("/v1/approvals/abc", 422),
        (f"/v1/approvals/{2**63}", 422),
        ("/v1/approvals/999999", 404),
    ):
        assert_problem(world.get(path), status)
    assert_problem(world.post("/v1/approvals/999999/approve", who="bob"), 404, "approval_not_found")
    assert_problem(world.get("/v1/keys/no-such-key"), 404, "key_not_found")
    assert_problem(world.get("/v1/keys/no-such-key/affected"), 404, "key_not_found")
    assert_problem(world.get("/v1/keys/bad%20kid"), 422, "invalid_input")
    assert_problem(world.get("/v1/approvals?state=sideways"), 422)

    for body in (
        {"department": MARKET, "purpose": "audit"},
        {},
        {"department": MARKET, "algorithm": "HS256"},
        {"department": MARKET, "colour": "red"},
    ):
        assert_problem(world.post("/v1/keys/rotate", body), 422, "invalid_input")
    assert world.licence_key() == kid


# ---- the audit log ------------------------------------------------------------------------------------


def test_audit_checkpoint_is_signed_and_the_chain_verifies(world: World) -> None:
    world.issue()
    r = world.post("/v1/audit/checkpoint")
    assert r.status_code == 201, r.text
    cp = r.json()
    assert cp["token"].count(".") == 2 and cp["seq"] >= 1
    (audit_key,) = [k for k in world.vault.list_keys() if k.kid == cp["kid"]]
    assert audit_key.purpose == "audit"
    signed = jws.deserialize_compact(
        cp["token"], KeySet.import_key_set({"keys": [dict(audit_key.public_jwk)]}), algorithms=["ES256"]
    )
    assert signed.protected["typ"] == "audit-checkpoint+jwt" and cp["head_hash"] in signed.payload.decode()

    r = world.get("/v1/audit/verify", who="carol")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["valid"] is True and report["reasons"] == []
    assert report["checkpoints_checked"] >= 1 and report["last_checkpoint_seq"] == cp["seq"]
    assert report["events_checked"] == report["head_seq"] >= cp["seq"]
    assert_problem(world.api.get("/v1/audit/verify"), 401)
    assert_problem(world.get("/v1/audit/verify", who="unbound"), 403)


# ---- service keys: what the running server signs and accepts after a rotation or a compromise ---------


def test_a_rotated_service_key_stops_signing_access_tokens(world: World) -> None:
    old = world.active_key("service-token")
    assert header_kid(world.tokens["alice"]) == old
    r = world.post("/v1/keys/rotate", {"purpose": "service-token"})
    assert r.status_code == 201, r.text
    new = r.json()["kid"]
    assert world.get(f"/v1/keys/{old}").json()["state"] == "retired"
    # Tokens already handed out keep working until they expire (the retired key verifies) ...
    assert world.get("/v1/keys").status_code == 200
    world.dual("key.destroy", {"kid": old})
    # ... and new tokens come from the new key, so destroying the old one locks nobody out.
    client = world.clients["carol"]
    r = world.api.post(
        "/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.client_secret),
    )
    assert r.status_code == 200, r.text
    assert header_kid(r.json()["access_token"]) == new


def test_a_compromised_service_key_no_longer_authenticates(world: World) -> None:
    kid = world.active_key("service-token")
    stolen = world.tokens["carol"]
    assert header_kid(stolen) == kid
    replacement = world.dual("key.compromise", {"kid": kid, "since": SINCE, "reason": "服务密钥泄露"})[
        "result"
    ]["replacement"]
    assert replacement and replacement != kid
    # A token signed by the compromised key (as a thief would mint them) is refused ...
    assert_problem(world.get("/v1/keys", who="carol"), 401, "invalid_token")
    # ... and clients get new tokens signed by the replacement.
    world.tokens = bearer_tokens(world.api, world.clients)
    assert header_kid(world.tokens["carol"]) == replacement
    assert world.get("/v1/keys", who="carol").status_code == 200


def test_status_lists_are_re_signed_when_their_key_is_compromised(world: World) -> None:
    world.issue()
    kid = world.active_key("status-list")
    r = world.api.get("/v1/status-lists/1")
    assert r.status_code == 200 and header_kid(r.text) == kid
    replacement = world.dual("key.compromise", {"kid": kid, "since": SINCE, "reason": "状态列表密钥泄露"})[
        "result"
    ]["replacement"]
    jwks_doc = world.api.get("/.well-known/jwks.json").json()
    assert kid in [c["kid"] for c in jwks_doc["compromised"]]
    assert replacement in [k["kid"] for k in jwks_doc["keys"]]
    # A verifier that drops the compromised key can still check status right away.
    assert header_kid(world.api.get("/v1/status-lists/1").text) == replacement
