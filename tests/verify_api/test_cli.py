"""The `yinxin` CLI as an operator uses it: exit codes, one-line errors, --json documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import KeySet

from verify_api.cli import main

MARKET = "11110101000000123B"  # demo 市场监督管理局 (the example issuer)
BUSINESS_TYPE = "11100000000013101Q001"

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    monkeypatch.setenv("YINXIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("YINXIN_DATABASE_URL", database_url)
    monkeypatch.setenv("YINXIN_KEYSTORE_PASSPHRASE", "cli-test-passphrase")
    monkeypatch.delenv("YINXIN_HSM", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    return run


def example_request() -> dict[str, Any]:
    from schemas import load_licence_types

    return dict(load_licence_types().get(BUSINESS_TYPE).example)


@pytest.fixture
def ready(cli: Run, tmp_path: Path) -> Run:
    assert cli("init")[0] == 0
    assert cli("dept", "add", "--code", MARKET, "--name", "北京市东城区市场监督管理局")[0] == 0
    code, out, _ = cli("keys", "generate", "--dept", MARKET)
    assert code == 0 and out.strip().startswith(MARKET)
    return cli


def write(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return str(path)


def audit_events(run: Run) -> int:
    code, out, _ = run("audit", "verify", "--json")
    assert code == 0
    return int(json.loads(out)["events_checked"])


def test_issue_verify_revoke_verify(ready: Run, tmp_path: Path) -> None:
    req = write(tmp_path, "req.json", json.dumps(example_request(), ensure_ascii=False))
    code, out, _ = ready("issue", "--file", req, "--json")
    assert code == 0
    issued = json.loads(out)
    assert issued["identifier"].startswith("1.2.156.3005.2." + BUSINESS_TYPE)
    token = issued["token"]

    code, out, _ = ready("verify", token)
    assert code == 0 and "VALID / 有效" in out
    code, out, _ = ready("verify", token, "--json")
    verdict = json.loads(out)
    assert verdict["valid"] is True and verdict["status"] == "valid" and verdict["reasons"] == []

    code, out, _ = ready("revoke", issued["identifier"], "--reason", "违法经营")
    assert code == 0
    code, out, _ = ready("verify", token, "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["valid"] is False and verdict["status"] == "revoked"
    assert "违法经营" in verdict["reasons"][0]

    code, out, _ = ready("show", issued["identifier"])
    assert code == 0 and "REVOKED" in out and "违法经营" in out
    assert ready("audit", "verify")[0] == 0
    code, out, _ = ready("id", "check", issued["identifier"], "--json")
    assert code == 0 and json.loads(out)["valid"] is True


def test_jwks_verifies_tokens_with_an_independent_library(ready: Run, tmp_path: Path) -> None:
    req = write(tmp_path, "req.json", json.dumps(example_request(), ensure_ascii=False))
    token = json.loads(ready("issue", "--file", req, "--json")[1])["token"]
    code, out, _ = ready("keys", "jwks")
    assert code == 0
    keyset = KeySet.import_key_set(json.loads(out))
    assert jws.deserialize_compact(token, keyset, algorithms=["ES256"]).protected["typ"] == "licence+jwt"


def test_suspend_and_reinstate(ready: Run, tmp_path: Path) -> None:
    req = write(tmp_path, "req.json", json.dumps(example_request(), ensure_ascii=False))
    issued = json.loads(ready("issue", "--file", req, "--json")[1])
    assert ready("suspend", issued["identifier"], "--reason", "核查")[0] == 0
    code, out, _ = ready("verify", issued["token"], "--json")
    assert code == 1 and json.loads(out)["status"] == "suspended"
    assert ready("reinstate", issued["identifier"], "--reason", "核查通过")[0] == 0
    assert ready("verify", issued["token"])[0] == 0
    code, _, err = ready("reinstate", issued["identifier"], "--reason", "again")
    assert code == 2 and "it is valid" in err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: "{not json", "not valid JSON"),
        (lambda r: {**r, "licence_type": "11100000000013101Q999"}, "11100000000013101Q999"),
        (lambda r: {**r, "data": {**r["data"], "unknown_field": "x"}}, "data"),
        (lambda r: {**r, "issuer": "11110101000000123C"}, "issuer"),
        (lambda r: {**r, "holder": {**r["holder"], "id": "92110101MA01C8N2PX"}}, "holder.id"),
        (lambda r: {**r, "issuer": "91350100M000100Y43"}, "yinxin dept add"),
    ],
    ids=["malformed-json", "unknown-type", "face-data", "bad-uscc", "bad-holder-id", "unknown-issuer"],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    ready: Run, tmp_path: Path, mutate: Callable[[dict[str, Any]], Any], message: str
) -> None:
    before = audit_events(ready)
    body = mutate(example_request())
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    code, out, err = ready("issue", "--file", write(tmp_path, "bad.json", text))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("yinxin: error:") and message in err
    assert audit_events(ready) == before


def test_bad_citizen_id_message_does_not_echo_the_number(ready: Run, tmp_path: Path) -> None:
    from schemas import load_licence_types

    person = next(t for t in load_licence_types().all() if t.holder_id_type == "111")
    body = dict(person.example)
    wrong = body["holder"]["id"][:-1] + ("0" if body["holder"]["id"][-1] != "0" else "1")
    body["holder"] = {**body["holder"], "id": wrong}
    code, _, err = ready("issue", "--file", write(tmp_path, "p.json", json.dumps(body, ensure_ascii=False)))
    assert code == 2 and "holder.id" in err and wrong not in err


def test_issuer_without_key(cli: Run, tmp_path: Path) -> None:
    cli("init")
    cli("dept", "add", "--code", MARKET, "--name", "某局")
    code, _, err = cli("issue", "--file", write(tmp_path, "r.json", json.dumps(example_request())))
    assert code == 2 and "no active signing key" in err and "yinxin keys generate" in err


def test_tampered_and_unknown_key_tokens_are_negative_verdicts(ready: Run, tmp_path: Path) -> None:
    req = write(tmp_path, "req.json", json.dumps(example_request(), ensure_ascii=False))
    token = json.loads(ready("issue", "--file", req, "--json")[1])["token"]
    h, p, s = token.split(".")
    tampered = f"{h}.{p[:-2]}{'A' if p[-2] != 'A' else 'B'}{p[-1]}.{s}"
    for bad in (tampered, token[: len(token) // 2]):
        code, out, _ = ready("verify", bad, "--json")
        assert code == 1 and json.loads(out)["valid"] is False
    import base64

    header = json.loads(base64.urlsafe_b64decode(h + "=="))
    header["kid"] = "no-such-key"
    other_h = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    code, out, _ = ready("verify", f"{other_h}.{p}.{s}", "--json")
    assert code == 1 and "unknown_key" in json.loads(out)["codes"]


def test_id_check_reports_the_wrong_check_character(cli: Run) -> None:
    code, out, _ = cli(
        "id", "check", "1.2.156.3005.2.11100000000013101Q001.11110101000000123B.20260000001.001.0"
    )
    assert code == 1 and "check character" in out


def test_uninitialised_home_says_run_init(cli: Run) -> None:
    code, _, err = cli("keys", "list")
    assert code == 2 and "yinxin init" in err


def test_issue_bulk_reports_bad_lines_and_is_rerunnable(ready: Run, tmp_path: Path) -> None:
    base = example_request()
    lines = []
    for i in range(40):
        body = {**base, "data": {**base["data"]}}
        body["holder"] = {**base["holder"], "name": f"{base['holder']['name']}{i}"}
        lines.append(json.dumps(body, ensure_ascii=False))
    lines[5] = "{broken"
    lines[17] = json.dumps({**base, "issuer": "123"})
    path = write(tmp_path, "bulk.jsonl", "\n".join(lines) + "\n")
    code, out, _ = ready("issue-bulk", "--file", path, "--batch-size", "7", "--json")
    summary = json.loads(out)
    assert code == 2
    assert (summary["issued"], summary["already_issued"], summary["failed"]) == (38, 0, 2)
    assert [e["line"] for e in summary["errors"]] == [6, 18]
    results = [json.loads(x) for x in Path(path + ".results.jsonl").read_text().splitlines()]
    assert len(results) == 40
    code, out, _ = ready("issue-bulk", "--file", path, "--json")
    summary = json.loads(out)
    assert (summary["issued"], summary["already_issued"], summary["failed"]) == (0, 38, 2)
    assert ready("audit", "verify")[0] == 0


def test_issue_bulk_takes_the_start_up_heap_out_of_the_collectors_reach(ready: Run, tmp_path: Path) -> None:
    # In a process of its own: this test process may have frozen its heap already.
    path = write(tmp_path, "one.jsonl", json.dumps(example_request(), ensure_ascii=False) + "\n")
    script = (
        "import gc, sys\n"
        "from verify_api.cli import main\n"
        "assert gc.get_freeze_count() == 0\n"
        f"code = main(['issue-bulk', '--file', {path!r}, '--json'])\n"
        "sys.stderr.write(f'{code} {gc.get_freeze_count()}')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), timeout=120
    )
    code, frozen = proc.stderr.split()[-2:]
    assert proc.returncode == 0 and code == "0", proc.stderr
    assert json.loads(proc.stdout)["issued"] == 1
    assert int(frozen) > 10_000  # the modules, the vault, the licence types: tens of thousands of objects


def test_entry_point_runs_without_traceback(tmp_path: Path) -> None:
    env = {"YINXIN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "verify_api.cli", "verify", "x.y.z"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    # No database yet: a one-line configuration error, exit 2, no traceback.
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "yinxin init" in proc.stderr


@pytest.mark.softhsm
def test_the_whole_flow_on_softhsm(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, softhsm_token: Any
) -> None:
    """YINXIN_HSM=pkcs11: licence keys and holder-data keys live on the token."""
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm_token.pin + "\n")
    pin_file.chmod(0o600)
    monkeypatch.setenv("YINXIN_HSM", "pkcs11")
    monkeypatch.setenv("YINXIN_PKCS11_MODULE", softhsm_token.module)
    monkeypatch.setenv("YINXIN_PKCS11_TOKEN_LABEL", softhsm_token.label)
    monkeypatch.setenv("YINXIN_PKCS11_PIN_FILE", str(pin_file))
    assert cli("init")[0] == 0
    assert cli("dept", "add", "--code", MARKET, "--name", "北京市东城区市场监督管理局")[0] == 0
    for alg in ("ES256", "EdDSA", "PS256"):
        code, out, _ = cli("keys", "generate", "--dept", MARKET, "--alg", alg, "--json")
        assert code == 0 and json.loads(out)["backend"] == "pkcs11"
        req = write(tmp_path, "req.json", json.dumps(example_request(), ensure_ascii=False))
        issued = json.loads(cli("issue", "--file", req, "--json")[1])
        code, out, _ = cli("verify", issued["token"], "--json")
        assert code == 0 and json.loads(out)["kid"].split("-")[1] == alg.lower()
        keyset = KeySet.import_key_set(json.loads(cli("keys", "jwks")[1]))
        assert jws.deserialize_compact(issued["token"], keyset, algorithms=[alg])
    code, out, _ = cli("keys", "list", "--json")
    licence_keys = [k for k in json.loads(out) if k["purpose"] == "licence-signing"]
    assert sorted(k["state"] for k in licence_keys) == ["active", "retired", "retired"]
    # The PIN never reaches the log.
    log = (tmp_path / "home" / "yinxin.log").read_text()
    assert softhsm_token.pin not in log


def test_unsupported_algorithm_is_bad_input(ready: Run) -> None:
    code, _, err = ready("keys", "generate", "--dept", MARKET, "--alg", "HS256")
    assert code == 2 and "ES256, EdDSA, PS256" in err


def test_types_example_is_an_issuable_request(ready: Run, tmp_path: Path) -> None:
    code, out, _ = ready("types", "example", BUSINESS_TYPE)
    assert code == 0
    path = write(tmp_path, "example.json", out)
    assert ready("issue", "--file", path)[0] == 0
    code, _, err = ready("types", "example", "nope")
    assert code == 2 and "unknown licence type" in err
