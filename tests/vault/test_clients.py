"""API clients: creation, scrypt-hashed secrets, authentication with its cache, disabling, audit;
the service key and the access tokens it signs. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import text

from schemas.errors import DepartmentNotFound, IllegalTransition, InvalidInput, InvalidUSCC, NotFound
from signing import jwks_document
from signing._access_token import verify_access_token
from tests.vault.conftest import SettableClock
from vault import Vault
from vault._access_tokens import KEY_PURPOSE_SERVICE_TOKEN, ensure_service_key, service_trust_store
from vault._clients import SCOPES, ClientRegistry, InvalidScope, NewClient, hash_client_secret, secret_matches

DEPT = "11110101000000123B"
OTHER_DEPT = "11110000000021135M"


@pytest.fixture
def registry(vault: Vault) -> ClientRegistry:
    vault.add_department(DEPT, "北京市东城区市场监督管理局", actor="test")
    return ClientRegistry(vault)


@pytest.fixture
def client(registry: ClientRegistry) -> NewClient:
    return registry.add(DEPT, "licence:issue licence:read", actor="officer")


def all_rows_text(vault: Vault) -> str:
    """Every row of the tables a client touches, as text: what a database dump would show."""
    with vault.db.read() as s:
        rows = [
            *s.execute(text("SELECT * FROM api_clients")).all(),
            *s.execute(text("SELECT * FROM audit_events")).all(),
        ]
    return "\n".join(repr(tuple(row)) for row in rows)


def test_add_returns_the_secret_once_and_stores_only_an_scrypt_hash(vault: Vault, client: NewClient) -> None:
    assert re.fullmatch(r"yx_[0-9a-f]{16}", client.client_id)
    assert len(client.client_secret) >= 43  # token_urlsafe(32): 256 bits
    assert client.scopes == {"licence:issue", "licence:read"}
    assert client.client_secret not in repr(client)

    with vault.db.read() as s:
        secret_hash, scopes = s.execute(
            text("SELECT secret_hash, scopes FROM api_clients WHERE client_id = :id"),
            {"id": client.client_id},
        ).one()
    assert scopes == "licence:issue licence:read"
    algorithm, n, r, p, salt, digest = secret_hash.split("$")
    assert (algorithm, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert secret_matches(client.client_secret, secret_hash)
    dump = all_rows_text(vault)
    assert client.client_secret not in dump
    assert hashlib.sha256(client.client_secret.encode()).hexdigest() not in dump


def test_add_is_audited_without_the_secret(vault: Vault, client: NewClient) -> None:
    event = vault.audit_events(subject=client.client_id)[-1]
    assert (event.actor, event.action) == ("officer", "client.add")
    assert dict(event.details) == {"department": DEPT, "scopes": ["licence:issue", "licence:read"]}
    assert vault.verify_audit().ok


@pytest.mark.parametrize(
    ("scopes", "error", "words"),
    [
        ("licence:issue licence:delete", InvalidScope, "unknown scope 'licence:delete'"),
        ("", InvalidScope, "at least one scope"),
        ("   ", InvalidScope, "at least one scope"),
        ([], InvalidScope, "at least one scope"),
        ("admin", InvalidScope, "licence:issue, licence:manage, licence:read, licence:verify"),
    ],
)
def test_add_refuses_unknown_or_no_scopes(
    registry: ClientRegistry, scopes: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        registry.add(DEPT, scopes, actor="officer")
    assert registry.list() == []


def test_add_refuses_unknown_or_malformed_department(registry: ClientRegistry) -> None:
    with pytest.raises(DepartmentNotFound, match="yinxin dept add --code " + OTHER_DEPT):
        registry.add(OTHER_DEPT, "licence:read", actor="officer")
    with pytest.raises(InvalidUSCC):
        registry.add("11110101000000123X", "licence:read", actor="officer")
    assert isinstance(InvalidScope("x"), InvalidInput)


def test_authenticate(registry: ClientRegistry, client: NewClient) -> None:
    found = registry.authenticate(client.client_id, client.client_secret)
    assert found is not None
    assert (found.client_id, found.department_code, found.scopes) == (
        client.client_id,
        DEPT,
        frozenset({"licence:issue", "licence:read"}),
    )
    assert registry.authenticate(client.client_id, client.client_secret + "x") is None
    assert registry.authenticate(client.client_id, "") is None
    assert registry.authenticate("yx_0000000000000000", client.client_secret) is None
    assert registry.authenticate("not-a-client-id", client.client_secret) is None
    assert registry.authenticate(client.client_id, "x" * 100_000) is None


def test_unknown_client_ids_cost_one_scrypt_like_known_ones(
    registry: ClientRegistry, client: NewClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_scrypt: Callable[..., bytes] = hashlib.scrypt

    def counting_scrypt(*args: Any, **kwargs: Any) -> bytes:
        calls.append(kwargs["n"])
        return real_scrypt(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting_scrypt)
    for client_id in ("yx_0123456789abcdef", "garbage", client.client_id):
        calls.clear()
        assert registry.authenticate(client_id, "wrong secret") is None
        assert calls == [2**14], client_id


def test_successful_authentications_are_cached_for_a_minute(
    vault: Vault, registry: ClientRegistry, client: NewClient, clock: SettableClock
) -> None:
    assert registry.authenticate(client.client_id, client.client_secret) is not None
    # Change the stored hash behind the registry's back: the cache still answers ...
    with vault.db.write() as s:
        s.execute(
            text("UPDATE api_clients SET secret_hash = :h WHERE client_id = :id"),
            {"h": hash_client_secret("another secret"), "id": client.client_id},
        )
    assert registry.authenticate(client.client_id, client.client_secret) is not None
    # ... for a wrong secret it never does ...
    assert registry.authenticate(client.client_id, "another secret " + "x") is None
    # ... and after the cache lifetime the database decides again.
    clock.advance(seconds=61)
    assert registry.authenticate(client.client_id, client.client_secret) is None
    assert registry.authenticate(client.client_id, "another secret") is not None


def test_disable(vault: Vault, registry: ClientRegistry, client: NewClient, clock: SettableClock) -> None:
    assert registry.authenticate(client.client_id, client.client_secret) is not None  # now cached
    assert registry.is_enabled(client.client_id)
    clock.advance(seconds=5)

    info = registry.disable(client.client_id, actor="officer")

    assert info.disabled_at == clock.now and not info.enabled
    assert registry.authenticate(client.client_id, client.client_secret) is None  # cache dropped
    assert not registry.is_enabled(client.client_id)
    # Another process's registry (its own cache) sees the disabled client too.
    assert ClientRegistry(vault).authenticate(client.client_id, client.client_secret) is None
    event = vault.audit_events(subject=client.client_id)[-1]
    assert (event.action, dict(event.details)) == (
        "client.disable",
        {"department": DEPT, "scopes": ["licence:issue", "licence:read"]},
    )
    assert client.client_secret not in all_rows_text(vault)
    with pytest.raises(IllegalTransition, match="already disabled"):
        registry.disable(client.client_id, actor="officer")
    with pytest.raises(NotFound, match="yinxin client list"):
        registry.disable("yx_0000000000000000", actor="officer")
    assert vault.verify_audit().ok


def test_list(vault: Vault, registry: ClientRegistry, client: NewClient) -> None:
    vault.add_department(OTHER_DEPT, "北京市公安局", actor="test")
    other = registry.add(OTHER_DEPT, ["licence:verify"], actor="officer")
    registry.disable(other.client_id, actor="officer")

    listed = {c.client_id: c for c in registry.list()}
    assert set(listed) == {client.client_id, other.client_id}
    assert listed[client.client_id].enabled and not listed[other.client_id].enabled
    assert listed[other.client_id].scopes == {"licence:verify"}
    assert [c.client_id for c in registry.list(department_code=OTHER_DEPT)] == [other.client_id]
    assert "secret" not in repr(listed)


# ---- the service key and access tokens --------------------------------------------------


def test_service_key_is_created_once_audited_and_kept_out_of_the_licence_trust_store(vault: Vault) -> None:
    first = ensure_service_key(vault, actor="init")
    again = ensure_service_key(vault, actor="init")

    assert again.kid == first.kid and first.kid.startswith("service-es256-")
    assert (first.purpose, first.department_code, first.state) == (KEY_PURPOSE_SERVICE_TOKEN, None, "active")
    assert [k.kid for k in service_trust_store(vault)] == [first.kid]
    assert first.kid not in vault.trust_store(refresh=True)  # never verifies a licence
    events = [
        e
        for e in vault.audit_events()
        if e.action == "key.generate" and e.details["purpose"] == KEY_PURPOSE_SERVICE_TOKEN
    ]
    assert [(e.subject, e.details["purpose"]) for e in events] == [(first.kid, KEY_PURPOSE_SERVICE_TOKEN)]


def test_issue_token_grants_requested_scopes_within_the_clients(
    vault: Vault, registry: ClientRegistry, client: NewClient, clock: SettableClock
) -> None:
    authenticated = registry.authenticate(client.client_id, client.client_secret)
    assert authenticated is not None

    issued = registry.issue_token(authenticated)  # created the service key on first need
    assert (issued.scope, issued.expires_in) == ("licence:issue licence:read", 600)
    claims = verify_access_token(issued.token, service_trust_store(vault), now=clock.now)
    now = int(clock.now.timestamp())
    assert {k: v for k, v in claims.items() if k != "jti"} == {
        "iss": "yinxin",
        "sub": client.client_id,
        "client_id": client.client_id,
        "aud": "yinxin-api",
        "iat": now,
        "exp": now + 600,
        "scope": "licence:issue licence:read",
        "dept": DEPT,
    }
    assert len(claims["jti"]) >= 22

    narrow = registry.issue_token(authenticated, "licence:read", lifetime=60)
    assert (narrow.scope, narrow.expires_in) == ("licence:read", 60)
    assert (
        verify_access_token(narrow.token, service_trust_store(vault), now=clock.now)["jti"] != claims["jti"]
    )
    with pytest.raises(InvalidScope, match="licence:manage is not granted"):
        registry.issue_token(authenticated, "licence:read licence:manage")
    with pytest.raises(InvalidScope, match="unknown scope"):
        registry.issue_token(authenticated, "licence:read openid")
    assert authenticated.scopes <= SCOPES


def test_joserfc_verifies_an_access_token_with_the_service_jwks(
    vault: Vault, registry: ClientRegistry, client: NewClient, clock: SettableClock
) -> None:
    authenticated = registry.authenticate(client.client_id, client.client_secret)
    assert authenticated is not None
    issued = registry.issue_token(authenticated)
    key_set = KeySet.import_key_set(jwks_document(service_trust_store(vault)))  # type: ignore[arg-type]

    decoded = jwt.decode(issued.token, key_set, algorithms=["ES256"])

    assert dict(decoded.header) == {"alg": "ES256", "kid": issued.kid, "typ": "at+jwt"}
    assert decoded.claims["client_id"] == client.client_id
    assert decoded.claims["scope"] == "licence:issue licence:read"
