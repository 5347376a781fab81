"""``yinxin demo`` (what ``make run`` shows): issue → verify → revoke → verify again.

Uses the example request of the 个体工商户营业执照 type and the demo issuing
departments; registers them and gives them keys on first run, re-uses them after.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hsm import SignatureAlgorithm
from schemas import LicenceCreate
from vault import Vault
from verify_api import _render as render

__all__ = ["DEMO_DEPARTMENTS", "DEMO_VERIFIER", "run_demo", "seed_service_demo"]

# The issuers named in the licence types' example requests (schemas/licence_types/*.json).
DEMO_DEPARTMENTS = {
    "11110101000000123B": "北京市东城区市场监督管理局",
    "11110101000000456Q": "北京市东城区卫生健康委员会",
}
# A verifying department (用证部门): reads licences of others for a stated purpose.
DEMO_VERIFIER = ("111101010000007896", "北京市东城区人力资源和社会保障局")
DEMO_CREDENTIALS_FILE = "demo-credentials.json"
DEMO_TYPE = "11100000000013101Q001"  # 个体工商户营业执照


def ensure_demo_departments(vault: Vault, actor: str) -> list[str]:
    done: list[str] = []
    known = {d.code for d in vault.departments()}
    active = {k.department_code for k in vault.list_keys() if k.state == "active"}
    for code, name in DEMO_DEPARTMENTS.items():
        if code not in known:
            vault.add_department(code, name, actor=actor)
            done.append(f"registered department {code} {name}")
        if code not in active:
            key = vault.generate_key(code, SignatureAlgorithm.ES256, actor=actor)
            done.append(f"generated {key.algorithm} key {key.kid} in the {key.backend} backend")
    return done


def ensure_demo_seals(vault: Vault, actor: str) -> list[str]:
    """The CA and one 行政审批专用章 per demo issuer (so `make run` can seal and print licences)."""
    from schemas.errors import CANotInitialised

    done: list[str] = []
    try:
        vault.seals.ca()
    except CANotInitialised:
        ca = vault.seals.init_ca(actor=actor)
        done.append(f"created the CA {ca.ca_id} ({ca.certificate.subject.rfc4514_string()})")
    have = {s.department_code for s in vault.seals.list() if s.state == "active"}
    for code, name in DEMO_DEPARTMENTS.items():
        if code not in have:
            seal = vault.seals.create(code, f"{name}行政审批专用章", actor=actor)
            done.append(f"created seal {seal.seal_id} {seal.name}")
    return done


def run_demo(vault: Vault, *, json_output: bool = False, actor: str = "demo") -> int:
    steps: list[dict[str, Any]] = []

    def step(title: str, body: str, document: dict[str, Any]) -> None:
        steps.append({"step": title, **document})
        if not json_output:
            sys.stdout.write(f"\n== {len(steps)}. {title}\n{body}\n")

    setup = ensure_demo_departments(vault, actor)
    step(
        "set up issuing departments",
        "\n".join(setup) or "departments and keys already present",
        {"actions": setup},
    )

    request = LicenceCreate.model_validate(vault.types.get(DEMO_TYPE).example)
    lic = vault.issue(request, actor=actor).licence
    step(
        "issue a licence",
        render.issued(lic, True),
        {"identifier": lic.identifier, "token": lic.token, "kid": lic.kid},
    )

    first = vault.verify(lic.token)
    step("verify it", render.verdict(first), first.as_dict())

    revoked = vault.revoke(lic.identifier, reason="演示：吊销 / demo revocation", actor=actor)
    step(
        "revoke it",
        f"{revoked.identifier}: now {revoked.status}",
        {"identifier": revoked.identifier, "status": revoked.status},
    )

    second = vault.verify(lic.token)
    step("verify it again", render.verdict(second), second.as_dict())

    report = vault.verify_audit()
    step(
        "check the audit chain",
        render.audit(report),
        {"valid": report.ok, "events_checked": report.events_checked},
    )

    ok = first.valid and not second.valid and second.status == "revoked" and report.ok
    if json_output:
        sys.stdout.write(json.dumps({"ok": ok, "steps": steps}, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(
            "\nTry it yourself:\n"
            f"  .venv/bin/yinxin show {lic.identifier}\n"
            "  .venv/bin/yinxin verify <token>\n"
            "  .venv/bin/yinxin types list\n"
        )
    return 0 if ok else 1


def seed_service_demo(
    vault: Vault, home: Path, *, actor: str = "demo"
) -> tuple[list[str], dict[str, Any] | None]:
    """What `make run` serves: issuing and verifying departments, their API clients, a few licences.

    API client credentials are created once and written to ``home/demo-credentials.json``
    (mode 0600); the new secrets are returned so the caller can print them once. Later runs
    find the file and create no new clients.
    """
    from vault._clients import ClientRegistry

    done = ensure_demo_departments(vault, actor)
    done += ensure_demo_seals(vault, actor)
    code, name = DEMO_VERIFIER
    if code not in {d.code for d in vault.departments()}:
        vault.add_department(code, name, actor=actor)
        done.append(f"registered verifying department {code} {name}")
    path = home / DEMO_CREDENTIALS_FILE
    created: dict[str, Any] | None = None
    if not path.exists():
        registry = ClientRegistry(vault)
        clients = {}
        for label, dept, scopes in (
            (
                "market_regulator",
                "11110101000000123B",
                "licence:issue licence:read licence:manage licence:verify seal:use",
            ),
            (
                "health_commission",
                "11110101000000456Q",
                "licence:issue licence:read licence:manage licence:verify seal:use",
            ),
            ("verifier", code, "licence:read licence:verify"),
        ):
            new = registry.add(dept, scopes, actor=actor)
            clients[label] = {
                "client_id": new.client_id,
                "client_secret": new.client_secret,
                "department": dept,
                "scopes": " ".join(sorted(new.scopes)),
            }
        created = {"token_url": f"{vault.public_url}/v1/oauth/token", "clients": clients}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(created, fh, ensure_ascii=False, indent=2)
        done.append(f"created 3 API clients; credentials written to {path}")
        for t in vault.types.all():
            lic = vault.issue(LicenceCreate.model_validate(t.example), actor=actor).licence
            done.append(f"issued {t.name}: {lic.identifier}")
    else:
        done.append(f"API clients exist; credentials are in {path}")
    return done, created
