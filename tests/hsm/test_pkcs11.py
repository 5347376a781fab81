"""PKCS#11 specifics, against a real SoftHSM2 token.

What the token says about our keys is read back with a raw python-pkcs11
session, and failures are real: sessions closed behind the backend's back,
the module finalised, the token taken away.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11.exceptions import AttributeSensitive
from pkcs11.util.ec import encode_named_curve_parameters

from hsm import BackendConfig, KeyRef, PKCS11Backend, SecretPurpose, SignatureAlgorithm, open_backend
from schemas.errors import BackendError, BackendUnavailable, ConfigurationError, KeyNotFound, LoginRefused

if TYPE_CHECKING:
    from conftest import SoftHSMToken

pytestmark = pytest.mark.softhsm

ES256, EDDSA, PS256 = SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA, SignatureAlgorithm.PS256

# After a real breakage python-pkcs11 may report, from a garbage-collected
# search, that the old session is gone ("Exception ignored in ... __del__").
# That is the breakage the recovery tests cause on purpose.
recovery_noise = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def hsm(softhsm_token: SoftHSMToken) -> Iterator[PKCS11Backend]:
    backend = PKCS11Backend(softhsm_token.module, softhsm_token.label, softhsm_token.pin)
    yield backend
    backend.close()


@contextmanager
def raw_session(token: SoftHSMToken) -> Iterator[pkcs11.Session]:
    """A plain python-pkcs11 session beside the backend.

    The backend is logged in, and a login belongs to the whole application
    (PKCS#11 v2.40 §5.6), so this session sees private objects without a PIN.
    """
    lib = pkcs11.lib(token.module)
    with lib.get_token(token_label=token.label).open(rw=True) as session:
        yield session


def verify_es256(public: object, signature: bytes, message: bytes) -> None:
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    public.verify(der, message, ec.ECDSA(hashes.SHA256()))


def close_all_sessions(token: SoftHSMToken) -> None:
    """C_CloseAllSessions on the token's slot, called straight into the module."""
    slot_id = pkcs11.lib(token.module).get_token(token_label=token.label).slot.slot_id
    module = ctypes.CDLL(token.module)  # the same loaded library, so the same state
    module.C_CloseAllSessions.argtypes = [ctypes.c_ulong]
    module.C_CloseAllSessions.restype = ctypes.c_ulong
    assert module.C_CloseAllSessions(slot_id) == 0


def token_directory(token: SoftHSMToken) -> Path:
    """Where SoftHSM2 keeps this token's files."""
    tokendir = Path(token.conf_path.read_text().split("directories.tokendir = ")[1].splitlines()[0])
    for candidate in tokendir.iterdir():
        token_object = candidate / "token.object"
        if token_object.is_file() and token.label.encode() in token_object.read_bytes():
            return candidate
    raise AssertionError(f"no directory for token {token.label}")


# -- what the token holds -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [ES256, EDDSA, PS256])
def test_private_keys_are_sensitive_and_never_extractable(
    hsm: PKCS11Backend, softhsm_token: SoftHSMToken, algorithm: SignatureAlgorithm
) -> None:
    key = hsm.generate_key(algorithm, kid=f"attr-{algorithm.value.lower()}")

    with raw_session(softhsm_token) as session:
        private = session.get_key(ObjectClass.PRIVATE_KEY, label=key.kid)
        assert private[Attribute.LABEL] == key.kid
        assert private[Attribute.ID] == key.kid.encode()
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.PRIVATE] is True
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.LOCAL] is True  # generated on the token, not imported
        assert private[Attribute.SIGN] is True
        assert private[Attribute.DECRYPT] is False
        with pytest.raises(AttributeSensitive):
            private[Attribute.PRIVATE_EXPONENT if algorithm is PS256 else Attribute.VALUE]

        public = session.get_key(ObjectClass.PUBLIC_KEY, label=key.kid)
        assert public[Attribute.ID] == key.kid.encode()
        assert public[Attribute.TOKEN] is True
        assert public[Attribute.VERIFY] is True
        if algorithm is PS256:
            assert public[Attribute.MODULUS_BITS] == 3072
            assert public[Attribute.PUBLIC_EXPONENT] == b"\x01\x00\x01"


def test_key_destroyed_by_another_application_stops_signing(
    hsm: PKCS11Backend, softhsm_token: SoftHSMToken
) -> None:
    key = hsm.generate_key(ES256, "shared")
    warm = threading.Barrier(4)

    def warm_a_session() -> None:
        hsm.sign(key, b"warm")
        warm.wait()  # hold on, so that each thread caches the handle in its own session

    threads = [threading.Thread(target=warm_a_session) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    with raw_session(softhsm_token) as session:
        session.get_key(ObjectClass.PRIVATE_KEY, label="shared").destroy()

    for _ in range(4):  # whichever session answers, its cached handle is stale
        with pytest.raises(KeyNotFound, match="shared"):
            hsm.sign(key, b"after")


@pytest.mark.parametrize(
    ("purpose", "key_type"),
    [(SecretPurpose.ENCRYPTION, KeyType.AES), (SecretPurpose.MAC, KeyType.GENERIC_SECRET)],
)
def test_secrets_are_sensitive_and_never_extractable(
    hsm: PKCS11Backend, softhsm_token: SoftHSMToken, purpose: SecretPurpose, key_type: KeyType
) -> None:
    hsm.generate_secret("data-key", purpose)

    with raw_session(softhsm_token) as session:
        secret = session.get_key(ObjectClass.SECRET_KEY, label="data-key")
        assert secret[Attribute.KEY_TYPE] == key_type
        assert secret[Attribute.VALUE_LEN] == 32
        assert secret[Attribute.SENSITIVE] is True
        assert secret[Attribute.EXTRACTABLE] is False
        assert secret[Attribute.TOKEN] is True
        with pytest.raises(AttributeSensitive):
            secret[Attribute.VALUE]


def test_destroy_removes_only_the_private_object(hsm: PKCS11Backend, softhsm_token: SoftHSMToken) -> None:
    hsm.generate_key(ES256, "to-destroy")
    hsm.destroy_key("to-destroy")

    with raw_session(softhsm_token) as session:
        labelled = list(session.get_objects({Attribute.LABEL: "to-destroy"}))
        assert [obj[Attribute.CLASS] for obj in labelled] == [ObjectClass.PUBLIC_KEY]


# Lists a token's objects from a process of its own, logged in with its own PIN: nothing it
# sees comes from the backend's module state or from a login the backend holds.
_LIST_OBJECTS = """
import json, sys
import pkcs11
from pkcs11 import Attribute
module, label = sys.argv[1:]
token = pkcs11.lib(module).get_token(token_label=label)
with token.open(user_pin=sys.stdin.read()) as session:
    objects = list(session.get_objects())
    found = [(int(o[Attribute.CLASS]), o[Attribute.LABEL], o[Attribute.ID].hex()) for o in objects]
print(json.dumps(found))
"""


def objects_seen_by_another_process(token: SoftHSMToken) -> list[tuple[ObjectClass, str, bytes]]:
    """Every object on *token* as (class, CKA_LABEL, CKA_ID), read from a separate process."""
    result = subprocess.run(
        [sys.executable, "-c", _LIST_OBJECTS, token.module, token.label],
        input=token.pin,  # on stdin, not in the process list
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "SOFTHSM2_CONF": str(token.conf_path)},
    )
    return [
        (ObjectClass(cls), label, bytes.fromhex(ident)) for cls, label, ident in json.loads(result.stdout)
    ]


def test_destroyed_private_key_is_gone_from_the_token_itself(
    hsm: PKCS11Backend, softhsm_token: SoftHSMToken
) -> None:
    hsm.generate_key(ES256, "destroyed")
    hsm.generate_key(ES256, "kept")  # proves the listing sees private objects at all

    hsm.destroy_key("destroyed")

    objects = objects_seen_by_another_process(softhsm_token)
    private = [(label, ident) for cls, label, ident in objects if cls == ObjectClass.PRIVATE_KEY]
    assert private == [("kept", b"kept")]  # none labelled, nor with CKA_ID, "destroyed"
    # Documented: destroy_key() removes the private key only; the public key object stays
    # so that signatures made before still verify (KeyBackend.destroy_key).
    public = sorted((label, ident) for cls, label, ident in objects if cls == ObjectClass.PUBLIC_KEY)
    assert public == [("destroyed", b"destroyed"), ("kept", b"kept")]


def test_describe_key_reports_what_the_token_says_not_what_we_asked(
    hsm: PKCS11Backend, softhsm_token: SoftHSMToken
) -> None:
    """Keys made by other tools are described as they are: imported, or extractable."""
    p256 = encode_named_curve_parameters("secp256r1")
    scalar = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    with raw_session(softhsm_token) as session:
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.KEY_TYPE: KeyType.EC,
                Attribute.EC_PARAMS: p256,
                Attribute.VALUE: scalar.to_bytes(32, "big"),
                Attribute.LABEL: "imported",
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
            }
        )
        session.generate_keypair(
            KeyType.EC,
            store=True,
            label="exportable",
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.EC_PARAMS: p256},
            private_template={
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
            },
        )

    imported = hsm.describe_key("imported")
    assert imported.attributes["CKA_LOCAL"] is False
    assert imported.attributes["CKA_SENSITIVE"] is True
    assert imported.attributes["CKA_ALWAYS_SENSITIVE"] is False  # its value was known before
    assert imported.attributes["CKA_NEVER_EXTRACTABLE"] is False
    assert imported.protection == (
        "imported into the token, not generated there; "
        "private key sensitive (but not since its creation) and not extractable (but it once was)"
    )

    exportable = hsm.describe_key("exportable")
    assert exportable.attributes["CKA_LOCAL"] is True
    assert exportable.attributes["CKA_SENSITIVE"] is False
    assert exportable.attributes["CKA_EXTRACTABLE"] is True
    assert exportable.protection == (
        "generated on the token; private key NOT sensitive (its value can be read) "
        "and EXTRACTABLE (it can be wrapped out of the token)"
    )


def test_algorithm_is_read_from_the_token(hsm: PKCS11Backend, softhsm_token: SoftHSMToken) -> None:
    """Keys made by other tools are recognised by key type and curve, or left alone."""
    with raw_session(softhsm_token) as session:
        for label, curve in (("outside-p256", "secp256r1"), ("foreign-p384", "secp384r1")):
            session.generate_keypair(
                KeyType.EC,
                store=True,
                label=label,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template={Attribute.EC_PARAMS: encode_named_curve_parameters(curve)},
                private_template={Attribute.PRIVATE: True, Attribute.SENSITIVE: True},
            )

    assert hsm.list_keys() == [KeyRef("outside-p256", ES256)]
    assert hsm.get_key("outside-p256") == KeyRef("outside-p256", ES256)
    verify_es256(hsm.public_key("outside-p256"), hsm.sign(KeyRef("outside-p256", ES256), b"m"), b"m")
    with pytest.raises(KeyNotFound, match="foreign-p384"):
        hsm.get_key("foreign-p384")
    with pytest.raises(KeyNotFound, match="foreign-p384"):
        hsm.sign(KeyRef("foreign-p384", ES256), b"m")


# -- opening ------------------------------------------------------------------------------


def test_wrong_pin_is_a_backend_error_without_the_pin(
    softhsm_token: SoftHSMToken, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="yinxin.hsm")
    wrong_pin = "wrong-pin-864213"

    with pytest.raises(BackendError) as caught:
        PKCS11Backend(softhsm_token.module, softhsm_token.label, wrong_pin)

    error = caught.value
    assert not isinstance(error, BackendUnavailable)
    assert isinstance(error, LoginRefused) and error.exit_code == 78  # a configuration fault
    assert str(error) == f"PKCS#11 login to token {softhsm_token.label!r} failed: PIN incorrect"
    for text in (str(error), repr(error), repr(error.details), caplog.text):
        assert wrong_pin not in text
        assert softhsm_token.pin not in text

    # the failed attempt left nothing behind: the right PIN still works
    with PKCS11Backend(softhsm_token.module, softhsm_token.label, softhsm_token.pin) as backend:
        backend.ping()


def test_missing_token_is_unavailable_and_says_how_to_fix(softhsm_token: SoftHSMToken) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        PKCS11Backend(softhsm_token.module, "no-such-token", softhsm_token.pin)
    message = str(caught.value)
    assert "'no-such-token' not found" in message
    assert "YINXIN_PKCS11_TOKEN_LABEL" in message
    assert "softhsm2-util --init-token" in message
    assert softhsm_token.pin not in message


def test_missing_module_is_unavailable_and_says_how_to_fix(tmp_path: Path) -> None:
    missing = str(tmp_path / "libnothing.so")
    with pytest.raises(BackendUnavailable) as caught:
        PKCS11Backend(missing, "token", "1234")
    assert missing in str(caught.value)
    assert "YINXIN_PKCS11_MODULE" in str(caught.value)


def test_a_token_created_after_the_module_started_is_found(
    softhsm_token: SoftHSMToken, make_softhsm_token: Callable[[], SoftHSMToken]
) -> None:
    # Initialise the module first (SoftHSM2 lists its tokens in C_Initialize) ...
    with PKCS11Backend(softhsm_token.module, softhsm_token.label, softhsm_token.pin) as first:
        first.ping()
    pkcs11.lib(softhsm_token.module)  # ... and keep it initialised, as another user of it would
    later = make_softhsm_token()

    with PKCS11Backend(later.module, later.label, later.pin) as backend:
        backend.generate_key(ES256, "k")
        assert backend.list_keys() == [KeyRef("k", ES256)]


def test_two_tokens_in_one_process(make_softhsm_token: Callable[[], SoftHSMToken]) -> None:
    issuer_token, seal_token = make_softhsm_token(), make_softhsm_token()
    issuer = PKCS11Backend(issuer_token.module, issuer_token.label, issuer_token.pin)
    seals = PKCS11Backend(seal_token.module, seal_token.label, seal_token.pin)
    try:
        licence_key = issuer.generate_key(ES256, "licence")
        seal_key = seals.generate_key(ES256, "seal")
        assert issuer.list_keys() == [licence_key]
        assert seals.list_keys() == [seal_key]

        issuer.close()  # must not finalise the module under the other backend
        verify_es256(seals.public_key(seal_key), seals.sign(seal_key, b"m"), b"m")
    finally:
        issuer.close()
        seals.close()


def test_sessions_must_be_positive(softhsm_token: SoftHSMToken) -> None:
    with pytest.raises(ConfigurationError):
        PKCS11Backend(softhsm_token.module, softhsm_token.label, softhsm_token.pin, sessions=0)


def test_one_session_serves_many_threads(softhsm_token: SoftHSMToken) -> None:
    with PKCS11Backend(softhsm_token.module, softhsm_token.label, softhsm_token.pin, sessions=1) as backend:
        key = backend.generate_key(ES256)
        signatures: list[bytes] = []

        def work() -> None:
            for _ in range(20):
                signatures.append(backend.sign(key, b"shared"))

        threads = [threading.Thread(target=work) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(signatures) == 120
        for signature in signatures:
            verify_es256(backend.public_key(key), signature, b"shared")


def test_open_backend_builds_a_pkcs11_backend(softhsm_token: SoftHSMToken, tmp_path: Path) -> None:
    config = BackendConfig(
        kind="pkcs11",
        home=tmp_path,
        pkcs11_module=softhsm_token.module,
        pkcs11_token_label=softhsm_token.label,
        pkcs11_pin=softhsm_token.pin,
        pkcs11_sessions=2,
    )
    with open_backend(config) as backend:
        assert isinstance(backend, PKCS11Backend)
        assert backend.name == "pkcs11"
        backend.ping()
    assert softhsm_token.pin not in repr(config)


# -- recovery --------------------------------------------------------------------------------


def _break_by_reinitialising(token: SoftHSMToken) -> None:
    pkcs11.lib(token.module).reinitialize()


def _break_by_finalising(token: SoftHSMToken) -> None:
    pkcs11.lib(token.module).finalize()


@recovery_noise
@pytest.mark.parametrize(
    "breakage",
    [close_all_sessions, _break_by_reinitialising, _break_by_finalising],
    ids=["C_CloseAllSessions", "C_Finalize+C_Initialize", "C_Finalize"],
)
def test_backend_recovers_from_broken_sessions(
    hsm: PKCS11Backend,
    softhsm_token: SoftHSMToken,
    breakage: Callable[[SoftHSMToken], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = hsm.generate_key(ES256, "survivor")
    hsm.generate_secret("enc", SecretPurpose.ENCRYPTION)
    blob = hsm.encrypt("enc", b"before")
    hsm.sign(key, b"warm the handle cache")

    breakage(softhsm_token)
    caplog.set_level(logging.INFO, logger="yinxin.hsm")

    signature = hsm.sign(key, b"after the breakage")  # no error reaches the caller

    verify_es256(hsm.public_key(key), signature, b"after the breakage")
    assert "recovered" in caplog.text
    assert softhsm_token.pin not in caplog.text
    # everything else works again too, including the login-only objects
    assert hsm.decrypt("enc", blob) == b"before"
    assert hsm.list_keys() == [key]
    hsm.ping()


@recovery_noise
def test_eight_threads_recover_together(
    hsm: PKCS11Backend, softhsm_token: SoftHSMToken, caplog: pytest.LogCaptureFixture
) -> None:
    key = hsm.generate_key(ES256, "shared")
    for _ in range(8):
        hsm.sign(key, b"warm")
    close_all_sessions(softhsm_token)
    caplog.set_level(logging.INFO, logger="yinxin.hsm")

    results: list[bytes] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work() -> None:
        try:
            start.wait()
            for _ in range(10):
                results.append(hsm.sign(key, b"during recovery"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    assert len(results) == 80
    for signature in results:
        verify_es256(hsm.public_key(key), signature, b"during recovery")
    assert caplog.text.count("recovered") == 1  # one recovery, not one per thread


@recovery_noise
def test_lost_token_is_unavailable_until_it_returns(
    hsm: PKCS11Backend, softhsm_token: SoftHSMToken, tmp_path: Path
) -> None:
    key = hsm.generate_key(ES256, "k")
    hsm.sign(key, b"warm")
    directory = token_directory(softhsm_token)
    parked = tmp_path / "parked-token"

    shutil.move(directory, parked)  # the token is gone ...
    pkcs11.lib(softhsm_token.module).reinitialize()  # ... and the module notices
    try:
        with pytest.raises(BackendUnavailable, match="did not recover") as caught:
            hsm.sign(key, b"while gone")
        assert softhsm_token.pin not in str(caught.value)
        with pytest.raises(BackendUnavailable):
            hsm.ping()
    finally:
        shutil.move(parked, directory)

    # The token is back: the next call reconnects by itself.
    verify_es256(hsm.public_key(key), hsm.sign(key, b"back again"), b"back again")
    hsm.ping()
