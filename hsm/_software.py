"""The software keystore: keys in files, encrypted under a passphrase.

For development and for deployments without an HSM. One directory (mode
0700), files of mode 0600, each written atomically (temporary file, fsync,
``os.replace``, fsync of the directory)::

    <kid>.key.pem        private key, encrypted PKCS#8 (RFC 5958) PEM
    <kid>.pub.pem        public key, SubjectPublicKeyInfo PEM
    <kid>.json           {"kind": "signing", "kid", "algorithm", "created_at", "state", ...}
    <label>.secret.json  {"kind": "secret", "purpose", "kdf", "salt", "nonce", "wrapped"}

A secret's 32 random bytes are wrapped with AES-256-GCM under a key derived
from the passphrase with scrypt (RFC 7914) and a per-file salt; the label and
purpose are the associated data, so a renamed file does not decrypt.

Decrypting a PKCS#8 key is deliberately slow (PBKDF2), so private keys and
secrets are decrypted once and then kept in memory.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hsm._backend import (
    KeyBackend,
    KeyProvenance,
    KeyRef,
    SecretPurpose,
    SignatureAlgorithm,
    validate_label,
)
from hsm._kid import new_kid
from schemas.errors import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidInput,
    KeyNotFound,
)

__all__ = ["SoftwareBackend"]

_log = logging.getLogger("yinxin.hsm")

_RSA_BITS = 3072
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)  # RFC 7518 §3.5
_SHA256 = hashes.SHA256()
_ECDSA = ec.ECDSA(_SHA256)
_NONCE_BYTES = 12
_TAG_BYTES = 16
_SECRET_BYTES = 32
# scrypt cost (RFC 7914 §2): about 32 MiB and a few tens of milliseconds, paid
# once per secret per process. Stored in each file so it can be raised later.
_SCRYPT = {"name": "scrypt", "n": 2**15, "r": 8, "p": 1}

_ACTIVE = "active"
_DESTROYED = "destroyed"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _pkcs8_encryption(pem: bytes) -> str:
    """How an encrypted PKCS#8 key file says it is encrypted (RFC 5958 §3, RFC 8018 §6.2).

    Read from the file, not assumed: ``BestAvailableEncryption`` is whatever
    the installed ``cryptography`` picks, and older keys keep their old scheme.
    """
    try:
        _, _, der = asn1_pem.unarmor(pem)
        scheme = asn1_keys.EncryptedPrivateKeyInfo.load(der)["encryption_algorithm"]
        if scheme.kdf != "pbkdf2":
            return f"encrypted PKCS#8 ({scheme['algorithm'].native})"
        cipher = (
            f"{scheme.encryption_cipher.upper()}-{scheme.key_length * 8}-{scheme.encryption_mode.upper()}"
        )
        return (
            f"encrypted PKCS#8 (PBES2: PBKDF2-HMAC-{scheme.kdf_hmac.upper()}, "
            f"{scheme.kdf_iterations} iterations, {cipher})"
        )
    except (ValueError, TypeError, KeyError):
        return "encrypted PKCS#8 in a scheme this service does not recognise"


class SoftwareBackend(KeyBackend):
    """Keys in an encrypted keystore directory; see the module docstring."""

    name: ClassVar[str] = "software"

    def __init__(self, keystore_dir: Path, passphrase: bytes) -> None:
        if not isinstance(passphrase, bytes) or not passphrase:
            raise ConfigurationError(
                "the software keystore needs a non-empty passphrase: set YINXIN_KEYSTORE_PASSPHRASE "
                "or YINXIN_KEYSTORE_PASSPHRASE_FILE"
            )
        self._dir = Path(keystore_dir)
        self._dir_name = str(self._dir)
        self._passphrase = passphrase  # never logged or shown
        self._lock = threading.RLock()  # cache fills and file writes
        self._closed = False
        self._signers: dict[str, tuple[SignatureAlgorithm, PrivateKeyTypes]] = {}
        self._public_keys: dict[str, tuple[SignatureAlgorithm, PublicKeyTypes]] = {}
        self._secrets: dict[str, tuple[SecretPurpose, bytes]] = {}
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self._dir, 0o700)
        except OSError as exc:
            raise BackendUnavailable(
                f"software keystore {str(self._dir)!r} cannot be created ({exc.strerror}): "
                "check YINXIN_HOME and its permissions"
            ) from exc

    def __repr__(self) -> str:
        return f"SoftwareBackend(keystore_dir={str(self._dir)!r})"

    # -- files ----------------------------------------------------------------

    def _path(self, label: str, suffix: str) -> Path:
        # validate_label() keeps the label to [A-Za-z0-9._-] not starting with
        # a dot, so it can never leave the directory.
        return self._dir / f"{validate_label(label)}{suffix}"

    def _write(self, path: Path, data: bytes) -> None:
        """Write *data* to *path* atomically, mode 0600, durably."""
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".tmp-")  # created 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            value = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BackendError(f"software keystore: cannot read {path.name}") from exc
        return value if isinstance(value, dict) else None

    def _metadata(self, kid: str) -> dict[str, Any]:
        meta = self._read_json(self._path(kid, ".json"))
        if meta is None or meta.get("kind") != "signing" or meta.get("kid") != kid:
            raise KeyNotFound(f"no key {kid!r} in the software keystore")
        return meta

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable("the software keystore is closed")

    def _io_error(self, exc: OSError, what: str) -> BackendError:
        return BackendError(f"software keystore: {what} failed ({exc.strerror or type(exc).__name__})")

    # -- signing keys --------------------------------------------------------------

    def generate_key(
        self, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256, kid: str | None = None
    ) -> KeyRef:
        algorithm = SignatureAlgorithm.parse(algorithm)
        kid = new_kid() if kid is None else validate_label(kid)
        private: PrivateKeyTypes
        if algorithm is SignatureAlgorithm.ES256:
            private = ec.generate_private_key(ec.SECP256R1())
        elif algorithm is SignatureAlgorithm.EDDSA:
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            private = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
        private_pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        meta = {
            "kind": "signing",
            "kid": kid,
            "algorithm": algorithm.value,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "state": _ACTIVE,
        }
        paths = [self._path(kid, suffix) for suffix in (".key.pem", ".pub.pem", ".json")]
        with self._lock:
            self._check_open()
            if any(path.exists() for path in paths):
                raise AlreadyExists(f"a key labelled {kid!r} already exists in the software keystore")
            try:
                # Metadata last: it is what makes the key visible.
                self._write(paths[0], private_pem)
                self._write(paths[1], public_pem)
                self._write(paths[2], json.dumps(meta, indent=2).encode())
            except OSError as exc:
                raise self._io_error(exc, f"writing key {kid!r}") from exc
            self._signers[kid] = (algorithm, private)
            self._public_keys[kid] = (algorithm, private.public_key())
        _log.info("generated %s key %r in the software keystore", algorithm.value, kid)
        return KeyRef(kid, algorithm)

    def _load_signer(self, kid: str) -> tuple[SignatureAlgorithm, PrivateKeyTypes]:
        with self._lock:
            self._check_open()
            entry = self._signers.get(kid)
            if entry is not None:
                return entry
            meta = self._metadata(kid)
            try:
                pem = self._path(kid, ".key.pem").read_bytes()
            except FileNotFoundError:
                raise KeyNotFound(f"key {kid!r} has been destroyed; it can no longer sign") from None
            except OSError as exc:
                raise self._io_error(exc, f"reading key {kid!r}") from exc
            try:
                private = serialization.load_pem_private_key(pem, password=self._passphrase)
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise BackendError(
                    f"software keystore: cannot decrypt key {kid!r}: wrong passphrase?"
                ) from exc
            entry = (SignatureAlgorithm.parse(meta["algorithm"]), private)
            self._signers[kid] = entry
            return entry

    def sign(self, key: KeyRef, data: bytes) -> bytes:
        kid = key.kid
        entry = self._signers.get(kid)
        if entry is None:
            entry = self._load_signer(validate_label(kid))
        elif not os.path.exists(os.path.join(self._dir_name, kid + ".key.pem")):
            # Destroyed, possibly by another process: the cache must not outlive the file.
            self._signers.pop(kid, None)
            raise KeyNotFound(f"key {kid!r} has been destroyed; it can no longer sign")
        algorithm, private = entry
        if algorithm != key.algorithm:
            raise InvalidInput(f"key {kid!r} is bound to {algorithm.value}, not {key.algorithm}")
        if isinstance(private, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(private.sign(data, _ECDSA))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 §3.4
        if isinstance(private, ed25519.Ed25519PrivateKey):
            return private.sign(data)
        if isinstance(private, rsa.RSAPrivateKey):
            return private.sign(data, _PSS, _SHA256)
        raise BackendError(f"software keystore: key {kid!r} is of an unexpected type")

    def public_key(self, key: KeyRef | str) -> PublicKeyTypes:
        kid = validate_label(key.kid if isinstance(key, KeyRef) else key)
        entry = self._public_keys.get(kid)
        if entry is None:
            with self._lock:
                self._check_open()
                algorithm = SignatureAlgorithm.parse(self._metadata(kid)["algorithm"])
                try:
                    public = serialization.load_pem_public_key(self._path(kid, ".pub.pem").read_bytes())
                except FileNotFoundError:
                    raise KeyNotFound(f"no public key {kid!r} in the software keystore") from None
                except (OSError, ValueError, UnsupportedAlgorithm) as exc:
                    raise BackendError(f"software keystore: public key {kid!r} is unreadable") from exc
                entry = self._public_keys[kid] = (algorithm, public)
        if isinstance(key, KeyRef) and key.algorithm != entry[0]:
            raise InvalidInput(f"key {kid!r} is bound to {entry[0].value}, not {key.algorithm}")
        return entry[1]

    def get_key(self, kid: str) -> KeyRef:
        validate_label(kid)
        self._check_open()
        return KeyRef(kid, SignatureAlgorithm.parse(self._metadata(kid)["algorithm"]))

    def list_keys(self) -> list[KeyRef]:
        self._check_open()
        keys = []
        for path in self._dir.glob("*.json"):
            meta = self._read_json(path)
            if meta is None or meta.get("kind") != "signing" or meta.get("state") != _ACTIVE:
                continue
            kid = meta.get("kid")
            if not isinstance(kid, str) or path.name != f"{kid}.json":
                continue
            if (self._dir / f"{kid}.key.pem").exists():
                keys.append(KeyRef(kid, SignatureAlgorithm.parse(meta["algorithm"])))
        return sorted(keys, key=lambda ref: ref.kid)

    def destroy_key(self, kid: str) -> None:
        validate_label(kid)
        with self._lock:
            self._check_open()
            meta = self._metadata(kid)
            path = self._path(kid, ".key.pem")
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise KeyNotFound(f"key {kid!r} has already been destroyed") from None
            try:
                # Overwrite before unlinking so the encrypted key is not left
                # in the freed blocks (best effort: journals and SSDs may keep copies).
                with open(path, "r+b") as handle:
                    handle.write(os.urandom(size))
                    handle.flush()
                    os.fsync(handle.fileno())
                path.unlink()
                meta["state"] = _DESTROYED
                meta["destroyed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                self._write(self._path(kid, ".json"), json.dumps(meta, indent=2).encode())
            except OSError as exc:
                raise self._io_error(exc, f"destroying key {kid!r}") from exc
            self._signers.pop(kid, None)
        _log.info("destroyed private key %r in the software keystore", kid)

    def describe_key(self, kid: str) -> KeyProvenance:
        validate_label(kid)
        path = self._path(kid, ".key.pem")
        with self._lock:  # not while destroy_key() is overwriting the file
            self._check_open()
            self._metadata(kid)
            try:
                pem = path.read_bytes()
                mode = path.stat().st_mode & 0o777
            except FileNotFoundError:
                raise KeyNotFound(
                    f"key {kid!r} has been destroyed; it has no private key to describe"
                ) from None
            except OSError as exc:
                raise self._io_error(exc, f"reading key {kid!r}") from exc
        # The PKCS#11 protection flags do not apply to a file: None, not a claim either way.
        attributes: dict[str, bool | None] = dict.fromkeys(KeyProvenance.ATTRIBUTES)
        attributes.update(CKA_TOKEN=True, CKA_PRIVATE=True, CKA_SIGN=True)
        return KeyProvenance(
            backend=self.name,
            module=self._dir_name,
            token_label=None,
            token_serial=None,
            token_manufacturer=None,
            token_model=None,
            attributes=attributes,
            protection=(
                f"software key, no hardware: {path.name} (file mode {mode:04o}) is "
                f"{_pkcs8_encryption(pem)} under the keystore passphrase, and is decrypted into "
                "process memory to sign"
            ),
        )

    # -- secrets -------------------------------------------------------------

    def _wrapping_key(self, salt: bytes, kdf: dict[str, Any]) -> bytes:
        if kdf.get("name") != "scrypt":
            raise BackendError(f"software keystore: unknown key derivation {kdf.get('name')!r}")
        return Scrypt(salt=salt, length=32, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])).derive(
            self._passphrase
        )

    @staticmethod
    def _secret_aad(label: str, purpose: SecretPurpose) -> bytes:
        return f"yinxin-secret:{label}:{purpose.value}".encode()

    def generate_secret(self, label: str, purpose: SecretPurpose) -> None:
        purpose = SecretPurpose(purpose)
        path = self._path(label, ".secret.json")
        secret = os.urandom(_SECRET_BYTES)
        salt = os.urandom(16)
        nonce = os.urandom(_NONCE_BYTES)
        wrapped = AESGCM(self._wrapping_key(salt, _SCRYPT)).encrypt(
            nonce, secret, self._secret_aad(label, purpose)
        )
        record = {
            "kind": "secret",
            "label": label,
            "purpose": purpose.value,
            "kdf": _SCRYPT,
            "salt": _b64(salt),
            "nonce": _b64(nonce),
            "wrapped": _b64(wrapped),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with self._lock:
            self._check_open()
            if path.exists():
                raise AlreadyExists(
                    f"a secret labelled {label!r} already exists in the software keystore "
                    f"(or {path.name} is taken by a signing key)"
                )
            try:
                self._write(path, json.dumps(record, indent=2).encode())
            except OSError as exc:
                raise self._io_error(exc, f"writing secret {label!r}") from exc
            self._secrets[label] = (purpose, secret)
        _log.info("generated %s secret %r in the software keystore", purpose.value, label)

    def _secret_record(self, label: str) -> dict[str, Any] | None:
        record = self._read_json(self._path(label, ".secret.json"))
        if record is None or record.get("kind") != "secret" or record.get("label") != label:
            return None
        return record

    def has_secret(self, label: str) -> bool:
        validate_label(label)
        self._check_open()
        return label in self._secrets or self._secret_record(label) is not None

    def _secret(self, label: str, purpose: SecretPurpose) -> bytes:
        entry = self._secrets.get(label)
        if entry is None:
            validate_label(label)
            with self._lock:
                self._check_open()
                entry = self._secrets.get(label) or self._unwrap_secret(label)
        if entry[0] is not purpose:
            raise InvalidInput(f"secret {label!r} is a {entry[0].value} key, not an {purpose.value} key")
        return entry[1]

    def _unwrap_secret(self, label: str) -> tuple[SecretPurpose, bytes]:
        record = self._secret_record(label)
        if record is None:
            raise KeyNotFound(f"no secret {label!r} in the software keystore")
        try:
            purpose = SecretPurpose(record["purpose"])
            salt, nonce, wrapped = (_unb64(record[k]) for k in ("salt", "nonce", "wrapped"))
            kdf = record["kdf"]
        except (KeyError, ValueError, TypeError) as exc:
            raise BackendError(f"software keystore: secret {label!r} is malformed") from exc
        try:
            secret = AESGCM(self._wrapping_key(salt, kdf)).decrypt(
                nonce, wrapped, self._secret_aad(label, purpose)
            )
        except InvalidTag as exc:
            raise BackendError(
                f"software keystore: cannot decrypt secret {label!r}: wrong passphrase?"
            ) from exc
        entry = (purpose, secret)
        self._secrets[label] = entry
        return entry

    def encrypt(self, label: str, plaintext: bytes, aad: bytes = b"") -> bytes:
        key = self._secret(label, SecretPurpose.ENCRYPTION)
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)

    def decrypt(self, label: str, blob: bytes, aad: bytes = b"") -> bytes:
        key = self._secret(label, SecretPurpose.ENCRYPTION)
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise BackendError(f"decryption with secret {label!r} failed: the ciphertext is truncated")
        try:
            return AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise BackendError(
                f"decryption with secret {label!r} failed: the ciphertext or its associated data "
                "was altered, or it was encrypted under another key"
            ) from exc

    def mac(self, label: str, data: bytes) -> bytes:
        return hmac.new(self._secret(label, SecretPurpose.MAC), data, hashlib.sha256).digest()

    # -- health and lifetime ------------------------------------------------------

    def ping(self) -> None:
        self._check_open()
        if not self._dir.is_dir() or not os.access(self._dir, os.R_OK | os.W_OK | os.X_OK):
            raise BackendUnavailable(
                f"software keystore {str(self._dir)!r} is missing or not writable: check YINXIN_HOME"
            )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            # Python cannot wipe memory; dropping the references is what we can do.
            self._signers.clear()
            self._secrets.clear()
            self._public_keys.clear()
