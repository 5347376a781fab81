"""``yinxin officer …``, ``yinxin keys …``, ``yinxin approvals …`` and ``yinxin audit …``.

The acting officer is named with ``--officer NAME``; the password comes from
``YINXIN_OFFICER_PASSWORD`` or, in a terminal, from a prompt (never from the
command line, where other users could read it in the process list).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from hsm import SignatureAlgorithm
from schemas.errors import InputTooLarge, InvalidInput
from signing import jwks_document
from vault import ROLES, ApprovalRequest, ApprovalState, Officer, Vault
from vault._approval_operations import OPERATIONS, parse_time
from verify_api import _render as render
from verify_api.cli import _actor, _emit
from verify_api.settings import Settings
from verify_api.wiring import open_vault

__all__ = ["add_key_commands", "officer_argument", "resolve_officer", "run_dual_control"]

MAX_PASSWORD_FILE_BYTES = 1024


def officer_argument(sp: argparse.ArgumentParser, *, required: bool = False) -> None:
    sp.add_argument(
        "--officer",
        required=required,
        metavar="NAME",
        help="the acting officer (password from YINXIN_OFFICER_PASSWORD or a prompt)",
    )


def _prompt(text: str) -> str:
    if not sys.stdin.isatty():
        raise InvalidInput(
            "no terminal to ask for the officer's password: set YINXIN_OFFICER_PASSWORD "
            "(or run the command in a terminal)"
        )
    return getpass.getpass(text)


def resolve_officer(args: argparse.Namespace, settings: Settings, vault: Vault) -> Officer | None:
    name = getattr(args, "officer", None)
    if not name:
        return None
    if settings.officer_password is not None:
        password = settings.officer_password.get_secret_value()
    else:
        password = _prompt(f"password of officer {name}: ")
    return vault.officer_login(name, password)


def _new_password(args: argparse.Namespace) -> str | None:
    if args.client and not args.password_file:
        return None
    if args.password_file:
        try:
            with open(args.password_file, "rb") as fh:
                raw = fh.read(MAX_PASSWORD_FILE_BYTES + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read password file {args.password_file}: {exc.strerror}") from exc
        if len(raw) > MAX_PASSWORD_FILE_BYTES:
            raise InputTooLarge(
                f"password file {args.password_file} is larger than {MAX_PASSWORD_FILE_BYTES} bytes"
            )
        try:
            return raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise InvalidInput(f"password file {args.password_file} is not UTF-8 text") from None
    first = _prompt(f"new password for officer {args.name}: ")
    if _prompt("again: ") != first:
        raise InvalidInput("the two passwords differ")
    return first


def _progress() -> tuple[Callable[[int, int], None], Callable[[], None]]:
    bar: tqdm[Any] | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="licences", file=sys.stderr, desc="re-issuing", dynamic_ncols=True)
        bar.total = max(total, done)
        bar.n = done
        bar.refresh()

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


def run_dual_control(
    args: argparse.Namespace,
    settings: Settings,
    vault: Vault,
    operation: str,
    params: dict[str, Any],
) -> int:
    """Create the request as the acting officer; it runs at once only if one approval suffices."""
    officer = resolve_officer(args, settings, vault)
    if officer is None:
        raise InvalidInput(
            f"{operation} needs dual control: give --officer NAME (a security officer); "
            "another security officer then approves with `yinxin approvals approve ID --officer NAME`"
        )
    update, close = _progress() if not args.json else (None, lambda: None)
    try:
        request = vault.approvals.request(operation, params, officer, progress=update)
    finally:
        close()
    return _emit_request(args, request)


def _emit_request(args: argparse.Namespace, request: ApprovalRequest) -> int:
    _emit(args, request.as_dict(), lambda: render.approval(request))
    return 0 if request.state != ApprovalState.FAILED else 3


# ---- officers ---------------------------------------------------------------------------------


def cmd_officer_add(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        acting = resolve_officer(args, settings, v)
        password = _new_password(args)
        officer = v.add_officer(
            args.name, args.role, password=password, client_id=args.client, acting=acting, actor=_actor()
        )
    _emit(args, officer.as_dict(), lambda: f"officer {officer.name} added ({officer.role})")
    return 0


def cmd_officer_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        officers = v.list_officers()
    _emit(args, [o.as_dict() for o in officers], lambda: render.officers(officers))
    return 0


def cmd_officer_disable(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        acting = resolve_officer(args, settings, v)
        assert acting is not None  # --officer is required
        officer = v.disable_officer(args.name, acting=acting)
    _emit(args, officer.as_dict(), lambda: f"officer {officer.name} disabled")
    return 0


# ---- keys ----------------------------------------------------------------------------------------


def cmd_keys_generate(args: argparse.Namespace, settings: Settings) -> int:
    algorithm = SignatureAlgorithm.parse(args.alg)
    with open_vault(settings) as v:
        officer = resolve_officer(args, settings, v)
        info = v.generate_key(
            args.dept,
            algorithm,
            actor=_actor(),
            officer=officer,
            pre_activation=args.pre_activation,
            max_signatures=args.max_signatures,
        )
    _emit(args, render.key_document(info), lambda: info.kid)
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    if (args.dept is None) == (args.purpose is None):
        raise InvalidInput(
            "give either --dept USCC (a licence key) or --purpose audit|status-list|service-token"
        )
    with open_vault(settings) as v:
        officer = resolve_officer(args, settings, v)
        if args.dept is not None:
            algorithm = SignatureAlgorithm.parse(args.alg) if args.alg else None
            info = v.rotate_key(
                args.dept, algorithm, officer=officer, actor=_actor(), max_signatures=args.max_signatures
            )
        else:
            info = v.rotate_system_key(
                args.purpose, SignatureAlgorithm.parse(args.alg or "ES256"), officer=officer, actor=_actor()
            )
    _emit(args, render.key_document(info), lambda: f"{info.kid} is now active")
    return 0


def cmd_keys_activate(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        officer = resolve_officer(args, settings, v)
        info = v.activate_key(args.kid, officer=officer, actor=_actor())
    _emit(args, render.key_document(info), lambda: f"{info.kid} is now active")
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        keys = v.list_keys()
    _emit(args, [render.key_document(k) for k in keys], lambda: render.keys_table(keys))
    return 0


def cmd_keys_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        info, ceremony = v.key_details(args.kid)
    document = render.key_document(info)
    document["ceremony"] = render.ceremony_document(ceremony)
    _emit(args, document, lambda: render.key_details(info, ceremony))
    return 0


def cmd_keys_jwks(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        trusted = list(v.trust_store())
    # The JWKS is a JSON document in either mode.
    sys.stdout.write(json.dumps(jwks_document(trusted), indent=2) + "\n")
    return 0


def cmd_keys_destroy(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        return run_dual_control(args, settings, v, "key.destroy", {"kid": args.kid})


def cmd_keys_compromise(args: argparse.Namespace, settings: Settings) -> int:
    since = parse_time(args.since, "--since")
    with open_vault(settings) as v:
        return run_dual_control(
            args,
            settings,
            v,
            "key.compromise",
            {"kid": args.kid, "since": since.isoformat(), "reason": args.reason},
        )


def cmd_keys_affected(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        report = v.lifecycle.affected(args.kid, limit=args.limit)
    _emit(args, report.as_dict(), lambda: render.affected(report))
    return 0


def cmd_keys_reissue(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        return run_dual_control(args, settings, v, "key.reissue", {"kid": args.kid})


# ---- approvals -------------------------------------------------------------------------------------


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidInput(f"--param {pair[:40]!r}: use NAME=VALUE, e.g. --param kid=K")
        params[name.strip()] = value
    return params


def cmd_approvals_request(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        return run_dual_control(args, settings, v, args.operation, _params(args.param))


def cmd_approvals_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        requests = v.approvals.list(state=args.state, limit=args.limit)
    _emit(args, [r.as_dict() for r in requests], lambda: render.approvals_table(requests))
    return 0


def cmd_approvals_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        request = v.approvals.get(args.id)
    return _emit_request(args, request)


def _decision(action: str) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        with open_vault(settings) as v:
            officer = resolve_officer(args, settings, v)
            assert officer is not None  # --officer is required
            if action == "reject":
                request = v.approvals.reject(args.id, officer, reason=args.reason)
            else:
                update, close = _progress() if not args.json else (None, lambda: None)
                try:
                    if action == "approve":
                        request = v.approvals.approve(args.id, officer, comment=args.comment, progress=update)
                    else:
                        request = v.approvals.execute(args.id, officer, progress=update)
                finally:
                    close()
        return _emit_request(args, request)

    return run


# ---- audit -------------------------------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        report = v.verify_audit()
    document = {
        "valid": report.ok,
        "events_checked": report.events_checked,
        "head_seq": report.head_seq,
        "head_hash": report.head_hash,
        "checkpoints_checked": report.checkpoints_checked,
        "last_checkpoint_seq": report.last_checkpoint_seq,
        "reasons": list(report.problems),
        "warnings": list(report.warnings),
    }
    _emit(args, document, lambda: render.audit(report))
    return 0 if report.ok else 1


def cmd_audit_log(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        events = v.audit_events(subject=args.subject, limit=args.limit)
    _emit(args, [render.event_document(e) for e in events], lambda: render.events(events))
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        officer = resolve_officer(args, settings, v)
        cp = v.audit_checkpoint(officer=officer, actor=_actor())
    if cp is None:
        raise InvalidInput("the audit log is empty: there is nothing to checkpoint yet")
    _emit(
        args,
        cp.as_dict(),
        lambda: f"checkpoint at event {cp.seq}: head {cp.head_hash[:16]}…, signed by {cp.kid}",
    )
    return 0


def cmd_audit_export(args: argparse.Namespace, settings: Settings) -> int:
    from verify_api._cli_seals import _write_file

    with open_vault(settings) as v:
        lines = list(v.export_audit(args.since))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    _write_file(args.out or "-", data)
    if args.out:
        count = len(lines) - 1
        sys.stderr.write(
            f"wrote {count} lines after the header to {args.out} (see docs/audit.md to verify it)\n"
        )
    return 0


# ---- parser --------------------------------------------------------------------------------------------


def add_key_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON document on stdout")

    off = sub.add_parser("officer", help="security officers, auditors and operators", parents=[common])
    osub = off.add_subparsers(
        dest="officer_command", required=True, metavar="ACTION", parser_class=off.__class__
    )
    sp = add("add", cmd_officer_add, "enrol an officer (the first security officer needs no --officer)", osub)
    sp.add_argument("name", help="login name, e.g. zhang.wei")
    sp.add_argument("--role", required=True, choices=ROLES)
    sp.add_argument("--password-file", help="the new officer's password (first line); default: prompt")
    sp.add_argument("--client", help="an API client (scope keys:manage) that acts as this officer")
    officer_argument(sp)
    add("list", cmd_officer_list, "list officers", osub)
    sp = add("disable", cmd_officer_disable, "disable an officer", osub)
    sp.add_argument("name")
    officer_argument(sp, required=True)

    keys = sub.add_parser("keys", help="keys: lifecycle, rotation, compromise", parents=[common])
    ksub = keys.add_subparsers(
        dest="keys_command", required=True, metavar="ACTION", parser_class=keys.__class__
    )
    sp = add("generate", cmd_keys_generate, "generate a department's licence key (the old one retires)", ksub)
    sp.add_argument("--dept", required=True, help="the department's USCC")
    sp.add_argument("--alg", default="ES256", help="ES256 (default), EdDSA or PS256")
    sp.add_argument("--pre-activation", action="store_true", help="wait for `keys activate` before signing")
    sp.add_argument("--max-signatures", type=int, help="the key signs at most this many licences")
    officer_argument(sp)
    sp = add("rotate", cmd_keys_rotate, "new active key; the old one retires and keeps verifying", ksub)
    sp.add_argument("--dept", help="the department's USCC (its licence key)")
    sp.add_argument("--purpose", help="a service key instead: audit, status-list or service-token")
    sp.add_argument("--alg", help="default: the current key's algorithm (ES256 for service keys)")
    sp.add_argument("--max-signatures", type=int, help="the new key signs at most this many licences")
    officer_argument(sp)
    sp = add("activate", cmd_keys_activate, "activate a pre-activation key", ksub)
    sp.add_argument("kid")
    officer_argument(sp)
    add("list", cmd_keys_list, "list keys with their state", ksub)
    sp = add("show", cmd_keys_show, "show a key with its signed generation (ceremony) record", ksub)
    sp.add_argument("kid")
    add("jwks", cmd_keys_jwks, "print the JWKS of the keys that verify tokens", ksub)
    sp = add("destroy", cmd_keys_destroy, "destroy a key's private half (dual control)", ksub)
    sp.add_argument("kid")
    officer_argument(sp, required=True)
    sp = add("compromise", cmd_keys_compromise, "declare a key compromised (dual control)", ksub)
    sp.add_argument("kid")
    sp.add_argument(
        "--since", required=True, help="when it may have been compromised, e.g. 2026-11-20T08:00+08:00"
    )
    sp.add_argument("--reason", required=True, help="what happened (recorded)")
    officer_argument(sp, required=True)
    sp = add("affected", cmd_keys_affected, "list the licences and seals that relied on a key", ksub)
    sp.add_argument("kid")
    sp.add_argument("--limit", type=int, help="list at most this many licences")
    sp = add(
        "reissue-affected", cmd_keys_reissue, "re-issue what a compromised key signed (dual control)", ksub
    )
    sp.add_argument("kid")
    officer_argument(sp, required=True)

    apr = sub.add_parser(
        "approvals", help="dual control (四眼原则): requests and decisions", parents=[common]
    )
    asub = apr.add_subparsers(
        dest="approvals_command", required=True, metavar="ACTION", parser_class=apr.__class__
    )
    sp = add("request", cmd_approvals_request, "request a dual-control operation", asub)
    sp.add_argument("operation", choices=list(OPERATIONS))
    sp.add_argument("--param", action="append", metavar="NAME=VALUE", help="e.g. --param kid=K (repeatable)")
    officer_argument(sp, required=True)
    sp = add("list", cmd_approvals_list, "list requests (newest first)", asub)
    sp.add_argument("--state", choices=["pending", "approved", "executed", "failed", "rejected", "expired"])
    sp.add_argument("--limit", type=int, default=50)
    sp = add("show", cmd_approvals_show, "show a request", asub)
    sp.add_argument("id", type=int)
    sp = add("approve", _decision("approve"), "approve; the M-th distinct approval runs the operation", asub)
    sp.add_argument("id", type=int)
    sp.add_argument("--comment", help="recorded with the approval")
    officer_argument(sp, required=True)
    sp = add("reject", _decision("reject"), "reject (the request is dead)", asub)
    sp.add_argument("id", type=int)
    sp.add_argument("--reason", required=True)
    officer_argument(sp, required=True)
    sp = add("execute", _decision("execute"), "run an approved request again after a failure", asub)
    sp.add_argument("id", type=int)
    officer_argument(sp, required=True)

    audit = sub.add_parser("audit", help="the hash-chained, signed audit log", parents=[common])
    usub = audit.add_subparsers(
        dest="audit_command", required=True, metavar="ACTION", parser_class=audit.__class__
    )
    add("verify", cmd_audit_verify, "check the chain, the signed checkpoints and the records", usub)
    sp = add("log", cmd_audit_log, "show recent audit events", usub)
    sp.add_argument("--subject", help="only events about this identifier, kid or department")
    sp.add_argument("--limit", type=int, default=50)
    sp = add("checkpoint", cmd_audit_checkpoint, "sign the chain head now", usub)
    officer_argument(sp)
    sp = add("export", cmd_audit_export, "write events as JSON lines, verifiable offline", usub)
    sp.add_argument("--since", type=int, default=1, help="first event sequence number (default 1)")
    sp.add_argument("--out", help="file to write (default stdout)")
