"""Verifying sealed PDFs: every manipulation a forger might try is refused with its code.

The manipulated files are built here with real tools: pyHanko's incremental writer (as a
PDF editor would append), hand-written incremental updates (exactly the objects given,
nothing refreshed behind our back), flipped bytes, and signatures by certificates our CA
never issued or issued for another purpose. One software keystore serves the module: these
tests are about the PDF, not the key backend (test_pdf_seal.py covers both backends).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko.sign.validation import async_add_validation_info
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko_certvalidator import ValidationContext

from hsm import SignatureAlgorithm, SoftwareBackend
from signing._pdf_seal import MAX_SEALED_PDF_BYTES, BackendSigner
from signing._pdf_verify import PdfVerdict
from signing._x509 import issue_crl, random_serial, sign_for_x509, x509_signature_algorithm
from tests._pdf import (
    A4,
    add_note,
    page_content,
    page_object,
    simple_pdf,
)
from tests.signing._pdf_support import (
    CA,
    ES256,
    NOW,
    SEAL_NOT_AFTER,
    SEALED_AT,
    Registry,
    Seal,
    append_raw_update,
    make_ca,
    make_seal,
    object_number,
    object_source,
    timestamp_authority,
    verify,
)

# -- fixtures: one CA, one seal, one sealed document ---------------------------------------------


@pytest.fixture(scope="module")
def sealed(seal: Seal) -> bytes:
    """A sealed one-page PDF with a text form field (so form changes can be tried)."""
    return seal.seal(simple_pdf(1, form_field=True))


@pytest.fixture
def registry(seal: Seal) -> Registry:
    return Registry().add(seal.certificate)


@dataclass
class Judge:
    ca: CA
    registry: Registry

    def __call__(self, pdf: bytes, **kwargs: Any) -> PdfVerdict:
        return verify(pdf, self.ca, self.registry, **kwargs)

    def refused(self, pdf: bytes, code: str, *words: str, **kwargs: Any) -> PdfVerdict:
        """The verdict must be invalid, carry exactly *code*, and its reason name *words*."""
        verdict = self(pdf, **kwargs)
        assert not verdict.valid, verdict
        assert verdict.codes == (code,), verdict
        text = " ".join(verdict.reasons)
        for word in words:
            assert word in text, (word, verdict.reasons)
        return verdict


@pytest.fixture
def judge(ca: CA, registry: Registry) -> Judge:
    return Judge(ca, registry)


def test_the_untouched_seal_is_valid(judge: Judge, sealed: bytes, seal: Seal) -> None:
    verdict = judge(sealed)
    assert verdict.valid, verdict.reasons
    assert verdict.codes == () and verdict.reasons == ()
    first = verdict.seal
    assert first is not None
    assert first.coverage == "entire_file" and first.certified
    assert first.certificate_serial == format(seal.certificate.serial_number, "X")
    assert first.department_code == "111100000000133381" and first.department_name == "北京市测试局"
    assert first.seal_id is not None and first.seal_id.startswith("seal-")
    assert first.signing_time == SEALED_AT and first.timestamp is None
    assert verdict.to_dict()["seal"]["seal_name"] == "北京市测试局公章"


# -- changes appended after sealing ----------------------------------------------------------------


def edit(pdf: bytes, change: Any) -> bytes:
    """Append an incremental update made with pyHanko's writer, as a PDF editor would."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    change(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_added_page_is_refused(judge: Judge, sealed: bytes) -> None:
    forged = edit(sealed, lambda w: w.insert_page(page_object(w, "an extra page", A4)))
    judge.refused(forged, "modified", "changed after sealing", "pages were added")


def deref(value: Any) -> Any:
    return value.get_object()


def test_added_annotation_is_refused(judge: Judge, sealed: bytes) -> None:
    forged = edit(sealed, lambda w: add_note(w, "VOID"))
    judge.refused(forged, "modified", "annotations were added or changed")


def test_changed_annotation_is_refused(judge: Judge, seal: Seal) -> None:
    sealed = seal.seal(simple_pdf(note="checked by the registry office"))

    def reword(writer: IncrementalPdfFileWriter) -> None:
        page = writer.find_page_for_modification(0)[0].get_object()
        (note,) = (a for a in map(deref, page["/Annots"]) if a["/Subtype"] == "/FreeText")
        note[generic.pdf_name("/Contents")] = generic.pdf_string("rejected by the registry office")
        writer.update_container(note)

    judge.refused(edit(sealed, reword), "modified", "annotations were added or changed")


def test_moved_seal_widget_is_refused(judge: Judge, sealed: bytes) -> None:
    # The seal's widget is both an annotation and the signature field: hide it by moving it away.
    def move_stamp(writer: IncrementalPdfFileWriter) -> None:
        page = writer.find_page_for_modification(0)[0].get_object()
        (widget,) = (a for a in map(deref, page["/Annots"]) if a.get("/FT") == "/Sig")
        widget[generic.pdf_name("/Rect")] = generic.ArrayObject(map(generic.NumberObject, (0, 0, 0, 0)))
        writer.update_container(widget)

    judge.refused(edit(sealed, move_stamp), "modified", "form fields were filled in or changed")


def test_changed_form_field_is_refused(judge: Judge, sealed: bytes) -> None:
    def fill(writer: IncrementalPdfFileWriter) -> None:
        for reference in writer.root["/AcroForm"]["/Fields"]:
            field = reference.get_object()
            if field["/T"] == "remark":
                field[generic.pdf_name("/V")] = generic.pdf_string("approved without conditions")
                writer.update_container(field)

    judge.refused(edit(sealed, fill), "modified", "form fields were filled in or changed")


def test_replaced_content_stream_is_refused(judge: Judge, sealed: bytes) -> None:
    number = object_number(sealed, lambda root: root["/Pages"]["/Kids"][0].raw_get("/Contents"))
    forged_content = page_content("Licence revoked - do not accept")
    forged = append_raw_update(
        sealed, {number: b"<< /Length %d >>\nstream\n%s\nendstream" % (len(forged_content), forged_content)}
    )
    judge.refused(forged, "modified", "page content was replaced")


def test_overlaid_content_is_refused(judge: Judge, sealed: bytes) -> None:
    # Shadow attack: a white box over the text and new text on top, appended to the page.
    overlay = b"1 1 1 rg 60 740 480 40 re f BT /F1 18 Tf 0 0 0 rg 72 760 Td (Forged text) Tj ET"
    forged = edit(
        sealed, lambda w: w.add_stream_to_page(0, w.add_object(generic.StreamObject(stream_data=overlay)))
    )
    judge.refused(forged, "modified", "page content was replaced or overlaid")


def test_replaced_page_resources_are_refused(judge: Judge, sealed: bytes) -> None:
    # Shadow attack: swap the font an unchanged content stream draws with.
    number = object_number(sealed, lambda root: root["/Pages"]["/Kids"].raw_get(0))
    page = object_source(sealed, number)
    assert b"/Helvetica" in page
    forged = append_raw_update(sealed, {number: page.replace(b"/Helvetica", b"/ZapfDingbats")})
    judge.refused(forged, "modified", "page properties or resources were changed")


def test_replaced_object_is_refused(judge: Judge, sealed: bytes) -> None:
    # Any object of the sealed revision rewritten, here the DocMDP signature's field's parent form.
    number = object_number(sealed, lambda root: root.raw_get("/AcroForm"))
    form = object_source(sealed, number)
    forged = append_raw_update(sealed, {number: form[:-2] + b"/NeedAppearances true >>"})
    judge.refused(forged, "modified", "the interactive form (/AcroForm) was changed")


def test_changed_info_is_refused(judge: Judge, sealed: bytes) -> None:
    # pyHanko's diff policy lets /Info changes pass; ours admits only LTV updates.
    size = int(PdfFileReader(io.BytesIO(sealed)).trailer["/Size"])
    forged = append_raw_update(
        sealed, {size: b"<< /Title (Forged title) /Author (Someone else) >>"}, info=size
    )
    judge.refused(forged, "modified", "document metadata")


def test_info_changed_by_an_editor_is_refused(judge: Judge, sealed: bytes) -> None:
    def retitle(writer: IncrementalPdfFileWriter) -> None:
        writer.set_info(generic.DictionaryObject({generic.pdf_name("/Title"): generic.pdf_string("Forged")}))

    judge.refused(edit(sealed, retitle), "modified", "document metadata")


def test_unreferenced_object_appended_is_refused(judge: Judge, sealed: bytes) -> None:
    size = int(PdfFileReader(io.BytesIO(sealed)).trailer["/Size"])
    forged = append_raw_update(sealed, {size: b"<< /Payload (anything at all) >>"})
    judge.refused(forged, "modified", "objects were added")


def test_empty_update_is_refused(judge: Judge, sealed: bytes) -> None:
    judge.refused(append_raw_update(sealed, {}), "modified", "an empty incremental update")


def test_catalog_change_is_refused(judge: Judge, sealed: bytes) -> None:
    root = PdfFileReader(io.BytesIO(sealed)).root_ref.idnum
    catalog = object_source(sealed, root)
    assert catalog.endswith(b">>")
    action = b"/OpenAction << /S /JavaScript /JS (app.alert\\(1\\)) >> >>"
    judge.refused(append_raw_update(sealed, {root: catalog[:-2] + action}), "modified", "catalog was changed")


class _LaxPdfSigner(signers.PdfSigner):
    """A signer that ignores the certification's DocMDP lock, as a forger's tool would."""

    def _enforce_certification_constraints(self, reader: Any) -> None:
        return None


def second_signature(pdf: bytes, seal: Seal) -> bytes:
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    signer = BackendSigner(seal.backend, seal.credentials.key, seal.certificate, [seal.ca.certificate])
    meta = signers.PdfSignatureMetadata(field_name="Second", md_algorithm="sha256")
    out = io.BytesIO()
    asyncio.run(_LaxPdfSigner(meta, signer).async_sign_pdf(writer, output=out))
    return out.getvalue()


def test_second_signature_appended_is_refused(judge: Judge, sealed: bytes, seal: Seal) -> None:
    # Even by the same, valid seal: the certification forbids any change.
    verdict = judge.refused(second_signature(sealed, seal), "modified", "another signature was added")
    assert verdict.reasons == (
        "YinxinSeal: the document was changed after sealing: another signature was added",
    )
    first, second = verdict.signatures
    assert not first.valid and first.codes == ("modified",)
    assert second.valid and second.field_name == "Second" and not second.certified


def test_second_signature_by_a_foreign_seal(judge: Judge, sealed: bytes, soft: SoftwareBackend) -> None:
    foreign = make_seal(make_ca(soft, ES256, common_name="别处的电子印章根证书"), ES256)
    verdict = judge(second_signature(sealed, foreign))
    assert not verdict.valid and verdict.codes == ("modified", "untrusted"), verdict


# -- bytes altered inside the signed ranges ----------------------------------------------------------


def byte_range(pdf: bytes) -> list[int]:
    match = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", pdf)
    assert match is not None
    return [int(v) for v in match.groups()]


def test_flipped_byte_in_page_text_is_refused(judge: Judge, sealed: bytes) -> None:
    at = sealed.index(b"(Yinxin test document, page 1)") + 1
    assert at < byte_range(sealed)[1]  # inside the first signed range
    forged = sealed[:at] + b"X" + sealed[at + 1 :]  # same length: the file still parses
    assert PdfFileReader(io.BytesIO(forged)).root["/Pages"]["/Count"] == 1
    judge.refused(forged, "signature_invalid", "signed bytes were altered")


def test_flipped_byte_after_the_signature_is_refused(judge: Judge, sealed: bytes) -> None:
    # The second signed range holds the rest of the signature dictionary: back-date its /M.
    start, length = byte_range(sealed)[2:]
    at = sealed.index(b"20260601020000Z", start, start + length) + 3
    forged = sealed[:at] + b"5" + sealed[at + 1 :]
    judge.refused(forged, "signature_invalid", "signed bytes were altered")


def test_altered_signature_value_is_refused(judge: Judge, sealed: bytes) -> None:
    # The last byte of the CMS blob (before its zero padding) is the end of the ECDSA s value:
    # changing it keeps the DER well formed and the digest intact, but the signature is wrong.
    _, gap_start, gap_end, _ = byte_range(sealed)
    hex_blob = sealed[gap_start + 1 : gap_end - 1].rstrip(b"0")
    at = gap_start + 1 + len(hex_blob) - 1
    replacement = b"1" if sealed[at : at + 1] != b"1" else b"2"
    forged = sealed[:at] + replacement + sealed[at + 1 :]
    judge.refused(forged, "signature_invalid", "does not verify")


# -- the certificate ------------------------------------------------------------------------------


def test_seal_from_a_foreign_ca_is_untrusted(judge: Judge, soft: SoftwareBackend) -> None:
    foreign_ca = make_ca(soft, ES256, common_name="别处的电子印章根证书")
    foreign = make_seal(foreign_ca, ES256)
    verdict = judge.refused(foreign.seal(simple_pdf()), "untrusted", "not issued by this service's root CA")
    assert verdict.seal is not None and verdict.seal.seal_id is None  # the registry is not consulted


def test_seal_from_a_ca_impersonating_ours_is_untrusted(judge: Judge, soft: SoftwareBackend) -> None:
    # Same subject name as our root, different key: path building must not be fooled by names.
    impostor = make_seal(make_ca(soft, ES256), ES256)
    assert impostor.ca.certificate.subject == judge.ca.certificate.subject
    judge.refused(impostor.seal(simple_pdf()), "untrusted", "root CA")


def issue_with_key_usage(
    ca: CA, public_key: Any, usage: set[str], *, is_ca: bool = False
) -> x509.Certificate:
    """A certificate our CA really signs, but with a keyUsage _x509 would never give a seal."""
    issuer = asn1_x509.Certificate.load(ca.certificate.public_bytes(Encoding.DER))
    name = asn1_x509.Name.build({"country_name": "CN", "common_name": "用途不对的证书"})
    tbs = asn1_x509.TbsCertificate(
        {
            "version": "v3",
            "serial_number": random_serial(),
            "signature": x509_signature_algorithm(ca.key.algorithm),
            "issuer": issuer["tbs_certificate"]["subject"],
            "validity": {
                "not_before": asn1_x509.Time({"utc_time": SEALED_AT - timedelta(days=1)}),
                "not_after": asn1_x509.Time({"utc_time": SEAL_NOT_AFTER}),
            },
            "subject": name,
            "subject_public_key_info": asn1_keys.PublicKeyInfo.load(
                public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            ),
            "extensions": [
                {"extn_id": "basic_constraints", "critical": True, "extn_value": {"ca": is_ca}},
                {"extn_id": "key_usage", "critical": True, "extn_value": usage},
            ],
        }
    )
    signature = sign_for_x509(ca.backend, ca.key, tbs.dump())
    certificate = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": x509_signature_algorithm(ca.key.algorithm),
            "signature_value": signature,
        }
    )
    issued = x509.load_der_x509_certificate(certificate.dump())
    issued.verify_directly_issued_by(ca.certificate)  # really our CA's
    return issued


@pytest.mark.parametrize(
    ("usage", "is_ca", "words"),
    [
        ({"key_cert_sign"}, False, "lacks digitalSignature or nonRepudiation"),
        ({"digital_signature"}, False, "lacks digitalSignature or nonRepudiation"),
        ({"non_repudiation"}, False, "lacks digitalSignature or nonRepudiation"),
        ({"digital_signature", "non_repudiation", "key_cert_sign"}, True, "CA certificate"),
    ],
    ids=["keyCertSign", "digitalSignature-only", "nonRepudiation-only", "CA"],
)
def test_wrong_key_usage_is_refused(
    ca: CA, soft: SoftwareBackend, usage: set[str], is_ca: bool, words: str
) -> None:
    key = soft.generate_key(ES256)
    certificate = issue_with_key_usage(ca, soft.public_key(key), usage, is_ca=is_ca)
    wrong = make_seal(ca, ES256, key=key, certificate=certificate)
    judge = Judge(ca, Registry().add(certificate))
    judge.refused(wrong.seal(simple_pdf()), "key_usage", words)


def test_sealed_with_the_root_certificate_itself_is_refused(ca: CA) -> None:
    root_seal = make_seal(ca, ES256, key=ca.key, certificate=ca.certificate)
    verdict = Judge(ca, Registry().add(ca.certificate))(root_seal.seal(simple_pdf()))
    assert not verdict.valid and "key_usage" in verdict.codes, verdict


def test_expired_certificate_is_refused(judge: Judge, sealed: bytes) -> None:
    later = SEAL_NOT_AFTER + timedelta(days=1)
    judge.refused(sealed, "untrusted", "outside its validity period", now=later)


def test_certificate_not_yet_valid_is_refused(judge: Judge, sealed: bytes) -> None:
    judge.refused(sealed, "untrusted", "outside its validity period", now=SEALED_AT - timedelta(days=1))


def test_revoked_certificate_is_refused(ca: CA, seal: Seal, sealed: bytes) -> None:
    registry = Registry().add(
        seal.certificate, "revoked", changed_at=NOW - timedelta(minutes=30), reason="keyCompromise: seal lost"
    )
    verdict = Judge(ca, registry).refused(sealed, "revoked", "revoked on 2026-06-01 02:30 UTC", "seal lost")
    assert verdict.seal is not None and verdict.seal.seal_id is not None


def test_suspended_certificate_is_refused(ca: CA, seal: Seal, sealed: bytes) -> None:
    registry = Registry().add(seal.certificate, "suspended", reason="under investigation")
    Judge(ca, registry).refused(sealed, "suspended", "suspended", "under investigation")


def test_certificate_unknown_to_the_registry_is_refused(ca: CA, sealed: bytes) -> None:
    Judge(ca, Registry()).refused(sealed, "unknown_certificate", "no record of this seal certificate")


def test_unknown_registry_state_fails_closed(ca: CA, seal: Seal, sealed: bytes) -> None:
    registry = Registry().add(seal.certificate, "retired")
    Judge(ca, registry).refused(sealed, "unknown_certificate", "unknown state")


# -- not a sealed PDF at all ---------------------------------------------------------------------


def test_unsigned_pdf_is_refused(judge: Judge) -> None:
    judge.refused(simple_pdf(), "no_signature", "carries no seal")


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage bytes, not a PDF at all", b"%PDF-1.7\n" + b"\x00" * 500, bytes(range(256)) * 8],
    ids=["empty", "text", "header-only", "binary"],
)
def test_garbage_is_refused(judge: Judge, data: bytes) -> None:
    judge.refused(data, "not_pdf", "not a readable PDF")


def test_truncated_sealed_pdf_is_refused(judge: Judge, sealed: bytes) -> None:
    verdict = judge(sealed[: len(sealed) // 2])
    assert not verdict.valid and verdict.codes[0] in ("not_pdf", "signature_invalid"), verdict


def test_encrypted_pdf_is_refused(judge: Judge) -> None:
    judge.refused(simple_pdf(encrypt_with="secret"), "not_pdf", "encrypted")


def test_too_large_is_refused_before_parsing(judge: Judge) -> None:
    judge.refused(b"%PDF-1.7\n" + b"x" * MAX_SEALED_PDF_BYTES, "too_large", "the limit is")


def test_no_manipulation_raises(judge: Judge, sealed: bytes) -> None:
    """Bytes flipped all over the file: always a verdict, valid only if the flip missed the signed bytes."""
    logging.getLogger("pyhanko").setLevel(logging.CRITICAL)  # pyHanko logs each broken file at length
    _, gap_start, gap_end, _ = byte_range(sealed)
    for at in range(0, len(sealed), max(1, len(sealed) // 97)):
        forged = sealed[:at] + bytes([sealed[at] ^ 0x20]) + sealed[at + 1 :]
        verdict = judge(forged)
        if verdict.valid:
            assert gap_start <= at < gap_end, at  # only the unsigned /Contents padding may vary
    for length in range(0, len(sealed), max(1, len(sealed) // 23)):
        assert not judge(sealed[:length]).valid, length


# -- long-term validation updates keep the seal valid ---------------------------------------------


def asn1(certificate: x509.Certificate) -> Any:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))


@pytest.fixture(scope="module")
def crl_context(ca: CA) -> ValidationContext:
    crl = issue_crl(
        ca.backend, ca.key, ca.certificate, revoked=[], crl_number=1,
        this_update=SEALED_AT, next_update=SEALED_AT + timedelta(days=7),
    )  # fmt: skip
    return ValidationContext(
        trust_roots=[asn1(ca.certificate)],
        crls=[crl.public_bytes(Encoding.DER)],
        allow_fetching=False,
        revocation_mode="hard-fail",
        moment=NOW,
    )


def with_dss(pdf: bytes, context: ValidationContext) -> bytes:
    reader = PdfFileReader(io.BytesIO(pdf))
    out = io.BytesIO()
    asyncio.run(async_add_validation_info(reader.embedded_signatures[0], context, output=out))
    return out.getvalue()


@pytest.fixture(scope="module")
def timestamper() -> DummyTimeStamper:
    return timestamp_authority("Yinxin test TSA")[0]


def with_document_timestamp(pdf: bytes, timestamper: DummyTimeStamper) -> bytes:
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    out = io.BytesIO()
    asyncio.run(signers.PdfTimeStamper(timestamper).async_timestamp_pdf(writer, "sha256", output=out))
    return out.getvalue()


def test_dss_update_keeps_the_seal_valid(judge: Judge, sealed: bytes, crl_context: ValidationContext) -> None:
    ltv = with_dss(sealed, crl_context)
    assert b"/DSS" in ltv[len(sealed) :] and b"/CRLs" in ltv[len(sealed) :]
    verdict = judge(ltv)
    assert verdict.valid, verdict.reasons
    assert verdict.seal is not None and verdict.seal.coverage == "entire_revision"
    assert verdict.seal.modification_level == "lta_updates"


def test_document_timestamp_and_dss_keep_the_seal_valid(
    judge: Judge, sealed: bytes, crl_context: ValidationContext, timestamper: DummyTimeStamper
) -> None:
    stamped = with_document_timestamp(with_dss(sealed, crl_context), timestamper)
    verdict = judge(stamped)
    assert verdict.valid, verdict.reasons
    assert len(verdict.signatures) == 1  # the document timestamp is not a seal


def test_change_after_an_ltv_update_is_refused(
    judge: Judge, sealed: bytes, crl_context: ValidationContext
) -> None:
    forged = edit(with_dss(sealed, crl_context), lambda w: w.insert_page(page_object(w, "an extra page", A4)))
    judge.refused(forged, "modified", "pages were added")


def test_change_hidden_inside_a_dss_update_is_refused(
    judge: Judge, sealed: bytes, crl_context: ValidationContext, ca: CA
) -> None:
    # One revision with genuine validation data *and* an overlay: LTV in name only.
    def dss_and_overlay(writer: IncrementalPdfFileWriter) -> None:
        reader = PdfFileReader(io.BytesIO(sealed))
        DocumentSecurityStore.supply_dss_in_writer(
            writer,
            reader.embedded_signatures[0].pkcs7_content,
            certs=[asn1(ca.certificate)],
            crls=list(crl_context.crls),
        )
        overlay = b"1 1 1 rg 60 740 480 40 re f BT /F1 18 Tf 0 0 0 rg 72 760 Td (Forged) Tj ET"
        writer.add_stream_to_page(0, writer.add_object(generic.StreamObject(stream_data=overlay)))

    judge.refused(edit(sealed, dss_and_overlay), "modified", "changed after sealing")


def test_ps256_and_eddsa_seals_verify(soft: SoftwareBackend, ca: CA) -> None:
    for algorithm in (SignatureAlgorithm.PS256, SignatureAlgorithm.EDDSA):
        other = make_seal(ca, algorithm)
        verdict = Judge(ca, Registry().add(other.certificate))(other.seal(simple_pdf()))
        assert verdict.valid, (algorithm, verdict.reasons)
