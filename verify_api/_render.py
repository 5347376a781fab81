"""Human-readable CLI output (the ``--json`` documents are built beside each command)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from schemas import LicenceIdentifier, LicenceType
from vault import (
    CHINA_TIME,
    AffectedReport,
    ApprovalRequest,
    AuditEvent,
    AuditReport,
    CeremonyRecord,
    KeyInfo,
    Licence,
    Officer,
    StatusChange,
    Verdict,
)

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


def _iso(dt: Any) -> str | None:
    return dt.isoformat() if dt is not None else None


def key_document(k: KeyInfo) -> dict[str, Any]:
    return {
        "kid": k.kid,
        "algorithm": k.algorithm,
        "backend": k.backend,
        "purpose": k.purpose,
        "department": k.department_code,
        "state": k.state,
        "created_at": k.created_at.isoformat(),
        "activated_at": _iso(k.activated_at),
        "retired_at": _iso(k.retired_at),
        "sign_until": _iso(k.sign_until),
        "max_signatures": k.max_signatures,
        "signature_count": k.signature_count,
        "destroyed_at": _iso(k.destroyed_at),
        "compromised_at": _iso(k.compromised_at),
        "state_reason": k.state_reason,
    }


def keys_table(keys: Sequence[KeyInfo]) -> str:
    if not keys:
        return "no keys: generate one with `yinxin keys generate --dept USCC`"
    lines = [f"{'KID':<48} {'ALG':<6} {'STATE':<14} {'PURPOSE':<15} {'SIGNS UNTIL':<11} DEPARTMENT"]
    for k in keys:
        until = k.sign_until.astimezone(CHINA_TIME).strftime("%Y-%m-%d") if k.sign_until else "-"
        lines.append(
            f"{k.kid:<48} {k.algorithm:<6} {k.state:<14} {k.purpose:<15} {until:<11} "
            f"{k.department_code or '-'}"
        )
    return "\n".join(lines)


def ceremony_document(c: CeremonyRecord | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "verified": c.verified,
        "signed_by": c.signed_by,
        "problem": c.problem,
        "record": dict(c.record),
        "token": c.token,
    }


def key_details(k: KeyInfo, c: CeremonyRecord | None) -> str:
    lines = [
        f"key {k.kid}",
        f"  purpose:     {k.purpose}" + (f" (department {k.department_code})" if k.department_code else ""),
        f"  algorithm:   {k.algorithm}, backend {k.backend}",
        f"  state:       {k.state}" + (f" ({k.state_reason})" if k.state_reason else ""),
        f"  created:     {_local(k.created_at)}",
        f"  activated:   {_local(k.activated_at)}",
        f"  signs until: {_local(k.sign_until) if k.sign_until else 'no time limit'}",
        f"  signatures:  {k.signature_count}" + (f" of {k.max_signatures}" if k.max_signatures else ""),
    ]
    if k.retired_at:
        lines.append(f"  retired:     {_local(k.retired_at)}")
    if k.destroyed_at:
        lines.append(f"  destroyed:   {_local(k.destroyed_at)} (private key deleted; public key kept)")
    if k.compromised_at:
        lines.append(f"  compromised: since {_local(k.compromised_at)}")
    if c is None:
        lines.append("  generation record: none (key created before records were kept)")
        return "\n".join(lines)
    if not c.verified:
        lines.append(f"  generation record: NOT VERIFIED: {c.problem}")
        return "\n".join(lines)
    r = c.record
    lines.append(f"  generation record (signed by {c.signed_by}, signature verified):")
    lines.append(f"    generated:  {r.get('generated_at')} by {r.get('generated_by')}")
    lines.append(f"    module:     {r.get('module')}")
    if r.get("token_label"):
        lines.append(
            f"    token:      {r.get('token_label')} serial {r.get('token_serial')} "
            f"({r.get('token_manufacturer')}, {r.get('token_model')})"
        )
    attributes = r.get("attributes") or {}
    for name, value in attributes.items():
        shown = "n/a" if value is None else str(value).lower()
        lines.append(f"    {name + ':':<24}{shown}")
    lines.append(f"    protection: {r.get('protection')}")
    lines.append(f"    public key SHA-256: {r.get('public_key_sha256')}")
    return "\n".join(lines)


def officers(items: Sequence[Officer]) -> str:
    if not items:
        return "no officers: enrol the first with `yinxin officer add NAME --role security-officer`"
    lines = [f"{'NAME':<24} {'ROLE':<17} {'CREDENTIAL':<22} STATE"]
    for o in items:
        cred = ("password" if o.has_password else "") + (
            (" + " if o.has_password else "") + f"client {o.client_id}" if o.client_id else ""
        )
        lines.append(f"{o.name:<24} {o.role:<17} {cred:<22} {'disabled' if o.disabled_at else 'enabled'}")
    return "\n".join(lines)


def approval(r: ApprovalRequest) -> str:
    lines = [
        f"request {r.id}: {r.operation} — {r.state.upper()}",
        f"  {r.summary}",
        f"  requested by {r.requested_by} at {_local(r.requested_at)}; expires {_local(r.expires_at)}",
        f"  approvals {len(r.approvals)}/{r.required}: {', '.join(r.approvals) or '-'}",
    ]
    if r.rejections:
        lines.append(f"  rejected by: {', '.join(r.rejections)}")
    if r.state == "pending":
        lines.append(
            f"  another security officer approves with `yinxin approvals approve {r.id} --officer NAME`"
        )
    if r.result:
        lines.append("  result: " + json.dumps(r.result, ensure_ascii=False, default=str))
    if r.error:
        lines.append(
            f"  error: {r.error} (fix the cause, then `yinxin approvals execute {r.id} --officer NAME`)"
        )
    return "\n".join(lines)


def approvals_table(items: Sequence[ApprovalRequest]) -> str:
    if not items:
        return "no approval requests"
    lines = [f"{'ID':>5} {'OPERATION':<15} {'STATE':<9} {'APPROVALS':<9} {'SUBJECT':<48} REQUESTED BY"]
    for r in items:
        lines.append(
            f"{r.id:>5} {r.operation:<15} {r.state:<9} {f'{len(r.approvals)}/{r.required}':<9} "
            f"{r.subject:<48} {r.requested_by}"
        )
    return "\n".join(lines)


def affected(report: AffectedReport) -> str:
    k = report.key
    lines = [
        f"key {k.kid} ({k.purpose}, {k.state}"
        + (f" since {_local(k.compromised_at)})" if k.compromised_at else ")")
    ]
    if report.licences:
        lines.append(f"licences signed ({len(report.licences)} listed, {report.to_reissue} to re-issue):")
        for a in report.licences:
            flag = (
                "re-issue"
                if a.needs_reissue
                else (f"superseded by {a.superseded_by}" if a.superseded_by else "-")
            )
            when = " after compromise" if a.after_compromise else ""
            lines.append(f"  {a.identifier}  {a.status:<9} issued {_local(a.issued_at)}{when}  {flag}")
    else:
        lines.append("no licences signed by this key")
    for seal in report.seals:
        lines.append(f"seal {seal['seal_id']} {seal['name']} ({seal['department']}): {seal['state']}")
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
    checkpoints = (
        f"{report.checkpoints_checked} signed checkpoints, the last at event {report.last_checkpoint_seq}"
        if report.last_checkpoint_seq is not None
        else "no signed checkpoint"
    )
    if report.ok:
        lines = [
            f"audit chain intact: {report.events_checked} events, head {report.head_seq} "
            f"{report.head_hash[:16]}…; {checkpoints}"
        ]
    else:
        lines = [
            f"audit chain BROKEN ({report.events_checked} events checked; {checkpoints}):",
            *("  " + p for p in report.problems),
        ]
    lines.extend("  warning: " + w for w in report.warnings)
    return "\n".join(lines)


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
