"""Formats Yinxin signs and verifies: licence tokens, QR codes, status lists, X.509, sealed PDFs.

A licence token is a JWS compact serialisation (RFC 7515 §7.1) whose protected
header is exactly ``{"alg", "kid", "typ": "licence+jwt"}`` and whose payload is
the licence's JWT claims set (RFC 7519)::

    token = sign_licence_token(backend, key_ref, claims)       # hsm signs
    verdict = verify_token(token, TrustStore(keys), now=clock())
    verdict.valid, verdict.codes, verdict.reasons

Verification never trusts the token to say how to check it: the key is found
by ``kid`` in a :class:`TrustStore`, and the algorithm is the one bound to that
key (:class:`TrustedKey`). Public keys travel as JWK/JWKS (:func:`public_jwk`,
:func:`jwks_document`, :func:`trusted_key_from_jwk`), so any standard JOSE
library can verify our tokens.

X.509 for Yinxin's CA (root and seal certificates, CRLs) is built with asn1crypto and
signed through the key backend (:mod:`signing._x509`); PDFs are sealed with pyHanko
through :class:`BackendSigner` (:func:`seal_pdf`) and judged by :func:`verify_sealed_pdf`.

This package never opens key-backend sessions, reads private keys or touches a
database; it imports only ``schemas`` and ``hsm``.
"""

from __future__ import annotations

from ._access_token import (
    ACCESS_TOKEN_AUDIENCE,
    ACCESS_TOKEN_ISSUER,
    ACCESS_TOKEN_TYP,
    MAX_ACCESS_TOKEN_BYTES,
    InvalidAccessToken,
    check_access_token_times,
    sign_access_token,
    verify_access_token,
)
from ._fonts import find_cjk_font, font_missing_chars, prepare_cjk_font
from ._jwk import jwks_document, public_jwk, trusted_key_from_jwk
from ._jws import MAX_TOKEN_BYTES, TOKEN_TYP, VERDICT_CODES, b64url_decode
from ._licence_pdf import LicenceFace, RenderedLicence, render_licence_pdf
from ._pdf_seal import (
    MAX_PDF_BYTES,
    MAX_SEALED_PDF_BYTES,
    BackendSigner,
    SealCredentials,
    StampPlacement,
    seal_pdf,
)
from ._pdf_verify import (
    PDF_VERDICT_CODES,
    PdfSignatureVerdict,
    PdfVerdict,
    SealCertificateStatus,
    verify_sealed_pdf,
)
from ._presentation import (
    MAX_PRESENTATION_BYTES,
    PRESENTATION_TYP,
    sign_presentation,
    sign_presentations,
    verify_presentation,
)
from ._qr import QR_BORDER, QR_ERROR_CORRECTION, QRImage, presentation_url, qr_png, qr_svg, qr_version
from ._record import (
    CEREMONY_TYP,
    CHECKPOINT_TYP,
    RecordRejected,
    record_kid,
    sign_record,
    verify_record,
)
from ._seal_image import MAX_SEAL_IMAGE_BYTES, load_seal_image, render_seal_image
from ._signature import verify_signature
from ._status_list import (
    MAX_STATUS_LIST_BYTES,
    MAX_STATUS_LIST_TOKEN_BYTES,
    STATUS_LIST_MEDIA_TYPE,
    STATUS_LIST_TYP,
    StatusList,
    StatusListRejected,
    StatusType,
    decode_status_list,
    encode_status_list,
    pack_statuses,
    sign_status_list_token,
    status_at,
    verify_status_list_token,
)
from ._token import TokenVerdict, sign_licence_token, sign_licence_tokens, verify_token
from ._trust import TrustedKey, TrustStore
from ._x509 import (
    REVOCATION_REASONS,
    RevokedCertificate,
    certificate_fingerprint,
    issue_crl,
    issue_root_certificate,
    issue_seal_certificate,
    random_serial,
    sign_for_x509,
    verify_crl_signature,
    verify_issued_by,
    x509_signature_algorithm,
)

__all__ = [
    "ACCESS_TOKEN_AUDIENCE",
    "ACCESS_TOKEN_ISSUER",
    "ACCESS_TOKEN_TYP",
    "CEREMONY_TYP",
    "CHECKPOINT_TYP",
    "MAX_ACCESS_TOKEN_BYTES",
    "MAX_PDF_BYTES",
    "MAX_PRESENTATION_BYTES",
    "MAX_SEALED_PDF_BYTES",
    "MAX_SEAL_IMAGE_BYTES",
    "MAX_STATUS_LIST_BYTES",
    "MAX_STATUS_LIST_TOKEN_BYTES",
    "MAX_TOKEN_BYTES",
    "PDF_VERDICT_CODES",
    "PRESENTATION_TYP",
    "QR_BORDER",
    "QR_ERROR_CORRECTION",
    "REVOCATION_REASONS",
    "STATUS_LIST_MEDIA_TYPE",
    "STATUS_LIST_TYP",
    "TOKEN_TYP",
    "VERDICT_CODES",
    "BackendSigner",
    "InvalidAccessToken",
    "LicenceFace",
    "PdfSignatureVerdict",
    "PdfVerdict",
    "QRImage",
    "RecordRejected",
    "RenderedLicence",
    "RevokedCertificate",
    "SealCertificateStatus",
    "SealCredentials",
    "StampPlacement",
    "StatusList",
    "StatusListRejected",
    "StatusType",
    "TokenVerdict",
    "TrustStore",
    "TrustedKey",
    "b64url_decode",
    "certificate_fingerprint",
    "check_access_token_times",
    "decode_status_list",
    "encode_status_list",
    "find_cjk_font",
    "font_missing_chars",
    "issue_crl",
    "issue_root_certificate",
    "issue_seal_certificate",
    "jwks_document",
    "load_seal_image",
    "pack_statuses",
    "prepare_cjk_font",
    "presentation_url",
    "public_jwk",
    "qr_png",
    "qr_svg",
    "qr_version",
    "random_serial",
    "record_kid",
    "render_licence_pdf",
    "render_seal_image",
    "seal_pdf",
    "sign_access_token",
    "sign_for_x509",
    "sign_licence_token",
    "sign_licence_tokens",
    "sign_presentation",
    "sign_presentations",
    "sign_record",
    "sign_status_list_token",
    "status_at",
    "trusted_key_from_jwk",
    "verify_access_token",
    "verify_crl_signature",
    "verify_issued_by",
    "verify_presentation",
    "verify_record",
    "verify_sealed_pdf",
    "verify_signature",
    "verify_status_list_token",
    "verify_token",
    "x509_signature_algorithm",
]
