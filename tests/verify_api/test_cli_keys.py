"""``yinxin officer …``, ``yinxin keys …``, ``yinxin approvals …`` and ``yinxin audit …`` as officers use
them, on SQLite and PostgreSQL: setup mode, then named officers, dual control (四眼原则) for the
dangerous key operations, and an audit log anyone can check from an export with hashlib alone.

Every command runs through ``verify_api.cli.main`` (the ``cli`` fixture of test_cli). The acting
officer's password comes from YINXIN_OFFICER_PASSWORD, set for each command to the password of the
officer named by ``--officer``, as a shell session would.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from joserfc import jws
from joserfc.jwk import KeySet

from tests.verify_api.test_cli import BUSINESS_TYPE, MARKET, Run, cli, ready  # noqa: F401

SEAL_NAME = "北京市东城区市场监督管理局行政审批专用章"
SINCE = "2026-11-20T08:00+08:00"
PASSWORDS = {
    "alice": "alice long passphrase 1",
    "bob": "bob long passphrase 22",
    "carol": "carol long passphrase 333",
    "dave": "dave long passphrase 4444",
}
GENESIS = "0" * 64


@dataclass
class Desk:
    """The CLI at an officer's desk: ``--officer NAME`` brings NAME's password in the environment."""

    run: Run
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        if "--officer" in argv:
            name = argv[argv.index("--officer") + 1]
            self.monkeypatch.setenv("YINXIN_OFFICER_PASSWORD", PASSWORDS[name])
        else:
            self.monkeypatch.delenv("YINXIN_OFFICER_PASSWORD", raising=False)
        return self.run(*argv)

    def json(self, *argv: str, expect: int = 0) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == expect, err or out
        return json.loads(out)

    def password_file(self, name: str, password: str | None = None) -> str:
        path = self.tmp_path / f"{name}.password"
        path.write_text((password or PASSWORDS[name]) + "\n", encoding="utf-8")
        return str(path)

    def enrol(self, name: str, role: str = "security-officer", by: str | None = None) -> tuple[int, str, str]:
        argv = ["officer", "add", name, "--role", role, "--password-file", self.password_file(name)]
        return self(*argv, *(["--officer", by] if by else []))

    def licence_key(self) -> str:
        (key,) = [
            k["kid"]
            for k in self.json("keys", "list")
            if k["purpose"] == "licence-signing" and k["department"] == MARKET and k["state"] == "active"
        ]
        return str(key)

    def issue(self) -> dict[str, Any]:
        code, example, _ = self("types", "example", BUSINESS_TYPE)
        assert code == 0
        request = self.tmp_path / "request.json"
        request.write_text(example, encoding="utf-8")
        issued: dict[str, Any] = self.json("issue", "--file", str(request))
        return issued

    def dual(self, *argv: str, requester: str = "alice", approver: str = "bob") -> dict[str, Any]:
        """Request *argv* as *requester*, then approve as *approver*; the final request document."""
        request = self.json(*argv, "--officer", requester)
        assert (request["state"], request["approvals"]) == ("pending", [requester])
        done: dict[str, Any] = self.json("approvals", "approve", str(request["id"]), "--officer", approver)
        return done


@pytest.fixture
def desk(ready: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Desk:  # noqa: F811
    """Initialised, one department with a licence key (made in setup mode), no officers yet."""
    return Desk(ready, tmp_path, monkeypatch)


@pytest.fixture
def officers(desk: Desk) -> Desk:
    """Two security officers: alice (enrolled in setup mode) and bob (enrolled by alice)."""
    assert desk.enrol("alice")[0] == 0
    assert desk.enrol("bob", by="alice")[0] == 0
    return desk


def one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("yinxin: error:") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


# ---- setup mode, then officers ------------------------------------------------------------------


def test_setup_mode_ends_when_the_first_security_officer_is_enrolled(desk: Desk) -> None:
    # Setup mode: the installation ceremony runs as the local user.
    code, out, _ = desk("keys", "generate", "--dept", MARKET)
    assert code == 0 and out.startswith(MARKET)
    code, out, _ = desk.enrol("alice")  # the first security officer: no --officer
    assert code == 0 and "officer alice added (security-officer)" in out

    code, out, err = desk("keys", "rotate", "--dept", MARKET)
    assert code == 2 and out == ""
    one_line_error(err, "--officer")
    code, _, err = desk.enrol("bob")
    assert code == 2
    one_line_error(err, "--officer")
    assert [o["name"] for o in desk.json("officer", "list")] == ["alice"]

    code, out, _ = desk.enrol("bob", by="alice")
    assert code == 0 and "officer bob added" in out

    before = desk.licence_key()
    desk.monkeypatch.setenv("YINXIN_OFFICER_PASSWORD", "not alice's passphrase")
    code, out, err = desk.run("keys", "rotate", "--dept", MARKET, "--officer", "alice")
    assert code == 2 and out == ""
    one_line_error(err, "authentication failed")
    assert desk.licence_key() == before

    code, out, _ = desk("keys", "rotate", "--dept", MARKET, "--officer", "alice")
    assert code == 0 and out.strip().endswith("is now active")
    assert desk.licence_key() != before

    # The failed login is audited, the successful rotation is attributed; no password anywhere.
    events = desk.json("audit", "log", "--limit", "20")
    assert ("officer.login-failed", "anonymous", "alice") in [
        (e["action"], e["actor"], e["subject"]) for e in events
    ]
    assert any(e["action"] == "key.generate" and e["actor"] == "officer:alice" for e in events)
    log = (desk.tmp_path / "home" / "yinxin.log").read_text(encoding="utf-8")
    for text in (json.dumps(events, ensure_ascii=False), log):
        assert "not alice's passphrase" not in text and PASSWORDS["alice"] not in text


def test_officers_roles_and_passwords(officers: Desk) -> None:
    desk = officers
    short = desk.password_file("carol", "too short")
    code, _, err = desk(
        "officer", "add", "carol", "--role", "auditor", "--password-file", short, "--officer", "alice"
    )
    assert code == 2
    one_line_error(err, "12-256 characters")
    assert desk.enrol("carol", role="auditor", by="alice")[0] == 0
    code, _, err = desk.enrol("alice", by="bob")
    assert code == 2 and "already exists" in err

    # An auditor makes checkpoints but neither rotates keys, requests approvals nor enrols officers.
    code, _, err = desk("keys", "rotate", "--dept", MARKET, "--officer", "carol")
    assert code == 2
    one_line_error(err, "carol is auditor")
    code, _, err = desk(
        "keys", "compromise", desk.licence_key(), "--since", SINCE, "--reason", "x", "--officer", "carol"
    )
    assert code == 2 and "carol is auditor" in err
    code, _, err = desk.enrol("dave", role="operator", by="carol")
    assert code == 2 and "carol is auditor" in err
    assert desk("audit", "checkpoint", "--officer", "carol")[0] == 0

    # The list shows who holds a password, never the password or its hash.
    code, out, _ = desk("officer", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [(o["name"], o["role"], o["password"], o["created_by"]) for o in listed] == [
        ("alice", "security-officer", True, listed[0]["created_by"]),  # the local user, in setup mode
        ("bob", "security-officer", True, "alice"),
        ("carol", "auditor", True, "alice"),
    ]
    assert listed[0]["created_by"].startswith("cli")
    code, human, _ = desk("officer", "list")
    assert code == 0 and "alice" in human and "carol" in human and "enabled" in human
    for text in (out, human):
        assert "scrypt" not in text and "hash" not in text
        assert not any(password in text for password in PASSWORDS.values())

    # A disabled officer can no longer log in; the last security officer cannot be disabled.
    code, out, _ = desk("officer", "disable", "carol", "--officer", "bob")
    assert code == 0 and "officer carol disabled" in out
    code, _, err = desk("audit", "checkpoint", "--officer", "carol")
    assert code == 2 and "authentication failed" in err
    assert desk("officer", "disable", "bob", "--officer", "alice")[0] == 0
    code, _, err = desk("officer", "disable", "alice", "--officer", "alice")
    assert code == 2
    one_line_error(err, "last security officer")
    # With one security officer left nobody can reach two approvals: refused at request time.
    retired = desk.licence_key()
    desk.json("keys", "rotate", "--dept", MARKET, "--officer", "alice")
    code, _, err = desk("keys", "destroy", retired, "--officer", "alice")
    assert code == 2 and "only 1 is enrolled" in err
    code, out, _ = desk("officer", "list")
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["enabled", "disabled", "disabled"]


# ---- compromise and re-issue ---------------------------------------------------------------------


def test_a_compromised_key_is_distrusted_and_its_licences_reissued(officers: Desk) -> None:
    desk = officers
    issued = desk.issue()
    token, identifier, kid = issued["token"], issued["identifier"], issued["kid"]

    request = desk.json(
        "keys", "compromise", kid, "--since", SINCE, "--reason", "备份介质遗失", "--officer", "alice"
    )
    assert (request["state"], request["approvals"], request["operation"]) == (
        "pending",
        ["alice"],
        "key.compromise",
    )
    # Still trusted while the request waits.
    assert desk("verify", token)[0] == 0

    code, out, err = desk("approvals", "approve", str(request["id"]), "--officer", "alice")
    assert code == 2 and out == ""
    one_line_error(err, "already approved", "different security officer")
    done = desk.json("approvals", "approve", str(request["id"]), "--officer", "bob")
    assert (done["state"], done["approvals"]) == ("executed", ["alice", "bob"])
    assert done["result"]["replacement"] and done["result"]["replacement"] != kid

    code, out, _ = desk("verify", token, "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["valid"] is False and "key_compromised" in verdict["codes"]
    assert "being re-issued" in " ".join(verdict["reasons"])

    report = desk.json("keys", "affected", kid)
    assert report["state"] == "compromised" and report["to_reissue"] == 1
    assert [(a["identifier"], a["needs_reissue"]) for a in report["licences"]] == [(identifier, True)]

    reissue = desk.dual("keys", "reissue-affected", kid, requester="bob", approver="alice")
    assert reissue["state"] == "executed" and reissue["result"]["reissued"] == 1
    assert reissue["result"]["remaining"] == 0

    code, out, _ = desk("verify", token, "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["codes"] == ["key_compromised"]
    (successor,) = [r.split("re-issued as ")[1] for r in verdict["reasons"] if "re-issued as" in r]
    assert successor.split(".")[-2] == "002" and successor.split(".")[:-2] == identifier.split(".")[:-2]
    shown = desk.json("show", successor)
    assert shown["version"] == 2 and shown["status"] == "valid" and shown["kid"] != kid
    code, out, _ = desk("verify", shown["token"])
    assert code == 0 and "VALID / 有效" in out
    code, out, _ = desk("show", identifier)
    assert code == 0 and "REVOKED" in out and successor in out

    report = desk.json("keys", "affected", kid)
    assert report["to_reissue"] == 0 and report["licences"][0]["superseded_by"] == successor
    code, jwks_text, _ = desk("keys", "jwks")
    assert code == 0 and kid not in jwks_text
    keyset = KeySet.import_key_set(json.loads(jwks_text))
    assert jws.deserialize_compact(shown["token"], keyset, algorithms=["ES256"])

    # Every step is in the audit log, which still checks out.
    report = desk.json("audit", "verify")
    assert report["valid"] is True and report["reasons"] == [], report
    actions = [e["action"] for e in desk.json("audit", "log", "--limit", "200")]
    assert {"key.compromise", "key.reissue-affected", "approval.execute"} <= set(actions)

    # A second compromise of the same key is refused at request time.
    code, _, err = desk(
        "keys", "compromise", kid, "--since", SINCE, "--reason", "again", "--officer", "alice"
    )
    assert code == 2 and "already declared compromised" in err


def test_compromise_needs_a_time_zone_and_a_past_time(officers: Desk) -> None:
    kid = officers.licence_key()
    for since, message in (
        ("2026-11-20T08:00", "no time zone"),
        ("yesterday", "not an ISO 8601 time"),
        ("2099-01-01T00:00+08:00", "in the future"),
    ):
        code, out, err = officers(
            "keys", "compromise", kid, "--since", since, "--reason", "x", "--officer", "alice"
        )
        assert code == 2 and out == ""
        one_line_error(err, message)
    assert officers.json("approvals", "list") == []


# ---- destruction, rejection --------------------------------------------------------------------


def test_only_a_retired_key_is_destroyed_and_it_keeps_verifying(officers: Desk) -> None:
    desk = officers
    issued = desk.issue()
    old = issued["kid"]
    code, out, err = desk("keys", "destroy", old, "--officer", "alice")
    assert code == 2 and out == ""
    one_line_error(err, "rotate first")

    new = desk.json("keys", "rotate", "--dept", MARKET, "--officer", "alice")["kid"]
    done = desk.dual("keys", "destroy", old)
    assert (done["state"], done["result"]) == ("executed", {"kid": old, "state": "destroyed"})

    shown = desk.json("keys", "show", old)
    assert shown["state"] == "destroyed" and shown["destroyed_at"]
    assert shown["ceremony"]["verified"] is True
    code, out, _ = desk("keys", "show", old)
    assert code == 0 and f"key {old}" in out and "private key deleted" in out
    assert "generation record" in out and "signature verified" in out
    assert shown["ceremony"]["record"]["kid"] == old
    # What the destroyed key signed before still verifies (its public half is kept).
    assert desk("verify", issued["token"])[0] == 0

    code, table, _ = desk("keys", "list")
    assert code == 0
    rows = {line.split()[0]: line.split()[2] for line in table.splitlines()[1:]}
    assert (rows[old], rows[new]) == ("destroyed", "active")


def test_a_rejected_request_is_dead(officers: Desk) -> None:
    desk = officers
    old = desk.licence_key()
    desk.json("keys", "rotate", "--dept", MARKET, "--officer", "bob")
    code, _, err = desk("approvals", "request", "key.destroy", "--param", old, "--officer", "alice")
    assert code == 2
    one_line_error(err, "NAME=VALUE")
    request = desk.json("approvals", "request", "key.destroy", "--param", f"kid={old}", "--officer", "alice")
    assert (request["state"], request["subject"]) == ("pending", old)
    code, _, err = desk("keys", "destroy", old, "--officer", "bob")
    assert code == 2 and f"request {request['id']} for key.destroy of {old} is already pending" in err

    rejected = desk.json(
        "approvals", "reject", str(request["id"]), "--reason", "密钥仍需保留", "--officer", "bob"
    )
    assert (rejected["state"], rejected["rejections"]) == ("rejected", ["bob"])
    code, out, err = desk("approvals", "approve", str(request["id"]), "--officer", "bob")
    assert code == 2 and out == ""
    one_line_error(err, "rejected", "only a pending request")
    assert desk.json("approvals", "show", str(request["id"]))["state"] == "rejected"
    assert [r["id"] for r in desk.json("approvals", "list", "--state", "rejected")] == [request["id"]]
    assert desk.json("keys", "show", old)["state"] == "retired"
    code, out, _ = desk("approvals", "list")
    assert code == 0 and "key.destroy" in out and "rejected" in out

    code, _, err = desk("approvals", "approve", "999999", "--officer", "bob")
    assert code == 2 and "no approval request 999999" in err


# ---- seals and the CA under dual control -----------------------------------------------------------


def test_seal_revocation_needs_a_second_officer(desk: Desk) -> None:
    code, out, _ = desk("ca", "init", "--json")  # setup mode: no officer needed yet
    assert code == 0 and json.loads(out)["subject"].startswith("CN=")
    assert desk.enrol("alice")[0] == 0
    assert desk.enrol("bob", by="alice")[0] == 0
    seal_id = desk.json("seal", "create", "--dept", MARKET, "--name", SEAL_NAME, "--officer", "alice")[
        "seal_id"
    ]

    with pytest.raises(SystemExit) as refused:  # argparse: --officer is required
        desk("seal", "revoke", seal_id, "--reason", "印章被盗")
    assert refused.value.code == 2
    request = desk.json(
        "seal",
        "revoke",
        seal_id,
        "--reason",
        "印章被盗",
        "--crl-reason",
        "keyCompromise",
        "--officer",
        "alice",
    )
    assert (request["state"], request["operation"]) == ("pending", "seal.revoke")
    assert desk.json("seal", "show", seal_id)["state"] == "active"

    done = desk.json("approvals", "approve", str(request["id"]), "--officer", "bob")
    assert done["state"] == "executed"
    assert desk.json("seal", "show", seal_id)["state"] == "revoked"
    crl = x509.load_pem_x509_crl(desk("ca", "crl")[1].encode())
    assert len(list(crl)) == 1


def test_ca_init_after_enrolment_goes_through_approvals(officers: Desk) -> None:
    desk = officers
    code, _, err = desk("ca", "init")
    assert code == 2
    one_line_error(err, "dual control", "--officer")
    done = desk.dual("ca", "init")
    assert done["state"] == "executed" and done["result"]["ca_id"]
    code, pem, _ = desk("ca", "cert")
    root = x509.load_pem_x509_certificate(pem.encode())
    root.verify_directly_issued_by(root)
    code, _, err = desk("ca", "init", "--officer", "bob")
    assert code == 2 and "already exists" in err
    code, _, err = desk("seal", "create", "--dept", MARKET, "--name", SEAL_NAME)
    assert code == 2 and "--officer" in err
    assert desk("seal", "create", "--dept", MARKET, "--name", SEAL_NAME, "--officer", "bob")[0] == 0


# ---- the audit log ---------------------------------------------------------------------------------


def event_hash(event: dict[str, Any]) -> str:
    """The chain hash of an exported event, recomputed with hashlib and json only."""
    material = [
        event["seq"],
        event["at"],
        event["actor"],
        event["action"],
        event["subject"],
        event["details"],
        event["prev_hash"],
    ]
    text = json.dumps(material, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_audit_checkpoint_export_and_tampering(officers: Desk, database_url: str) -> None:
    desk = officers
    desk.issue()
    code, out, _ = desk("audit", "checkpoint", "--officer", "alice")
    assert code == 0 and out.startswith("checkpoint at event")
    report = desk.json("audit", "verify")
    assert report["valid"] is True and report["checkpoints_checked"] >= 1 and report["reasons"] == []

    export = desk.tmp_path / "audit.jsonl"
    code, out, err = desk("audit", "export", "--since", "1", "--out", str(export))
    assert code == 0 and out == "" and str(export) in err
    header, *lines = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    assert header["type"] == "header" and header["prev_hash"] == GENESIS
    events = [e for e in lines if e["type"] == "event"]
    checkpoints = [c for c in lines if c["type"] == "checkpoint"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    prev = header["prev_hash"]
    for event in events:
        assert isinstance(event["details"], str)
        assert event["prev_hash"] == prev and event_hash(event) == event["hash"], event["seq"]
        prev = event["hash"]
    assert (events[-1]["seq"], prev) == (header["head_seq"], header["head_hash"])
    actions = {e["action"] for e in events}
    assert {"officer.add", "key.generate", "licence.issue"} <= actions, actions
    assert not any(p in export.read_text(encoding="utf-8") for p in PASSWORDS.values())

    # The checkpoint signs a head of the chain; its signature checks with the exported audit key.
    hashes = {e["seq"]: e["hash"] for e in events}
    assert checkpoints and all(hashes[c["seq"]] == c["head_hash"] for c in checkpoints)
    keyset = KeySet.import_key_set(
        {"keys": [{k: v for k, v in jwk.items() if k != "state"} for jwk in header["audit_keys"]]}
    )
    signed = jws.deserialize_compact(checkpoints[-1]["token"], keyset, algorithms=["ES256"])
    assert signed.protected["typ"] == "audit-checkpoint+jwt"
    assert checkpoints[-1]["head_hash"] in signed.payload.decode()

    # An export from a later event starts from that event's predecessor's hash.
    partial = desk.tmp_path / "audit-from-3.jsonl"
    assert desk("audit", "export", "--since", "3", "--out", str(partial))[0] == 0
    header3, first3, *_ = [json.loads(line) for line in partial.read_text(encoding="utf-8").splitlines()]
    assert header3["prev_hash"] == hashes[2] and first3["seq"] == 3 and event_hash(first3) == hashes[3]

    if not database_url.startswith("sqlite"):
        return
    with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db, db:
        db.execute("UPDATE audit_events SET details = ? WHERE seq = 2", ('{"edited":true}',))
    code, out, _ = desk("audit", "verify", "--json")
    report = json.loads(out)
    assert code == 1 and report["valid"] is False
    assert "event 2: content does not match its hash (row edited)" in report["reasons"]
    code, out, _ = desk("audit", "verify")
    assert code == 1 and "BROKEN" in out
