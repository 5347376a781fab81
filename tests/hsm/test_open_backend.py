"""open_backend(): settings in, a backend out, or an error naming the setting to fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hsm
from hsm import BackendConfig, find_softhsm_module, open_backend
from schemas.errors import ConfigurationError


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({"pkcs11_token_label": "t", "pkcs11_pin": "1"}, "YINXIN_PKCS11_MODULE"),
        ({"pkcs11_module": "/m.so", "pkcs11_pin": "1"}, "YINXIN_PKCS11_TOKEN_LABEL"),
        ({"pkcs11_module": "/m.so", "pkcs11_token_label": "t"}, "YINXIN_PKCS11_PIN"),
    ],
)
def test_pkcs11_names_the_missing_setting(settings: dict[str, str], missing: str, tmp_path: Path) -> None:
    config = BackendConfig(kind="pkcs11", home=tmp_path, **settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=missing):
        open_backend(config)


def test_unknown_kind_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="YINXIN_HSM"):
        open_backend(BackendConfig(kind="cloud", home=tmp_path))  # type: ignore[arg-type]


def test_find_softhsm_module_returns_an_existing_file_or_none() -> None:
    found = find_softhsm_module()
    assert found is None or os.path.isfile(found)


def test_public_surface() -> None:
    assert set(hsm.__all__) >= {
        "BackendConfig",
        "KeyBackend",
        "KeyRef",
        "PKCS11Backend",
        "SecretPurpose",
        "SignatureAlgorithm",
        "SoftwareBackend",
        "find_softhsm_module",
        "open_backend",
        "validate_label",
    }
    for name in hsm.__all__:
        assert hasattr(hsm, name)
