"""The world the schemathesis run fuzzes, and the seeds that let it reach real objects.

One real vault (SQLite in a temporary directory, software keystore, a settable clock) holding
the demo departments with an ES256 licence key each, the CA and one seal per department, the
demo licences plus a suspended and a revoked one, and a pending dual-control request. The caller
is an API client of the market department holding every scope and acting for a security officer;
its bearer token comes from ``POST /v1/oauth/token`` as a client gets it. A second officer
(bound to a client of the health department, whose token is never used) is enrolled so that
dual-control requests can be made at all, and no request can ever reach its second approval.

Rate limits are far out of reach: a 429 would hide the answer the fuzzer is after. Seal images
and printed licences need a CJK font, as everywhere in the suite (``make system-deps``).

The seeds are real path parameter values and good bodies, per operation; the test mixes them
into the generated ones (``before_generate_*`` hooks), so a share of the requests gets past
"no such licence" into the code that handles a real one.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests._pdf import simple_pdf
from tests.verify_api._api_support import bearer_tokens
from tests.verify_api._presentation_support import (
    SettableClock,
    add_issuers,
    close_vault,
    issue_example,
    issue_examples,
    open_vault,
)
from vault import CLIENT_SCOPES, Vault, presentation_for
from vault._access_tokens import ensure_service_key
from vault._clients import ClientRegistry
from vault._status_publisher import ensure_status_list_key
from verify_api.app import create_app
from verify_api.settings import Settings

__all__ = ["BUSINESS", "EXAMPLES_VARIABLE", "HEALTH", "MARKET", "FuzzWorld", "fuzz_examples", "fuzz_world"]

MARKET: Final = "11110101000000123B"  # 北京市东城区市场监督管理局: the caller's department
HEALTH: Final = "11110101000000456Q"  # 北京市东城区卫生健康委员会: another department
BUSINESS: Final = "11100000000013101Q001"  # 个体工商户营业执照, issued by MARKET
EXAMPLES_VARIABLE: Final = "YINXIN_FUZZ_EXAMPLES"


def fuzz_examples() -> int:
    """Examples per operation: 100 in CI, more for ``make fuzz`` (``YINXIN_FUZZ_EXAMPLES=1000``)."""
    raw = os.environ.get(EXAMPLES_VARIABLE, "100")
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"{EXAMPLES_VARIABLE} must be a whole number, not {raw!r}") from None
    if count < 1:
        raise ValueError(f"{EXAMPLES_VARIABLE} must be at least 1, not {count}")
    return count


@dataclass(frozen=True)
class FuzzWorld:
    app: FastAPI
    vault: Vault
    token: str  # market department, every scope, acting for a security officer
    # Real values per path parameter name: {"identifier": (...), "seal_id": (...), ...}.
    path_values: Mapping[str, tuple[Any, ...]]
    # Good bodies per operation label ("POST /v1/licences"), as the wire carries them.
    bodies: Mapping[str, tuple[Any, ...]]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _status_list_name(token: str) -> str:
    """The status list a licence token points at (draft-ietf-oauth-status-list §6.2)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    uri: str = claims["status"]["status_list"]["uri"]
    return uri.rsplit("/", 1)[1]


@contextmanager
def fuzz_world(tmp: Path) -> Iterator[FuzzWorld]:
    clock = SettableClock()
    vault = open_vault(f"sqlite:///{tmp / 'yinxin.db'}", tmp / "keystore", clock)
    try:
        ensure_service_key(vault, actor="test")
        ensure_status_list_key(vault)
        add_issuers(vault)
        vault.seals.init_ca(actor="test")
        seals = [
            vault.seals.create(MARKET, "北京市东城区市场监督管理局行政审批专用章", actor="test"),
            vault.seals.create(HEALTH, "北京市东城区卫生健康委员会公章", actor="test"),
        ]
        by_type = issue_examples(vault)
        own = by_type[BUSINESS]
        licences = list(by_type.values())
        suspended = issue_example(vault, BUSINESS)
        vault.change_status(suspended.identifier, "suspended", reason="fuzz world", actor="test")
        revoked = issue_example(vault, BUSINESS)
        vault.change_status(revoked.identifier, "revoked", reason="fuzz world", actor="test")
        licences += [suspended, revoked]

        registry = ClientRegistry(vault)
        every = " ".join(sorted(CLIENT_SCOPES))
        market = registry.add(MARKET, every, actor="test")
        health = registry.add(HEALTH, every, actor="test")
        alice = vault.add_officer(
            "alice", "security-officer", password=None, client_id=market.client_id, acting=None, actor="test"
        )
        vault.add_officer(
            "bob", "security-officer", password=None, client_id=health.client_id, acting=alice, actor="test"
        )
        kids = tuple(k.kid for k in vault.list_keys())
        licence_kid = own.kid
        revoke_seal = {"seal_id": seals[1].seal_id, "reason": "lost", "crl_reason": "keyCompromise"}
        pending = vault.approvals.request("seal.revoke", revoke_seal, alice)
        sealed = vault.seals.seal_document(seals[0].seal_id, simple_pdf(), actor="test").pdf

        settings = Settings(
            home=tmp / "home",
            public_url="http://127.0.0.1:8000",
            verify_rate_per_minute=100_000,
            verify_burst=10_000,
            token_rate_per_minute=100_000,
            token_burst=10_000,
        )
        app = create_app(settings, vault=vault, clock=clock)
        with TestClient(app) as api:
            token = bearer_tokens(api, {"market": market})["market"]

        examples = [json.loads(json.dumps(t.example)) for t in vault.types.all()]
        path_values: dict[str, tuple[Any, ...]] = {
            "identifier": tuple(lic.identifier for lic in licences),
            "seal_id": tuple(seal.seal_id for seal in seals),
            "kid": kids,
            "id_type": tuple(example["holder"]["id_type"] for example in examples),
            "holder_id": tuple(example["holder"]["id"] for example in examples),
            "name": tuple(sorted({_status_list_name(lic.token) for lic in licences})),
            "request_id": (pending.id,),
            "token": tuple(presentation_for(vault, lic.identifier) for lic in licences),
        }
        reason = {"reason": "schemathesis"}
        bodies: dict[str, tuple[Any, ...]] = {
            "POST /v1/licences": tuple(examples),
            "POST /v1/verify": tuple({"token": lic.token} for lic in licences),
            "POST /v1/licences/{identifier}/suspend": (reason,),
            "POST /v1/licences/{identifier}/revoke": (reason,),
            "POST /v1/licences/{identifier}/reinstate": (reason,),
            "POST /v1/seals/{seal_id}/pdf": (simple_pdf(),),
            "POST /v1/pdf/verify": (simple_pdf(), sealed),
            "POST /v1/keys/rotate": (
                {"department": MARKET},
                {"department": MARKET, "algorithm": "EdDSA", "max_signatures": 1000},
                {"purpose": "audit"},
            ),
            "POST /v1/approvals": (
                {"operation": "key.destroy", "params": {"kid": licence_kid}},
                {"operation": "seal.revoke", "params": revoke_seal},
                {
                    "operation": "key.compromise",
                    "params": {"kid": licence_kid, "since": "2026-11-01T00:00:00+08:00", "reason": "lost"},
                },
            ),
            "POST /v1/approvals/{request_id}/reject": (reason,),
            "POST /v1/oauth/token": (
                {
                    "grant_type": "client_credentials",
                    "client_id": market.client_id,
                    "client_secret": market.client_secret,
                },
                {
                    "grant_type": "client_credentials",
                    "scope": "licence:read",
                    "client_id": market.client_id,
                    "client_secret": market.client_secret,
                },
            ),
        }
        yield FuzzWorld(
            app=app,
            vault=vault,
            token=token,
            path_values=path_values,
            bodies=bodies,
        )
    finally:
        close_vault(vault)
