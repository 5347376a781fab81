"""QR codes of licences: every demo licence's PNG decodes back (zxing-cpp) to the verification URL,
its presentation token verifies, and the code fits in version 15 at level M with ES256 keys."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from hsm import SignatureAlgorithm
from signing import TrustStore, trusted_key_from_jwk
from signing._presentation import verify_presentation
from signing._qr import presentation_url, qr_png, qr_version
from tests.verify_api._presentation_support import (
    PUBLIC_URL,
    SettableClock,
    add_issuers,
    close_vault,
    issue_examples,
    make_app,
    open_vault,
)
from vault import Licence, LicenceStatus, Vault
from vault._clients import ClientRegistry, NewClient
from vault._presentation import presentation_for, verify_presentation_token

MAX_VERSION = 15  # the brief's bound for ES256 demo licences at level M


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


def decode(png: bytes) -> zxingcpp.Barcode:
    # Look for QR codes only: on rare random contents zxing also "finds" a linear barcode in
    # the module pattern (seen once in CI), which says nothing about the image we made.
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)), formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(found) == 1, [(f.format, f.text[:40]) for f in found]
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    return found[0]


def zxing_version(barcode: zxingcpp.Barcode) -> int:
    """The QR version zxing-cpp read from the symbol itself (ISO/IEC 18004 §7.10 version information)."""
    extra: Any = barcode.extra
    return int(extra["Version"])


def offline_trust(vault: Vault) -> TrustStore:
    """What an offline verifier holds: the published JWKS, nothing else."""
    return TrustStore(trusted_key_from_jwk(k.public_jwk) for k in vault.list_keys())


def token_from(url: str) -> str:
    prefix = f"{PUBLIC_URL}/v/"
    assert url.startswith(prefix), url
    return url[len(prefix) :]


def test_every_demo_licence_png_decodes_to_a_verifiable_url(
    client: TestClient, vault: Vault, licences: dict[str, Licence]
) -> None:
    versions: dict[str, int] = {}
    for type_code, licence in licences.items():
        response = client.get(f"/v1/licences/{licence.identifier}/qr.png")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.headers["cache-control"] == "no-store"
        version = int(response.headers["x-qr-version"])

        barcode = decode(response.content)
        assert barcode.ec_level == "M"
        assert zxing_version(barcode) == version  # zxing-cpp agrees on the version
        token = token_from(barcode.text)

        verdict = verify_presentation_token(vault, token)
        assert verdict.valid and verdict.status == LicenceStatus.VALID, verdict
        assert verdict.licence is not None and verdict.licence["identifier"] == licence.identifier
        offline = verify_presentation(token, offline_trust(vault), now=vault.clock())
        assert offline.valid and offline.claims is not None
        assert offline.claims["sub"] == licence.identifier
        assert offline.kid == licence.kid

        versions[f"{licence.type_name} {type_code}"] = version
    print("\nQR versions at level M (ES256):")
    for name, version in versions.items():
        print(f"  {name}: version {version}")
    assert len(versions) == 4
    assert max(versions.values()) <= MAX_VERSION, versions


def test_svg_is_a_self_contained_document_that_scans(
    client: TestClient, licences: dict[str, Licence]
) -> None:
    licence = next(iter(licences.values()))
    response = client.get(f"/v1/licences/{licence.identifier}/qr.svg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    version = int(response.headers["x-qr-version"])
    assert version <= MAX_VERSION

    root = ET.fromstring(response.content)  # noqa: S314 - our own output, parsed to check it is XML
    svg = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{svg}svg"
    assert root.get("viewBox")
    assert {child.tag for child in root} == {f"{svg}rect", f"{svg}path"}
    text = response.text
    for external in ("href", "<script", "<image", "<style", "url("):
        assert external not in text

    # Draw the path's squares and scan the drawing: the SVG holds the same code.
    barcode = decode(_rasterise(root))
    assert zxing_version(barcode) == version
    assert barcode.text.startswith(f"{PUBLIC_URL}/v/")


def _rasterise(root: ET.Element, scale: int = 20) -> bytes:
    size = float(root.get("viewBox", "0 0 0 0").split()[2])
    image = Image.new("1", (round(size * scale), round(size * scale)), 1)
    draw = ImageDraw.Draw(image)
    path = next(child for child in root if child.tag.endswith("path")).get("d", "")
    squares = re.findall(r"M([\d.]+),([\d.]+)H([\d.]+)V([\d.]+)H[\d.]+z", path)
    assert squares
    for x0, y0, x1, y1 in squares:
        box = [round(float(v) * scale) for v in (x0, y0, x1, y1)]
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=0)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_qr_needs_the_read_scope(vault: Vault, licences: dict[str, Licence], tmp_path: Path) -> None:
    client = TestClient(make_app(vault, tmp_path, authorised=False))
    path = f"/v1/licences/{next(iter(licences.values())).identifier}/qr"
    for suffix in ("png", "svg"):
        response = client.get(f"{path}.{suffix}")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer ")

    # A real client-credentials token (verify_api.auth): the scope decides.
    registry = ClientRegistry(vault)
    verifier = registry.add("11110101000000123B", "licence:verify", actor="officer")
    reader = registry.add("11110101000000123B", "licence:read", actor="officer")
    assert client.get(f"{path}.png", headers=_bearer(client, verifier)).status_code == 403
    response = client.get(f"{path}.png", headers=_bearer(client, reader))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"


def _bearer(client: TestClient, who: NewClient) -> dict[str, str]:
    response = client.post(
        "/v1/oauth/token", data={"grant_type": "client_credentials"}, auth=(who.client_id, who.client_secret)
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_unknown_and_malformed_identifiers(client: TestClient, licences: dict[str, Licence]) -> None:
    licence = next(iter(licences.values()))
    unknown = licence.identifier.replace(".001.", ".002.")[:-1] + "0"
    response = client.get(f"/v1/licences/{unknown}/qr.png")
    assert response.status_code in (404, 422)
    assert response.headers["content-type"] == "application/problem+json"
    response = client.get("/v1/licences/1.2.156.3005.2.not-an-identifier/qr.svg")
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_identifier"


def test_destroyed_issuing_key_gives_409_and_old_codes_still_verify(
    client: TestClient, vault: Vault, licences: dict[str, Licence]
) -> None:
    licence = next(iter(licences.values()))
    earlier = presentation_for(vault, licence.identifier)
    vault.backend.destroy_key(licence.kid)

    response = client.get(f"/v1/licences/{licence.identifier}/qr.png")
    assert response.status_code == 409
    assert response.json()["code"] == "issuing_key_unavailable"
    # The public key stays in the registry: codes printed before still verify.
    assert verify_presentation_token(vault, earlier).valid


def test_public_url_is_the_prefix(client: TestClient, vault: Vault, licences: dict[str, Licence]) -> None:
    vault.public_url = "https://zwfw.example.gov.cn/yinxin/"
    licence = next(iter(licences.values()))
    barcode = decode(client.get(f"/v1/licences/{licence.identifier}/qr.png").content)
    assert barcode.text.startswith("https://zwfw.example.gov.cn/yinxin/v/")


def test_ps256_issuers_still_work_in_a_bigger_code(vault: Vault, clock: SettableClock) -> None:
    add_issuers(vault, SignatureAlgorithm.PS256)  # rotates every demo issuer to an RSA-3072 key
    licences = issue_examples(vault)
    versions = {}
    for licence in licences.values():
        url = presentation_url(PUBLIC_URL, presentation_for(vault, licence.identifier))
        image = qr_png(url)
        assert decode(image.data).text == url
        assert verify_presentation_token(vault, token_from(url)).valid
        versions[licence.type_code] = image.version
    print("\nQR versions at level M (PS256):", versions)
    assert all(16 <= v <= 25 for v in versions.values()), versions


def test_version_budget_of_the_public_url() -> None:
    # 376 characters: an ES256 token for a licence with an expiry and a 42-character kid.
    token = "A" * 376
    assert qr_version(presentation_url("http://127.0.0.1:8000", token)) == 15
    assert qr_version(presentation_url("https://" + "x" * 25, token)) == 15  # 33 characters
    assert qr_version(presentation_url("https://" + "x" * 26, token)) == 16


def test_expired_licence_gets_no_new_code(
    client: TestClient, clock: SettableClock, licences: dict[str, Licence]
) -> None:
    licence = licences["11100000000013202H001"]  # valid until 2028-05-19
    clock.now = clock.now.replace(year=2028, month=5, day=20)
    response = client.get(f"/v1/licences/{licence.identifier}/qr.png")
    assert response.status_code == 409
    assert "expired" in response.json()["detail"]
