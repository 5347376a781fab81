"""The ``yinxin`` command line.

Exit codes: 0 success / valid; 1 negative verdict (invalid, revoked,
suspended, expired, broken audit chain); 2 bad input (the message says what is
wrong and how to fix it); 3 the key backend or database failed. Errors go to
stderr as one line, never as a traceback (the traceback goes to the log).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from schemas import LicenceIdentifier, load_licence_types, parse_licence_request
from schemas.errors import InputTooLarge, InvalidInput, YinxinError
from signing import MAX_TOKEN_BYTES
from vault import LicenceStatus, ensure_service_key, ensure_status_list_key
from verify_api import _render as render
from verify_api._serve import cmd_serve
from verify_api.settings import Settings, load_settings
from verify_api.wiring import configure_logging, open_vault

__all__ = ["main"]

log = logging.getLogger("yinxin.cli")

MAX_REQUEST_FILE_BYTES = 65536


class _Parser(argparse.ArgumentParser):
    """argparse with our exit code 2 and a one-line message (no usage dump on errors)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"yinxin: error: {message} (see `{self.prog} --help`)\n")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _emit(args: argparse.Namespace, document: Any, human: Callable[[], str]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(human() + "\n")


def _read_limited(path: str, limit: int, what: str) -> bytes:
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise InputTooLarge(f"{what} {path} is larger than {limit} bytes")
    return data


# ---- commands ---------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings, migrate=True) as v:
        steps = v.initialise(actor=_actor())
        service = ensure_service_key(v, actor=_actor())
        steps.append(f"service-token key {service.kid}")
        status_key = ensure_status_list_key(v)
        steps.append(f"status-list key {status_key.kid}")
        document = {
            "home": str(settings.home),
            "database": v.db.url,
            "backend": v.backend.name,
            "steps": steps,
        }
    _emit(
        args, document, lambda: "\n".join(["initialised " + str(settings.home), *("  " + s for s in steps)])
    )
    return 0


def cmd_dept_add(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        dept = v.add_department(args.code, args.name, actor=_actor())
    _emit(args, {"code": dept.code, "name": dept.name}, lambda: f"department {dept.code} {dept.name} added")
    return 0


def cmd_dept_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        depts = v.departments()
    _emit(
        args,
        [{"code": d.code, "name": d.name} for d in depts],
        lambda: "\n".join(f"{d.code}  {d.name}" for d in depts) or "no departments",
    )
    return 0


def cmd_types_list(args: argparse.Namespace, settings: Settings) -> int:
    types = load_licence_types().all()
    _emit(args, [render.type_document(t) for t in types], lambda: render.types_table(types))
    return 0


def cmd_types_example(args: argparse.Namespace, settings: Settings) -> int:
    example = load_licence_types().get(args.code).example
    # A ready-to-edit issuance request: JSON in either mode.
    sys.stdout.write(json.dumps(example, ensure_ascii=False, indent=2) + "\n")
    return 0


def cmd_issue(args: argparse.Namespace, settings: Settings) -> int:
    request = parse_licence_request(_read_limited(args.file, MAX_REQUEST_FILE_BYTES, "request file"))
    with open_vault(settings) as v:
        result = v.issue(request, idempotency_key=args.idempotency_key, actor=_actor())
    lic = result.licence
    document = {
        "identifier": lic.identifier,
        "token": lic.token,
        "status": lic.status,
        "created": result.created,
        "kid": lic.kid,
    }
    _emit(args, document, lambda: render.issued(lic, result.created))
    return 0


def cmd_issue_bulk(args: argparse.Namespace, settings: Settings) -> int:
    from verify_api._bulk import run_bulk

    with open_vault(settings) as v:
        return run_bulk(v, args, actor=_actor())


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_vault(settings) as v:
        lic = v.get(args.identifier)
        history = v.status_history(args.identifier)
        now = v.clock()
    document = {
        **lic.summary(),
        "status": lic.effective_status(now),
        "stored_status": lic.status,
        "kid": lic.kid,
        "data": dict(lic.data),
        "token": lic.token,
        "history": [render.change_document(c) for c in history],
    }
    _emit(args, document, lambda: render.licence(lic, lic.effective_status(now), history))
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    if args.token == "-":  # noqa: S105 (the stdin marker, not a secret)
        raw = sys.stdin.buffer.read(MAX_TOKEN_BYTES * 4 + 1).strip()
        token: str | bytes = raw
    else:
        token = args.token.strip()
    with open_vault(settings) as v:
        verdict = v.verify(token)
    _emit(args, verdict.as_dict(), lambda: render.verdict(verdict))
    return 0 if verdict.valid else 1


def _status_command(target: str) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        with open_vault(settings) as v:
            lic = v.change_status(args.identifier, target, reason=args.reason, actor=_actor())
            now = v.clock()
        document = {"identifier": lic.identifier, "status": lic.effective_status(now), "reason": args.reason}
        _emit(args, document, lambda: f"{lic.identifier}: now {lic.status}")
        return 0

    return run


def cmd_id_check(args: argparse.Namespace, settings: Settings) -> int:
    try:
        ident = LicenceIdentifier.parse(args.identifier)
    except InvalidInput as exc:
        message = str(exc)
        _emit(
            args,
            {"identifier": args.identifier, "valid": False, "reasons": [message]},
            lambda: f"invalid: {message}",
        )
        return 1
    document = {
        "identifier": str(ident),
        "valid": True,
        "type_code": ident.type_code,
        "issuer_code": ident.issuer_code,
        "serial": ident.serial,
        "version": ident.version_text,
        "check_character": ident.check_character,
    }
    _emit(args, document, lambda: render.identifier(ident))
    return 0


def cmd_seed_demo(args: argparse.Namespace, settings: Settings) -> int:
    from verify_api._demo import seed_service_demo

    with open_vault(settings) as v:
        steps, created = seed_service_demo(v, settings.home, actor=_actor())
    document = {"steps": steps, "credentials": created}

    def human() -> str:
        lines = list(steps)
        if created:
            lines.append("")
            lines.append("API client credentials (shown once; also in the credentials file, mode 0600):")
            for label, c in created["clients"].items():
                lines.append(f"  {label:<18} {c['client_id']}  {c['client_secret']}  [{c['scopes']}]")
        return "\n".join(lines)

    _emit(args, document, human)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from verify_api._demo import run_demo

    with open_vault(settings) as v:
        return run_demo(v, json_output=args.json)


# ---- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p = _Parser(
        prog="yinxin", description="Yinxin (印信): electronic licences and e-seals.", parents=[common]
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(
        name: str, handler: Callable[[argparse.Namespace, Settings], int], help_: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, help=help_, description=help_, parents=[common])
        sp.set_defaults(handler=handler)
        return sp

    add("init", cmd_init, "create or migrate the database and the holder-data keys")

    dept = sub.add_parser("dept", help="departments (issuers and verifiers)", parents=[common])
    dsub = dept.add_subparsers(dest="dept_command", required=True, metavar="ACTION", parser_class=_Parser)
    sp = add("add", cmd_dept_add, "register a department", dsub)
    sp.add_argument("--code", required=True, help="the department's USCC (统一社会信用代码)")
    sp.add_argument("--name", required=True, help="the department's name")
    add("list", cmd_dept_list, "list departments", dsub)

    types = sub.add_parser("types", help="licence types", parents=[common])
    tsub = types.add_subparsers(dest="types_command", required=True, metavar="ACTION", parser_class=_Parser)
    add("list", cmd_types_list, "list licence types with their schema and example", tsub)
    sp = add("example", cmd_types_example, "print a type's example issuance request (JSON)", tsub)
    sp.add_argument("code", help="the licence type code, e.g. 11100000000013101Q001")

    sp = add("issue", cmd_issue, "issue one licence from a JSON request")
    sp.add_argument("--file", required=True, help="the issuance request (JSON; - for stdin)")
    sp.add_argument("--idempotency-key", help="a retry with the same key returns the first licence")

    sp = add("issue-bulk", cmd_issue_bulk, "issue licences from a JSON Lines file (re-runnable)")
    sp.add_argument("--file", required=True, help="one issuance request per line")
    sp.add_argument("--results", help="per-line results (JSON Lines); default FILE.results.jsonl")
    sp.add_argument("--batch-size", type=int, default=500, help="licences per transaction (default 500)")

    sp = add("show", cmd_show, "show a licence, its status and history")
    sp.add_argument("identifier")

    sp = add("verify", cmd_verify, "verify a licence token (- reads it from stdin)")
    sp.add_argument("token")

    for name, target, verb in (
        ("suspend", LicenceStatus.SUSPENDED, "suspend"),
        ("revoke", LicenceStatus.REVOKED, "revoke (final)"),
        ("reinstate", LicenceStatus.VALID, "reinstate a suspended"),
    ):
        sp = add(name, _status_command(target), f"{verb} licence")
        sp.add_argument("identifier")
        sp.add_argument("--reason", required=True, help="why (recorded in the history and audit log)")

    idp = sub.add_parser("id", help="GB/T 36904 identifiers", parents=[common])
    isub = idp.add_subparsers(dest="id_command", required=True, metavar="ACTION", parser_class=_Parser)
    sp = add("check", cmd_id_check, "check an identifier's structure and check character", isub)
    sp.add_argument("identifier")

    add("demo", cmd_demo, "issue, verify, revoke and verify again a demo licence")
    add("seed-demo", cmd_seed_demo, "seed the service demo: departments, API clients, licences")

    sp = add("serve", cmd_serve, "run the HTTP API (uvicorn)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    sp.add_argument("--workers", type=int, default=1, help="worker processes, 1 to 32 (default 1)")
    sp.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="the reverse proxy's addresses (comma-separated): trust its X-Forwarded-For/-Proto",
    )

    # Imported here: these modules import helpers from this one.
    from verify_api._cli_clients import add_client_commands
    from verify_api._cli_keys import add_key_commands
    from verify_api._cli_seals import add_seal_commands

    add_client_commands(sub, add)
    add_key_commands(sub, add)
    add_seal_commands(sub, add)
    return p


# Commands that work without a database or backend.
_OFFLINE = {cmd_types_list, cmd_types_example, cmd_id_check}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        settings = load_settings()
        if handler not in _OFFLINE:
            configure_logging(settings)
        return handler(args, settings)
    except YinxinError as exc:
        sys.stderr.write(f"yinxin: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("yinxin: interrupted\n")
        return 130
    except Exception:
        correlation = uuid.uuid4().hex[:12]
        log.exception("internal error (correlation id %s)", correlation)
        sys.stderr.write(
            f"yinxin: internal error (correlation id {correlation}); details are in the log "
            "(YINXIN_HOME/yinxin.log)\n"
        )
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
