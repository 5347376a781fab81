"""Fixtures for licence-token tests: real keys, a trust store, a token forge.

The ``backend`` fixture (tests/conftest.py) runs round trips over the software
keystore and SoftHSM2. Tests that only need *some* signatures (the rejection
catalogue, JWK tests) share one software keystore for the session, so the
RSA-3072 key is generated once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm import KeyRef, SignatureAlgorithm, SoftwareBackend
from signing import TrustedKey, TrustStore, sign_licence_token
from tests.conftest import TEST_PASSPHRASE
from tests.signing._pdf_support import CA, Seal, make_ca, make_seal
from tests.signing._support import Forge, licence_claims, vectors_dir


@pytest.fixture(scope="session")
def session_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftwareBackend]:
    backend = SoftwareBackend(tmp_path_factory.mktemp("signing-keystore"), b"signing-tests-passphrase")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def session_keys(session_backend: SoftwareBackend) -> dict[SignatureAlgorithm, KeyRef]:
    """One key per algorithm, with fixed kids."""
    kids = {
        SignatureAlgorithm.ES256: "test-es256-2026",
        SignatureAlgorithm.EDDSA: "test-eddsa-2026",
        SignatureAlgorithm.PS256: "test-ps256-2026",
    }
    return {alg: session_backend.generate_key(alg, kid) for alg, kid in kids.items()}


@pytest.fixture(scope="session")
def forge(session_backend: SoftwareBackend, session_keys: dict[SignatureAlgorithm, KeyRef]) -> Forge:
    return Forge(session_backend, session_keys)


@pytest.fixture(scope="session")
def trusted_keys(forge: Forge) -> list[TrustedKey]:
    return [TrustedKey(ref.kid, ref.algorithm, forge.backend.public_key(ref)) for ref in forge.keys.values()]


@pytest.fixture
def trust(trusted_keys: list[TrustedKey]) -> TrustStore:
    return TrustStore(trusted_keys)


@pytest.fixture
def good(forge: Forge) -> str:
    """A valid ES256 licence token from the session key."""
    return sign_licence_token(forge.backend, forge.key(), licence_claims())


@pytest.fixture(scope="session")
def wycheproof() -> Path:
    found = vectors_dir()
    if found is None:
        # In CI shared/ sits beside the clone: missing vectors there are a failure, not a skip.
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(
            "Wycheproof vectors not found: expected ../shared/vectors/wycheproof beside the repository, "
            "or set YINXIN_VECTORS_DIR to the folder holding the *_test.json files"
        )
    return found


# -- the PDF tests' module fixtures: per test module, one software keystore with an ES256 CA and seal.
# (test_x509's ``ca`` and test_seal_image's ``seal`` are their own and override these.)


@pytest.fixture(scope="module")
def soft(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftwareBackend]:
    opened = SoftwareBackend(tmp_path_factory.mktemp("pdf-keystore"), TEST_PASSPHRASE)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def ca(soft: SoftwareBackend) -> CA:
    return make_ca(soft, SignatureAlgorithm.ES256)


@pytest.fixture(scope="module")
def seal(ca: CA) -> Seal:
    return make_seal(ca, SignatureAlgorithm.ES256)
