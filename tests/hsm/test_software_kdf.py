"""Software keystore at rest: the key-encryption key, format-1 keystores, swapped and altered files.

Format 2 (this version): a header ``_keystore.json`` holds the scrypt salt and
cost; private keys and secrets are sealed with AES-256-GCM under the key
derived from it. Format 1 (earlier versions, no header): private keys as
PKCS#8 encrypted by ``cryptography``'s ``BestAvailableEncryption`` (PBKDF2 at
2 048 iterations), secrets with a scrypt salt of their own. The format-1
files here are written the way the earlier code wrote them, not through the
backend.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import pem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

import hsm._software
from hsm import KeyRef, SecretPurpose, SignatureAlgorithm, SoftwareBackend
from schemas.errors import BackendError, ConfigurationError, KeyNotFound
from tests.hsm.test_contract import verify

PASSPHRASE = b"correct horse battery staple"
WRONG = b"incorrect donkey"
ES256, EDDSA, PS256 = SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA, SignatureAlgorithm.PS256
WRAPPED = b"-----BEGIN YINXIN WRAPPED PRIVATE KEY-----"
PKCS8 = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    return tmp_path / "keystore"


class CountingScrypt:
    """The real scrypt, counted: how many times a passphrase is stretched."""

    calls = 0

    def __init__(self, *, salt: bytes, length: int, n: int, r: int, p: int) -> None:
        self._scrypt = Scrypt(salt=salt, length=length, n=n, r=r, p=p)

    def derive(self, key_material: bytes) -> bytes:
        type(self).calls += 1
        return self._scrypt.derive(key_material)


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[CountingScrypt]]:
    CountingScrypt.calls = 0
    monkeypatch.setattr(hsm._software, "Scrypt", CountingScrypt)
    yield CountingScrypt


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(keystore: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in keystore.iterdir()}


def header(keystore: Path) -> dict[str, object]:
    value = json.loads((keystore / "_keystore.json").read_text())
    assert isinstance(value, dict)
    return value


# -- format 1, as the earlier code wrote it ----------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_format1_key(
    keystore: Path, kid: str, algorithm: SignatureAlgorithm, passphrase: bytes = PASSPHRASE
) -> PrivateKeyTypes:
    """<kid>.key.pem (PKCS#8, BestAvailableEncryption), <kid>.pub.pem, <kid>.json: the format-1 layout."""
    keystore.mkdir(mode=0o700, parents=True, exist_ok=True)
    private: PrivateKeyTypes
    if algorithm is ES256:
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm is EDDSA:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    _write_private(
        keystore / f"{kid}.key.pem",
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        ),
    )
    _write_private(
        keystore / f"{kid}.pub.pem",
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    meta = {
        "kind": "signing",
        "kid": kid,
        "algorithm": algorithm.value,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "state": "active",
    }
    _write_private(keystore / f"{kid}.json", json.dumps(meta, indent=2).encode())
    return private


def write_format1_secret(
    keystore: Path, label: str, purpose: SecretPurpose, passphrase: bytes = PASSPHRASE
) -> bytes:
    """<label>.secret.json with its own scrypt salt: the format-1 layout."""
    keystore.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret, salt, nonce = os.urandom(32), os.urandom(16), os.urandom(12)
    kdf = {"name": "scrypt", "n": 2**15, "r": 8, "p": 1}
    wrapping_key = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase)
    wrapped = AESGCM(wrapping_key).encrypt(nonce, secret, f"yinxin-secret:{label}:{purpose.value}".encode())
    record = {
        "kind": "secret",
        "label": label,
        "purpose": purpose.value,
        "kdf": kdf,
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "wrapped": base64.b64encode(wrapped).decode(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_private(keystore / f"{label}.secret.json", json.dumps(record, indent=2).encode())
    return secret


# -- format 2 ---------------------------------------------------------------------------


def test_a_new_keystore_is_format_2_and_its_keys_survive_a_reopen(keystore: Path) -> None:
    with SoftwareBackend(keystore, PASSPHRASE) as first:
        keys = [first.generate_key(algorithm, f"k-{algorithm.value}") for algorithm in (ES256, EDDSA, PS256)]
        publics = {key.kid: first.public_key(key) for key in keys}
        first.generate_secret("enc", SecretPurpose.ENCRYPTION)
        blob = first.encrypt("enc", b"110101199003077777", aad=b"a")

    written = header(keystore)
    assert (written["kind"], written["format"]) == ("keystore", 2)
    assert len(base64.b64decode(str(written["salt"]))) == 16
    assert mode(keystore) == 0o700
    for path in keystore.iterdir():
        assert mode(path) == 0o600, path.name
    for key in keys:
        assert (keystore / f"{key.kid}.key.pem").read_bytes().startswith(WRAPPED)

    with SoftwareBackend(keystore, PASSPHRASE) as again:
        assert again.list_keys() == sorted(keys, key=lambda ref: ref.kid)
        for key in keys:
            verify(publics[key.kid], key.algorithm, again.sign(key, b"after reopen"), b"after reopen")
        assert again.decrypt("enc", blob, aad=b"a") == b"110101199003077777"
    assert header(keystore) == written  # a reopen does not rewrite the header


def test_an_offline_guess_costs_a_scrypt(keystore: Path) -> None:
    """Each passphrase guess against a copied keystore must pay the stored scrypt cost."""
    SoftwareBackend(keystore, PASSPHRASE).close()
    kdf = header(keystore)["kdf"]
    assert isinstance(kdf, dict)
    assert kdf["name"] == "scrypt"
    assert kdf["n"] >= 2**15  # 32 MiB per guess
    assert (kdf["r"], kdf["p"]) == (8, 1)


def test_a_deployment_can_ask_for_a_higher_cost(keystore: Path) -> None:
    with SoftwareBackend(keystore, PASSPHRASE, scrypt_n=2**17) as backend:
        backend.generate_key(ES256, "k")
        protection = backend.describe_key("k").protection
    assert header(keystore)["kdf"] == {"name": "scrypt", "n": 2**17, "r": 8, "p": 1}
    assert "AES-256-GCM" in protection
    assert "scrypt (N=2^17, r=8, p=1" in protection
    # The header decides for an existing keystore, whatever the caller asks.
    with SoftwareBackend(keystore, PASSPHRASE) as again:
        assert again.describe_key("k").protection == protection
    with pytest.raises(ConfigurationError, match="power of two"):
        SoftwareBackend(keystore, PASSPHRASE, scrypt_n=2**14)


def test_the_passphrase_is_stretched_once_per_open(
    keystore: Path, scrypt_calls: type[CountingScrypt]
) -> None:
    with SoftwareBackend(keystore, PASSPHRASE) as backend:
        assert scrypt_calls.calls == 1
        for algorithm in (ES256, EDDSA):
            key = backend.generate_key(algorithm, f"k-{algorithm.value}")
            backend.sign(key, b"m")
            backend.describe_key(key.kid)
        backend.generate_secret("enc", SecretPurpose.ENCRYPTION)
        backend.generate_secret("mac", SecretPurpose.MAC)
        backend.decrypt("enc", backend.encrypt("enc", b"x"))
        backend.mac("mac", b"x")
        assert scrypt_calls.calls == 1

    with SoftwareBackend(keystore, PASSPHRASE) as again:  # cold caches: everything read from files
        assert scrypt_calls.calls == 2
        for key in again.list_keys():
            again.sign(key, b"m")
        again.decrypt("enc", again.encrypt("enc", b"x"))
        again.mac("mac", b"x")
        assert scrypt_calls.calls == 2


def test_describe_key_names_the_scheme_that_protects_the_file(keystore: Path) -> None:
    with SoftwareBackend(keystore, PASSPHRASE) as backend:
        backend.generate_key(ES256, "k")
        protection = backend.describe_key("k").protection
    assert protection == (
        "software key, no hardware: k.key.pem (file mode 0600) is PKCS#8 sealed with AES-256-GCM "
        "under a key-encryption key derived from the keystore passphrase with scrypt "
        "(N=2^15, r=8, p=1; salt in _keystore.json), and is decrypted into process memory to sign"
    )
    assert "PBKDF2" not in protection


def test_opening_a_new_keystore_from_several_threads_makes_one_header(keystore: Path) -> None:
    """Each thread is a separate backend (its own flock): one header must win, and every key stay readable."""
    start = threading.Barrier(4)
    made: list[KeyRef] = []
    errors: list[BaseException] = []

    def open_and_generate(n: int) -> None:
        try:
            start.wait()
            with SoftwareBackend(keystore, PASSPHRASE) as backend:
                made.append(backend.generate_key(ES256, f"k{n}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_generate, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    with SoftwareBackend(keystore, PASSPHRASE) as again:
        assert again.list_keys() == sorted(made, key=lambda ref: ref.kid)
        for key in made:
            verify(again.public_key(key), ES256, again.sign(key, b"m"), b"m")


# -- wrong passphrase, swapped and altered files ---------------------------------------------


def test_a_swapped_key_file_does_not_decrypt(keystore: Path) -> None:
    with SoftwareBackend(keystore, PASSPHRASE) as backend:
        backend.generate_key(ES256, "a")
        b = backend.generate_key(ES256, "b")
    (keystore / "b.key.pem").write_bytes((keystore / "a.key.pem").read_bytes())

    with SoftwareBackend(keystore, PASSPHRASE) as again, pytest.raises(BackendError) as caught:
        again.sign(b, b"x")
    assert str(caught.value) == (
        "software keystore: cannot decrypt key 'b': b.key.pem was altered, or it is another key's file"
    )


def test_a_key_relabelled_to_another_algorithm_does_not_decrypt(keystore: Path) -> None:
    with SoftwareBackend(keystore, PASSPHRASE) as backend:
        backend.generate_key(EDDSA, "k")
    meta = json.loads((keystore / "k.json").read_text())
    meta["algorithm"] = "ES256"
    (keystore / "k.json").write_text(json.dumps(meta))

    with SoftwareBackend(keystore, PASSPHRASE) as again, pytest.raises(BackendError, match="altered"):
        again.sign(KeyRef("k", ES256), b"x")


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag", "version", "truncated"])
def test_an_altered_key_file_is_refused(keystore: Path, where: str) -> None:
    with SoftwareBackend(keystore, PASSPHRASE) as backend:
        key = backend.generate_key(ES256, "k")
    _, _, body = pem.unarmor((keystore / "k.key.pem").read_bytes())
    altered = bytearray(body)
    if where == "truncated":
        altered = altered[:20]
    else:
        altered[{"version": 0, "nonce": 1, "ciphertext": 40, "tag": len(body) - 1}[where]] ^= 0x01
    (keystore / "k.key.pem").write_bytes(pem.armor("YINXIN WRAPPED PRIVATE KEY", bytes(altered)))

    with SoftwareBackend(keystore, PASSPHRASE) as again, pytest.raises(BackendError) as caught:
        again.sign(key, b"x")
    message = str(caught.value)
    assert "k.key.pem" in message
    assert ("altered" in message) if where in ("nonce", "ciphertext", "tag") else ("truncated" in message)


def test_an_altered_secret_is_refused(keystore: Path) -> None:
    with SoftwareBackend(keystore, PASSPHRASE) as backend:
        backend.generate_secret("s", SecretPurpose.MAC)
    record = json.loads((keystore / "s.secret.json").read_text())
    wrapped = bytearray(base64.b64decode(record["wrapped"]))
    wrapped[0] ^= 0x01
    record["wrapped"] = base64.b64encode(bytes(wrapped)).decode()
    (keystore / "s.secret.json").write_text(json.dumps(record))

    with SoftwareBackend(keystore, PASSPHRASE) as again, pytest.raises(BackendError, match="altered"):
        again.mac("s", b"x")


def test_an_altered_header_is_refused_and_left_alone(keystore: Path) -> None:
    SoftwareBackend(keystore, PASSPHRASE).close()
    path = keystore / "_keystore.json"
    good = json.loads(path.read_text())

    lowered = dict(good, kdf={"name": "scrypt", "n": 2**10, "r": 8, "p": 1})  # a cheaper cost
    path.write_text(json.dumps(lowered))
    with pytest.raises(BackendError, match="wrong passphrase"):
        SoftwareBackend(keystore, PASSPHRASE)  # another cost is another key: the check fails

    huge = dict(good, kdf={"name": "scrypt", "n": 2**30, "r": 8, "p": 1})
    path.write_text(json.dumps(huge))
    with pytest.raises(BackendError, match="not a keystore header"):
        SoftwareBackend(keystore, PASSPHRASE)  # refused before any memory is asked for

    path.write_text("{ damaged")
    with pytest.raises(BackendError, match="damaged"):
        SoftwareBackend(keystore, PASSPHRASE)
    assert path.read_text() == "{ damaged"  # never replaced by a new header


def test_a_lost_header_is_not_silently_replaced(keystore: Path) -> None:
    with SoftwareBackend(keystore, PASSPHRASE) as backend:
        backend.generate_key(ES256, "k")
    (keystore / "_keystore.json").unlink()
    before = snapshot(keystore)

    with pytest.raises(BackendError, match=r"_keystore\.json is missing: restore it from a backup"):
        SoftwareBackend(keystore, PASSPHRASE)
    assert snapshot(keystore) == before


# -- format 1 ---------------------------------------------------------------------------


def test_a_format_1_keystore_opens_signs_and_is_upgraded(
    keystore: Path, caplog: pytest.LogCaptureFixture
) -> None:
    privates = {alg: write_format1_key(keystore, f"old-{alg.value}", alg) for alg in (ES256, EDDSA, PS256)}
    mac_key = write_format1_secret(keystore, "old-mac", SecretPurpose.MAC)
    caplog.set_level(logging.INFO, logger="yinxin.hsm")

    with SoftwareBackend(keystore, PASSPHRASE) as backend:
        assert header(keystore)["format"] == 2  # the header is written at the first open
        assert sorted(key.kid for key in backend.list_keys()) == sorted(f"old-{a.value}" for a in privates)
        es = KeyRef("old-ES256", ES256)
        before_use = backend.describe_key(es.kid).protection
        assert "PBKDF2-HMAC-SHA256, 2048 iterations, AES-256-CBC" in before_use
        assert "format 1" in before_use
        for algorithm, private in privates.items():
            key = KeyRef(f"old-{algorithm.value}", algorithm)
            verify(private.public_key(), algorithm, backend.sign(key, b"old key"), b"old key")
            # re-wrapped on first use, in place
            assert (keystore / f"{key.kid}.key.pem").read_bytes().startswith(WRAPPED)
        assert "AES-256-GCM" in backend.describe_key(es.kid).protection
        expected = hmac.new(mac_key, b"data", hashlib.sha256).digest()
        assert backend.mac("old-mac", b"data") == expected
        backend.generate_secret("new-enc", SecretPurpose.ENCRYPTION)

    assert "upgraded to format 2" in caplog.text
    assert not [p for p in keystore.iterdir() if p.name.startswith(".tmp-")]
    for path in keystore.iterdir():
        assert mode(path) == 0o600, path.name
    assert "kdf" in json.loads((keystore / "old-mac.secret.json").read_text())  # secrets keep format 1

    with SoftwareBackend(keystore, PASSPHRASE) as again:
        for algorithm, private in privates.items():
            key = KeyRef(f"old-{algorithm.value}", algorithm)
            verify(private.public_key(), algorithm, again.sign(key, b"again"), b"again")
        assert again.mac("old-mac", b"data") == expected
        assert again.decrypt("new-enc", again.encrypt("new-enc", b"x")) == b"x"


def test_a_half_upgraded_keystore_reads_both_formats(keystore: Path) -> None:
    """As a crash would leave it: some keys re-wrapped, some not, a stray temporary file."""
    first = write_format1_key(keystore, "first", ES256)
    second = write_format1_key(keystore, "second", EDDSA)
    with SoftwareBackend(keystore, PASSPHRASE) as backend:
        backend.sign(KeyRef("first", ES256), b"m")
    (keystore / ".tmp-interrupted").write_bytes(b"half a file")
    assert (keystore / "first.key.pem").read_bytes().startswith(WRAPPED)
    assert (keystore / "second.key.pem").read_bytes().startswith(PKCS8)

    with SoftwareBackend(keystore, PASSPHRASE) as again:
        verify(first.public_key(), ES256, again.sign(KeyRef("first", ES256), b"m"), b"m")
        verify(second.public_key(), EDDSA, again.sign(KeyRef("second", EDDSA), b"m"), b"m")
    assert (keystore / "second.key.pem").read_bytes().startswith(WRAPPED)


def test_a_wrong_passphrase_on_a_format_1_keystore_writes_nothing(keystore: Path) -> None:
    write_format1_key(keystore, "k", ES256)
    write_format1_secret(keystore, "s", SecretPurpose.MAC)
    before = snapshot(keystore)

    with pytest.raises(BackendError, match="wrong passphrase"):
        SoftwareBackend(keystore, WRONG)
    assert snapshot(keystore) == before  # no header under the wrong passphrase

    with SoftwareBackend(keystore, PASSPHRASE) as right:  # so the right one still opens it
        right.sign(KeyRef("k", ES256), b"m")


def test_a_format_1_keystore_of_secrets_only_checks_the_passphrase(keystore: Path) -> None:
    write_format1_secret(keystore, "s", SecretPurpose.MAC)
    with pytest.raises(BackendError, match="wrong passphrase"):
        SoftwareBackend(keystore, WRONG)
    assert not (keystore / "_keystore.json").exists()
    with SoftwareBackend(keystore, PASSPHRASE) as right:
        assert len(right.mac("s", b"m")) == 32


def test_a_swapped_format_1_key_file_is_refused_not_re_wrapped(keystore: Path) -> None:
    write_format1_key(keystore, "a", ES256)
    write_format1_key(keystore, "b", ES256)
    swapped = (keystore / "a.key.pem").read_bytes()
    (keystore / "b.key.pem").write_bytes(swapped)

    with (
        SoftwareBackend(keystore, PASSPHRASE) as backend,
        pytest.raises(BackendError, match="not the private half of key 'b'"),
    ):
        backend.sign(KeyRef("b", ES256), b"x")
    assert (keystore / "b.key.pem").read_bytes() == swapped  # never bound to the wrong kid


def test_threads_using_a_format_1_key_re_wrap_it_once(keystore: Path) -> None:
    private = write_format1_key(keystore, "k", ES256)
    key = KeyRef("k", ES256)
    results: list[bytes] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    with SoftwareBackend(keystore, PASSPHRASE) as backend:

        def work() -> None:
            try:
                start.wait()
                results.append(backend.sign(key, b"m"))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert not errors, errors
    for signature in results:
        verify(private.public_key(), ES256, signature, b"m")
    assert (keystore / "k.key.pem").read_bytes().startswith(WRAPPED)
    assert sorted(p.name for p in keystore.iterdir()) == [
        "_keystore.json",
        "k.json",
        "k.key.pem",
        "k.pub.pem",
    ]


def test_destroy_removes_either_format(keystore: Path) -> None:
    write_format1_key(keystore, "old", ES256)
    with SoftwareBackend(keystore, PASSPHRASE) as backend:
        backend.generate_key(ES256, "new")
        backend.destroy_key("old")  # never used, so still format 1
        backend.destroy_key("new")
        with pytest.raises(KeyNotFound):
            backend.sign(KeyRef("new", ES256), b"x")
        with pytest.raises(KeyNotFound):
            backend.sign(KeyRef("old", ES256), b"x")
    assert not list(keystore.glob("*.key.pem"))
    assert sorted(p.name for p in keystore.iterdir()) == [
        "_keystore.json",
        "new.json",
        "new.pub.pem",
        "old.json",
        "old.pub.pem",
    ]
