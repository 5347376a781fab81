"""``yinxin client add|list|disable``: the API clients of departments (OAuth client credentials).

``client add`` prints the client secret exactly once; the vault keeps only a
scrypt hash of it, so a lost secret means disabling the client and adding a
new one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from vault import CLIENT_SCOPES as SCOPES
from vault import ClientInfo, ClientRegistry
from verify_api.settings import Settings
from verify_api.wiring import open_vault

__all__ = ["add_client_commands", "cmd_client_add", "cmd_client_disable", "cmd_client_list"]


def _document(c: ClientInfo) -> dict[str, Any]:
    return {
        "client_id": c.client_id,
        "department": c.department_code,
        "scopes": " ".join(sorted(c.scopes)),
        "state": "enabled" if c.enabled else "disabled",
        "created_at": c.created_at.isoformat(),
        "disabled_at": c.disabled_at.isoformat() if c.disabled_at else None,
    }


def _table(clients: Sequence[ClientInfo]) -> str:
    if not clients:
        return 'no API clients: add one with `yinxin client add --dept USCC --scopes "licence:read"`'
    lines = [f"{'CLIENT_ID':<20} {'DEPARTMENT':<18} {'STATE':<8} {'CREATED':<25} SCOPES"]
    for c in clients:
        state = "enabled" if c.enabled else "disabled"
        created = c.created_at.isoformat(timespec="seconds")
        lines.append(
            f"{c.client_id:<20} {c.department_code:<18} {state:<8} {created:<25} {' '.join(sorted(c.scopes))}"
        )
    return "\n".join(lines)


# verify_api.cli imports this module while it builds its parser, so its helpers are imported
# inside the commands (which run after the CLI module is complete).


def cmd_client_add(args: argparse.Namespace, settings: Settings) -> int:
    from verify_api.cli import _actor, _emit

    with open_vault(settings) as v:
        new = ClientRegistry(v).add(args.dept, args.scopes, actor=_actor())
    scopes = " ".join(sorted(new.scopes))
    document = {
        "client_id": new.client_id,
        "client_secret": new.client_secret,
        "department": new.department_code,
        "scopes": scopes,
    }
    _emit(
        args,
        document,
        lambda: "\n".join(
            [
                f"client_id:     {new.client_id}",
                f"client_secret: {new.client_secret}",
                f"department:    {new.department_code}",
                f"scopes:        {scopes}",
                "",
                "Store the client secret now: it is shown only this once and cannot be shown again.",
                "A lost secret means `yinxin client disable` and a new client.",
            ]
        ),
    )
    return 0


def cmd_client_list(args: argparse.Namespace, settings: Settings) -> int:
    from verify_api.cli import _emit

    with open_vault(settings) as v:
        clients = ClientRegistry(v).list(department_code=args.dept)
    _emit(args, [_document(c) for c in clients], lambda: _table(clients))
    return 0


def cmd_client_disable(args: argparse.Namespace, settings: Settings) -> int:
    from verify_api.cli import _actor, _emit

    with open_vault(settings) as v:
        info = ClientRegistry(v).disable(args.client_id, actor=_actor())
    _emit(
        args,
        _document(info),
        lambda: (
            f"client {info.client_id} disabled: it can no longer get access tokens, "
            "and its current tokens are refused"
        ),
    )
    return 0


def add_client_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``yinxin client add|list|disable`` under the top-level subparsers *sub*.

    *add* is ``build_parser``'s helper ``add(name, handler, help, parent)``.
    """
    group = add("client", cmd_client_list, "API clients of departments (OAuth client credentials)", sub)
    # parser_class: the CLI's own parser class (one-line errors, exit code 2).
    csub = group.add_subparsers(
        dest="client_command", required=True, metavar="ACTION", parser_class=type(group)
    )
    sp = add("add", cmd_client_add, "create an API client; prints its secret once", csub)
    sp.add_argument("--dept", required=True, help="the department's USCC")
    sp.add_argument(
        "--scopes",
        required=True,
        help=f'space-separated, from: {" ".join(sorted(SCOPES))} (e.g. "licence:issue licence:read")',
    )
    sp = add("list", cmd_client_list, "list API clients (never their secrets)", csub)
    sp.add_argument("--dept", help="only this department's clients")
    sp = add("disable", cmd_client_disable, "disable an API client for good", csub)
    sp.add_argument("client_id", help="the client's id (yx_…)")
