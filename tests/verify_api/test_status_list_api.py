"""``GET /v1/status-lists/{name}``: a Status List Token an offline verifier can check on its own.

The list is decoded here with nothing of ours (base64url, zlib, bit arithmetic,
draft-ietf-oauth-status-list §4.1) and its signature checked with joserfc
holding only the status-list key's public JWK. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey

from hsm import KeyBackend, SignatureAlgorithm, SoftwareBackend
from schemas import load_licence_types
from tests._status_support import Issued, issue_with_status
from tests.vault.conftest import SettableClock
from vault import Database, Vault
from verify_api.app import create_app
from verify_api.routes import ROUTERS, status_lists
from verify_api.settings import Settings

PUBLIC_URL = "https://yinxin.example.gov.cn"
LIST_URI = PUBLIC_URL + "/v1/status-lists/1"


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def independent_statuses(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Header, claims and the inflated list, read without any Yinxin code."""
    header_segment, payload_segment, _ = token.split(".")
    header = json.loads(unb64(header_segment))
    claims = json.loads(unb64(payload_segment))
    return header, claims, zlib.decompress(unb64(claims["status_list"]["lst"]))


def entry(packed: bytes, index: int, bits: int = 2) -> int:
    # §4.1: index i is in byte i*bits//8, counted from the least significant bit.
    return (packed[index * bits // 8] >> (index * bits % 8)) & ((1 << bits) - 1)


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock(datetime(2026, 11, 23, 2, 0, 0, tzinfo=UTC))


@pytest.fixture
def vault(database_url: str, tmp_path: Path, clock: SettableClock) -> Iterator[Vault]:
    backend: KeyBackend = SoftwareBackend(tmp_path / "keystore", b"status-list-test-passphrase")
    v = Vault(Database(database_url), backend, load_licence_types(), clock=clock, public_url=PUBLIC_URL + "/")
    v.initialise(actor="test")
    issuer = next(iter(v.types.all())).example["issuer"]
    v.add_department(issuer, "北京市东城区市场监督管理局", actor="test")
    v.generate_key(issuer, SignatureAlgorithm.ES256, actor="test")
    yield v
    v.close()
    backend.close()


@pytest.fixture
def api(vault: Vault, tmp_path: Path, clock: SettableClock) -> Iterator[TestClient]:
    app = create_app(Settings(home=tmp_path, environment="development"), vault=vault, clock=clock)
    if status_lists.router not in ROUTERS:  # until the app factory includes it
        app.include_router(status_lists.router)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def licences(vault: Vault) -> list[Issued]:
    revoked, suspended, valid = issue_with_status(vault, 3)
    vault.revoke(revoked.identifier, reason="违法经营", actor="test")
    vault.suspend(suspended.identifier, reason="核查", actor="test")
    return [revoked, suspended, valid]


def status_list_jwk(vault: Vault) -> dict[str, Any]:
    (info,) = [k for k in vault.list_keys() if k.purpose == "status-list"]
    assert info.department_code is None
    return dict(info.public_jwk)


def test_revoked_and_suspended_read_from_the_published_list(
    api: TestClient, vault: Vault, licences: list[Issued]
) -> None:
    response = api.get("/v1/status-lists/1")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/statuslist+jwt"
    assert response.headers["cache-control"] == "public, max-age=300"
    token = response.text
    header, claims, packed = independent_statuses(token)
    assert header["typ"] == "statuslist+jwt" and header["alg"] == "ES256"
    assert claims["sub"] == LIST_URI and claims["ttl"] == 300 and claims["status_list"]["bits"] == 2
    assert claims["exp"] - claims["iat"] == 86400
    assert len(packed) == 2**17 * 2 // 8
    assert [entry(packed, licence.status_index) for licence in licences] == [1, 2, 0]
    assert sum(1 for byte in packed if byte) == 2

    # Each licence names this list and its index in its own token (the Referenced Token claim).
    for licence in licences:
        reference = json.loads(unb64(licence.token.split(".")[1]))["status"]["status_list"]
        assert reference == {"idx": licence.status_index, "uri": LIST_URI}

    # joserfc, holding only the status-list key's public JWK, accepts the signature ...
    jwk = status_list_jwk(vault)
    assert header["kid"] == jwk["kid"]
    decoded = jwt.decode(token, ECKey.import_key(jwk), algorithms=["ES256"])
    assert decoded.claims == claims
    # ... and no licence-signing key does.
    licence_jwk = next(k.public_jwk for k in vault.list_keys() if k.purpose == "licence-signing")
    with pytest.raises(BadSignatureError):
        jwt.decode(token, ECKey.import_key(dict(licence_jwk)), algorithms=["ES256"])


def test_the_list_follows_status_changes(api: TestClient, vault: Vault, licences: list[Issued]) -> None:
    _, suspended, valid = licences
    first = api.get("/v1/status-lists/1").text
    assert api.get("/v1/status-lists/1").text == first  # served from the cache

    vault.reinstate(suspended.identifier, reason="核查完毕", actor="test")
    vault.suspend(valid.identifier, reason="核查", actor="test")
    _, _, packed = independent_statuses(api.get("/v1/status-lists/1").text)
    assert [entry(packed, licence.status_index) for licence in licences] == [1, 0, 2]


@pytest.mark.parametrize("name", ["2", "0", "abc", "1a", "%2e%2e"])
def test_unknown_list_is_a_problem_document(api: TestClient, licences: list[Issued], name: str) -> None:
    response = api.get(f"/v1/status-lists/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 404 and problem["type"].startswith("urn:yinxin:problem:")


def test_no_list_before_the_first_licence(api: TestClient) -> None:
    assert api.get("/v1/status-lists/1").status_code == 404
