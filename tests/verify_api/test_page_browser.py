"""The verification page in a real browser: headless Chromium against a real uvicorn server.

For a valid, a suspended, a revoked, a tampered and an expired licence code, Chromium renders the page at a
phone's size (412×915 CSS pixels), saves a screenshot under ``tests/artifacts/`` (git-ignored) and
dumps the DOM it built. The test checks the DOM's text and the banner's colour in the pixels.

Needs ``chromium`` (``apt-get install chromium fonts-noto-cjk``): skipped without it, except under
``CI=true``, where a missing browser fails the run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from PIL import Image

from signing._qr import presentation_url
from tests.verify_api._presentation_support import (
    SettableClock,
    add_issuers,
    close_vault,
    issue_example,
    issue_examples,
    make_app,
    open_vault,
)
from vault import Vault
from vault._presentation import presentation_for

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PHONE = (412, 915)
BIRTH_CITIZEN_ID = "110101199203150024"

# Banner backgrounds in page.py's style sheet.
GREEN = (0x1A, 0x7F, 0x37)
RED = (0xC6, 0x28, 0x28)
AMBER = (0xF0, 0xA5, 0x00)
GREY = (0x6E, 0x77, 0x81)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium is not installed: apt-get install -y chromium fonts-noto-cjk"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: the browser test must run)")
        pytest.skip(message)
    return found


@dataclass
class Server:
    base_url: str
    vault: Vault
    clock: SettableClock


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    clock = SettableClock()
    vault = open_vault(f"sqlite:///{tmp_path / 'yinxin.db'}", tmp_path / "keystore", clock)
    add_issuers(vault)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # a free port, held until uvicorn takes the socket
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    vault.public_url = base_url
    app = make_app(vault, tmp_path)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Server(base_url, vault, clock)
    finally:
        uv.should_exit = True
        thread.join(timeout=15)
        sock.close()
        close_vault(vault)


def run_chromium(browser: str, profile: Path, url: str, *mode: str) -> str:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={PHONE[0]},{PHONE[1]}",
        *mode,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def share_of(image: Image.Image, colour: tuple[int, int, int]) -> float:
    """The share of the screenshot's pixels that are exactly *colour*."""
    rgb = image.convert("RGB")
    counts = rgb.getcolors(maxcolors=rgb.width * rgb.height) or []
    return sum(n for n, c in counts if c == colour) / (rgb.width * rgb.height)


def test_pages_render_on_a_phone(server: Server, tmp_path: Path) -> None:
    browser = chromium()
    vault = server.vault
    licences = issue_examples(vault)
    business, hygiene, birth = (
        licences["11100000000013101Q001"],
        licences["11100000000013202H001"],
        licences["11100000000013202H003"],
    )
    valid = presentation_for(vault, birth.identifier)
    revoked = presentation_for(vault, hygiene.identifier)
    vault.revoke(hygiene.identifier, reason="违法经营，依法吊销", actor="test")
    suspended = presentation_for(vault, business.identifier)
    vault.suspend(business.identifier, reason="核查中", actor="test")
    head, payload, signature = presentation_for(vault, birth.identifier).split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}AAAA"

    expiring = issue_example(vault, "11100000000013202H002", valid_until="2026-11-30")
    expired = presentation_for(vault, expiring.identifier)

    cases = {
        "valid": (valid, GREEN, ["有效 / Valid", "生育登记服务单", "陈静", "110***********0024"]),
        "suspended": (suspended, AMBER, ["已暂停 / Suspended", "核查中", "个体工商户营业执照"]),
        "revoked": (revoked, RED, ["无效 / Invalid", "已吊销 / Revoked", "违法经营，依法吊销"]),
        "tampered": (tampered, RED, ["无效 / Invalid", "签名无法验证"]),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    for name, (token, colour, texts) in cases.items():
        check_page(browser, tmp_path, server.base_url, name, token, colour, texts)
    server.clock.now = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # 2026-12-01 08:00 Beijing time
    check_page(
        browser, tmp_path, server.base_url, "expired", expired, GREY, ["已过期 / Expired", "2026-11-30"]
    )


def check_page(
    browser: str,
    tmp_path: Path,
    base_url: str,
    name: str,
    token: str,
    colour: tuple[int, int, int],
    texts: list[str],
) -> None:
    url = presentation_url(base_url, token)
    shot = ARTIFACTS / f"verification-page-{name}.png"
    shot.unlink(missing_ok=True)
    run_chromium(browser, tmp_path / f"profile-{name}", url, f"--screenshot={shot}")
    dom = run_chromium(browser, tmp_path / f"profile-{name}-dom", url, "--dump-dom")

    assert '<html lang="zh-CN">' in dom, dom[:200]
    for text in texts:
        assert text in dom, (name, text)
    assert BIRTH_CITIZEN_ID not in dom
    if name == "tampered":
        assert "陈静" not in dom  # a forged code shows no licence facts

    with Image.open(shot) as image:
        assert image.size == PHONE
        # The banner spans the phone's width, about 90 px tall: several percent of the pixels.
        assert share_of(image, colour) > 0.03, (name, share_of(image, colour))
        for other in {GREEN, RED, AMBER, GREY} - {colour}:
            assert share_of(image, other) < 0.001, (name, other)
