"""The token endpoint (RFC 6749 §4.4) and bearer-token authorisation (RFC 6750) over HTTP.

A tiny protected router, defined here, stands in for the licence routes. Every test runs on
SQLite and PostgreSQL, with the software keystore.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.testclient import TestClient
from httpx import Response
from joserfc import jwt
from joserfc.jwk import KeySet

import verify_api.auth
from hsm import KeyBackend, SignatureAlgorithm, SoftwareBackend
from schemas import load_licence_types
from signing import jwks_document, sign_licence_token
from signing._access_token import sign_access_token
from tests.vault.conftest import SettableClock
from vault import Database, Vault
from vault._access_tokens import ensure_service_key, service_trust_store
from vault._clients import ClientRegistry, NewClient
from verify_api.app import create_app
from verify_api.auth import (
    AccessTokenTrust,
    Principal,
    authorise_async,
    require_own_department,
    require_scope,
)
from verify_api.routes import ROUTERS, oauth
from verify_api.settings import Settings

DEPT = "11110101000000123B"
OTHER_DEPT = "11110000000021135M"
TOKEN_URL = "/v1/oauth/token"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

ReaderDep = Annotated[Principal, Depends(require_scope("licence:read"))]
IssuerDep = Annotated[Principal, Depends(require_scope("licence:issue"))]


def protected_router() -> APIRouter:
    router = APIRouter()

    @router.get("/test/read")
    def read(principal: ReaderDep) -> dict[str, Any]:
        return {
            "client_id": principal.client_id,
            "dept": principal.department_code,
            "scopes": sorted(principal.scopes),
        }

    @router.get("/test/read-async")
    async def read_async(request: Request) -> dict[str, Any]:
        principal = await authorise_async(request, "licence:read")
        return {"client_id": principal.client_id, "scopes": sorted(principal.scopes)}

    @router.post("/test/issue/{issuer}")
    def issue(issuer: str, principal: IssuerDep) -> dict[str, str]:
        require_own_department(principal, issuer)
        return {"issued_by": principal.client_id}

    return router


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock(datetime(2026, 11, 23, 2, 0, 0, tzinfo=UTC))


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[KeyBackend]:
    opened = SoftwareBackend(tmp_path / "keystore", b"auth-test-passphrase")
    yield opened
    opened.close()


@pytest.fixture
def vault(database_url: str, backend: KeyBackend, clock: SettableClock) -> Iterator[Vault]:
    v = Vault(Database(database_url), backend, load_licence_types(), clock=clock)
    v.initialise(actor="test")
    v.add_department(DEPT, "北京市东城区市场监督管理局", actor="test")
    v.add_department(OTHER_DEPT, "北京市公安局", actor="test")
    yield v
    v.close()


@pytest.fixture
def api(vault: Vault, tmp_path: Path, clock: SettableClock) -> Iterator[TestClient]:
    app = create_app(Settings(home=tmp_path, environment="development"), vault=vault, clock=clock)
    if oauth.router not in ROUTERS:  # until the app factory includes it
        app.include_router(oauth.router)
    app.include_router(protected_router())
    with TestClient(app) as client:
        yield client


@pytest.fixture
def reader(vault: Vault) -> NewClient:
    return ClientRegistry(vault).add(DEPT, "licence:read licence:verify", actor="officer")


def basic(client_id: str, secret: str) -> dict[str, str]:
    # RFC 6749 §2.3.1: each part form-urlencoded, then base64 of "id:secret".
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def get_token(api: TestClient, client: NewClient, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    response = api.post(TOKEN_URL, data=form, headers=basic(client.client_id, client.client_secret))
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_oauth_error(response: Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == error
    assert body["error_description"].isascii() and '"' not in body["error_description"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith('Basic realm="yinxin"')


def assert_invalid_token(response: Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_token"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="yinxin", error="invalid_token"'), challenge


# ---- the token endpoint ---------------------------------------------------------------------


def test_token_with_basic_credentials(
    api: TestClient, vault: Vault, reader: NewClient, clock: SettableClock
) -> None:
    response = api.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials"},
        headers=basic(reader.client_id, reader.client_secret),
    )

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == (
        "Bearer",
        600,
        "licence:read licence:verify",
    )
    # An independent JOSE library verifies it with the service key's JWKS alone.
    key_set = KeySet.import_key_set(jwks_document(service_trust_store(vault)))  # type: ignore[arg-type]
    decoded = jwt.decode(body["access_token"], key_set, algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    claims = decoded.claims
    assert (claims["iss"], claims["aud"], claims["sub"], claims["client_id"], claims["dept"]) == (
        "yinxin",
        "yinxin-api",
        reader.client_id,
        reader.client_id,
        DEPT,
    )
    assert claims["exp"] - claims["iat"] == 600 and claims["iat"] == int(clock.now.timestamp())
    jwt.JWTClaimsRegistry(now=claims["iat"], aud={"essential": True, "value": "yinxin-api"}).validate(claims)


def test_token_with_form_credentials_and_a_narrower_scope(api: TestClient, reader: NewClient) -> None:
    response = api.post(
        TOKEN_URL,
        content=(
            f"grant_type=client_credentials&scope=licence%3Aread&client_id={reader.client_id}"
            f"&client_secret={quote(reader.client_secret, safe='')}"
        ),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "licence:read"


def test_wrong_unknown_or_disabled_client_is_invalid_client(
    api: TestClient, vault: Vault, reader: NewClient, clock: SettableClock
) -> None:
    form = {"grant_type": "client_credentials"}
    assert_oauth_error(
        api.post(TOKEN_URL, data=form, headers=basic(reader.client_id, "wrong")), 401, "invalid_client"
    )
    unknown = basic("yx_0123456789abcdef", reader.client_secret)
    assert_oauth_error(api.post(TOKEN_URL, data=form, headers=unknown), 401, "invalid_client")
    assert_oauth_error(api.post(TOKEN_URL, data=form, headers=FORM), 401, "invalid_client")  # no credentials
    bearer_instead = {"Authorization": "Bearer abc"}
    assert_oauth_error(api.post(TOKEN_URL, data=form, headers=bearer_instead), 401, "invalid_client")
    wrong_form = {**form, "client_id": reader.client_id, "client_secret": "wrong"}
    assert_oauth_error(api.post(TOKEN_URL, data=wrong_form), 401, "invalid_client")

    get_token(api, reader)  # the app's registry caches the authentication now
    ClientRegistry(vault).disable(reader.client_id, actor="officer")  # as `yinxin client disable` does
    clock.advance(seconds=61)  # another process's disable reaches this one within the cache lifetime
    good = basic(reader.client_id, reader.client_secret)
    assert_oauth_error(api.post(TOKEN_URL, data=form, headers=good), 401, "invalid_client")


def test_grant_type_errors(api: TestClient, reader: NewClient) -> None:
    credentials = basic(reader.client_id, reader.client_secret)
    response = api.post(TOKEN_URL, data={"grant_type": "password"}, headers=credentials)
    assert_oauth_error(response, 400, "unsupported_grant_type")
    response = api.post(
        TOKEN_URL, data={"grant_type": "authorization_code", "code": "x"}, headers=credentials
    )
    assert_oauth_error(response, 400, "unsupported_grant_type")
    assert_oauth_error(
        api.post(TOKEN_URL, data={"scope": "licence:read"}, headers=credentials), 400, "invalid_request"
    )


def test_scope_errors(api: TestClient, reader: NewClient) -> None:
    credentials = basic(reader.client_id, reader.client_secret)
    for scope in ("licence:issue", "licence:read licence:manage", "openid", "licence:read\\x"):
        response = api.post(
            TOKEN_URL, data={"grant_type": "client_credentials", "scope": scope}, headers=credentials
        )
        assert_oauth_error(response, 400, "invalid_scope")
    assert (
        "licence:issue is not granted"
        in api.post(
            TOKEN_URL,
            data={"grant_type": "client_credentials", "scope": "licence:issue"},
            headers=credentials,
        ).json()["error_description"]
    )


def test_malformed_requests_are_invalid_request(api: TestClient, reader: NewClient) -> None:
    credentials = basic(reader.client_id, reader.client_secret)
    good = "grant_type=client_credentials"
    cases: list[tuple[str | bytes, dict[str, str]]] = [
        (
            json.dumps({"grant_type": "client_credentials"}),
            {**credentials, "Content-Type": "application/json"},
        ),
        (good, {**credentials, "Content-Type": "application/x-www-form-urlencoded; charset=latin-1"}),
        (good + "&grant_type=client_credentials", {**credentials, **FORM}),  # repeated (RFC 6749 §3.2)
        (good + "&scope=" + "x" * 5000, {**credentials, **FORM}),  # over 4 KiB
        (good + "&scope=%ff", {**credentials, **FORM}),  # not UTF-8
        (good + "&&", {**credentials, **FORM}),  # not strictly form-encoded
        (b"grant_type=client_credentials&scope=licence:read" + "é".encode(), {**credentials, **FORM}),
        (good + f"&client_secret={reader.client_secret}", {**credentials, **FORM}),  # two auth methods
        (good, {"Authorization": "Basic !!!", **FORM}),
        (good, {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode(), **FORM}),
    ]
    for body, headers in cases:
        assert_oauth_error(api.post(TOKEN_URL, content=body, headers=headers), 400, "invalid_request")


def test_empty_parameters_count_as_omitted(api: TestClient, reader: NewClient) -> None:
    credentials = basic(reader.client_id, reader.client_secret)
    response = api.post(
        TOKEN_URL, content="grant_type=client_credentials&scope=", headers={**credentials, **FORM}
    )
    assert response.status_code == 200 and response.json()["scope"] == "licence:read licence:verify"


def test_token_endpoint_is_documented_with_oauth_errors(api: TestClient) -> None:
    operation = api.get("/openapi.json").json()["paths"][TOKEN_URL]["post"]
    assert "application/x-www-form-urlencoded" in operation["requestBody"]["content"]
    assert "not `application/problem+json`" in operation["description"]
    assert {"200", "400", "401"} <= set(operation["responses"])


# ---- protected routes ---------------------------------------------------------------------------


def test_no_token_is_401_with_a_bare_challenge(api: TestClient) -> None:
    for headers in ({}, {"Authorization": "Basic eDp5"}):
        response = api.get("/test/read", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        # RFC 6750 §3.1: no error code when the request carried no bearer credentials at all.
        assert response.headers["www-authenticate"] == 'Bearer realm="yinxin"'
        assert "POST /v1/oauth/token" in response.json()["detail"]


def test_garbage_tokens_are_401_invalid_token(api: TestClient) -> None:
    for value in (
        "Bearer",
        "Bearer ",
        "Bearer not a token",
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer " + "A" * 5000,
    ):
        assert_invalid_token(api.get("/test/read", headers={"Authorization": value}))


def test_valid_token_with_the_scope_passes(api: TestClient, reader: NewClient) -> None:
    response = api.get("/test/read", headers=bearer(get_token(api, reader)))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "client_id": reader.client_id,
        "dept": DEPT,
        "scopes": ["licence:read", "licence:verify"],
    }
    lower_case_scheme = {"Authorization": "bearer " + get_token(api, reader)}
    assert api.get("/test/read", headers=lower_case_scheme).status_code == 200


def test_token_without_the_scope_is_403_insufficient_scope(api: TestClient, reader: NewClient) -> None:
    token = get_token(api, reader, scope="licence:verify")
    response = api.get("/test/read", headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert response.headers["www-authenticate"] == (
        'Bearer realm="yinxin", error="insufficient_scope", scope="licence:read"'
    )
    assert api.post(f"/test/issue/{DEPT}", headers=bearer(get_token(api, reader))).status_code == 403


def test_expired_token_is_401(api: TestClient, reader: NewClient, clock: SettableClock) -> None:
    token = get_token(api, reader)
    clock.advance(seconds=599)
    assert api.get("/test/read", headers=bearer(token)).status_code == 200
    clock.advance(seconds=1)
    response = api.get("/test/read", headers=bearer(token))
    assert_invalid_token(response)
    assert "expired" in response.headers["www-authenticate"]


def test_token_signed_by_another_key_is_401(api: TestClient, vault: Vault, reader: NewClient) -> None:
    ensure_service_key(vault)
    key_set = KeySet.import_key_set(jwks_document(service_trust_store(vault)))  # type: ignore[arg-type]
    claims = jwt.decode(get_token(api, reader), key_set).claims
    # A key the vault's backend holds but the registry never made a service key ...
    stranger = vault.backend.generate_key(SignatureAlgorithm.ES256, "service-es256-20261123-deadbeef")
    assert_invalid_token(
        api.get("/test/read", headers=bearer(sign_access_token(vault.backend, stranger, claims)))
    )
    # ... a department's licence key, even under the service key's kid ...
    licence_key = vault.generate_key(DEPT, SignatureAlgorithm.ES256, actor="test")
    licence_ref = vault.backend.get_key(licence_key.kid)
    assert_invalid_token(
        api.get("/test/read", headers=bearer(sign_access_token(vault.backend, licence_ref, claims)))
    )
    token = get_token(api, reader)
    header, payload, _ = token.split(".")
    forged_signature = vault.backend.sign(licence_ref, f"{header}.{payload}".encode())
    forged = f"{header}.{payload}." + base64.urlsafe_b64encode(forged_signature).rstrip(b"=").decode()
    assert_invalid_token(api.get("/test/read", headers=bearer(forged)))
    # ... and a licence token (typ licence+jwt) is no access token.
    licence_claims = {"iss": DEPT, "sub": "x", "jti": "x", "iat": claims["iat"]}
    assert_invalid_token(
        api.get("/test/read", headers=bearer(sign_licence_token(vault.backend, licence_ref, licence_claims)))
    )


def b64json(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def test_alg_none_and_swapped_alg_are_401(api: TestClient, vault: Vault, reader: NewClient) -> None:
    token = get_token(api, reader)
    header_segment, payload, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_segment + "=="))
    for alg in ("none", "None", "HS256", "PS256", "EdDSA", "ES512"):
        changed = b64json({**header, "alg": alg})
        assert_invalid_token(api.get("/test/read", headers=bearer(f"{changed}.{payload}.{signature}")))
        assert_invalid_token(api.get("/test/read", headers=bearer(f"{changed}.{payload}.")))
    # HS256 "signed" with the service key's public JWK as the HMAC secret (the classic confusion).
    jwk = json.dumps(jwks_document(service_trust_store(vault))["keys"][0]).encode()
    confused_header = b64json({**header, "alg": "HS256"})
    mac = hmac.new(jwk, f"{confused_header}.{payload}".encode(), hashlib.sha256).digest()
    confused = f"{confused_header}.{payload}." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert_invalid_token(api.get("/test/read", headers=bearer(confused)))


def test_disabled_clients_tokens_are_refused(api: TestClient, vault: Vault, reader: NewClient) -> None:
    token = get_token(api, reader)
    assert api.get("/test/read", headers=bearer(token)).status_code == 200
    registry = api.app.state.clients  # type: ignore[attr-defined]
    registry.disable(reader.client_id, actor="officer")
    response = api.get("/test/read", headers=bearer(token))
    assert_invalid_token(response)
    assert "disabled" in response.json()["detail"]


def test_a_department_manages_only_its_own_licences(api: TestClient, vault: Vault) -> None:
    issuer = ClientRegistry(vault).add(DEPT, "licence:issue", actor="officer")
    token = get_token(api, issuer)
    assert api.post(f"/test/issue/{DEPT}", headers=bearer(token)).json() == {"issued_by": issuer.client_id}
    response = api.post(f"/test/issue/{OTHER_DEPT}", headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["code"] == "other_department"
    assert "a department manages only its own licences" in response.json()["detail"]


def test_service_key_made_by_another_process_is_picked_up(
    api: TestClient, vault: Vault, reader: NewClient
) -> None:
    # The protected route loads the (empty) trust store first; then another process creates the key.
    assert api.get("/test/read", headers=bearer("a.b.c")).status_code == 401
    other = ClientRegistry(vault)
    authenticated = other.authenticate(reader.client_id, reader.client_secret)
    assert authenticated is not None
    issued = other.issue_token(authenticated)
    assert api.get("/test/read", headers=bearer(issued.token)).status_code == 200


# ---- verified tokens remembered -------------------------------------------------------------------


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature and claims the API checked (the real check, counted)."""
    seen: list[str] = []
    real = verify_api.auth.verify_access_token

    def counted(token: str | bytes, *args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(str(token))
        return real(token, *args, **kwargs)

    monkeypatch.setattr(verify_api.auth, "verify_access_token", counted)
    return seen


def test_a_token_is_verified_once_per_trust_store_and_its_times_on_every_use(
    api: TestClient, reader: NewClient, clock: SettableClock, verifications: list[str]
) -> None:
    token, other = get_token(api, reader), get_token(api, reader)
    for _ in range(3):
        assert api.get("/test/read", headers=bearer(token)).status_code == 200
        assert api.get("/test/read", headers=bearer(other)).status_code == 200
    assert verifications == [token, other]
    # One character changed is another token: checked, and refused.
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert_invalid_token(api.get("/test/read", headers=bearer(tampered)))
    assert verifications == [token, other, tampered]
    # Remembered or not, a token is refused the second it expires ...
    clock.advance(seconds=600)
    response = api.get("/test/read", headers=bearer(token))
    assert_invalid_token(response)
    assert "expired" in response.headers["www-authenticate"]
    assert len(verifications) == 3
    # ... and before its iat (a clock set back) it is refused as well.
    clock.advance(seconds=-1200)
    response = api.get("/test/read", headers=bearer(other))
    assert_invalid_token(response)
    assert "issued in the future" in response.json()["detail"]


def test_a_remembered_token_is_refused_once_its_service_key_is_compromised(
    api: TestClient, vault: Vault, reader: NewClient, clock: SettableClock, verifications: list[str]
) -> None:
    token = get_token(api, reader)
    assert api.get("/test/read", headers=bearer(token)).status_code == 200
    assert api.get("/test/read", headers=bearer(token)).status_code == 200
    assert verifications == [token]
    kid = ensure_service_key(vault).kid
    vault.lifecycle.compromise(kid, since=clock() - timedelta(hours=1), reason="leaked", actor="officer")
    response = api.get("/test/read", headers=bearer(token))
    assert_invalid_token(response)
    assert verifications == [token, token]  # the compromise re-read the store: checked again


def test_what_is_remembered_goes_with_the_store_and_is_bounded(
    vault: Vault, reader: NewClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ClientRegistry(vault)
    authenticated = registry.authenticate(reader.client_id, reader.client_secret)
    assert authenticated is not None
    tokens = [registry.issue_token(authenticated).token for _ in range(3)]
    trust = AccessTokenTrust(vault, min_refresh_seconds=3600)
    store = trust.store()
    monkeypatch.setattr(verify_api.auth, "MAX_VERIFIED_TOKENS", 2)
    for token in tokens:
        trust.remember(token, store, {"token": token})
    assert trust.verified(tokens[0], store) is None  # the oldest made way
    assert trust.verified(tokens[2], store) == {"token": tokens[2]}
    # Claims verified under a store that is no longer current are neither kept nor given back.
    assert trust.refresh_for("service-es256-unknown", force=True) is False
    fresh = trust.store()
    assert fresh is not store
    assert trust.verified(tokens[2], fresh) is None
    assert trust.verified(tokens[2], store) is None
    trust.remember(tokens[1], store, {"token": tokens[1]})
    assert trust.verified(tokens[1], fresh) is None


def test_authorise_async_reads_the_database_on_a_thread_only(
    api: TestClient, vault: Vault, reader: NewClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a token seen before, under a fresh store and a known client, is checked on the
    event loop; what needs a read goes to a read thread. SQLite, in process, never needs one."""
    handed: list[str] = []
    real = Database.read_executor

    def read_executor(self: Database) -> Any:
        handed.append("read thread")
        return real(self)

    monkeypatch.setattr(Database, "read_executor", read_executor)
    token = get_token(api, reader)
    on_postgres = vault.db.dialect == "postgresql"
    # The token endpoint has just read the service keys and this client's state: no read.
    for _ in range(3):
        response = api.get("/test/read-async", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "client_id": reader.client_id,
            "scopes": ["licence:read", "licence:verify"],
        }
    assert handed == []
    # A store due for its re-read is re-read on a thread (on PostgreSQL), with the same answer.
    trust = api.app.state.access_token_trust  # type: ignore[attr-defined]
    monkeypatch.setattr(trust, "_min_refresh", 0.0)
    assert api.get("/test/read-async", headers=bearer(token)).status_code == 200
    assert handed == (["read thread"] if on_postgres else [])
    monkeypatch.setattr(trust, "_min_refresh", 3600.0)
    # Refusals need no read, except for a kid the store lacks (another worker's new key, perhaps).
    assert_invalid_token(api.get("/test/read-async", headers=bearer("a.b.c")))
    assert len(handed) == (1 if on_postgres else 0)
    _, payload, signature = token.split(".")
    stranger = b64json({"alg": "ES256", "kid": "service-es256-20261123-deadbeef", "typ": "at+jwt"})
    assert_invalid_token(api.get("/test/read-async", headers=bearer(f"{stranger}.{payload}.{signature}")))
    assert len(handed) == (2 if on_postgres else 0)
    # A disabled client is refused whichever way its state is read.
    ClientRegistry(vault).disable(reader.client_id, actor="officer")
    api.app.state.clients._forget(reader.client_id)  # type: ignore[attr-defined]  # this process's cache
    response = api.get("/test/read-async", headers=bearer(token))
    assert_invalid_token(response)
    assert "disabled" in response.json()["detail"]


def test_a_store_being_re_read_keeps_no_one_waiting_for_the_database(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop asks fresh_store() and verified() while a read thread re-reads the store:
    those answers must not wait for that thread's database read."""
    ensure_service_key(vault)
    trust = AccessTokenTrust(vault, min_refresh_seconds=3600)
    first = trust.store()
    reading, release = threading.Event(), threading.Event()
    real = verify_api.auth.service_trust_store

    def slow_read(v: Vault) -> Any:
        reading.set()
        assert release.wait(10)
        return real(v)

    monkeypatch.setattr(verify_api.auth, "service_trust_store", slow_read)
    reader = threading.Thread(
        target=trust.refresh_for, args=("service-es256-unknown",), kwargs={"force": True}
    )
    reader.start()
    try:
        assert reading.wait(10)
        started = time.monotonic()
        assert trust.fresh_store() is first  # the store in place, at once
        assert trust.verified("a.b.c", first) is None
        assert time.monotonic() - started < 0.5
    finally:
        release.set()
        reader.join(10)
    assert trust.fresh_store() is not first  # the re-read is in place once done
