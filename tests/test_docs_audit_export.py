"""docs/verify_audit_export.py, the offline audit-export verifier of docs/audit.md, run as an
auditor would: a separate Python process (isolated mode, so nothing of Yinxin is importable
from the working directory) on a real export of a real vault holding Chinese text."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hsm import SignatureAlgorithm, SoftwareBackend
from schemas import load_licence_types
from vault import Database, Vault

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "verify_audit_export.py"
DEPT = "11110101000000123B"
DEPT_NAME = "北京市东城区市场监督管理局"


class TickingClock:
    """Each reading a second later, so events carry distinct times."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 2, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture(scope="module")
def export_lines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """An export from event 1: events with Chinese details, two signed checkpoints (made on
    demand), and events after the last checkpoint."""
    root = tmp_path_factory.mktemp("audit-export")
    backend = SoftwareBackend(root / "keystore", b"test-passphrase")
    vault = Vault(
        Database(f"sqlite:///{root / 'yinxin.db'}"),
        backend,
        load_licence_types(),
        clock=TickingClock(),
    )
    try:
        vault.initialise(actor="t")
        vault.add_department(DEPT, DEPT_NAME, actor="t")
        vault.generate_key(DEPT, SignatureAlgorithm.ES256, actor="t")
        assert vault.audit_checkpoint(officer=None, actor="t") is not None
        vault.add_department("11110101000000456Q", "东城区卫生健康委员会", actor="t")
        assert vault.audit_checkpoint(officer=None, actor="t") is not None
        vault.generate_key(DEPT, SignatureAlgorithm.EDDSA, actor="t")  # after the last checkpoint
        assert vault.verify_audit().ok
        yield list(vault.export_audit(1))
    finally:
        vault.close()
        backend.close()


def run(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), str(path), *extra],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, lines: list[str], name: str = "export.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def dumps(item: dict[str, object]) -> str:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


def test_the_export_is_what_the_test_needs(export_lines: list[str]) -> None:
    kinds = [json.loads(line)["type"] for line in export_lines]
    assert kinds[0] == "header" and kinds.count("checkpoint") >= 2
    events = [json.loads(line) for line in export_lines if '"type":"event"' in line]
    assert any(DEPT_NAME in e["details"] for e in events)  # raw UTF-8, not \u escapes
    last = json.loads(export_lines[-1])
    assert last["type"] == "event"  # events after the last checkpoint


def test_an_intact_export_verifies(export_lines: list[str], tmp_path: Path) -> None:
    result = run(write(tmp_path, export_lines))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: events 1.." in result.stdout
    assert "signed checkpoint(s) verified" in result.stdout
    assert "come after the last checkpoint" in result.stdout


def test_an_edited_event_fails_naming_its_sequence_number(export_lines: list[str], tmp_path: Path) -> None:
    lines = list(export_lines)
    for i, line in enumerate(lines):
        item = json.loads(line)
        if item["type"] == "event" and DEPT_NAME in item["details"]:
            item["details"] = item["details"].replace(DEPT_NAME, "北京市西城区市场监督管理局")
            lines[i] = dumps(item)
            seq = item["seq"]
            break
    result = run(write(tmp_path, lines))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"event {seq}: content does not match its hash" in result.stdout


def test_a_tampered_checkpoint_token_fails(export_lines: list[str], tmp_path: Path) -> None:
    lines = list(export_lines)
    for i, line in enumerate(lines):
        item = json.loads(line)
        if item["type"] == "checkpoint":
            token = item["token"]
            item["token"] = token[:-8] + ("A" * 8 if not token.endswith("A" * 8) else "B" * 8)
            lines[i] = dumps(item)
            seq = item["seq"]
            break
    result = run(write(tmp_path, lines))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"checkpoint at event {seq}" in result.stdout
    assert "signature does not verify" in result.stdout


def test_a_deleted_event_and_a_rewritten_chain_fail(export_lines: list[str], tmp_path: Path) -> None:
    without_3 = [line for line in export_lines if '"type":"event","seq":3,' not in line]
    result = run(write(tmp_path, without_3))
    assert result.returncode == 1
    assert "events 3..3 are missing" in result.stdout

    # Re-hash the whole chain after an edit, as someone without the audit key could:
    # the links hold, but the signed checkpoints no longer agree.
    rehashed, prev = [export_lines[0]], "0" * 64
    for line in export_lines[1:]:
        item = json.loads(line)
        if item["type"] == "event":
            if item["seq"] == 2:
                item["details"] = item["details"].replace("}", ',"x":1}')
            item["prev_hash"] = prev
            material = [item[k] for k in ("seq", "at", "actor", "action", "subject", "details", "prev_hash")]
            text = json.dumps(material, ensure_ascii=False, separators=(",", ":"))
            item["hash"] = prev = hashlib.sha256(text.encode()).hexdigest()
            line = dumps(item)
        rehashed.append(line)
    result = run(write(tmp_path, rehashed))
    assert result.returncode == 1
    assert "the chain was rewritten and re-hashed" in result.stdout


def test_a_trusted_checkpoint_catches_a_rewound_chain(export_lines: list[str], tmp_path: Path) -> None:
    checkpoints = [json.loads(line) for line in export_lines if '"type":"checkpoint"' in line]
    last = checkpoints[-1]
    trusted = tmp_path / "checkpoint.json"
    trusted.write_text(dumps(last), encoding="utf-8")
    assert run(write(tmp_path, export_lines), "--trusted-checkpoint", str(trusted)).returncode == 0
    assert run(write(tmp_path, export_lines), "--trusted-checkpoint", last["token"]).returncode == 0

    # The events up to that checkpoint deleted, and its line with them: the export alone is consistent,
    # the checkpoint kept elsewhere is not.
    rewound = [
        line
        for line in export_lines
        if json.loads(line)["type"] == "header" or json.loads(line)["seq"] < last["seq"] - 1
    ]
    header = json.loads(rewound[0])
    header["head_seq"] = json.loads(rewound[-1])["seq"]
    header["head_hash"] = json.loads(rewound[-1])["hash"]
    rewound[0] = dumps(header)
    path = write(tmp_path, rewound, "rewound.jsonl")
    assert run(path).returncode == 0
    result = run(path, "--trusted-checkpoint", str(trusted))
    assert result.returncode == 1
    assert "the chain was rewound" in result.stdout


def test_pinned_audit_key_fingerprints(export_lines: list[str], tmp_path: Path) -> None:
    path = write(tmp_path, export_lines)
    (fingerprint,) = re.findall(r"SHA-256 ([0-9a-f]{64})", run(path).stdout)
    assert run(path, "--audit-key-sha256", fingerprint).returncode == 0
    result = run(path, "--audit-key-sha256", "00" * 32)
    assert result.returncode == 1
    assert "is not one you pinned" in result.stdout


def test_the_script_needs_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert modules - set(sys.stdlib_module_names) == {"cryptography"}
