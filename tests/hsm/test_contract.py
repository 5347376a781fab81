"""The KeyBackend contract, run over both backends (software keystore, SoftHSM2).

Every signature is checked by an independent verifier (``cryptography``),
never by the backend that made it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hsm import KeyBackend, KeyProvenance, KeyRef, SecretPurpose, SignatureAlgorithm, validate_label
from schemas.errors import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    InvalidInput,
    KeyNotFound,
    YinxinError,
)
from tests.conftest import TEST_PASSPHRASE

ES256, EDDSA, PS256 = SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA, SignatureAlgorithm.PS256
SIGNATURE_BYTES = {ES256: 64, EDDSA: 64, PS256: 384}
BAD_LABELS = ["../x", "a b", "", "a" * 200, ".hidden", "x/y", "-leading-dash", "ключ"]


def verify(public: PublicKeyTypes, algorithm: SignatureAlgorithm, signature: bytes, message: bytes) -> None:
    """Verify a JWS-form signature with cryptography; raises InvalidSignature."""
    if algorithm is ES256:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert len(signature) == 64
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        public.verify(der, message, ec.ECDSA(hashes.SHA256()))
    elif algorithm is EDDSA:
        assert isinstance(public, ed25519.Ed25519PublicKey)
        public.verify(signature, message)
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public.verify(signature, message, pss, hashes.SHA256())


def is_valid(public: PublicKeyTypes, algorithm: SignatureAlgorithm, signature: bytes, message: bytes) -> bool:
    try:
        verify(public, algorithm, signature, message)
    except InvalidSignature:
        return False
    return True


# -- signing keys ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [ES256, EDDSA, PS256])
def test_signatures_verify_independently(backend: KeyBackend, algorithm: SignatureAlgorithm) -> None:
    key = backend.generate_key(algorithm, kid=f"key-{algorithm.value.lower()}")
    assert key == KeyRef(f"key-{algorithm.value.lower()}", algorithm)

    message = "电子证照 licence token payload".encode()
    signature = backend.sign(key, message)

    assert len(signature) == SIGNATURE_BYTES[algorithm]
    public = backend.public_key(key)
    verify(public, algorithm, signature, message)
    assert not is_valid(public, algorithm, signature, message + b".")
    assert not is_valid(public, algorithm, bytes([signature[0] ^ 1]) + signature[1:], message)


def test_keys_have_the_promised_parameters(backend: KeyBackend) -> None:
    es = backend.public_key(backend.generate_key(ES256))
    ed = backend.public_key(backend.generate_key(EDDSA))
    ps = backend.public_key(backend.generate_key(PS256))

    assert isinstance(es, ec.EllipticCurvePublicKey) and isinstance(es.curve, ec.SECP256R1)
    assert isinstance(ed, ed25519.Ed25519PublicKey)
    assert isinstance(ps, rsa.RSAPublicKey)
    assert ps.key_size == 3072
    assert ps.public_numbers().e == 65537


def test_empty_and_large_messages_sign(backend: KeyBackend) -> None:
    for algorithm in (ES256, EDDSA):
        key = backend.generate_key(algorithm)
        for message in (b"", bytes(range(256)) * 4096):
            verify(backend.public_key(key), algorithm, backend.sign(key, message), message)


def test_ecdsa_signatures_are_randomised_but_all_valid(backend: KeyBackend) -> None:
    key = backend.generate_key(ES256)
    signatures = {backend.sign(key, b"same message") for _ in range(5)}
    assert len(signatures) == 5
    for signature in signatures:
        verify(backend.public_key(key), ES256, signature, b"same message")


def test_generated_kid_is_random_and_a_valid_label(backend: KeyBackend) -> None:
    first, second = backend.generate_key(), backend.generate_key()
    assert first.algorithm is ES256
    assert first.kid != second.kid
    assert validate_label(first.kid) == first.kid
    assert backend.get_key(first.kid) == first


def test_eight_threads_sign_concurrently(backend: KeyBackend) -> None:
    keys = [backend.generate_key(ES256), backend.generate_key(EDDSA)]
    results: list[tuple[KeyRef, bytes, bytes]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(40):
                key = keys[(worker + i) % 2]
                message = f"worker {worker} message {i}".encode()
                signature = backend.sign(key, message)
                with lock:
                    results.append((key, message, signature))
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    assert len(results) == 8 * 40
    for key, message, signature in results:
        verify(backend.public_key(key), key.algorithm, signature, message)


def test_keys_persist_across_a_restart(backend: KeyBackend, reopen_backend: Callable[[], KeyBackend]) -> None:
    created = sorted(
        [
            backend.generate_key(ES256, "p-es"),
            backend.generate_key(EDDSA, "p-ed"),
            backend.generate_key(PS256, "p-ps"),
        ],
        key=lambda ref: ref.kid,
    )
    publics = {key.kid: backend.public_key(key) for key in created}
    described = {key.kid: backend.describe_key(key.kid) for key in created}
    backend.close()

    again = reopen_backend()
    assert again.list_keys() == created
    for key in created:
        assert again.get_key(key.kid) == key  # algorithm recovered from the store, not remembered
        assert again.describe_key(key.kid) == described[key.kid]
        signature = again.sign(key, b"after restart")
        verify(publics[key.kid], key.algorithm, signature, b"after restart")


def test_list_keys_is_sorted_by_kid(backend: KeyBackend) -> None:
    for kid in ("charlie", "alpha", "bravo"):
        backend.generate_key(ES256, kid)
    assert [key.kid for key in backend.list_keys()] == ["alpha", "bravo", "charlie"]


def test_unknown_kid_is_key_not_found(backend: KeyBackend) -> None:
    missing = KeyRef("no-such-key", ES256)
    with pytest.raises(KeyNotFound, match="no-such-key"):
        backend.sign(missing, b"x")
    with pytest.raises(KeyNotFound, match="no-such-key"):
        backend.public_key(missing)
    with pytest.raises(KeyNotFound, match="no-such-key"):
        backend.get_key("no-such-key")
    with pytest.raises(KeyNotFound, match="no-such-key"):
        backend.destroy_key("no-such-key")
    assert backend.list_keys() == []


def test_duplicate_kid_already_exists(backend: KeyBackend) -> None:
    first = backend.generate_key(ES256, "taken")
    with pytest.raises(AlreadyExists, match="taken"):
        backend.generate_key(EDDSA, "taken")
    assert backend.get_key("taken") == first  # the first key is untouched
    verify(backend.public_key(first), ES256, backend.sign(first, b"m"), b"m")


@pytest.mark.parametrize("label", BAD_LABELS)
def test_bad_labels_are_invalid_input(backend: KeyBackend, label: str) -> None:
    with pytest.raises(InvalidInput):
        backend.generate_key(ES256, label)
    with pytest.raises(InvalidInput):
        backend.get_key(label)
    with pytest.raises(InvalidInput):
        backend.sign(KeyRef(label, ES256), b"x")
    with pytest.raises(InvalidInput):
        backend.public_key(label)
    with pytest.raises(InvalidInput):
        backend.destroy_key(label)
    with pytest.raises(InvalidInput):
        backend.describe_key(label)
    with pytest.raises(InvalidInput):
        backend.generate_secret(label, SecretPurpose.MAC)
    with pytest.raises(InvalidInput):
        backend.has_secret(label)
    with pytest.raises(InvalidInput):
        backend.mac(label, b"x")


@pytest.mark.parametrize("count", [0, 1, 15, 16, 101])
@pytest.mark.parametrize("algorithm", [ES256, EDDSA, PS256])
def test_sign_many_signs_each_message_in_order(
    backend: KeyBackend, algorithm: SignatureAlgorithm, count: int
) -> None:
    # 16 and up take the software keystore's two-thread path; an odd count splits unevenly.
    key = backend.generate_key(algorithm)
    messages = [f"licence {i} 电子证照".encode() * (i % 7 + 1) for i in range(count)]
    signatures = backend.sign_many(key, messages)
    assert len(signatures) == count
    public = backend.public_key(key)
    for message, signature in zip(messages, signatures, strict=True):
        assert len(signature) == SIGNATURE_BYTES[algorithm]
        verify(public, algorithm, signature, message)
    if count > 1:  # each signature belongs to its own message, not a neighbour's
        assert not is_valid(public, algorithm, signatures[0], messages[1])


def test_sign_many_holds_the_key_to_its_algorithm_and_its_existence(backend: KeyBackend) -> None:
    key = backend.generate_key(ES256, "batch")
    with pytest.raises(InvalidInput, match="ES256"):
        backend.sign_many(KeyRef("batch", EDDSA), [b"x"] * 20)
    backend.sign_many(key, [b"warm"] * 20)
    backend.destroy_key("batch")
    with pytest.raises(KeyNotFound, match="batch"):
        backend.sign_many(key, [b"x"] * 20)


def test_key_is_used_only_with_its_bound_algorithm(backend: KeyBackend) -> None:
    key = backend.generate_key(ES256, "bound")
    with pytest.raises(InvalidInput, match="ES256"):
        backend.sign(KeyRef("bound", EDDSA), b"x")
    with pytest.raises(InvalidInput, match="ES256"):
        backend.public_key(KeyRef("bound", PS256))
    verify(backend.public_key(key), ES256, backend.sign(key, b"x"), b"x")


def test_destroyed_key_cannot_sign_but_still_verifies(
    backend: KeyBackend, reopen_backend: Callable[[], KeyBackend]
) -> None:
    key = backend.generate_key(ES256, "retired")
    kept = backend.generate_key(ES256, "kept")
    old_signature = backend.sign(key, b"signed before destruction")  # also warms any cache

    backend.destroy_key("retired")

    with pytest.raises(KeyNotFound, match="retired"):
        backend.sign(key, b"after destruction")
    verify(backend.public_key("retired"), ES256, old_signature, b"signed before destruction")
    assert backend.get_key("retired") == key
    assert backend.list_keys() == [kept]
    with pytest.raises(KeyNotFound):
        backend.destroy_key("retired")
    with pytest.raises(AlreadyExists):
        backend.generate_key(ES256, "retired")  # the public half still holds the name

    backend.close()
    again = reopen_backend()
    with pytest.raises(KeyNotFound):
        again.sign(key, b"after restart")
    verify(again.public_key(key), ES256, old_signature, b"signed before destruction")
    assert again.list_keys() == [kept]


def test_destruction_reaches_every_session(backend: KeyBackend) -> None:
    """Handles cached by other threads' sessions must not keep a destroyed key alive."""
    key = backend.generate_key(ES256, "spread")
    warm = threading.Barrier(8)

    def sign_once() -> None:
        backend.sign(key, b"warm up")
        warm.wait()  # hold the session so each thread warms a different one

    threads = [threading.Thread(target=sign_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    backend.destroy_key("spread")

    failures: list[BaseException] = []

    def sign_after() -> None:
        try:
            backend.sign(key, b"after")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=sign_after) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(failures) == 8
    assert all(isinstance(exc, KeyNotFound) for exc in failures), failures


# -- key provenance (the key-generation ceremony record) ------------------------------------


@pytest.mark.parametrize("algorithm", [ES256, EDDSA, PS256])
def test_describe_key_reads_back_where_the_key_lives(
    backend: KeyBackend, request: pytest.FixtureRequest, algorithm: SignatureAlgorithm
) -> None:
    backend.generate_key(algorithm, "ceremony")

    provenance = backend.describe_key("ceremony")

    assert provenance.backend == backend.name
    attributes = provenance.attributes
    assert list(attributes) == list(KeyProvenance.ATTRIBUTES)
    assert attributes["CKA_TOKEN"] is True  # persisted, survives a restart
    assert attributes["CKA_PRIVATE"] is True
    assert attributes["CKA_SIGN"] is True
    if backend.name == "pkcs11":
        token = request.getfixturevalue("softhsm_token")
        secret = token.pin
        assert provenance.module == token.module
        assert provenance.token_label == token.label
        assert provenance.token_serial  # SoftHSM2 gives every token a serial
        assert provenance.token_manufacturer and provenance.token_model
        assert attributes["CKA_SENSITIVE"] is True
        assert attributes["CKA_EXTRACTABLE"] is False
        assert attributes["CKA_ALWAYS_SENSITIVE"] is True
        assert attributes["CKA_NEVER_EXTRACTABLE"] is True
        assert attributes["CKA_LOCAL"] is True  # generated on the token (PKCS#11 v2.40 §4.4)
        assert provenance.protection == "generated on the token; private key sensitive and never extractable"
    else:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        secret = TEST_PASSPHRASE.decode()
        assert provenance.module == str(tmp_path / "keystore")
        assert (provenance.token_label, provenance.token_serial) == (None, None)
        assert (provenance.token_manufacturer, provenance.token_model) == (None, None)
        for name in ("CKA_SENSITIVE", "CKA_EXTRACTABLE", "CKA_ALWAYS_SENSITIVE", "CKA_NEVER_EXTRACTABLE"):
            assert attributes[name] is None, name  # a file has no such flags: no claim either way
        assert attributes["CKA_LOCAL"] is None
        assert "ceremony.key.pem (file mode 0600)" in provenance.protection
        assert "AES-256-GCM" in provenance.protection
        assert "scrypt (N=2^" in provenance.protection

    # The record is JSON as it stands, and names no PIN or passphrase (DESIGN §5.10).
    record = json.dumps(provenance.as_dict(), ensure_ascii=False)
    assert json.loads(record) == provenance.as_dict()
    assert json.loads(record)["attributes"] == dict(attributes)
    assert secret not in record


def test_describe_key_of_an_absent_key_is_key_not_found(backend: KeyBackend) -> None:
    with pytest.raises(KeyNotFound, match="no-such-key"):
        backend.describe_key("no-such-key")

    key = backend.generate_key(ES256, "retired")
    backend.describe_key("retired")
    backend.destroy_key("retired")

    # It describes the private key, which is gone; the public half still resolves.
    with pytest.raises(KeyNotFound, match="retired"):
        backend.describe_key("retired")
    assert backend.get_key("retired") == key


# -- secrets ----------------------------------------------------------------------------


def test_encrypt_decrypt_round_trip(backend: KeyBackend) -> None:
    backend.generate_secret("holder-ids", SecretPurpose.ENCRYPTION)
    plaintext = b"110101199003077777"

    blob = backend.encrypt("holder-ids", plaintext, aad=b"licence:42")

    assert len(blob) == 12 + len(plaintext) + 16
    assert plaintext not in blob
    assert backend.decrypt("holder-ids", blob, aad=b"licence:42") == plaintext
    assert backend.decrypt("holder-ids", backend.encrypt("holder-ids", b"")) == b""


def test_every_encryption_uses_a_fresh_nonce(backend: KeyBackend) -> None:
    backend.generate_secret("enc", SecretPurpose.ENCRYPTION)
    blobs = [backend.encrypt("enc", b"same plaintext") for _ in range(20)]
    assert len({blob[:12] for blob in blobs}) == 20
    assert len(set(blobs)) == 20


def test_secrets_from_many_threads(backend: KeyBackend) -> None:
    # The server encrypts, decrypts and MACs holder IDs on several threads with one backend.
    backend.generate_secret("enc", SecretPurpose.ENCRYPTION)
    backend.generate_secret("mac", SecretPurpose.MAC)
    expected = {i: backend.mac("mac", f"id-{i}".encode()) for i in range(50)}

    def work(worker: int) -> list[bool]:
        results = []
        for i in range(50):
            plaintext, aad = f"{worker}:{i}".encode() * 3, f"aad-{worker}".encode()
            results.append(backend.decrypt("enc", backend.encrypt("enc", plaintext, aad), aad) == plaintext)
            results.append(backend.mac("mac", f"id-{i}".encode()) == expected[i])
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [ok for results in pool.map(work, range(8)) for ok in results]
    assert len(outcomes) == 800 and all(outcomes)


def test_decryption_rejects_altered_input(backend: KeyBackend) -> None:
    backend.generate_secret("enc", SecretPurpose.ENCRYPTION)
    backend.generate_secret("other", SecretPurpose.ENCRYPTION)
    blob = backend.encrypt("enc", b"citizen data", aad=b"right")

    with pytest.raises(BackendError):
        backend.decrypt("enc", blob, aad=b"wrong")
    with pytest.raises(BackendError):
        backend.decrypt("enc", blob)  # aad missing
    for position in (0, 12, len(blob) - 1):  # nonce, ciphertext, tag
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(BackendError):
            backend.decrypt("enc", bytes(tampered), aad=b"right")
    with pytest.raises(BackendError):
        backend.decrypt("enc", blob[:20], aad=b"right")
    with pytest.raises(BackendError):
        backend.decrypt("other", blob, aad=b"right")
    # none of that broke anything
    assert backend.decrypt("enc", blob, aad=b"right") == b"citizen data"


def test_decryption_failure_is_not_an_outage(backend: KeyBackend) -> None:
    backend.generate_secret("enc", SecretPurpose.ENCRYPTION)
    blob = backend.encrypt("enc", b"x")
    with pytest.raises(BackendError) as caught:
        backend.decrypt("enc", blob[:-1] + bytes([blob[-1] ^ 1]))
    assert not isinstance(caught.value, BackendUnavailable)


def test_mac_is_deterministic_and_keyed(backend: KeyBackend) -> None:
    backend.generate_secret("mac-a", SecretPurpose.MAC)
    backend.generate_secret("mac-b", SecretPurpose.MAC)

    tag = backend.mac("mac-a", b"110101199003077777")

    assert len(tag) == 32
    assert backend.mac("mac-a", b"110101199003077777") == tag
    assert backend.mac("mac-a", b"110101199003077778") != tag
    assert backend.mac("mac-b", b"110101199003077777") != tag


def test_secrets_persist_across_a_restart(
    backend: KeyBackend, reopen_backend: Callable[[], KeyBackend]
) -> None:
    backend.generate_secret("enc", SecretPurpose.ENCRYPTION)
    backend.generate_secret("mac", SecretPurpose.MAC)
    blob = backend.encrypt("enc", b"kept", aad=b"a")
    tag = backend.mac("mac", b"kept")
    backend.close()

    again = reopen_backend()
    assert again.has_secret("enc") and again.has_secret("mac")
    assert again.decrypt("enc", blob, aad=b"a") == b"kept"
    assert again.mac("mac", b"kept") == tag


def test_secret_lookup_and_misuse(backend: KeyBackend) -> None:
    assert not backend.has_secret("enc")
    backend.generate_secret("enc", SecretPurpose.ENCRYPTION)
    backend.generate_secret("mac", SecretPurpose.MAC)
    assert backend.has_secret("enc") and backend.has_secret("mac")

    with pytest.raises(AlreadyExists, match="enc"):
        backend.generate_secret("enc", SecretPurpose.MAC)
    with pytest.raises(KeyNotFound, match="missing"):
        backend.encrypt("missing", b"x")
    with pytest.raises(KeyNotFound, match="missing"):
        backend.mac("missing", b"x")
    with pytest.raises(InvalidInput, match="mac"):
        backend.encrypt("mac", b"x")  # a MAC key never encrypts
    with pytest.raises(InvalidInput, match="encryption"):
        backend.mac("enc", b"x")  # and an encryption key never MACs


def test_secrets_and_signing_keys_do_not_mix(backend: KeyBackend) -> None:
    backend.generate_secret("s", SecretPurpose.MAC)
    backend.generate_key(ES256, "k")
    assert backend.list_keys() == [KeyRef("k", ES256)]
    with pytest.raises(KeyNotFound):
        backend.get_key("s")
    assert not backend.has_secret("k")


# -- health and lifetime -----------------------------------------------------------------


def test_ping_answers(backend: KeyBackend) -> None:
    backend.ping()


def test_closed_backend_raises_our_errors(backend: KeyBackend) -> None:
    key = backend.generate_key(ES256, "k")
    backend.generate_secret("s", SecretPurpose.MAC)
    backend.generate_secret("e", SecretPurpose.ENCRYPTION)
    backend.sign(key, b"warm")
    backend.mac("s", b"warm")
    blob = backend.encrypt("e", b"warm")  # warm caches must not outlive close

    backend.close()
    backend.close()  # idempotent

    with pytest.raises(BackendUnavailable):
        backend.ping()
    with pytest.raises(BackendUnavailable):
        backend.sign(key, b"x")
    with pytest.raises(BackendUnavailable):
        backend.mac("s", b"x")
    with pytest.raises(BackendUnavailable):
        backend.encrypt("e", b"x")
    with pytest.raises(BackendUnavailable):
        backend.decrypt("e", blob)
    with pytest.raises(BackendUnavailable):
        backend.describe_key("k")
    with pytest.raises(YinxinError):
        backend.list_keys()
    with pytest.raises(YinxinError):
        backend.generate_key(ES256)


def test_backend_is_a_context_manager(backend: KeyBackend) -> None:
    with backend as same:
        assert same is backend
        same.ping()
    with pytest.raises(BackendUnavailable):
        backend.ping()
