"""The shared world of test_token_attacks.py: a real vault, its HTTP app and its CLI over one home.

Built once per module (RSA-3072 key generation is the slow part): an SQLite file in a
temporary ``YINXIN_HOME``, the software keystore, and genuine licences signed with real
keys of each algorithm. The CLI runs in-process (``verify_api.cli.main``) against the same
home through the ``YINXIN_*`` environment, as an operator's shell would.

Key layout (departments are the licence types' example issuers):

- MARKET: ES256 key ``compromised`` (one licence, then declared compromised), ES256 key
  ``destroyed`` (one licence, then rotated away and destroyed), ES256 key ``es256`` (active;
  two licences: the attack base and a second one for splicing);
- HEALTH: EdDSA key ``eddsa`` (one licence, then rotated), PS256 key ``ps256`` (active, one licence).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hsm import SignatureAlgorithm
from schemas import LicenceCreate
from vault import Vault
from vault._access_tokens import ensure_service_key
from vault._clients import ClientRegistry
from vault._status_publisher import ensure_status_list_key
from verify_api.app import create_app
from verify_api.cli import main
from verify_api.settings import Settings, load_settings
from verify_api.wiring import open_vault

MARKET = "11110101000000123B"
HEALTH = "11110101000000456Q"
BUSINESS = "11100000000013101Q001"  # issued by MARKET
HYGIENE = "11100000000013202H001"  # issued by HEALTH
MEDICAL = "11100000000013202H002"  # issued by HEALTH
PASSWORD = "correct horse battery 1"


@dataclass(frozen=True)
class Genuine:
    """A licence as issued: its token and the key that signed it."""

    identifier: str
    token: str
    kid: str
    algorithm: SignatureAlgorithm


@dataclass
class CLIResult:
    code: int
    out: str
    err: str


@dataclass
class World:
    vault: Vault
    api: TestClient
    genuine: dict[str, Genuine]  # ES256, EdDSA, PS256, ES256-second, compromised, destroyed
    status_list_token: str
    access_token: str
    cache: dict[str, Any] = field(default_factory=dict)

    def cli(self, *argv: str) -> CLIResult:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse's usage errors, as the console script would exit
                code = exc.code if isinstance(exc.code, int) else 2
        return CLIResult(code, out.getvalue(), err.getvalue())

    def cli_verify(self, token: str) -> tuple[CLIResult, dict[str, Any]]:
        result = self.cli("verify", token, "--json")
        return result, json.loads(result.out) if result.out.strip() else {}

    def cli_verify_after_separator(self, token: str) -> tuple[CLIResult, dict[str, Any]]:
        result = self.cli("verify", "--json", "--", token)
        return result, json.loads(result.out) if result.out.strip() else {}


def _issue(vault: Vault, type_code: str, algorithm: SignatureAlgorithm) -> Genuine:
    request = LicenceCreate.model_validate(vault.types.get(type_code).example)
    licence = vault.issue(request, actor="t").licence
    return Genuine(licence.identifier, licence.token, licence.kid, algorithm)


@pytest.fixture(scope="module", name="world")
def world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home: Path = tmp_path_factory.mktemp("security-home")
    with pytest.MonkeyPatch.context() as patch, contextlib.ExitStack() as stack:
        patch.setenv("YINXIN_HOME", str(home))
        patch.setenv("YINXIN_DATABASE_URL", f"sqlite:///{home / 'yinxin.db'}")
        patch.setenv("YINXIN_KEYSTORE_PASSPHRASE", "security-test-passphrase")
        patch.delenv("YINXIN_HSM", raising=False)
        settings = load_settings()
        vault = stack.enter_context(open_vault(settings, migrate=True))
        vault.initialise(actor="t")
        vault.add_department(MARKET, "北京市东城区市场监督管理局", actor="t")
        vault.add_department(HEALTH, "北京市东城区卫生健康委员会", actor="t")
        ES, ED, PS = SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA, SignatureAlgorithm.PS256

        genuine: dict[str, Genuine] = {}
        vault.generate_key(MARKET, ES, actor="t")
        genuine["compromised"] = _issue(vault, BUSINESS, ES)
        vault.rotate_key(MARKET, officer=None, actor="t")
        genuine["destroyed"] = _issue(vault, BUSINESS, ES)
        vault.rotate_key(MARKET, officer=None, actor="t")
        genuine["ES256"] = _issue(vault, BUSINESS, ES)
        genuine["ES256-second"] = _issue(vault, BUSINESS, ES)
        vault.generate_key(HEALTH, ED, actor="t")
        genuine["EdDSA"] = _issue(vault, HYGIENE, ED)
        vault.rotate_key(HEALTH, PS, officer=None, actor="t")
        genuine["PS256"] = _issue(vault, MEDICAL, PS)

        ensure_status_list_key(vault)
        ensure_service_key(vault, actor="t")
        verifier = ClientRegistry(vault).add(MARKET, "licence:read licence:verify", actor="t")

        # Dual control: two security officers declare one key compromised and destroy another.
        vault.add_officer("alice", "security-officer", password=PASSWORD, acting=None, actor="t")
        alice = vault.officer_login("alice", PASSWORD)
        vault.add_officer("bob", "security-officer", password=PASSWORD, acting=alice, actor="t")
        bob = vault.officer_login("bob", PASSWORD)
        since = "2026-11-01T00:00+08:00"
        params = {"kid": genuine["compromised"].kid, "since": since, "reason": "test"}
        r = vault.approvals.request("key.compromise", params, alice)
        assert vault.approvals.approve(r.id, bob).state == "executed"
        r = vault.approvals.request("key.destroy", {"kid": genuine["destroyed"].kid}, alice)
        assert vault.approvals.approve(r.id, bob).state == "executed"

        api_settings = Settings(
            home=home, verify_rate_per_minute=100_000, verify_burst=10_000, token_rate_per_minute=100_000
        )
        api = stack.enter_context(TestClient(create_app(api_settings, vault=vault)))

        status_uri = json.loads(_segment(genuine["ES256"].token, 1))["status"]["status_list"]["uri"]
        listed = api.get("/v1/status-lists/" + status_uri.rsplit("/", 1)[1])
        assert listed.status_code == 200, listed.text
        issued = api.post(
            "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(verifier.client_id, verifier.client_secret),
        )
        assert issued.status_code == 200, issued.text

        yield World(vault, api, genuine, listed.text, issued.json()["access_token"])


def _segment(token: str, index: int) -> bytes:
    import base64

    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
