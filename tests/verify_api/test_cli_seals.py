"""`yinxin ca …`, `yinxin seal …` and `yinxin licence pdf` as an operator uses them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests._pdf import simple_pdf
from tests.verify_api.test_cli import MARKET, Run, cli, example_request, ready, write  # noqa: F401

SEAL_NAME = "北京市东城区市场监督管理局行政审批专用章"


@pytest.fixture
def with_seal(ready: Run, tmp_path: Path) -> tuple[Run, str]:  # noqa: F811
    assert ready("ca", "init")[0] == 0
    code, out, _ = ready("seal", "create", "--dept", MARKET, "--name", SEAL_NAME, "--json")
    assert code == 0, out
    return ready, json.loads(out)["seal_id"]


def test_ca_init_cert_and_crl(ready: Run, tmp_path: Path) -> None:  # noqa: F811
    code, out, _ = ready("ca", "init", "--json")
    assert code == 0 and json.loads(out)["subject"].startswith("CN=Yinxin Root CA")
    code, pem, _ = ready("ca", "cert")
    root = x509.load_pem_x509_certificate(pem.encode())
    root.verify_directly_issued_by(root)
    code, crl_pem, _ = ready("ca", "crl")
    crl = x509.load_pem_x509_crl(crl_pem.encode())
    assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    out_file = tmp_path / "crl.der"
    assert ready("ca", "crl", "--out", str(out_file))[0] == 0
    assert x509.load_der_x509_crl(out_file.read_bytes()).issuer == root.subject
    code, _, err = ready("ca", "init")
    assert code == 2 and err.count("\n") == 1 and "already exists" in err


def test_seal_before_ca_is_explained(ready: Run) -> None:  # noqa: F811
    code, _, err = ready("seal", "create", "--dept", MARKET, "--name", SEAL_NAME)
    assert code == 2 and "yinxin ca init" in err and err.count("\n") == 1


def test_seal_create_show_list(with_seal: tuple[Run, str], tmp_path: Path) -> None:
    run, seal_id = with_seal
    code, out, _ = run("seal", "list")
    assert code == 0 and seal_id in out and SEAL_NAME in out
    image, cert = tmp_path / "seal.png", tmp_path / "seal.pem"
    code, out, _ = run("seal", "show", seal_id, "--image-out", str(image), "--cert-out", str(cert))
    assert code == 0 and "active" in out
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        x509.load_pem_x509_certificate(cert.read_bytes())
        .subject.rfc4514_string()
        .startswith("CN=" + SEAL_NAME)
    )


def test_seal_pdf_verify_revoke_verify(
    with_seal: tuple[Run, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, seal_id = with_seal
    original = tmp_path / "in.pdf"
    original.write_bytes(simple_pdf(2))
    sealed = tmp_path / "out.pdf"
    code, out, err = run("seal", "pdf", "--seal", seal_id, str(original), str(sealed), "--page", "2")
    assert code == 0, err
    code, out, _ = run("seal", "verify", str(sealed))
    assert code == 0 and out.startswith("VALID") and SEAL_NAME in out
    code, out, _ = run("seal", "verify", str(sealed), "--json")
    verdict = json.loads(out)
    assert verdict["valid"] and verdict["seal"]["seal_id"] == seal_id

    # Revocation is final, so it takes two security officers (四眼原则).
    with pytest.raises(SystemExit) as exited:
        run("seal", "revoke", seal_id, "--reason", "印章被盗")  # argparse: --officer is required
    assert exited.value.code == 2
    monkeypatch.setenv("YINXIN_OFFICER_PASSWORD", "alice's long passphrase")
    for name in ("alice", "bob"):
        password = write(tmp_path, f"{name}.pw", f"{name}'s long passphrase\n")
        acting = () if name == "alice" else ("--officer", "alice")
        assert (
            run("officer", "add", name, "--role", "security-officer", "--password-file", password, *acting)[0]
            == 0
        )
    code, out, err = run(
        "seal",
        "revoke",
        seal_id,
        "--reason",
        "印章被盗",
        "--crl-reason",
        "keyCompromise",
        "--officer",
        "alice",
        "--json",
    )
    request = json.loads(out)
    assert code == 0 and request["state"] == "pending" and request["approvals"] == ["alice"], err
    code, out, _ = run("seal", "verify", str(sealed), "--json")
    assert code == 0 and json.loads(out)["valid"]  # one officer is not enough
    monkeypatch.setenv("YINXIN_OFFICER_PASSWORD", "bob's long passphrase")
    code, out, err = run("approvals", "approve", str(request["id"]), "--officer", "bob", "--json")
    assert code == 0 and json.loads(out)["state"] == "executed", err
    code, out, _ = run("seal", "verify", str(sealed), "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["codes"] == ["revoked"] and "印章被盗" in verdict["reasons"][0]
    code, _, err = run("seal", "pdf", "--seal", seal_id, str(original), str(tmp_path / "again.pdf"))
    assert code == 2 and "revoked" in err
    assert not (tmp_path / "again.pdf").exists()
    crl = x509.load_pem_x509_crl(run("ca", "crl")[1].encode())
    assert len(list(crl)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--page", "3"], "page 3 does not exist"),
        (["--box", "1,2,3"], "four numbers"),
        (["--box", "0,0,5000,5000"], "outside page 1"),
    ],
)
def test_bad_sealing_requests(
    with_seal: tuple[Run, str], tmp_path: Path, args: list[str], message: str
) -> None:
    run, seal_id = with_seal
    original = tmp_path / "in.pdf"
    original.write_bytes(simple_pdf(2))
    code, _, err = run("seal", "pdf", "--seal", seal_id, str(original), str(tmp_path / "out.pdf"), *args)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out.pdf").exists()


def test_not_a_pdf_and_unknown_seal(with_seal: tuple[Run, str], tmp_path: Path) -> None:
    run, seal_id = with_seal
    text = write(tmp_path, "notes.txt", "hello")
    code, _, err = run("seal", "pdf", "--seal", seal_id, text, str(tmp_path / "o.pdf"))
    assert code == 2 and "not a PDF" in err
    code, out, _ = run("seal", "verify", text)
    assert code == 1 and "not a readable PDF" in out
    code, _, err = run("seal", "pdf", "--seal", "seal-0000000000", text, str(tmp_path / "o.pdf"))
    assert code == 2 and "no seal seal-0000000000" in err


def test_licence_pdf_prints_a_sealed_licence(with_seal: tuple[Run, str], tmp_path: Path) -> None:
    run, seal_id = with_seal
    req = write(tmp_path, "req.json", json.dumps(example_request(), ensure_ascii=False))
    code, out, err = run("issue", "--file", req, "--json")
    assert code == 0, err
    identifier = json.loads(out)["identifier"]
    target = tmp_path / "licence.pdf"
    code, out, err = run("licence", "pdf", identifier, str(target))
    assert code == 0, err
    code, out, _ = run("seal", "verify", str(target), "--json")
    assert code == 0 and json.loads(out)["seal"]["seal_id"] == seal_id
    text = subprocess.run(["pdftotext", str(target), "-"], capture_output=True, text=True, check=False)
    if text.returncode == 0:  # poppler-utils present (the signing tests insist on it in CI)
        assert "个体工商户营业执照" in text.stdout and identifier in text.stdout.replace("\n", "")
