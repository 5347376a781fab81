"""Human-readable CLI output (the ``--json`` documents are built beside each command)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from schemas import LicenceIdentifier, LicenceType
from vault import CHINA_TIME, AuditEvent, AuditReport, KeyInfo, Licence, StatusChange, Verdict

_BANNERS = {
    "valid": "VALID / 有效",
    "suspended": "SUSPENDED / 已暂停",
    "revoked": "REVOKED / 已吊销",
    "expired": "EXPIRED / 已过期",
    "not_yet_valid": "NOT YET VALID / 尚未生效",
    "invalid": "INVALID / 无效",
}


def _local(dt: Any) -> str:
    if dt is None:
        return "-"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return str(dt.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M:%S CST"))


def key_document(k: KeyInfo) -> dict[str, Any]:
    return {
        "kid": k.kid,
        "algorithm": k.algorithm,
        "backend": k.backend,
        "purpose": k.purpose,
        "department": k.department_code,
        "state": k.state,
        "created_at": k.created_at.isoformat(),
        "activated_at": k.activated_at.isoformat() if k.activated_at else None,
        "retired_at": k.retired_at.isoformat() if k.retired_at else None,
    }


def keys_table(keys: Sequence[KeyInfo]) -> str:
    if not keys:
        return "no keys: generate one with `yinxin keys generate --dept USCC`"
    lines = [f"{'KID':<48} {'ALG':<6} {'STATE':<8} {'BACKEND':<9} DEPARTMENT"]
    for k in keys:
        lines.append(f"{k.kid:<48} {k.algorithm:<6} {k.state:<8} {k.backend:<9} {k.department_code or '-'}")
    return "\n".join(lines)


def type_document(t: LicenceType) -> dict[str, Any]:
    return {
        "code": t.code,
        "name": t.name,
        "name_en": t.name_en,
        "holder_id_type": t.holder_id_type,
        "defining_authority": t.defining_authority,
        "schema": dict(t.schema),
        "example": dict(t.example),
    }


def types_table(types: Sequence[LicenceType]) -> str:
    lines: list[str] = []
    for t in types:
        lines.append(f"{t.code}  {t.name} ({t.name_en})  holder_id_type={t.holder_id_type}")
        fields = t.schema.get("properties", {})
        required = set(t.schema.get("required", []))
        for name, spec in fields.items():
            mark = "*" if name in required else " "
            lines.append(f"    {mark} {name:<28} {spec.get('title', '')}")
        lines.append("    example: " + json.dumps(t.example, ensure_ascii=False))
    lines.append("(* = required; `yinxin types list --json` prints the full JSON Schemas)")
    return "\n".join(lines)


def issued(lic: Licence, created: bool) -> str:
    head = "issued" if created else "already issued (idempotency key): returning the first result"
    return f"{head}\nidentifier: {lic.identifier}\ntoken: {lic.token}"


def change_document(c: StatusChange) -> dict[str, Any]:
    return {
        "from": c.from_status,
        "to": c.to_status,
        "reason": c.reason,
        "actor": c.actor,
        "changed_at": c.changed_at.isoformat(),
    }


def licence(lic: Licence, status: str, history: Sequence[StatusChange]) -> str:
    lines = [
        f"{lic.identifier}",
        f"  status:     {_BANNERS.get(status, status)}",
        f"  type:       {lic.type_name} ({lic.type_code})",
        f"  issuer:     {lic.issuer_name} ({lic.issuer_code})",
        f"  holder:     {lic.holder_name} ({lic.holder_id_masked})",
        f"  validity:   {lic.valid_from} – {lic.valid_until or '长期 / no expiry'}",
        f"  issued at:  {_local(lic.issued_at)} with key {lic.kid}",
        "  face data:",
    ]
    lines += [f"    {k}: {v}" for k, v in lic.data.items()]
    if history:
        lines.append("  history:")
        lines += [
            f"    {_local(c.changed_at)}  {c.from_status} → {c.to_status}  by {c.actor}: {c.reason}"
            for c in history
        ]
    return "\n".join(lines)


def verdict(v: Verdict) -> str:
    lines = [_BANNERS.get(v.status, v.status)]
    if v.licence:
        lic = v.licence
        lines += [
            f"  identifier: {lic['identifier']}",
            f"  type:       {lic['licence_type_name']} ({lic['licence_type']})",
            f"  issuer:     {lic['issuer_name']} ({lic['issuer']})",
            f"  holder:     {lic['holder_name']} ({lic['holder_id_masked']})",
            f"  validity:   {lic['valid_from']} – {lic['valid_until'] or '长期 / no expiry'}",
        ]
    if v.kid:
        lines.append(f"  key:        {v.kid}")
    for reason in v.reasons:
        lines.append(f"  reason:     {reason}")
    lines.append(f"  checked at: {_local(v.checked_at)}")
    return "\n".join(lines)


def identifier(ident: LicenceIdentifier) -> str:
    return "\n".join(
        [
            f"valid identifier {ident}",
            f"  type code:   {ident.type_code}",
            f"  issuer code: {ident.issuer_code}",
            f"  serial:      {ident.serial} (year {ident.year}, sequence {ident.sequence})",
            f"  version:     {ident.version_text}",
            f"  check:       {ident.check_character} (ISO 7064 MOD 37,36)",
        ]
    )


def audit(report: AuditReport) -> str:
    if report.ok:
        return (
            f"audit chain intact: {report.events_checked} events, head {report.head_seq} "
            f"{report.head_hash[:16]}…"
        )
    return "\n".join(
        [
            f"audit chain BROKEN ({report.events_checked} events checked):",
            *("  " + p for p in report.problems),
        ]
    )


def event_document(e: AuditEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "subject": e.subject,
        "details": dict(e.details),
        "hash": e.hash,
    }


def events(items: Sequence[AuditEvent]) -> str:
    return (
        "\n".join(f"{e.seq:>7} {e.at} {e.actor:<16} {e.action:<18} {e.subject}" for e in items) or "no events"
    )
