"""The verification page a QR code opens: the right banner for every verdict, escaped, locked down."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hsm import SignatureAlgorithm
from schemas import LicenceIdentifier
from signing._presentation import sign_presentation
from tests.verify_api._presentation_support import (
    SettableClock,
    add_issuers,
    close_vault,
    issue_example,
    issue_examples,
    make_app,
    open_vault,
)
from vault import Database, Licence, LicenceStatus, Vault, Verdict
from vault._presentation import presentation_for
from verify_api.routes.page import render_page

BUSINESS = "11100000000013101Q001"  # 个体工商户营业执照, no expiry
HYGIENE = "11100000000013202H001"  # 公共场所卫生许可证, valid until 2028-05-19
BIRTH = "11100000000013202H003"  # 生育登记服务单, holder is a citizen (ID type 111)
BIRTH_CITIZEN_ID = "110101199203150024"  # the example's holder ID: must never reach the page

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture
def vault(database_url: str, tmp_path: Path, clock: SettableClock) -> Iterator[Vault]:
    opened = open_vault(database_url, tmp_path / "keystore", clock)
    add_issuers(opened)
    yield opened
    close_vault(opened)


@pytest.fixture
def licences(vault: Vault) -> dict[str, Licence]:
    return issue_examples(vault)


@pytest.fixture
def client(vault: Vault, tmp_path: Path) -> TestClient:
    return TestClient(make_app(vault, tmp_path))


def page(client: TestClient, token: str, status: int = 200) -> str:
    response = client.get(f"/v/{token}")
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    html = response.text
    assert html.startswith("<!doctype html>")
    assert '<html lang="zh-CN">' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    for external in ("<script", "<link", "src=", "http://", "https://", "@import"):
        assert external not in html, external
    return str(html)


def banner(html: str) -> str:
    start = html.index('<section class="banner')
    return html[start : html.index("</section>", start)]


def test_valid_licence(client: TestClient, vault: Vault, licences: dict[str, Licence]) -> None:
    licence = licences[BUSINESS]
    html = page(client, presentation_for(vault, licence.identifier))
    assert 'class="banner valid"' in html and "有效 / Valid" in banner(html)
    for shown in (
        "个体工商户营业执照",
        BUSINESS,
        licence.issuer_name,
        licence.issuer_code,
        "北京市东城区张记早点铺",
        "92110101MA01C8N2PH",  # a USCC is public
        "2024-03-01 至 长期",
        licence.identifier,
        "2026-11-23 10:00:00 北京时间 (UTC+8)",
    ):
        assert shown in html, shown
    assert "原因 / Why" not in html


def test_citizen_id_is_masked(client: TestClient, vault: Vault, licences: dict[str, Licence]) -> None:
    html = page(client, presentation_for(vault, licences[BIRTH].identifier))
    assert "有效 / Valid" in banner(html)
    assert "陈静" in html
    assert "110***********0024" in html
    assert BIRTH_CITIZEN_ID not in html
    assert BIRTH_CITIZEN_ID[3:14] not in html  # not even the hidden middle


def test_revoked_licence(client: TestClient, vault: Vault, licences: dict[str, Licence]) -> None:
    licence = licences[HYGIENE]
    token = presentation_for(vault, licence.identifier)
    vault.revoke(licence.identifier, reason="违法经营 <b>x</b>", actor="test")
    html = page(client, token)
    assert 'class="banner invalid"' in html
    assert "无效 / Invalid" in banner(html) and "已吊销 / Revoked" in banner(html)
    assert "证照已被发证机构吊销。" in html
    assert "违法经营 &lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert licence.identifier in html  # which licence was revoked
    assert "2024-05-20 至 2028-05-19" in html


def test_suspended_then_reinstated(client: TestClient, vault: Vault, licences: dict[str, Licence]) -> None:
    licence = licences[BUSINESS]
    token = presentation_for(vault, licence.identifier)
    vault.suspend(licence.identifier, reason="核查中", actor="test")
    html = page(client, token)
    assert 'class="banner suspended"' in html and "已暂停 / Suspended" in banner(html)
    assert "核查中" in html
    vault.reinstate(licence.identifier, reason="核查完毕", actor="test")
    assert "有效 / Valid" in banner(page(client, token))


def test_expired_licence(
    client: TestClient, vault: Vault, clock: SettableClock, licences: dict[str, Licence]
) -> None:
    token = presentation_for(vault, licences[HYGIENE].identifier)
    clock.now = datetime(2028, 5, 19, 16, 0, tzinfo=UTC)  # 2028-05-20 00:00 Beijing time
    html = page(client, token)
    assert 'class="banner expired"' in html and "已过期 / Expired" in banner(html)
    assert "证照已超过有效期。" in html
    # Revocation wins over expiry.
    vault.revoke(licences[HYGIENE].identifier, reason="注销", actor="test")
    assert "已吊销 / Revoked" in banner(page(client, token))


def test_not_yet_valid_licence(client: TestClient, vault: Vault, licences: dict[str, Licence]) -> None:
    licence = issue_example(vault, BUSINESS, valid_from="2027-01-01")
    html = page(client, presentation_for(vault, licence.identifier))
    assert "尚未生效 / Not yet valid" in banner(html)
    assert "2027-01-01 至 长期" in html


def test_tampered_token(client: TestClient, vault: Vault, licences: dict[str, Licence]) -> None:
    token = presentation_for(vault, licences[BIRTH].identifier)
    head, payload, signature = token.split(".")
    other = presentation_for(vault, licences[BUSINESS].identifier).split(".")[1]
    # A changed first character of the signature (changing the last two to "AA" left the 64 bytes
    # unchanged whenever they decoded to zero bits already: a 1-in-256 flake seen in CI).
    flipped = ("B" if signature[0] != "B" else "C") + signature[1:]
    for forged in (f"{head}.{other}.{signature}", f"{head}.{payload}.{flipped}"):
        html = page(client, forged)
        assert 'class="banner invalid"' in html and "无效 / Invalid" in banner(html)
        assert "签名无法验证" in html
        assert "陈静" not in html and "个体工商户营业执照" not in html  # a forgery lends no facts


def test_garbage_is_an_invalid_page_never_an_error(client: TestClient) -> None:
    for token in ("", "abc", "a.b.c", "%3Cscript%3Ealert(1)%3C%2Fscript%3E", "证照", "x" * 1500, "a/b/c"):
        html = page(client, token)
        assert "无效 / Invalid" in banner(html), token
        assert "<script>" not in html
    html = page(client, "A" * 3000, status=414)
    assert "无效 / Invalid" in banner(html) and "链接过长" in html


def test_signed_by_a_trusted_key_of_another_department(
    client: TestClient, vault: Vault, licences: dict[str, Licence]
) -> None:
    licence = licences[BUSINESS]
    other = next(
        k.kid
        for k in vault.list_keys()
        if k.state == "active" and k.purpose == "licence-signing" and k.department_code != licence.issuer_code
    )
    token = sign_presentation(
        vault.backend, vault.backend.get_key(other), licence.identifier, iat=vault.clock(), exp=None
    )
    html = page(client, token)
    assert "无效 / Invalid" in banner(html) and "核验码不是由该证照发证机构的密钥签名的" in html
    assert "张记早点铺" not in html


def test_after_rotation_new_codes_come_from_the_new_key_and_old_codes_still_verify(
    client: TestClient, vault: Vault, licences: dict[str, Licence]
) -> None:
    licence = licences[BUSINESS]
    old_code = presentation_for(vault, licence.identifier)
    add_issuers(vault, SignatureAlgorithm.EDDSA)  # rotation: the old key retires, never signs again
    new_code = presentation_for(vault, licence.identifier)
    new_kid = json.loads(base64.urlsafe_b64decode(new_code.split(".")[0] + "=="))["kid"]
    assert new_kid != licence.kid and vault.keys is not None
    assert "有效 / Valid" in banner(page(client, new_code))
    assert "有效 / Valid" in banner(page(client, old_code))


def test_unknown_licence(client: TestClient, vault: Vault, licences: dict[str, Licence]) -> None:
    licence = licences[BUSINESS]
    missing = str(LicenceIdentifier("11100000000013101Q001", licence.issuer_code, 2026, 9_999_999))
    token = sign_presentation(
        vault.backend, vault.backend.get_key(licence.kid), missing, iat=vault.clock(), exp=None
    )
    html = page(client, token)
    assert "无效 / Invalid" in banner(html) and "证照库中没有该证照" in html


def test_vault_unavailable_is_a_503_page(tmp_path: Path, clock: SettableClock) -> None:
    broken = Vault(Database(f"sqlite:///{tmp_path / 'missing' / 'no.db'}"), None, None, clock=clock)  # type: ignore[arg-type]
    client = TestClient(make_app(broken, tmp_path))
    html = page(client, "a.b.c", status=503)
    assert "暂时无法核验" in banner(html)


def test_render_escapes_everything() -> None:
    hostile = '<img src=x onerror="alert(1)">&'
    summary = {
        "identifier": hostile,
        "licence_type": hostile,
        "licence_type_name": hostile,
        "issuer": hostile,
        "issuer_name": hostile,
        "holder_name": hostile,
        "holder_id_masked": hostile,
        "valid_from": hostile,
        "valid_until": hostile,
    }
    verdict = Verdict(
        False,
        LicenceStatus.SUSPENDED,
        (hostile,),
        ("suspended",),
        datetime(2026, 1, 1, tzinfo=UTC),
        None,
        summary,
    )
    html = render_page(verdict)
    assert "<img" not in html and 'onerror="' not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in html
