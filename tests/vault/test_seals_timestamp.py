"""PAdES B-T: with a timestamp authority configured, seals carry an RFC 3161 timestamp.

The TSA is a real one on 127.0.0.1 (tests/_tsa.py: its own CA, RSA TSA certificate with the
critical timeStamping EKU). The verdict reports the timestamp's time only when the TSA's root is
trusted (YINXIN_TSA_ROOTS_FILE); an unreachable TSA is a service failure, not bad input.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from hsm import SoftwareBackend
from schemas import load_licence_types
from schemas.errors import BackendUnavailable
from tests._pdf import simple_pdf
from tests._tsa import LocalTSA, local_tsa
from vault import Database, SealSettings, Vault

DEPT = "11110101000000456Q"


@pytest.fixture
def tsa() -> Iterator[LocalTSA]:
    with local_tsa() as server:
        yield server


def make_vault(tmp_path: Path, settings: SealSettings) -> Vault:
    vault = Vault(
        Database("sqlite://"),
        SoftwareBackend(tmp_path / "ks", b"tsa-test"),
        load_licence_types(),
        seal_settings=settings,
    )
    vault.initialise(actor="t")
    vault.add_department(DEPT, "北京市东城区卫生健康委员会", actor="t")
    vault.seals.init_ca(actor="t")
    return vault


def test_sealed_pdf_carries_a_trusted_timestamp(tmp_path: Path, tsa: LocalTSA) -> None:
    vault = make_vault(tmp_path, SealSettings(timestamp_url=tsa.url, timestamp_roots=(tsa.root,)))
    seal = vault.seals.create(DEPT, "卫生健康委员会公章", actor="t")
    sealed = vault.seals.seal_document(seal.seal_id, simple_pdf(), actor="t").pdf
    assert len(tsa.requests) == 1  # one signature, one timestamp request
    verdict = vault.seals.verify_document(sealed)
    assert verdict.valid, verdict.reasons
    assert verdict.seal is not None and verdict.seal.timestamp is not None
    assert verdict.seal.signing_time is not None
    assert abs((verdict.seal.timestamp - verdict.seal.signing_time).total_seconds()) < 300
    # The timestamp token is an unsigned attribute of the CMS signer info (PAdES B-T).
    sig = PdfFileReader(io.BytesIO(sealed)).embedded_signatures[0]
    unsigned = sig.signer_info["unsigned_attrs"].native
    assert any(a["type"] == "signature_time_stamp_token" for a in unsigned)


def test_untrusted_tsa_is_no_timestamp_but_the_seal_holds(tmp_path: Path, tsa: LocalTSA) -> None:
    vault = make_vault(tmp_path, SealSettings(timestamp_url=tsa.url))
    seal = vault.seals.create(DEPT, "卫生健康委员会公章", actor="t")
    verdict = vault.seals.verify_document(
        vault.seals.seal_document(seal.seal_id, simple_pdf(), actor="t").pdf
    )
    assert verdict.valid and verdict.seal is not None and verdict.seal.timestamp is None


def test_unreachable_tsa_is_a_service_failure_and_leaves_no_trace(tmp_path: Path) -> None:
    vault = make_vault(tmp_path, SealSettings(timestamp_url="http://127.0.0.1:9/tsa"))
    seal = vault.seals.create(DEPT, "卫生健康委员会公章", actor="t")
    before = vault.verify_audit().events_checked
    with pytest.raises(BackendUnavailable, match="timestamp authority"):
        vault.seals.seal_document(seal.seal_id, simple_pdf(), actor="t")
    assert vault.verify_audit().events_checked == before
