"""``yinxin client add|list|disable`` as an operator uses them (on SQLite and PostgreSQL).

The commands are registered on a parser built like ``verify_api.cli.build_parser`` does, through
``add_client_commands``; init and departments go through the real CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.errors import YinxinError
from verify_api._cli_clients import add_client_commands
from verify_api.cli import _Parser, main
from verify_api.settings import Settings, load_settings

DEPT = "11110101000000123B"

Run = Callable[..., tuple[int, str, str]]


def client_parser() -> argparse.ArgumentParser:
    """The parts of build_parser that add_client_commands relies on."""
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true")
    parser = _Parser(prog="yinxin", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(
        name: str, handler: Callable[[argparse.Namespace, Settings], int], help_: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, help=help_, description=help_, parents=[common])
        sp.set_defaults(handler=handler)
        return sp

    add_client_commands(sub, add)
    return parser


@pytest.fixture
def run(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    monkeypatch.setenv("YINXIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("YINXIN_DATABASE_URL", database_url)
    monkeypatch.setenv("YINXIN_KEYSTORE_PASSPHRASE", "cli-test-passphrase")
    monkeypatch.delenv("YINXIN_HSM", raising=False)
    assert main(["init"]) == 0
    assert main(["dept", "add", "--code", DEPT, "--name", "北京市东城区市场监督管理局"]) == 0
    capsys.readouterr()

    def client(*argv: str) -> tuple[int, str, str]:
        args = client_parser().parse_args(list(argv))
        try:
            code = args.handler(args, load_settings())
        except YinxinError as exc:  # what cli.main does
            sys.stderr.write(f"yinxin: error: {exc}\n")
            code = exc.exit_code
        out, err = capsys.readouterr()
        return code, out, err

    return client


def test_add_prints_the_secret_once(run: Run) -> None:
    code, out, _ = run("client", "add", "--dept", DEPT, "--scopes", "licence:read licence:issue")
    assert code == 0
    assert "client_id:     yx_" in out and "client_secret: " in out
    assert "shown only this once and cannot be shown again" in out

    code, out, _ = run("client", "add", "--dept", DEPT, "--scopes", "licence:verify", "--json")
    assert code == 0
    document = json.loads(out)
    assert set(document) == {"client_id", "client_secret", "department", "scopes"}
    assert (document["department"], document["scopes"]) == (DEPT, "licence:verify")

    code, out, _ = run("client", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [c["scopes"] for c in listed] == ["licence:issue licence:read", "licence:verify"]
    assert document["client_secret"] not in out and "secret" not in out


def test_list_and_disable(run: Run) -> None:
    assert run("client", "list")[1].startswith("no API clients")
    client_id = json.loads(run("client", "add", "--dept", DEPT, "--scopes", "licence:read", "--json")[1])[
        "client_id"
    ]

    code, out, _ = run("client", "disable", client_id)
    assert code == 0 and f"client {client_id} disabled" in out
    code, out, _ = run("client", "list")
    assert code == 0 and client_id in out and "disabled" in out
    code, _, err = run("client", "disable", client_id)
    assert code == 2 and "already disabled" in err
    code, _, err = run("client", "disable", "yx_0000000000000000")
    assert code == 2 and "no API client" in err


def test_bad_input_is_exit_2_with_a_clear_message(run: Run) -> None:
    code, _, err = run("client", "add", "--dept", DEPT, "--scopes", "licence:delete")
    assert code == 2 and "unknown scope 'licence:delete'" in err
    code, _, err = run("client", "add", "--dept", "11110000000021135M", "--scopes", "licence:read")
    assert code == 2 and "yinxin dept add" in err
    with pytest.raises(SystemExit) as caught:
        client_parser().parse_args(["client", "add", "--dept", DEPT])
    assert caught.value.code == 2
