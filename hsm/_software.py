"""The software keystore: keys in files, encrypted under a passphrase.

For development and for deployments without an HSM. One directory (mode
0700), files of mode 0600, each written atomically (temporary file, fsync,
``os.replace``, fsync of the directory)::

    _keystore.json       the header: {"kind": "keystore", "format": 2, "kdf", "salt", "check"}
    <kid>.key.pem        private key: PKCS#8 (RFC 5958) DER sealed with AES-256-GCM under the
                         key-encryption key, PEM label "YINXIN WRAPPED PRIVATE KEY"
    <kid>.pub.pem        public key, SubjectPublicKeyInfo PEM
    <kid>.json           {"kind": "signing", "kid", "algorithm", "created_at", "state", ...}
    <label>.secret.json  {"kind": "secret", "format": 2, "label", "purpose", "nonce", "wrapped"}

The key-encryption key (KEK) is derived once per open with scrypt (RFC 7914)
from the passphrase and the header's salt; the header's ``check`` is an
AES-GCM tag under it, so a wrong passphrase fails at open, before anything is
read or written. The header's name starts with ``_``, which no label can, so
no key or secret can ever take it. Private keys and secrets are sealed under
the KEK with AES-256-GCM (NIST SP 800-38D, 96-bit random nonces); the
associated data names the kid and algorithm (or the label and purpose), so a
renamed or swapped file does not decrypt.

Why not PKCS#8's own encryption: ``BestAvailableEncryption`` is PBES2 with
PBKDF2-HMAC-SHA256 at 2 048 iterations (cryptography 50), and its iteration
count cannot be set, so an offline guess against a copied keystore cost a
fraction of a millisecond of CPU (far less on a GPU). One scrypt per open,
rather than a slow KDF per file, makes guessing expensive (32 MiB and ~80 ms a
guess at N=2^15) without making key generation or loading slow.

Format 1 (no header; encrypted PKCS#8 PEM keys; secrets with their own scrypt
salt) is still read. The first open of such a keystore checks the passphrase
against one of its files, then writes the header. A format-1 key is
re-wrapped into format 2 the first time it is decrypted: the new file
replaces the old atomically (same name, so a crash leaves one or the other,
and readers accept both), under an exclusive ``flock`` on the directory that
``destroy_key`` also takes, so another process's destruction is never undone.
Format-1 secrets (scrypt per file) are kept as they are.

Private keys and secrets are decrypted once and then kept in memory.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

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
_SALT_BYTES = 16

_FORMAT = 2
_HEADER = "_keystore.json"
# scrypt cost of the key-encryption key (RFC 7914 §2), paid once per open, and
# by every offline guess: N=2^15, r=8 is 32 MiB and ~80 ms (what format-1
# secrets paid per file); N=2^17 (OWASP's recommendation) is 128 MiB and ~320 ms.
# The default is the lower one because the test suite opens ~1 200 keystores;
# a deployment asks for more with ``scrypt_n``. The header records the cost, so
# it can be raised for new keystores without breaking old ones.
_KEK_SCRYPT_N = 2**15
_KEK_SCRYPT_N_RANGE = (2**15, 2**20)
_KEK_SCRYPT_R = 8
_MAX_SCRYPT_BYTES = 2**30  # a damaged header must not ask for more memory than this
_CHECK_AAD = b"yinxin-keystore:2:check"
_WRAPPED_PEM = "YINXIN WRAPPED PRIVATE KEY"  # format 2: version byte || nonce || AES-GCM(PKCS#8)
_PKCS8_PEM = "ENCRYPTED PRIVATE KEY"  # format 1 (RFC 5958 §3)

_ACTIVE = "active"
_DESTROYED = "destroyed"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _scrypt(passphrase: bytes, salt: bytes, kdf: dict[str, Any]) -> bytes:
    if kdf.get("name") != "scrypt":
        raise BackendError(f"software keystore: unknown key derivation {kdf.get('name')!r}")
    return Scrypt(salt=salt, length=32, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])).derive(passphrase)


def _kek_params(value: object) -> dict[str, int]:
    """The header's scrypt parameters, checked so a damaged header cannot exhaust memory."""
    if not isinstance(value, dict) or value.get("name") != "scrypt":
        raise ValueError("not scrypt")
    n, r, p = value.get("n"), value.get("r"), value.get("p")
    if type(n) is not int or type(r) is not int or type(p) is not int:  # bool is not a cost
        raise ValueError("scrypt parameters must be integers")
    if n < 2 or n & (n - 1) or r < 1 or 128 * n * r > _MAX_SCRYPT_BYTES or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range")
    return {"n": n, "r": r, "p": p}


def _key_aad(kid: str, algorithm: SignatureAlgorithm) -> bytes:
    # Labels never contain ":", so the fields cannot run into each other.
    return f"yinxin-key:{_FORMAT}:{kid}:{algorithm.value}".encode()


def _secret_aad(label: str, purpose: SecretPurpose, version: int) -> bytes:
    if version == 1:
        return f"yinxin-secret:{label}:{purpose.value}".encode()
    return f"yinxin-secret:{version}:{label}:{purpose.value}".encode()


def _pem_label(pem: bytes) -> str | None:
    try:
        return str(asn1_pem.unarmor(pem)[0])
    except ValueError:
        return None


def _fits(algorithm: SignatureAlgorithm, private: PrivateKeyTypes) -> bool:
    if algorithm is SignatureAlgorithm.ES256:
        return isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1)
    if algorithm is SignatureAlgorithm.EDDSA:
        return isinstance(private, ed25519.Ed25519PrivateKey)
    return isinstance(private, rsa.RSAPrivateKey)


def _pkcs8_encryption(pem: bytes) -> str:
    """How a format-1 (encrypted PKCS#8) key file says it is encrypted (RFC 5958 §3, RFC 8018 §6.2).

    Read from the file, not assumed: ``BestAvailableEncryption`` is whatever
    the ``cryptography`` of the day picked.
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


# sign_many: batches this size and up are split over two threads (below it, handing half
# to a thread costs more than it saves).
_PARALLEL_MIN = 16
_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def _sign_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="yinxin-sign")
        return _POOL


def _signature(private: PrivateKeyTypes, data: bytes) -> bytes:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(private.sign(data, _ECDSA))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 §3.4
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign(data)
    if isinstance(private, rsa.RSAPrivateKey):
        return private.sign(data, _PSS, _SHA256)
    raise BackendError(f"software keystore: a key of type {type(private).__name__} cannot sign")


def _hmac_sha256(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod=hashlib.sha256)


_Keyed = TypeVar("_Keyed")


def _signatures(private: PrivateKeyTypes, messages: Sequence[bytes]) -> list[bytes]:
    return [_signature(private, message) for message in messages]


class SoftwareBackend(KeyBackend):
    """Keys in an encrypted keystore directory; see the module docstring."""

    name: ClassVar[str] = "software"

    def __init__(self, keystore_dir: Path, passphrase: bytes, *, scrypt_n: int = _KEK_SCRYPT_N) -> None:
        """Open (or create) the keystore in *keystore_dir*; BackendError on a wrong passphrase.

        *scrypt_n* is the scrypt cost (a power of two, 2^15 to 2^20) of the
        key-encryption key when this call creates the keystore; an existing
        keystore keeps the cost its header records.
        """
        if not isinstance(passphrase, bytes) or not passphrase:
            raise ConfigurationError(
                "the software keystore needs a non-empty passphrase: set YINXIN_KEYSTORE_PASSPHRASE "
                "or YINXIN_KEYSTORE_PASSPHRASE_FILE"
            )
        low, high = _KEK_SCRYPT_N_RANGE
        if type(scrypt_n) is not int or scrypt_n & (scrypt_n - 1) or not low <= scrypt_n <= high:
            raise ConfigurationError(f"scrypt_n must be a power of two from 2^15 to 2^20, not {scrypt_n!r}")
        self._dir = Path(keystore_dir)
        self._dir_name = str(self._dir)
        self._passphrase = passphrase  # never logged or shown
        self._lock = threading.RLock()  # cache fills and file writes
        self._closed = False
        self._signers: dict[str, tuple[SignatureAlgorithm, PrivateKeyTypes]] = {}
        self._public_keys: dict[str, tuple[SignatureAlgorithm, PublicKeyTypes]] = {}
        self._secrets: dict[str, tuple[SecretPurpose, bytes]] = {}
        # AESGCM per encryption secret: building one (the key schedule) costs three times an
        # encryption of a holder ID. The objects are immutable and safe to share between threads.
        self._aeads: dict[str, AESGCM] = {}
        self._macs: dict[str, hmac.HMAC] = {}  # keyed HMAC states to copy, for the same reason
        self._kek: bytes | None = None  # the key-encryption key, from the header and the passphrase
        self._kdf: dict[str, int] = {"n": scrypt_n, "r": _KEK_SCRYPT_R, "p": 1}  # until the header says
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self._dir, 0o700)
        except OSError as exc:
            raise BackendUnavailable(
                f"software keystore {str(self._dir)!r} cannot be created ({exc.strerror}): "
                "check YINXIN_HOME and its permissions"
            ) from exc
        self._kdf, self._kek = self._unlock()

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

    @contextlib.contextmanager
    def _dir_lock(self) -> Iterator[None]:
        """Exclusive ``flock`` on the directory: against other processes (self._lock covers threads).

        Taken where a read-then-write must not interleave with another
        process: creating the header, re-wrapping a key, destroying one.
        """
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

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

    # -- the header and the key-encryption key -----------------------------------

    def _unlock(self) -> tuple[dict[str, int], bytes]:
        """Derive the key-encryption key and check it against the header; create the header if none."""
        header = self._read_header()
        if header is None:
            try:
                with self._dir_lock():
                    header = self._read_header()  # another process may have just written it
                    if header is None:
                        return self._create_header()
            except OSError as exc:
                raise self._io_error(exc, f"creating {_HEADER}") from exc
        kdf, salt, check = header
        kek = _scrypt(self._passphrase, salt, {"name": "scrypt", **kdf})
        try:
            AESGCM(kek).decrypt(check[:_NONCE_BYTES], check[_NONCE_BYTES:], _CHECK_AAD)
        except InvalidTag:
            raise BackendError(
                f"software keystore {self._dir_name!r}: the passphrase does not unlock it: "
                "wrong passphrase? (YINXIN_KEYSTORE_PASSPHRASE)"
            ) from None
        return kdf, kek

    def _read_header(self) -> tuple[dict[str, int], bytes, bytes] | None:
        path = self._dir / _HEADER
        try:
            header = json.loads(path.read_bytes())
            if header is None:  # "null" is damage, not absence
                raise ValueError("empty")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BackendError(f"software keystore: cannot read {_HEADER}: it is damaged") from exc
        try:
            if header["kind"] != "keystore" or header["format"] != _FORMAT:
                raise ValueError(f"format {header.get('format')!r}")
            salt, check = _unb64(header["salt"]), _unb64(header["check"])
            if len(check) != _NONCE_BYTES + _TAG_BYTES:
                raise ValueError("check")
            return _kek_params(header["kdf"]), salt, check
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise BackendError(
                f"software keystore: {_HEADER} is not a keystore header this service understands ({exc})"
            ) from exc

    def _create_header(self) -> tuple[dict[str, int], bytes]:
        """Write the header of a new or a format-1 keystore (under the directory lock)."""
        legacy = self._check_existing_files()
        salt = os.urandom(_SALT_BYTES)
        kdf = {"name": "scrypt", **self._kdf}
        kek = _scrypt(self._passphrase, salt, kdf)
        nonce = os.urandom(_NONCE_BYTES)
        header = {
            "kind": "keystore",
            "format": _FORMAT,
            "kdf": kdf,
            "salt": _b64(salt),
            "check": _b64(nonce + AESGCM(kek).encrypt(nonce, b"", _CHECK_AAD)),
            "created_at": _now(),
        }
        self._write(self._dir / _HEADER, json.dumps(header, indent=2).encode())
        if legacy:
            _log.info(
                "software keystore %r upgraded to format %d (key files re-wrap on first use)",
                self._dir_name,
                _FORMAT,
            )
        return _kek_params(kdf), kek

    def _check_existing_files(self) -> bool:
        """Before writing a header: check the passphrase against format-1 files, if any.

        A header written under a wrong passphrase would lock the right one out,
        so it is written only once a format-1 key or secret decrypts (or there
        is none). Format-2 files without a header mean the header was lost:
        refuse, rather than start a new one they can never be read under.
        Returns whether there were format-1 files.
        """
        keys: list[bytes] = []
        secrets: list[str] = []
        for path in sorted(self._dir.iterdir()):
            name = path.name
            if name.endswith(".key.pem"):
                pem = path.read_bytes()
                label = _pem_label(pem)
                if label == _WRAPPED_PEM:
                    raise self._lost_header(name)
                if label == _PKCS8_PEM:
                    keys.append(pem)
            elif name.endswith(".secret.json"):
                record = self._read_json(path)
                if record is None or record.get("kind") != "secret":
                    continue
                if "kdf" not in record:
                    raise self._lost_header(name)
                secrets.append(name.removesuffix(".secret.json"))
        if not keys and not secrets:
            return False
        for pem in keys:  # about a millisecond each: PBKDF2 at 2 048 iterations
            with contextlib.suppress(ValueError, TypeError, UnsupportedAlgorithm):
                serialization.load_pem_private_key(pem, password=self._passphrase)
                return True
        for label in secrets:
            with contextlib.suppress(BackendError, KeyNotFound, InvalidInput):
                self._unwrap_secret(label)
                return True
        raise BackendError(
            f"software keystore {self._dir_name!r}: the passphrase decrypts none of its keys: "
            "wrong passphrase? (YINXIN_KEYSTORE_PASSPHRASE)"
        )

    def _lost_header(self, name: str) -> BackendError:
        return BackendError(
            f"software keystore {self._dir_name!r}: {name} is sealed under the keystore's "
            f"key-encryption key, but {_HEADER} is missing: restore it from a backup"
        )

    def _key_encryption_key(self) -> bytes:
        if self._kek is None:
            raise BackendUnavailable("the software keystore is closed")
        return self._kek

    # -- signing keys --------------------------------------------------------------

    def _seal_private_key(self, kid: str, algorithm: SignatureAlgorithm, private: PrivateKeyTypes) -> bytes:
        der = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self._key_encryption_key()).encrypt(nonce, der, _key_aad(kid, algorithm))
        return bytes(asn1_pem.armor(_WRAPPED_PEM, bytes([_FORMAT]) + nonce + sealed))

    def _open_private_key(
        self, kid: str, algorithm: SignatureAlgorithm, pem: bytes
    ) -> tuple[PrivateKeyTypes, bool]:
        """Decrypt a key file of either format; returns the key and whether it is format 1."""
        try:
            label, _, body = asn1_pem.unarmor(pem)
        except ValueError:
            label, body = None, b""
        if label == _WRAPPED_PEM:
            if len(body) < 1 + _NONCE_BYTES + _TAG_BYTES or body[0] != _FORMAT:
                raise BackendError(f"software keystore: {kid}.key.pem is truncated or of an unknown version")
            nonce, sealed = body[1 : 1 + _NONCE_BYTES], body[1 + _NONCE_BYTES :]
            try:
                der = AESGCM(self._key_encryption_key()).decrypt(nonce, sealed, _key_aad(kid, algorithm))
            except InvalidTag:
                raise BackendError(
                    f"software keystore: cannot decrypt key {kid!r}: {kid}.key.pem was altered, "
                    "or it is another key's file"
                ) from None
            try:
                private = serialization.load_der_private_key(der, password=None)
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise BackendError(f"software keystore: key {kid!r} is not a usable private key") from exc
            legacy = False
        elif label == _PKCS8_PEM:
            try:
                private = serialization.load_pem_private_key(pem, password=self._passphrase)
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise BackendError(
                    f"software keystore: cannot decrypt key {kid!r}: wrong passphrase, or a damaged file?"
                ) from exc
            legacy = True
        else:
            raise BackendError(f"software keystore: {kid}.key.pem is not a key file this service reads")
        if not _fits(algorithm, private):
            raise BackendError(f"software keystore: {kid}.key.pem does not hold the {algorithm.value} key")
        return private, legacy

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
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        meta = {
            "kind": "signing",
            "kid": kid,
            "algorithm": algorithm.value,
            "created_at": _now(),
            "state": _ACTIVE,
        }
        paths = [self._path(kid, suffix) for suffix in (".key.pem", ".pub.pem", ".json")]
        with self._lock:
            self._check_open()
            private_pem = self._seal_private_key(kid, algorithm, private)
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
            algorithm = SignatureAlgorithm.parse(self._metadata(kid)["algorithm"])
            try:
                pem = self._path(kid, ".key.pem").read_bytes()
            except FileNotFoundError:
                raise KeyNotFound(f"key {kid!r} has been destroyed; it can no longer sign") from None
            except OSError as exc:
                raise self._io_error(exc, f"reading key {kid!r}") from exc
            private, legacy = self._open_private_key(kid, algorithm, pem)
            if legacy:
                self._check_public_half(kid, private)
                self._rewrap(kid, algorithm, private, pem)
            entry = (algorithm, private)
            self._signers[kid] = entry
            return entry

    def _check_public_half(self, kid: str, private: PrivateKeyTypes) -> None:
        """A format-1 file names no kid: make sure it is this kid's key before binding it to the kid."""
        der = serialization.Encoding.DER
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        try:
            public = serialization.load_pem_public_key(self._path(kid, ".pub.pem").read_bytes())
            matches = public.public_bytes(der, spki) == private.public_key().public_bytes(der, spki)
        except (OSError, ValueError, UnsupportedAlgorithm) as exc:
            raise BackendError(f"software keystore: public key {kid!r} is unreadable") from exc
        if not matches:
            raise BackendError(f"software keystore: {kid}.key.pem is not the private half of key {kid!r}")

    def _rewrap(self, kid: str, algorithm: SignatureAlgorithm, private: PrivateKeyTypes, old: bytes) -> None:
        """Replace a format-1 key file by its format-2 form: atomically, and only if it is unchanged.

        Best effort: a keystore that cannot be written still signs with the old file.
        """
        path = self._path(kid, ".key.pem")
        new = self._seal_private_key(kid, algorithm, private)
        try:
            with self._dir_lock(), open(path, "r+b") as handle:
                if handle.read() != old:
                    return  # re-wrapped or replaced by another process meanwhile
                self._write(path, new)
                # The old file is unlinked now but still open: overwrite it, as destroy_key does.
                handle.seek(0)
                handle.write(os.urandom(len(old)))
                handle.flush()
                os.fsync(handle.fileno())
        except FileNotFoundError:
            return  # destroyed by another process meanwhile
        except OSError as exc:
            _log.warning(
                "software keystore: key %r stays in format 1: re-wrapping it failed (%s)",
                kid,
                exc.strerror or type(exc).__name__,
            )
            return
        _log.info("re-wrapped key %r of the software keystore into format %d", kid, _FORMAT)

    def sign(self, key: KeyRef, data: bytes) -> bytes:
        return _signature(self._signer(key), data)

    def sign_many(self, key: KeyRef, messages: Sequence[bytes]) -> list[bytes]:
        # The key is checked once; the signatures are made on two threads (OpenSSL runs
        # without the GIL, so a 2-core machine signs about twice as fast).
        private = self._signer(key)
        if len(messages) < _PARALLEL_MIN:
            return _signatures(private, messages)
        half = len(messages) // 2
        second = _sign_pool().submit(_signatures, private, messages[half:])
        first = _signatures(private, messages[:half])
        return first + second.result()

    def _signer(self, key: KeyRef) -> PrivateKeyTypes:
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
        return private

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
                with self._dir_lock():  # not while another process re-wraps the file
                    try:
                        size = path.stat().st_size
                    except FileNotFoundError:
                        raise KeyNotFound(f"key {kid!r} has already been destroyed") from None
                    # Overwrite before unlinking so the encrypted key is not left
                    # in the freed blocks (best effort: journals and SSDs may keep copies).
                    with open(path, "r+b") as handle:
                        handle.write(os.urandom(size))
                        handle.flush()
                        os.fsync(handle.fileno())
                    path.unlink()
                meta["state"] = _DESTROYED
                meta["destroyed_at"] = _now()
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
        label = _pem_label(pem)
        if label == _WRAPPED_PEM:
            n, r, p = self._kdf["n"], self._kdf["r"], self._kdf["p"]
            scheme = (
                "PKCS#8 sealed with AES-256-GCM under a key-encryption key derived from the keystore "
                f"passphrase with scrypt (N=2^{n.bit_length() - 1}, r={r}, p={p}; salt in {_HEADER})"
            )
        elif label == _PKCS8_PEM:
            scheme = f"{_pkcs8_encryption(pem)} under the keystore passphrase (format 1, re-wrapped on use)"
        else:
            scheme = "in a format this service does not recognise"
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
                f"software key, no hardware: {path.name} (file mode {mode:04o}) is {scheme}, "
                "and is decrypted into process memory to sign"
            ),
        )

    # -- secrets -------------------------------------------------------------

    def generate_secret(self, label: str, purpose: SecretPurpose) -> None:
        purpose = SecretPurpose(purpose)
        path = self._path(label, ".secret.json")
        secret = os.urandom(_SECRET_BYTES)
        nonce = os.urandom(_NONCE_BYTES)
        with self._lock:
            self._check_open()
            wrapped = AESGCM(self._key_encryption_key()).encrypt(
                nonce, secret, _secret_aad(label, purpose, _FORMAT)
            )
            record = {
                "kind": "secret",
                "format": _FORMAT,
                "label": label,
                "purpose": purpose.value,
                "nonce": _b64(nonce),
                "wrapped": _b64(wrapped),
                "created_at": _now(),
            }
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
            nonce, wrapped = _unb64(record["nonce"]), _unb64(record["wrapped"])
            if "kdf" in record:  # format 1: wrapped under its own scrypt-derived key
                version, key = 1, _scrypt(self._passphrase, _unb64(record["salt"]), record["kdf"])
            elif record.get("format") == _FORMAT:
                version, key = _FORMAT, self._key_encryption_key()
            else:
                raise ValueError(f"format {record.get('format')!r}")
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise BackendError(f"software keystore: secret {label!r} is malformed") from exc
        try:
            secret = AESGCM(key).decrypt(nonce, wrapped, _secret_aad(label, purpose, version))
        except InvalidTag as exc:
            cause = "wrong passphrase?" if version == 1 else "the file was altered, or is another secret's"
            raise BackendError(f"software keystore: cannot decrypt secret {label!r}: {cause}") from exc
        entry = (purpose, secret)
        self._secrets[label] = entry
        return entry

    def _keyed(
        self, cache: dict[str, _Keyed], label: str, purpose: SecretPurpose, build: Callable[[bytes], _Keyed]
    ) -> _Keyed:
        """The object *build* makes from secret *label* (an AESGCM, a keyed HMAC), made once."""
        found = cache.get(label)
        if found is None:
            secret = self._secret(label, purpose)
            with self._lock:  # not into the cache of a keystore closed meanwhile
                self._check_open()
                found = cache.setdefault(label, build(secret))
        return found

    def _aead(self, label: str) -> AESGCM:
        return self._keyed(self._aeads, label, SecretPurpose.ENCRYPTION, AESGCM)

    def encrypt(self, label: str, plaintext: bytes, aad: bytes = b"") -> bytes:
        aead = self._aead(label)
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, label: str, blob: bytes, aad: bytes = b"") -> bytes:
        aead = self._aead(label)
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise BackendError(f"decryption with secret {label!r} failed: the ciphertext is truncated")
        try:
            return aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise BackendError(
                f"decryption with secret {label!r} failed: the ciphertext or its associated data "
                "was altered, or it was encrypted under another key"
            ) from exc

    def mac(self, label: str, data: bytes) -> bytes:
        keyed = self._keyed(self._macs, label, SecretPurpose.MAC, _hmac_sha256)
        state = keyed.copy()  # the original is never updated, so copies from any thread are fresh
        state.update(data)
        return state.digest()

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
            self._aeads.clear()
            self._macs.clear()
            self._public_keys.clear()
            self._kek = None
