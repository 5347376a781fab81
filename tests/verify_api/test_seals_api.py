"""E-seals over HTTP: sealing (scope seal:use, own seals only), public PDF verification, CA and CRL,
printed licences. Real vault (SQLite and PostgreSQL), real software keystore, real OAuth tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from hsm import SignatureAlgorithm, SoftwareBackend
from schemas import load_licence_types
from tests._pdf import simple_pdf
from tests.verify_api._api_support import bearer_tokens
from tests.verify_api._presentation_support import SettableClock
from vault import Database, Vault
from vault._access_tokens import ensure_service_key
from vault._clients import ClientRegistry
from vault._status_publisher import ensure_status_list_key
from verify_api.app import create_app
from verify_api.settings import Settings

MARKET = "11110101000000123B"
HEALTH = "11110101000000456Q"
BUSINESS = "11100000000013101Q001"
PDF = {"Content-Type": "application/pdf"}


@dataclass
class World:
    api: TestClient
    vault: Vault
    tokens: dict[str, str]
    market_seal: str
    health_seal: str

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    vault = Vault(
        Database(database_url),
        SoftwareBackend(tmp_path / "keystore", b"api-test"),
        load_licence_types(),
        clock=SettableClock(),
    )
    vault.initialise(actor="test")
    ensure_service_key(vault, actor="test")
    ensure_status_list_key(vault)
    vault.add_department(MARKET, "北京市东城区市场监督管理局", actor="test")
    vault.add_department(HEALTH, "北京市东城区卫生健康委员会", actor="test")
    vault.generate_key(MARKET, SignatureAlgorithm.ES256, actor="test")
    vault.seals.init_ca(actor="test")
    market_seal = vault.seals.create(MARKET, "北京市东城区市场监督管理局行政审批专用章", actor="test").seal_id
    health_seal = vault.seals.create(HEALTH, "北京市东城区卫生健康委员会公章", actor="test").seal_id
    registry = ClientRegistry(vault)
    clients = {
        "sealer": registry.add(MARKET, "seal:use", actor="test"),
        "manager": registry.add(MARKET, "licence:issue licence:manage", actor="test"),
        "reader": registry.add(MARKET, "licence:read", actor="test"),
    }
    app = create_app(Settings(home=tmp_path / "home", public_url="http://127.0.0.1:8000"), vault=vault)
    with TestClient(app) as api:
        tokens = bearer_tokens(api, clients)
        yield World(api, vault, tokens, market_seal, health_seal)
    vault.close()


def test_seal_then_verify_then_revoke(world: World) -> None:
    r = world.api.post(
        f"/v1/seals/{world.market_seal}/pdf?page=1&box=400,60,520,180&reason=行政审批",
        content=simple_pdf(),
        headers={**world.auth("sealer"), **PDF},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    sealed = r.content
    r = world.api.post("/v1/pdf/verify", content=sealed, headers=PDF)
    assert r.status_code == 200
    body = r.json()
    assert body["valid"] and body["seal"]["seal_id"] == world.market_seal
    assert body["seal"]["department_code"] == MARKET
    assert body["signing_time"].startswith("2026-11-23T02:00")
    world.vault.seals.revoke(world.market_seal, "印章被盗", actor="test")
    body = world.api.post("/v1/pdf/verify", content=sealed, headers=PDF).json()
    assert not body["valid"] and body["codes"] == ["revoked"]
    metrics = world.api.get("/metrics").text
    assert 'yinxin_documents_sealed_total{kind="document"} 1.0' in metrics
    assert 'yinxin_pdf_verifications_total{outcome="valid"} 1.0' in metrics
    assert 'yinxin_pdf_verifications_total{outcome="revoked"} 1.0' in metrics


def test_sealing_needs_scope_and_ownership(world: World) -> None:
    pdf = simple_pdf()
    r = world.api.post(f"/v1/seals/{world.market_seal}/pdf", content=pdf, headers=PDF)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = world.api.post(
        f"/v1/seals/{world.market_seal}/pdf", content=pdf, headers={**world.auth("manager"), **PDF}
    )
    assert r.status_code == 403
    # Another department's seal: refused, and nothing is signed or audited.
    before = world.vault.verify_audit().events_checked
    r = world.api.post(
        f"/v1/seals/{world.health_seal}/pdf", content=pdf, headers={**world.auth("sealer"), **PDF}
    )
    assert r.status_code == 403 and r.json()["code"] == "other_department"
    assert world.vault.verify_audit().events_checked == before


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/seals/seal-0000000000/pdf", b"%PDF-1.7", 404, "seal_not_found"),
        ("/v1/seals/{seal}/pdf", b"", 422, "invalid_input"),
        ("/v1/seals/{seal}/pdf", b"this is not a pdf", 422, "invalid_input"),
        ("/v1/seals/{seal}/pdf?page=9", None, 422, "invalid_input"),
        ("/v1/seals/{seal}/pdf?box=1,2", None, 422, "invalid_input"),
        ("/v1/seals/{seal}/pdf?page=0", None, 422, "invalid_input"),
    ],
)
def test_bad_sealing_requests(world: World, path: str, body: bytes | None, status: int, code: str) -> None:
    r = world.api.post(
        path.format(seal=world.market_seal),
        content=simple_pdf() if body is None else body,
        headers={**world.auth("sealer"), **PDF},
    )
    assert r.status_code == status, r.text
    problem = r.json()
    assert problem["code"] == code and "Traceback" not in r.text
    assert problem["instance"] in ("/v1/seals/{seal_id}/pdf",)


def test_suspended_seal_cannot_seal(world: World) -> None:
    world.vault.seals.suspend(world.market_seal, "核查", actor="test")
    r = world.api.post(
        f"/v1/seals/{world.market_seal}/pdf", content=simple_pdf(), headers={**world.auth("sealer"), **PDF}
    )
    assert r.status_code == 409 and r.json()["code"] == "seal_not_usable"


def test_sealing_takes_the_pdf_only_as_application_pdf(world: World) -> None:
    url = f"/v1/seals/{world.market_seal}/pdf"
    for sent in ("application/octet-stream", "text/plain; charset=utf-8", None):
        headers = {**world.auth("sealer"), **({"Content-Type": sent} if sent else {})}
        r = world.api.post(url, content=simple_pdf(), headers=headers)
        assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type", r.text
        assert "Content-Type: application/pdf" in r.json()["detail"]
    # Parameters and case do not matter (RFC 9110 §8.3.1).
    r = world.api.post(
        url, content=simple_pdf(), headers={**world.auth("sealer"), "Content-Type": "Application/PDF; x=1"}
    )
    assert r.status_code == 200 and r.content.startswith(b"%PDF"), r.text


def test_pdf_body_limit_is_20_mib_and_json_limit_unchanged(world: World) -> None:
    big = b"%PDF-1.7\n" + b"0" * (20 * 1024 * 1024)
    r = world.api.post("/v1/pdf/verify", content=big, headers=PDF)
    assert r.status_code == 413 and r.json()["code"] == "input_too_large"
    # 1 MiB is fine for a PDF route (a verdict, not 413) …
    r = world.api.post("/v1/pdf/verify", content=b"%PDF-1.7\n" + b"0" * 2**20, headers=PDF)
    assert r.status_code == 200 and r.json()["codes"] == ["not_pdf"]
    # … but still too much for the JSON routes.
    r = world.api.post(
        "/v1/verify", content=b"{" + b" " * 2**20 + b"}", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413


def test_verify_answers_unsigned_and_garbage_as_verdicts(world: World) -> None:
    body = world.api.post("/v1/pdf/verify", content=simple_pdf(), headers=PDF).json()
    assert body == {
        "valid": False,
        "codes": ["no_signature"],
        "reasons": [body["reasons"][0]],
        "seal": None,
        "signing_time": None,
        "timestamp": None,
        "signatures": [],
    }
    r = world.api.post("/v1/pdf/verify", content=b"\x00\x01garbage", headers=PDF)
    assert r.status_code == 200 and r.json()["codes"] == ["not_pdf"]
    r = world.api.post("/v1/pdf/verify", content=b"", headers=PDF)
    assert r.status_code == 422


def test_root_certificate_and_crl_are_public(world: World) -> None:
    r = world.api.get("/v1/ca/root.pem")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-pem-file"
    root = x509.load_pem_x509_certificate(r.content)
    world.vault.seals.revoke(world.health_seal, "机构撤并", crl_reason="cessationOfOperation", actor="test")
    r = world.api.get("/v1/ca/crl")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(r.content)
    assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    serial = world.vault.seals.get(world.health_seal).certificate.serial_number
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_printed_licence_for_the_issuer_only(world: World) -> None:
    request = json.loads(json.dumps(load_licence_types().get(BUSINESS).example))
    r = world.api.post("/v1/licences", json=request, headers=world.auth("manager"))
    assert r.status_code == 201, r.text
    identifier = r.json()["identifier"]
    r = world.api.get(f"/v1/licences/{identifier}.pdf", headers=world.auth("manager"))
    assert r.status_code == 200 and r.content.startswith(b"%PDF-")
    assert world.api.post("/v1/pdf/verify", content=r.content, headers=PDF).json()["valid"]
    assert world.api.get(f"/v1/licences/{identifier}.pdf", headers=world.auth("reader")).status_code == 403
    assert world.api.get(f"/v1/licences/{identifier}.pdf").status_code == 401
    r = world.api.get(
        "/v1/licences/1.2.156.3005.2.11100000000013101Q001.11110101000000123B.20260000099.001.X.pdf",
        headers=world.auth("manager"),
    )
    assert r.status_code in (404, 422)


def test_openapi_documents_the_seal_routes(world: World) -> None:
    spec = world.api.get("/openapi.json").json()
    op = spec["paths"]["/v1/seals/{seal_id}/pdf"]["post"]
    assert "application/pdf" in op["requestBody"]["content"]
    assert "application/pdf" in op["responses"]["200"]["content"]
    assert "/v1/pdf/verify" in spec["paths"] and "/v1/ca/crl" in spec["paths"]
