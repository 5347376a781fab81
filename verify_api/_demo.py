"""``yinxin demo`` (what ``make run`` shows): issue → verify → revoke → verify again.

Uses the example request of the 个体工商户营业执照 type and the demo issuing
departments; registers them and gives them keys on first run, re-uses them after.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from hsm import SignatureAlgorithm
from schemas import LicenceCreate
from vault import Vault
from verify_api import _render as render

__all__ = ["DEMO_DEPARTMENTS", "run_demo"]

# The issuers named in the licence types' example requests (schemas/licence_types/*.json).
DEMO_DEPARTMENTS = {
    "11110101000000123B": "北京市东城区市场监督管理局",
    "11110101000000456Q": "北京市东城区卫生健康委员会",
}
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
