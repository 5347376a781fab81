"""Software keystore specifics: what is on disk, and what a wrong passphrase does.

The key-encryption key, the format-1 (legacy) keystores and tampering are in
``test_software_kdf.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import pem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

import hsm
from hsm import BackendConfig, KeyRef, SecretPurpose, SignatureAlgorithm, SoftwareBackend, open_backend
from schemas.errors import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidInput,
    KeyNotFound,
)

PASSPHRASE = b"correct horse battery staple"
WRONG = b"incorrect donkey"
ES256 = SignatureAlgorithm.ES256


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    return tmp_path / "keystore"


@pytest.fixture
def store(keystore: Path) -> Iterator[SoftwareBackend]:
    backend = SoftwareBackend(keystore, PASSPHRASE)
    yield backend
    backend.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def scrypt_from(record: dict[str, Any], passphrase: bytes) -> bytes:
    kdf = record["kdf"]
    assert kdf["name"] == "scrypt"
    return Scrypt(
        salt=base64.b64decode(record["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]
    ).derive(passphrase)


def keystore_kek(keystore: Path, passphrase: bytes) -> bytes:
    """The key-encryption key, derived independently of the backend from the header."""
    return scrypt_from(json.loads((keystore / "_keystore.json").read_text()), passphrase)


def unwrap_secret(keystore: Path, label: str, passphrase: bytes) -> bytes:
    """Decrypt a secret file independently of the backend (scrypt + AES-GCM)."""
    record = json.loads((keystore / f"{label}.secret.json").read_text())
    if "kdf" in record:  # format 1: a scrypt salt of its own
        wrapping_key, aad = scrypt_from(record, passphrase), f"yinxin-secret:{label}:{record['purpose']}"
    else:
        assert record["format"] == 2
        wrapping_key = keystore_kek(keystore, passphrase)
        aad = f"yinxin-secret:2:{label}:{record['purpose']}"
    return AESGCM(wrapping_key).decrypt(
        base64.b64decode(record["nonce"]), base64.b64decode(record["wrapped"]), aad.encode()
    )


def unseal_private_key(keystore: Path, kid: str, algorithm: str, passphrase: bytes) -> PrivateKeyTypes:
    """Decrypt a format-2 key file independently of the backend."""
    label, _, body = pem.unarmor((keystore / f"{kid}.key.pem").read_bytes())
    assert label == "YINXIN WRAPPED PRIVATE KEY"
    assert body[0] == 2  # format version
    der = AESGCM(keystore_kek(keystore, passphrase)).decrypt(
        body[1:13], body[13:], f"yinxin-key:2:{kid}:{algorithm}".encode()
    )
    return serialization.load_der_private_key(der, password=None)


def test_files_are_private_to_the_owner(store: SoftwareBackend, keystore: Path) -> None:
    key = store.generate_key(ES256, "k")
    store.generate_secret("s", SecretPurpose.ENCRYPTION)

    assert mode(keystore) == 0o700
    names = sorted(path.name for path in keystore.iterdir())
    # no temporary files left
    assert names == ["_keystore.json", "k.json", "k.key.pem", "k.pub.pem", "s.secret.json"]
    for path in keystore.iterdir():
        assert mode(path) == 0o600, path.name
    assert json.loads((keystore / "k.json").read_text())["algorithm"] == key.algorithm.value


def test_an_existing_directory_is_tightened(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    SoftwareBackend(loose, PASSPHRASE).close()
    assert mode(loose) == 0o700


def test_private_key_is_sealed_under_the_key_encryption_key(store: SoftwareBackend, keystore: Path) -> None:
    key = store.generate_key(ES256, "k")
    pem = (keystore / "k.key.pem").read_bytes()

    assert pem.startswith(b"-----BEGIN YINXIN WRAPPED PRIVATE KEY-----")
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=PASSPHRASE)  # not PKCS#8 encryption any more
    # An independent implementation (scrypt + AES-GCM + PKCS#8) gets the same key from the file.
    private = unseal_private_key(keystore, "k", "ES256", PASSPHRASE)
    assert private.public_key().public_numbers() == store.public_key(key).public_numbers()  # type: ignore[union-attr]


def test_wrong_passphrase_fails_at_open_without_the_passphrase(
    keystore: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SoftwareBackend(keystore, PASSPHRASE) as first:
        first.generate_key(ES256, "k")
        first.generate_secret("s", SecretPurpose.MAC)
    before = {path.name: path.read_bytes() for path in keystore.iterdir()}
    caplog.set_level(logging.DEBUG, logger="yinxin.hsm")

    with pytest.raises(BackendError) as opening:
        SoftwareBackend(keystore, WRONG)

    assert str(opening.value) == (
        f"software keystore {str(keystore)!r}: the passphrase does not unlock it: "
        "wrong passphrase? (YINXIN_KEYSTORE_PASSPHRASE)"
    )
    assert not isinstance(opening.value, BackendUnavailable)
    assert {path.name: path.read_bytes() for path in keystore.iterdir()} == before  # nothing written
    for text in (str(opening.value), repr(opening.value.details), caplog.text):
        assert WRONG.decode() not in text
        assert PASSPHRASE.decode() not in text


def test_secrets_are_wrapped_under_the_passphrase(store: SoftwareBackend, keystore: Path) -> None:
    store.generate_secret("enc", SecretPurpose.ENCRYPTION)
    store.generate_secret("mac", SecretPurpose.MAC)
    blob = store.encrypt("enc", b"110101199003077777", aad=b"ctx")

    record = json.loads((keystore / "enc.secret.json").read_text())
    assert record["purpose"] == "encryption"
    assert record["format"] == 2  # under the keystore's key-encryption key: no scrypt of its own
    assert set(record) >= {"nonce", "wrapped"}
    assert "kdf" not in record and "salt" not in record

    # An independent implementation gets the same answers from the file.
    enc_key = unwrap_secret(keystore, "enc", PASSPHRASE)
    assert AESGCM(enc_key).decrypt(blob[:12], blob[12:], b"ctx") == b"110101199003077777"
    mac_key = unwrap_secret(keystore, "mac", PASSPHRASE)
    assert store.mac("mac", b"data") == hmac.new(mac_key, b"data", hashlib.sha256).digest()


def test_a_renamed_secret_file_does_not_decrypt(store: SoftwareBackend, keystore: Path) -> None:
    store.generate_secret("a", SecretPurpose.MAC)
    record = json.loads((keystore / "a.secret.json").read_text())
    record["label"] = "b"
    (keystore / "b.secret.json").write_text(json.dumps(record))

    with SoftwareBackend(keystore, PASSPHRASE) as fresh, pytest.raises(BackendError):
        fresh.mac("b", b"x")


def test_destroy_overwrites_and_removes_only_the_private_key(store: SoftwareBackend, keystore: Path) -> None:
    store.generate_key(ES256, "k")
    store.destroy_key("k")

    assert sorted(path.name for path in keystore.iterdir()) == ["_keystore.json", "k.json", "k.pub.pem"]
    meta = json.loads((keystore / "k.json").read_text())
    assert meta["state"] == "destroyed"
    assert "destroyed_at" in meta


def test_destruction_by_another_process_stops_cached_keys(store: SoftwareBackend, keystore: Path) -> None:
    key = store.generate_key(ES256, "k")
    store.sign(key, b"cached now")

    with SoftwareBackend(keystore, PASSPHRASE) as other:
        other.destroy_key("k")

    with pytest.raises(KeyNotFound):
        store.sign(key, b"after")


def test_labels_cannot_collide_across_file_kinds(store: SoftwareBackend) -> None:
    store.generate_secret("x", SecretPurpose.MAC)
    with pytest.raises(AlreadyExists):
        store.generate_key(ES256, "x.secret")  # its metadata would be x.secret.json
    assert store.list_keys() == []
    assert store.mac("x", b"m")


def test_key_files_never_escape_the_keystore(store: SoftwareBackend, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        store.generate_key(ES256, "../escaped")
    assert not list(tmp_path.glob("escaped*"))


def test_empty_passphrase_is_refused(keystore: Path) -> None:
    with pytest.raises(ConfigurationError):
        SoftwareBackend(keystore, b"")


def test_missing_keystore_fails_ping(store: SoftwareBackend, keystore: Path) -> None:
    store.ping()
    keystore.rename(keystore.with_name("moved"))
    with pytest.raises(BackendUnavailable):
        store.ping()


def test_keys_created_by_one_instance_are_seen_by_another(store: SoftwareBackend, keystore: Path) -> None:
    key = store.generate_key(SignatureAlgorithm.EDDSA, "shared")
    with SoftwareBackend(keystore, PASSPHRASE) as other:
        assert other.list_keys() == [KeyRef("shared", SignatureAlgorithm.EDDSA)]
        public = store.public_key(key)
        assert isinstance(public, ed25519.Ed25519PublicKey)
        public.verify(other.sign(key, b"m"), b"m")


# -- open_backend ------------------------------------------------------------------------------


def test_software_without_passphrase_outside_development_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="YINXIN_KEYSTORE_PASSPHRASE"):
        open_backend(BackendConfig(kind="software", home=tmp_path, development=False))
    assert not (tmp_path / "keystore").exists()


def test_software_in_development_warns_about_the_fixed_passphrase(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="yinxin.hsm")
    with open_backend(BackendConfig(kind="software", home=tmp_path, development=True)) as backend:
        assert isinstance(backend, SoftwareBackend)
        key = backend.generate_key()
    assert (tmp_path / "keystore" / f"{key.kid}.key.pem").is_file()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "yinxin.hsm"]
    assert len(warnings) == 1
    assert "development passphrase" in warnings[0].getMessage()
    assert "YINXIN_KEYSTORE_PASSPHRASE" in warnings[0].getMessage()
    assert hsm.DEVELOPMENT_PASSPHRASE.decode() not in caplog.text


def test_software_with_a_passphrase_is_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="yinxin.hsm")
    config = BackendConfig(
        kind="software", home=tmp_path, keystore_passphrase=b"real secret", development=True
    )
    with open_backend(config) as backend:
        backend.generate_key()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "real secret" not in caplog.text
    assert "real secret" not in repr(config)
