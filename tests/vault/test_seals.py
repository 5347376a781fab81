"""The CA and seal registry: init, seals with their certificates and images, lifecycle + CRL, sealing.

Runs on SQLite and PostgreSQL (the ``vault`` fixture) with the software keystore; one test
runs the whole chain on SoftHSM as well. Certificates and CRLs are checked with
``cryptography``; sealed PDFs with our verifier (the independent validators run in
tests/signing/test_pdf_seal.py).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier
from PIL import Image
from sqlalchemy import func, select

from hsm import KeyBackend, SignatureAlgorithm
from schemas import load_licence_types
from schemas.errors import (
    AlreadyExists,
    CANotInitialised,
    Conflict,
    DepartmentNotFound,
    IllegalTransition,
    InvalidInput,
    NoActiveSeal,
    SealNotFound,
    SealNotUsable,
)
from tests._builders import example
from tests._pdf import simple_pdf
from tests.vault.conftest import SettableClock
from vault import Database, Seal, Vault, licence_pdf
from vault._models import KeyRecord, SealRecord

DEPT = "11110101000000456Q"
SEAL_NAME = "北京市东城区市场监督管理局行政审批专用章"


@pytest.fixture
def sealing_vault(ready_vault: Vault) -> Vault:
    if DEPT not in {d.code for d in ready_vault.departments()}:
        ready_vault.add_department(DEPT, "北京市东城区市场监督管理局", actor="test")
    ready_vault.seals.init_ca(actor="officer-a")
    return ready_vault


@pytest.fixture
def seal(sealing_vault: Vault) -> Seal:
    return sealing_vault.seals.create(DEPT, SEAL_NAME, actor="officer-a")


def crl_of(vault: Vault) -> x509.CertificateRevocationList:
    crl = x509.load_der_x509_crl(vault.seals.crl())
    assert crl.is_signature_valid(vault.seals.ca().certificate.public_key())  # type: ignore[arg-type]
    return crl


# ---- the CA -----------------------------------------------------------------------------------


def test_ca_init_creates_a_self_signed_root_once(vault: Vault) -> None:
    ca = vault.seals.init_ca(SignatureAlgorithm.PS256, actor="officer-a")
    cert = ca.certificate
    cert.verify_directly_issued_by(cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert ca.algorithm == "PS256"
    assert cert.not_valid_after_utc - vault.clock() > timedelta(days=3640)
    assert vault.seals.ca().certificate == cert
    assert ca.pem.startswith(b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(AlreadyExists, match="yinxin ca cert"):
        vault.seals.init_ca(actor="officer-a")
    assert [e.action for e in vault.audit_events(subject=ca.ca_id)] == ["ca.init"]
    crl = crl_of(vault)
    assert len(list(crl)) == 0


def test_ca_refuses_ed25519_and_absent_ca_is_explained(vault: Vault) -> None:
    with pytest.raises(InvalidInput, match="ES256 or PS256"):
        vault.seals.init_ca(SignatureAlgorithm.EDDSA, actor="officer-a")
    with pytest.raises(CANotInitialised, match="yinxin ca init"):
        vault.seals.ca()
    with pytest.raises(CANotInitialised, match="yinxin ca init"):
        vault.seals.crl()
    with pytest.raises(CANotInitialised):
        vault.seals.verify_document(simple_pdf())


# ---- seals ----------------------------------------------------------------------------------


def test_seal_create_issues_certificate_key_and_image(sealing_vault: Vault, seal: Seal) -> None:
    vault = sealing_vault
    cert = seal.certificate
    cert.verify_directly_issued_by(vault.seals.ca().certificate)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SEAL_NAME
    registered = {d.code: d.name for d in vault.departments()}[DEPT]
    assert seal.department_name == registered
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == registered
    org_id = cert.subject.get_attributes_for_oid(ObjectIdentifier("2.5.4.97"))[0].value
    assert org_id == f"NTRCN-{DEPT}"
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and not usage.key_cert_sign
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value == "http://127.0.0.1:8000/v1/ca/crl"  # type: ignore[index]
    # Validity: the configured cryptoperiod (730 days), from the moment of creation.
    assert timedelta(days=729) < seal.not_after - vault.clock() <= timedelta(days=730)
    assert seal.certificate_serial == format(cert.serial_number, "X")
    image = Image.open(io.BytesIO(seal.image_png))
    assert image.format == "PNG" and image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] == 0  # transparent corner
    assert seal.image_generated and seal.state == "active" and seal.algorithm == "ES256"
    assert [s.seal_id for s in vault.seals.list(DEPT)] == [seal.seal_id]
    assert vault.seals.list("91110000000000000X") == []
    event = vault.audit_events(subject=seal.seal_id)[0]
    assert event.action == "seal.create" and event.actor == "officer-a"
    assert event.details["certificate_serial"] == seal.certificate_serial
    with vault.db.read() as s:
        key = s.get(KeyRecord, seal.kid)
        assert key is not None and key.purpose == "seal" and key.department_code == DEPT


def test_seal_validity_never_outlives_the_ca(ready_vault: Vault) -> None:
    vault = ready_vault
    short = Vault(
        vault.db,
        vault.backend,
        vault.types,
        clock=vault.clock,
        seal_settings=type(vault.seals.settings)(ca_validity_days=365, seal_validity_days=730),
    )
    short.seals.init_ca(actor="officer-a")
    seal = short.seals.create(DEPT, SEAL_NAME, actor="officer-a")
    assert seal.not_after == short.seals.ca().certificate.not_valid_after_utc


def test_seal_create_with_supplied_image(sealing_vault: Vault) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (230, 0, 18)).save(buf, format="JPEG")
    seal = sealing_vault.seals.create(DEPT, "合同专用章", image=buf.getvalue(), actor="officer-a")
    assert not seal.image_generated
    assert Image.open(io.BytesIO(seal.image_png)).format == "PNG"


@pytest.mark.parametrize(
    ("dept", "name", "image", "error", "message"),
    [
        ("91110000000000000X", SEAL_NAME, None, DepartmentNotFound, "yinxin dept add"),
        (DEPT, "章", None, InvalidInput, "2-30 characters"),
        (DEPT, "x" * 31, None, InvalidInput, "2-30 characters"),
        (DEPT, "专用\x07章", None, InvalidInput, "control characters"),
        (DEPT, SEAL_NAME, b"not an image at all", InvalidInput, "PNG or JPEG"),
    ],
)
def test_bad_seal_requests_leave_nothing_behind(
    sealing_vault: Vault, dept: str, name: str, image: bytes | None, error: type[Exception], message: str
) -> None:
    vault = sealing_vault
    with vault.db.read() as s:
        keys_before = s.scalar(select(func.count()).select_from(KeyRecord))
    audit_before = vault.verify_audit().events_checked
    backend_keys = len(vault.backend.list_keys())
    with pytest.raises(error, match=message):
        vault.seals.create(dept, name, image=image, actor="officer-a")
    with vault.db.read() as s:
        assert s.scalar(select(func.count()).select_from(KeyRecord)) == keys_before
        assert s.scalar(select(func.count()).select_from(SealRecord)) == 0
    assert vault.verify_audit().events_checked == audit_before
    assert len(vault.backend.list_keys()) == backend_keys


def test_seal_needs_a_ca(ready_vault: Vault) -> None:
    with pytest.raises(CANotInitialised, match="yinxin ca init"):
        ready_vault.seals.create(DEPT, SEAL_NAME, actor="officer-a")


def test_unknown_seal_ids(sealing_vault: Vault) -> None:
    with pytest.raises(SealNotFound, match="yinxin seal list"):
        sealing_vault.seals.get("seal-0000000000")
    with pytest.raises(SealNotFound, match="not a seal ID"):
        sealing_vault.seals.get("../../etc/passwd")


# ---- lifecycle and the CRL ----------------------------------------------------------------------


def test_suspend_reinstate_revoke_drive_the_crl(sealing_vault: Vault, seal: Seal) -> None:
    vault = sealing_vault
    serial = seal.certificate.serial_number
    first = crl_of(vault)
    assert first.get_revoked_certificate_by_serial_number(serial) is None

    vault.seals.suspend(seal.seal_id, "印章遗失待查", actor="officer-a")
    crl = crl_of(vault)
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.certificate_hold
    )
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    vault.seals.reinstate(seal.seal_id, "已找回", actor="officer-b")
    crl = crl_of(vault)
    assert crl.get_revoked_certificate_by_serial_number(serial) is None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1

    revoked = vault.seals.revoke(
        seal.seal_id, "机构撤并", crl_reason="cessationOfOperation", actor="officer-a"
    )
    assert revoked.state == "revoked" and revoked.state_reason == "机构撤并"
    entry = crl_of(vault).get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.cessation_of_operation
    assert entry.revocation_date_utc == vault.clock().replace(microsecond=0)

    with pytest.raises(IllegalTransition, match="final"):
        vault.seals.reinstate(seal.seal_id, "想恢复", actor="officer-a")
    with pytest.raises(IllegalTransition):
        vault.seals.revoke(seal.seal_id, "again", actor="officer-a")
    actions = [e.action for e in vault.audit_events(subject=seal.seal_id)]
    assert actions == ["seal.create", "seal.suspend", "seal.reinstate", "seal.revoke"]
    assert vault.verify_audit().ok


@pytest.mark.parametrize(
    ("reason", "crl_reason", "message"),
    [
        ("", "unspecified", "reason of 1-500"),
        ("x", "certificateHold", "not one of"),
        ("x", "bogus", "not one of"),
    ],
)
def test_bad_revocations(
    sealing_vault: Vault, seal: Seal, reason: str, crl_reason: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        sealing_vault.seals.revoke(seal.seal_id, reason, crl_reason=crl_reason, actor="officer-a")
    assert sealing_vault.seals.get(seal.seal_id).state == "active"


def test_crl_is_reused_until_half_its_validity_then_reissued(
    sealing_vault: Vault, seal: Seal, clock: SettableClock
) -> None:
    first = sealing_vault.seals.crl()
    clock.advance(hours=60)
    assert sealing_vault.seals.crl() == first
    clock.advance(hours=30)  # past 84 h, half of the 168 h validity
    again = x509.load_der_x509_crl(sealing_vault.seals.crl())
    assert again.last_update_utc == clock.now.replace(microsecond=0)
    assert again.next_update_utc == clock.now.replace(microsecond=0) + timedelta(hours=168)


# ---- sealing and verifying -------------------------------------------------------------------------


def test_seal_verify_and_revoke_a_document(sealing_vault: Vault, seal: Seal, clock: SettableClock) -> None:
    vault = sealing_vault
    pdf = simple_pdf()
    sealed = vault.seals.seal_document(seal.seal_id, pdf, reason="行政审批", actor="client:abc")
    verdict = vault.seals.verify_document(sealed.pdf)
    assert verdict.valid, verdict.reasons
    sig = verdict.seal
    assert sig is not None
    assert (sig.seal_id, sig.seal_name, sig.department_code) == (seal.seal_id, SEAL_NAME, DEPT)
    assert sig.certificate_serial == seal.certificate_serial
    assert sig.signing_time == clock.now.replace(microsecond=0)
    event = vault.audit_events(subject=seal.seal_id)[-1]
    assert event.action == "seal.use" and event.actor == "client:abc"
    assert event.details["output_sha256"] == sealed.sha256

    clock.advance(minutes=5)
    vault.seals.suspend(seal.seal_id, "印章遗失待查", actor="officer-a")
    verdict = vault.seals.verify_document(sealed.pdf)
    assert not verdict.valid and verdict.codes == ("suspended",)
    assert "印章遗失待查" in verdict.reasons[0]
    with pytest.raises(SealNotUsable, match="suspended"):
        vault.seals.seal_document(seal.seal_id, pdf, actor="client:abc")

    vault.seals.revoke(seal.seal_id, "印章被盗", crl_reason="keyCompromise", actor="officer-a")
    verdict = vault.seals.verify_document(sealed.pdf)
    assert not verdict.valid and verdict.codes == ("revoked",)
    assert "印章被盗" in verdict.reasons[0]


def test_expired_seal_cannot_seal(sealing_vault: Vault, seal: Seal, clock: SettableClock) -> None:
    clock.advance(days=731)
    with pytest.raises(SealNotUsable, match="create a new seal"):
        sealing_vault.seals.seal_document(seal.seal_id, simple_pdf(), actor="client:abc")
    with pytest.raises(NoActiveSeal):
        sealing_vault.seals.active_seal(DEPT)


def test_a_seal_from_another_vaults_ca_is_not_trusted(
    sealing_vault: Vault, seal: Seal, database_url: str, software_backend: KeyBackend, clock: SettableClock
) -> None:
    sealed = sealing_vault.seals.seal_document(seal.seal_id, simple_pdf(), actor="t").pdf
    # A second service with its own CA on a fresh SQLite database: our seal means nothing to it.
    other = Vault(Database("sqlite://"), software_backend, load_licence_types(), clock=clock)
    other.initialise(actor="test")
    other.seals.init_ca(actor="t")
    verdict = other.seals.verify_document(sealed)
    assert not verdict.valid and verdict.codes == ("untrusted",)
    other.close()


# ---- printed licences ----------------------------------------------------------------------------


def test_licence_pdf_is_sealed_by_the_issuer(sealing_vault: Vault) -> None:
    vault = sealing_vault
    request = example(vault)
    lic = vault.issue(request, actor="officer-a").licence
    with pytest.raises(NoActiveSeal, match="yinxin seal create"):
        licence_pdf(vault, lic.identifier, actor="officer-a")
    seal = vault.seals.create(lic.issuer_code, "测试发证机构行政审批专用章", actor="officer-a")
    printed = licence_pdf(vault, lic.identifier, actor="officer-a")
    verdict = vault.seals.verify_document(printed.pdf)
    assert verdict.valid, verdict.reasons
    assert verdict.seal is not None and verdict.seal.seal_id == seal.seal_id
    assert [e.action for e in vault.audit_events(subject=lic.identifier)][-1] == "licence.print"

    vault.revoke(lic.identifier, reason="吊销", actor="officer-a")
    with pytest.raises(Conflict, match="revoked licence is not printed"):
        licence_pdf(vault, lic.identifier, actor="officer-a")


# ---- both backends ------------------------------------------------------------------------------


@pytest.fixture
def backend_vault(backend: KeyBackend, clock: SettableClock) -> Iterator[Vault]:
    v = Vault(Database("sqlite://"), backend, load_licence_types(), clock=clock)
    v.initialise(actor="test")
    v.add_department(DEPT, "北京市东城区市场监督管理局", actor="test")
    yield v
    v.close()


@pytest.mark.parametrize(
    ("ca_alg", "seal_alg"),
    [
        (SignatureAlgorithm.ES256, SignatureAlgorithm.ES256),
        (SignatureAlgorithm.PS256, SignatureAlgorithm.EDDSA),
    ],
)
def test_ca_seal_and_verify_on_each_backend(
    backend_vault: Vault, ca_alg: SignatureAlgorithm, seal_alg: SignatureAlgorithm
) -> None:
    vault = backend_vault
    vault.seals.init_ca(ca_alg, actor="officer-a")
    seal = vault.seals.create(DEPT, SEAL_NAME, algorithm=seal_alg, actor="officer-a")
    assert seal.algorithm == seal_alg.value
    sealed = vault.seals.seal_document(seal.seal_id, simple_pdf(), actor="officer-a")
    assert vault.seals.verify_document(sealed.pdf).valid
    vault.seals.revoke(seal.seal_id, "测试", actor="officer-a")
    assert crl_of(vault).get_revoked_certificate_by_serial_number(seal.certificate.serial_number) is not None
    assert vault.seals.verify_document(sealed.pdf).codes == ("revoked",)
