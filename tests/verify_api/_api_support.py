"""Shared by the API tests: bearer tokens for API clients, obtained the way a client does."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.testclient import TestClient

from vault import NewClient


def bearer_tokens(api: TestClient, clients: Mapping[str, NewClient]) -> dict[str, str]:
    """An access token per client, from POST /v1/oauth/token (client credentials, RFC 6749 §4.4)."""
    tokens = {}
    for name, client in clients.items():
        r = api.post(
            "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client.client_id, client.client_secret),
        )
        assert r.status_code == 200, r.text
        tokens[name] = r.json()["access_token"]
    return tokens
