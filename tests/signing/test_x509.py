"""The seal CA's X.509: root certificate, seal certificates, CRLs.

Every certificate and CRL signed here through a key backend (software keystore
and SoftHSM2) is checked by independent verifiers: ``cryptography``, the
``openssl`` command line, and ``pyhanko_certvalidator`` path validation with
revocation. Profile details (names, extensions, time encodings) are read back
with ``asn1crypto`` so the tests see the DER, not a library's view of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtensionOID, NameOID
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import RevokedError

from hsm import KeyBackend, KeyRef, SignatureAlgorithm, SoftwareBackend
from schemas.errors import BackendError, InvalidInput, InvalidUSCC
from schemas.uscc import make_uscc
from signing._x509 import (
    MAX_SERIAL,
    REVOCATION_REASONS,
    RevokedCertificate,
    certificate_fingerprint,
    issue_crl,
    issue_root_certificate,
    issue_seal_certificate,
    random_serial,
    verify_crl_signature,
    verify_issued_by,
    x509_signature_algorithm,
)
from tests.signing._support import ALGORITHMS, NOW

ES256 = SignatureAlgorithm.ES256
PS256 = SignatureAlgorithm.PS256
DEPARTMENT_CODE = make_uscc("11110000000013338")
CRL_URL = "http://ca.yinxin.example/seal-root.crl"
ROOT_NOT_AFTER = NOW + timedelta(days=30 * 365)  # 2056: a GeneralizedTime (RFC 5280 §4.1.2.5)
SEAL_NOT_AFTER = NOW + timedelta(days=2 * 365)
CHECK_TIME = NOW + timedelta(hours=1)  # when the verifiers look at the chain

# The AlgorithmIdentifiers OpenSSL and cryptography write (cryptography 50's CertificateBuilder
# with PSS(MGF1(SHA256), 32) gives exactly this RSASSA-PSS-params, NULL hash parameters included).
SIGNATURE_ALGORITHM_DER = {
    SignatureAlgorithm.ES256: "300a06082a8648ce3d040302",
    SignatureAlgorithm.EDDSA: "300506032b6570",
    SignatureAlgorithm.PS256: "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c"
    "301a06092a864886f70d010108300d06096086480165030402010500a203020120",
}


@dataclass(frozen=True)
class CA:
    backend: KeyBackend
    key: KeyRef
    certificate: x509.Certificate


def make_root(backend: KeyBackend, key: KeyRef, **changes: Any) -> x509.Certificate:
    arguments: dict[str, Any] = {
        "common_name": "印信测试电子印章根证书",
        "organisation": "印信测试数字证书中心",
        "serial": random_serial(),
        "not_before": NOW - timedelta(days=1),
        "not_after": ROOT_NOT_AFTER,
    }
    arguments.update(changes)
    return issue_root_certificate(backend, key, **arguments)


def make_ca(backend: KeyBackend, algorithm: SignatureAlgorithm) -> CA:
    key = backend.generate_key(algorithm)
    return CA(backend, key, make_root(backend, key))


def make_seal(ca: CA, public_key: Any, **changes: Any) -> x509.Certificate:
    arguments: dict[str, Any] = {
        "seal_name": "北京市测试局公章",
        "department_name": "北京市测试局",
        "department_code": DEPARTMENT_CODE,
        "serial": random_serial(),
        "not_before": NOW - timedelta(hours=1),
        "not_after": SEAL_NOT_AFTER,
        "crl_url": CRL_URL,
    }
    arguments.update(changes)
    return issue_seal_certificate(ca.backend, ca.key, ca.certificate, public_key, **arguments)


def make_crl(ca: CA, revoked: list[RevokedCertificate], **changes: Any) -> x509.CertificateRevocationList:
    arguments: dict[str, Any] = {
        "revoked": revoked,
        "crl_number": 7,
        "this_update": NOW,
        "next_update": NOW + timedelta(days=7),
    }
    arguments.update(changes)
    return issue_crl(ca.backend, ca.key, ca.certificate, **arguments)


def asn1(certificate: x509.Certificate) -> Any:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))


def extensions_by_oid(certificate: x509.Certificate) -> dict[x509.ObjectIdentifier, x509.Extension[Any]]:
    return {extension.oid: extension for extension in certificate.extensions}


def assert_canonical_extensions(certificate: x509.Certificate) -> None:
    """Each extension value is the DER cryptography itself would write for it."""
    for extension in asn1(certificate)["tbs_certificate"]["extensions"]:
        oid = x509.ObjectIdentifier(extension["extn_id"].dotted)
        parsed = certificate.extensions.get_extension_for_oid(oid).value
        assert parsed.public_bytes() == extension["extn_value"].contents, oid


def independent_key_identifier(certificate: x509.Certificate) -> bytes:
    # RFC 5280 §4.2.1.2 (1): SHA-1 over the subjectPublicKey BIT STRING value (no unused-bits octet).
    spki = asn1(certificate)["tbs_certificate"]["subject_public_key_info"]
    return hashlib.sha1(spki["public_key"].contents[1:]).digest()  # noqa: S324 - the RFC's choice


def string_types(name: Any) -> list[tuple[str, str]]:
    return [(rdn[0]["type"].dotted, rdn[0]["value"].name) for rdn in name.chosen]


# -- independent verifiers ---------------------------------------------------------------------


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("openssl") is None:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)("the openssl CLI is not installed")
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )


def write_pem(directory: Path, name: str, item: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path = directory / name
    path.write_bytes(item.public_bytes(Encoding.PEM))
    return path


def openssl_verify(
    directory: Path, root: x509.Certificate, seal: x509.Certificate, *extra: str | Path
) -> str:
    result = openssl(
        "verify",
        "-attime",
        str(int(CHECK_TIME.timestamp())),
        "-CAfile",
        write_pem(directory, "root.pem", root),
        *extra,
        write_pem(directory, "seal.pem", seal),
    )
    return result.stdout + result.stderr


def pyhanko_validate(
    seal: x509.Certificate, root: x509.Certificate, crl: x509.CertificateRevocationList
) -> None:
    context = ValidationContext(
        trust_roots=[asn1(root)],
        crls=[crl.public_bytes(Encoding.DER)],
        allow_fetching=False,
        revocation_mode="hard-fail",
        moment=CHECK_TIME,
    )
    validator = CertificateValidator(asn1(seal), validation_context=context)
    asyncio.run(validator.async_validate_usage({"digital_signature", "non_repudiation"}))


# -- over both backends ------------------------------------------------------------------------


@pytest.mark.parametrize("ca_algorithm", ALGORITHMS, ids=str)
def test_root_certificate_is_a_self_signed_v3_ca(
    backend: KeyBackend, ca_algorithm: SignatureAlgorithm
) -> None:
    ca = make_ca(backend, ca_algorithm)
    root = ca.certificate

    root.verify_directly_issued_by(root)
    verify_issued_by(root, root)
    assert root.version is x509.Version.v3
    assert 0 < root.serial_number <= MAX_SERIAL
    assert root.subject == root.issuer
    assert root.subject.rfc4514_string() == "CN=印信测试电子印章根证书,O=印信测试数字证书中心,C=CN"
    assert root.not_valid_before_utc == NOW - timedelta(days=1)
    assert root.not_valid_after_utc == ROOT_NOT_AFTER
    tbs = asn1(root)["tbs_certificate"]
    assert tbs["signature"].dump().hex() == SIGNATURE_ALGORITHM_DER[ca_algorithm]
    assert tbs["validity"]["not_before"].name == "utc_time"
    assert tbs["validity"]["not_after"].name == "general_time"

    extensions = extensions_by_oid(root)
    assert set(extensions) == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
    assert extensions[ExtensionOID.BASIC_CONSTRAINTS].critical
    assert extensions[ExtensionOID.BASIC_CONSTRAINTS].value == x509.BasicConstraints(ca=True, path_length=0)
    assert extensions[ExtensionOID.KEY_USAGE].critical
    assert extensions[ExtensionOID.KEY_USAGE].value == x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ski = extensions[ExtensionOID.SUBJECT_KEY_IDENTIFIER]
    aki = extensions[ExtensionOID.AUTHORITY_KEY_IDENTIFIER]
    assert not ski.critical and not aki.critical
    assert ski.value.digest == independent_key_identifier(root)
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(backend.public_key(ca.key))  # type: ignore[arg-type]
    assert aki.value == x509.AuthorityKeyIdentifier(ski.value.digest, None, None)
    assert_canonical_extensions(root)


@pytest.mark.parametrize("ca_algorithm", ALGORITHMS, ids=str)
def test_seal_certificates_and_crl_verify_everywhere(
    backend: KeyBackend, ca_algorithm: SignatureAlgorithm, tmp_path: Path
) -> None:
    ca = make_ca(backend, ca_algorithm)
    good_key = backend.generate_key(ES256)
    revoked_key = backend.generate_key(ES256)
    good = make_seal(ca, backend.public_key(good_key))
    revoked = make_seal(ca, backend.public_key(revoked_key), seal_name="北京市测试局合同专用章")
    crl = make_crl(
        ca, [RevokedCertificate(revoked.serial_number, NOW - timedelta(minutes=5), "keyCompromise")]
    )

    # cryptography
    good.verify_directly_issued_by(ca.certificate)
    verify_issued_by(revoked, ca.certificate)
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    verify_crl_signature(crl, ca.certificate)
    entry = crl.get_revoked_certificate_by_serial_number(revoked.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == NOW - timedelta(minutes=5)
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )
    assert crl.get_revoked_certificate_by_serial_number(good.serial_number) is None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == (
        independent_key_identifier(ca.certificate)
    )

    # openssl: the chain, the CRL's signature, and revocation through the CRL
    assert "seal.pem: OK" in openssl_verify(tmp_path, ca.certificate, good)
    crl_path = write_pem(tmp_path, "seal-root.crl.pem", crl)
    checked = openssl("crl", "-verify", "-noout", "-CAfile", tmp_path / "root.pem", "-in", crl_path)
    assert checked.returncode == 0 and "verify OK" in checked.stderr, checked.stderr
    assert "OK" in openssl_verify(tmp_path, ca.certificate, good, "-crl_check", "-CRLfile", crl_path)
    refused = openssl_verify(tmp_path, ca.certificate, revoked, "-crl_check", "-CRLfile", crl_path)
    assert "certificate revoked" in refused, refused

    # pyhanko_certvalidator: path validation with hard-fail revocation checking
    pyhanko_validate(good, ca.certificate, crl)
    with pytest.raises(RevokedError):
        pyhanko_validate(revoked, ca.certificate, crl)


def test_a_ps256_seal_key_can_be_certified(backend: KeyBackend, tmp_path: Path) -> None:
    ca = make_ca(backend, ES256)
    seal_key = backend.generate_key(PS256)
    seal = make_seal(ca, backend.public_key(seal_key))
    crl = make_crl(ca, [])

    verify_issued_by(seal, ca.certificate)
    spki = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    assert seal.public_key().public_bytes(*spki) == backend.public_key(seal_key).public_bytes(*spki)
    assert "seal.pem: OK" in openssl_verify(tmp_path, ca.certificate, seal)
    pyhanko_validate(seal, ca.certificate, crl)


# -- profile details (one software keystore for the module) -------------------------------------


@pytest.fixture(scope="module")
def ca(session_backend: KeyBackend, session_keys: dict[SignatureAlgorithm, KeyRef]) -> CA:
    key = session_keys[ES256]
    return CA(session_backend, key, make_root(session_backend, key))


@pytest.fixture(scope="module")
def seal_key(session_backend: KeyBackend) -> Iterator[Any]:
    yield session_backend.public_key(session_backend.generate_key(ES256))


def test_seal_certificate_profile(ca: CA, seal_key: Any) -> None:
    seal = make_seal(ca, seal_key)
    tbs = asn1(seal)["tbs_certificate"]

    assert seal.version is x509.Version.v3
    assert tbs["issuer"].dump() == asn1(ca.certificate)["tbs_certificate"]["subject"].dump()
    assert seal.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value == (
        f"NTRCN-{DEPARTMENT_CODE}"
    )
    assert string_types(tbs["subject"]) == [
        ("2.5.4.6", "printable_string"),  # C=CN
        ("2.5.4.10", "utf8_string"),  # O=department
        ("2.5.4.97", "utf8_string"),  # organizationIdentifier
        ("2.5.4.3", "utf8_string"),  # CN=seal name
    ]
    assert seal.subject.rfc4514_string() == (
        f"CN=北京市测试局公章,2.5.4.97=NTRCN-{DEPARTMENT_CODE},O=北京市测试局,C=CN"
    )

    extensions = extensions_by_oid(seal)
    assert set(extensions) == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
    }
    assert ExtensionOID.EXTENDED_KEY_USAGE not in extensions
    assert extensions[ExtensionOID.BASIC_CONSTRAINTS].critical
    assert extensions[ExtensionOID.BASIC_CONSTRAINTS].value == x509.BasicConstraints(
        ca=False, path_length=None
    )
    key_usage = extensions[ExtensionOID.KEY_USAGE]
    assert key_usage.critical
    assert key_usage.value == x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    assert extensions[ExtensionOID.SUBJECT_KEY_IDENTIFIER].value.digest == independent_key_identifier(seal)
    assert extensions[ExtensionOID.AUTHORITY_KEY_IDENTIFIER].value.key_identifier == (
        independent_key_identifier(ca.certificate)
    )
    points = extensions[ExtensionOID.CRL_DISTRIBUTION_POINTS]
    assert not points.critical
    assert [point.full_name for point in points.value] == [[x509.UniformResourceIdentifier(CRL_URL)]]
    assert_canonical_extensions(seal)


def test_times_use_utctime_to_2049_and_generalizedtime_from_2050(ca: CA, seal_key: Any) -> None:
    beijing = timezone(timedelta(hours=8))
    last_utc = datetime(2049, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    root = make_root(
        ca.backend, ca.key, not_before=last_utc, not_after=datetime(2050, 1, 1, 8, tzinfo=beijing)
    )
    validity = asn1(root)["tbs_certificate"]["validity"]
    assert validity["not_before"].name == "utc_time"
    assert validity["not_before"].chosen.contents == b"491231235959Z"  # microseconds dropped
    assert validity["not_after"].name == "general_time"
    assert validity["not_after"].chosen.contents == b"20500101000000Z"  # converted to UTC, no fraction
    seal = make_seal(ca, seal_key, not_before=NOW.replace(microsecond=123456).astimezone(beijing))
    assert seal.not_valid_before_utc == NOW


def test_random_serials_are_positive_20_octet_integers() -> None:
    serials = {random_serial() for _ in range(64)}
    assert len(serials) == 64
    for serial in serials:
        assert 0 < serial <= MAX_SERIAL
        assert serial.bit_length() == 159  # 20 octets in DER, with no leading zero octet needed


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=str)
def test_signature_algorithm_identifiers_match_openssl_and_cryptography(
    algorithm: SignatureAlgorithm,
) -> None:
    assert x509_signature_algorithm(algorithm).dump().hex() == SIGNATURE_ALGORITHM_DER[algorithm]


def test_crl_carries_every_reason_and_omits_unspecified(ca: CA) -> None:
    revoked = [
        RevokedCertificate(serial, NOW - timedelta(days=1), reason)
        for serial, reason in enumerate(REVOCATION_REASONS, start=100)
    ]
    crl = make_crl(ca, list(reversed(revoked)))
    verify_crl_signature(crl, ca.certificate)
    assert crl.last_update_utc == NOW and crl.next_update_utc == NOW + timedelta(days=7)
    assert [entry.serial_number for entry in crl] == sorted(entry.serial for entry in revoked)
    for wanted in revoked:
        entry = crl.get_revoked_certificate_by_serial_number(wanted.serial)
        assert entry is not None
        if wanted.reason == "unspecified":
            # RFC 5280 §5.3.1: reasonCode SHOULD be absent rather than unspecified.
            assert len(entry.extensions) == 0
        else:
            assert (
                entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value == wanted.reason
            )
    assert "certificateHold" in REVOCATION_REASONS  # suspended seals
    tbs = asn1_crl.CertificateList.load(crl.public_bytes(Encoding.DER))["tbs_cert_list"]
    assert tbs["version"].native == "v2"
    assert tbs["issuer"].dump() == asn1(ca.certificate)["tbs_certificate"]["subject"].dump()


def test_an_empty_crl_has_no_revoked_certificates_field(ca: CA) -> None:
    crl = make_crl(ca, [], crl_number=0)
    verify_crl_signature(crl, ca.certificate)
    assert len(crl) == 0
    tbs = asn1_crl.CertificateList.load(crl.public_bytes(Encoding.DER))["tbs_cert_list"]
    assert not tbs["revoked_certificates"].contents  # absent, not an empty SEQUENCE (RFC 5280 §5.1.2.6)


def test_fingerprint_is_sha256_of_the_der(ca: CA) -> None:
    der = ca.certificate.public_bytes(Encoding.DER)
    assert certificate_fingerprint(ca.certificate) == hashlib.sha256(der).hexdigest()


def test_certificates_and_crls_from_another_ca_are_rejected(
    ca: CA, seal_key: Any, session_keys: dict[SignatureAlgorithm, KeyRef]
) -> None:
    other_key = session_keys[SignatureAlgorithm.EDDSA]
    other = CA(ca.backend, other_key, make_root(ca.backend, other_key, organisation="另一个证书中心"))
    with pytest.raises(InvalidInput, match="not issued by this issuer"):
        verify_issued_by(make_seal(other, seal_key), ca.certificate)
    with pytest.raises(InvalidInput, match="issuer is not this CA"):
        verify_crl_signature(make_crl(other, []), ca.certificate)
    # The same name over a different key: only the signature tells them apart.
    impostor_key = ca.backend.generate_key(ES256)
    impostor = CA(ca.backend, impostor_key, make_root(ca.backend, impostor_key))
    with pytest.raises(InvalidInput, match="does not verify"):
        verify_issued_by(make_seal(impostor, seal_key), ca.certificate)
    with pytest.raises(InvalidInput, match="does not verify"):
        verify_crl_signature(make_crl(impostor, []), ca.certificate)


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"not_after": SEAL_NOT_AFTER.replace(tzinfo=None)}, "naive"),
        ({"not_before": NOW.replace(tzinfo=None)}, "naive"),
        ({"not_after": ROOT_NOT_AFTER + timedelta(seconds=1)}, "outlive its CA"),
        ({"not_before": SEAL_NOT_AFTER}, "earlier than not_after"),
        ({"serial": 0}, "positive"),
        ({"serial": -5}, "positive"),
        ({"serial": MAX_SERIAL + 1}, "20 octets"),
        ({"serial": True}, "integer"),
        ({"seal_name": "  "}, "empty"),
        ({"seal_name": "章" * 65}, "64"),
        ({"department_name": "北京市\x00测试局"}, "control"),
        ({"crl_url": "file:///etc/crl"}, "http"),
        ({"crl_url": "http://ca.example/根.crl"}, "ASCII"),
    ],
)
def test_seal_certificate_rejects_bad_input(
    ca: CA, seal_key: Any, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        make_seal(ca, seal_key, **changes)


def test_seal_certificate_rejects_a_bad_uscc_a_foreign_key_and_a_non_ca(
    ca: CA, seal_key: Any, session_keys: dict[SignatureAlgorithm, KeyRef]
) -> None:
    with pytest.raises(InvalidUSCC):
        make_seal(ca, seal_key, department_code=DEPARTMENT_CODE[:17] + "0")
    wrong_key = CA(ca.backend, session_keys[SignatureAlgorithm.EDDSA], ca.certificate)
    with pytest.raises(InvalidInput, match="not the key certified"):
        make_seal(wrong_key, seal_key)
    seal = make_seal(ca, seal_key)
    with pytest.raises(InvalidInput, match="CA:FALSE"):
        make_seal(CA(ca.backend, ca.key, seal), seal_key)


def test_root_certificate_rejects_bad_input(ca: CA) -> None:
    with pytest.raises(InvalidInput, match="naive"):
        make_root(ca.backend, ca.key, not_before=datetime(2026, 1, 1))  # naive on purpose
    with pytest.raises(InvalidInput, match="earlier than not_after"):
        make_root(ca.backend, ca.key, not_after=NOW - timedelta(days=2))
    with pytest.raises(InvalidInput, match="positive"):
        make_root(ca.backend, ca.key, serial=0)
    with pytest.raises(InvalidInput, match="empty"):
        make_root(ca.backend, ca.key, common_name="")


def test_crl_rejects_bad_input(ca: CA) -> None:
    with pytest.raises(InvalidInput, match="revocation reason 'compromised'"):
        RevokedCertificate(5, NOW, "compromised")
    with pytest.raises(InvalidInput, match="revocation reason"):
        RevokedCertificate(5, NOW, "removeFromCRL")  # delta CRLs only
    with pytest.raises(InvalidInput, match="naive"):
        RevokedCertificate(5, NOW.replace(tzinfo=None), "superseded")
    with pytest.raises(InvalidInput, match="positive"):
        RevokedCertificate(0, NOW, "superseded")
    twice = [RevokedCertificate(5, NOW, "superseded"), RevokedCertificate(5, NOW, "keyCompromise")]
    with pytest.raises(InvalidInput, match="more than once"):
        make_crl(ca, twice)
    with pytest.raises(InvalidInput, match="crl_number"):
        make_crl(ca, [], crl_number=-1)
    with pytest.raises(InvalidInput, match="later than this_update"):
        make_crl(ca, [], next_update=NOW)
    with pytest.raises(InvalidInput, match="naive"):
        make_crl(ca, [], this_update=NOW.replace(tzinfo=None))


class CorruptingBackend(SoftwareBackend):
    """A keystore whose signatures come back with one bit flipped, as a faulty HSM might."""

    def sign(self, key: KeyRef, data: bytes) -> bytes:
        signature = bytearray(super().sign(key, data))
        signature[-1] ^= 1
        return bytes(signature)


def test_a_signature_that_does_not_verify_never_becomes_a_certificate(tmp_path: Path) -> None:
    honest = SoftwareBackend(tmp_path / "keystore", b"x509-tests")
    key = honest.generate_key(ES256)
    ca = CA(honest, key, make_root(honest, key))
    honest.close()
    faulty = CorruptingBackend(tmp_path / "keystore", b"x509-tests")
    try:
        with pytest.raises(BackendError, match="does not verify"):
            make_root(faulty, key)
        broken = CA(faulty, key, ca.certificate)
        with pytest.raises(BackendError, match="does not verify"):
            make_seal(broken, faulty.public_key(key))
        with pytest.raises(BackendError, match="does not verify"):
            make_crl(broken, [])
    finally:
        faulty.close()
