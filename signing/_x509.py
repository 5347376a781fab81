"""X.509 for the internal CA: the root certificate, seal certificates and CRLs (RFC 5280).

``cryptography``'s builders need the private key object, and ours never leave
the key backend. So the to-be-signed structures (TBSCertificate, TBSCertList)
are built with ``asn1crypto``, their DER is signed through
:meth:`hsm.KeyBackend.sign`, the JOSE-form signature is converted to the form
X.509 and CMS carry (:func:`sign_for_x509`), and the result is handed back as
``cryptography`` objects after checking that it verifies::

    root = issue_root_certificate(backend, ca_key, common_name="…电子印章根证书",
                                  organisation="…", serial=random_serial(),
                                  not_before=t0, not_after=t1)
    seal = issue_seal_certificate(backend, ca_key, root, seal_public_key, seal_name="…专用章",
                                  department_name="…", department_code=uscc, serial=random_serial(),
                                  not_before=t0, not_after=t2, crl_url="http://…/ca.crl")
    crl = issue_crl(backend, ca_key, root, revoked=[RevokedCertificate(serial, when, "keyCompromise")],
                    crl_number=1, this_update=t3, next_update=t4)

Seal certificates carry no extendedKeyUsage: poppler and NSS refuse a
document-signing certificate whose EKU list lacks the purpose they look for,
and keyUsage digitalSignature + nonRepudiation already says what the key is for.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from asn1crypto import crl as asn1_crl
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from schemas.errors import BackendError, InvalidInput, UnsupportedAlgorithm
from schemas.uscc import validate_uscc

from ._signature import MIN_RSA_BITS

__all__ = [
    "MAX_SERIAL",
    "REVOCATION_REASONS",
    "RevokedCertificate",
    "certificate_fingerprint",
    "issue_crl",
    "issue_root_certificate",
    "issue_seal_certificate",
    "random_serial",
    "sign_for_x509",
    "verify_crl_signature",
    "verify_issued_by",
    "x509_signature_algorithm",
]

#: Largest serial (and cRLNumber): a positive INTEGER of at most 20 octets (RFC 5280 §4.1.2.2, §5.2.3).
MAX_SERIAL: Final = (1 << 159) - 1

#: CRL entry reasons (RFC 5280 §5.3.1), by their ASN.1 names (which are also the values of
#: ``cryptography.x509.ReasonFlags``), mapped to asn1crypto's names. removeFromCRL is left out:
#: it belongs to delta CRLs, which this CA does not issue. certificateHold is for suspended seals.
REVOCATION_REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "unspecified": "unspecified",
        "keyCompromise": "key_compromise",
        "cACompromise": "ca_compromise",
        "affiliationChanged": "affiliation_changed",
        "superseded": "superseded",
        "cessationOfOperation": "cessation_of_operation",
        "certificateHold": "certificate_hold",
        "privilegeWithdrawn": "privilege_withdrawn",
        "aACompromise": "aa_compromise",
    }
)

# ub-common-name and ub-organization-name (RFC 5280 Appendix A.1).
_NAME_MAX_CHARS: Final = 64
# ETSI EN 319 412-1 §5.1.4: "NTR" + ISO 3166 country code + "-" + the national trade register number.
_ORGANISATION_ID_PREFIX: Final = "NTRCN-"
_URL_SCHEMES: Final = frozenset({"http", "https", "ldap"})


# -- signatures ---------------------------------------------------------------------------------


def x509_signature_algorithm(algorithm: SignatureAlgorithm) -> Any:
    """The ``asn1crypto`` AlgorithmIdentifier for certificates, CRLs and CMS signed with *algorithm*.

    ES256 → ecdsa-with-SHA256 with absent parameters (RFC 5758 §3.2); EdDSA → id-Ed25519 with
    absent parameters (RFC 8410 §3); PS256 → id-RSASSA-PSS with RSASSA-PSS-params SHA-256,
    MGF1 with SHA-256, salt length 32, trailer field 1 (RFC 4055 §3.1; the trailer field is the
    DEFAULT and so left out of the DER). The hash identifiers carry NULL parameters, as RFC 4055
    §2.1 requires and as OpenSSL and ``cryptography`` write them.
    """
    if algorithm is SignatureAlgorithm.ES256:
        return asn1_algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"})
    if algorithm is SignatureAlgorithm.EDDSA:
        return asn1_algos.SignedDigestAlgorithm({"algorithm": "ed25519"})
    if algorithm is SignatureAlgorithm.PS256:
        sha256 = {"algorithm": "sha256", "parameters": asn1_core.Null()}
        return asn1_algos.SignedDigestAlgorithm(
            {
                "algorithm": "rsassa_pss",
                "parameters": {
                    "hash_algorithm": sha256,
                    "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": dict(sha256)},
                    "salt_length": 32,
                },
            }
        )
    raise UnsupportedAlgorithm(
        f"algorithm {algorithm.value!r} cannot sign certificates yet: use ES256, EdDSA or PS256"
    )


def sign_for_x509(backend: KeyBackend, key: KeyRef, tbs_der: bytes) -> bytes:
    """Sign *tbs_der* with *key* and return the signature value X.509 and CMS carry.

    The backend returns JOSE forms (RFC 7518 §3.4); X.509 wants ECDSA as a DER
    Ecdsa-Sig-Value (RFC 5480 §2.2 / RFC 3279 §2.2.3). Ed25519 (RFC 8410 §6) and
    RSASSA-PSS (RFC 4055 §3) signatures are the same octets in both worlds.
    """
    x509_signature_algorithm(key.algorithm)  # refuse an unsupported algorithm before the HSM call
    signature = backend.sign(key, tbs_der)
    if key.algorithm is SignatureAlgorithm.ES256:
        if len(signature) != 64:
            raise BackendError(f"the key backend returned a {len(signature)}-byte ES256 signature, not 64")
        return encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
    if key.algorithm is SignatureAlgorithm.EDDSA and len(signature) != 64:
        raise BackendError(f"the key backend returned a {len(signature)}-byte Ed25519 signature, not 64")
    return signature


# -- checked inputs -----------------------------------------------------------------------------


def _utc(value: datetime, what: str) -> datetime:
    """*value* in UTC without microseconds; naive datetimes are refused (their zone is a guess)."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} is a naive datetime: give it a time zone, e.g. tzinfo=datetime.UTC")
    # X.509 times have whole seconds (RFC 5280 §4.1.2.5.2: no fractional seconds).
    return value.astimezone(UTC).replace(microsecond=0)


def _time(value: datetime) -> Any:
    # RFC 5280 §4.1.2.5 (and §5.1.2.4 for CRLs): UTCTime through 2049, GeneralizedTime from 2050
    # (and before 1950, which UTCTime's two-digit year cannot say).
    if 1950 <= value.year <= 2049:
        return asn1_x509.Time({"utc_time": value})
    return asn1_x509.Time({"general_time": value})


def _validity(not_before: datetime, not_after: datetime) -> tuple[datetime, datetime]:
    start = _utc(not_before, "not_before")
    end = _utc(not_after, "not_after")
    if start >= end:
        raise InvalidInput(
            f"not_before ({start.isoformat()}) must be earlier than not_after ({end.isoformat()})"
        )
    return start, end


def _serial(value: int, what: str = "serial") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer, not {type(value).__name__}")
    if not 0 < value <= MAX_SERIAL:
        raise InvalidInput(
            f"{what} must be a positive integer of at most 20 octets (1 … 2^159 - 1, RFC 5280 §4.1.2.2); "
            "use random_serial()"
        )
    return value


def _name_text(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InvalidInput(f"{what} is empty")
    if len(text) > _NAME_MAX_CHARS:
        raise InvalidInput(
            f"{what} has {len(text)} characters; X.509 allows {_NAME_MAX_CHARS} (RFC 5280 A.1)"
        )
    if any(unicodedata.category(character) in ("Cc", "Cf", "Cs") for character in text):
        raise InvalidInput(f"{what} contains control or format characters")
    return text


def _crl_url(value: str) -> str:
    if not isinstance(value, str) or not value.isascii() or any(c.isspace() for c in value):
        raise InvalidInput("crl_url must be an ASCII URL without spaces (an IA5String, RFC 5280 §4.2.1.13)")
    parts = urlsplit(value)
    if parts.scheme not in _URL_SCHEMES or not parts.netloc:
        raise InvalidInput(f"crl_url {value!r} must be an absolute http:// (or ldap://) URL")
    return value


_CertifiedKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | Ed25519PublicKey


def _certifiable(public_key: object, what: str) -> _CertifiedKey:
    """*public_key* if it is a key our three algorithms use (P-256, Ed25519, RSA ≥ 2048)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise InvalidInput(f"{what} is on curve {public_key.curve.name}; only P-256 is supported")
        return public_key
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise InvalidInput(f"{what} is an RSA-{public_key.key_size} key, too small: use RSA-3072")
        return public_key
    if isinstance(public_key, Ed25519PublicKey):
        return public_key
    raise InvalidInput(f"{what} is a {type(public_key).__name__}: use an EC P-256, Ed25519 or RSA key")


def _spki_der(public_key: _CertifiedKey) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _key_identifier(public_key: _CertifiedKey) -> bytes:
    # RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's value, as
    # cryptography computes it, so keyIdentifiers match what other tools derive.
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


# -- names and extensions -----------------------------------------------------------------------


def _name(*attributes: tuple[str, str]) -> Any:
    """An RDNSequence, one attribute per RDN, in the order given.

    countryName is a PrintableString (RFC 5280 A.1); everything else a UTF8String
    (RFC 5280 §4.1.2.4: new certificates use UTF8String for DirectoryString).
    """
    rdns = []
    for attribute, text in attributes:
        # asn1crypto types every one of these as a DirectoryString CHOICE; printable_string gives
        # countryName the PrintableString encoding X520countryName requires.
        string_type = "printable_string" if attribute == "country_name" else "utf8_string"
        value = asn1_x509.DirectoryString(name=string_type, value=text)
        rdns.append(asn1_x509.RelativeDistinguishedName([{"type": attribute, "value": value}]))
    return asn1_x509.Name(name="", value=asn1_x509.RDNSequence(rdns))


def _extension(extn_id: str, value: Any, *, critical: bool = False) -> dict[str, Any]:
    extension: dict[str, Any] = {"extn_id": extn_id, "extn_value": value}
    if critical:  # DER leaves out a DEFAULT FALSE (X.690 §11.5)
        extension["critical"] = True
    return extension


@dataclass(frozen=True, slots=True)
class _Issuer:
    name_der: bytes
    key_identifier: bytes
    public_key: _CertifiedKey


def _issuer(
    backend: KeyBackend,
    ca_key: KeyRef,
    ca_certificate: x509.Certificate,
    usage: Literal["key_cert_sign", "crl_sign"],
) -> _Issuer:
    """Check that *ca_certificate* is a CA certificate for *usage* whose key is *ca_key*."""
    if not isinstance(ca_certificate, x509.Certificate):
        raise InvalidInput(
            f"ca_certificate must be a cryptography Certificate, not {type(ca_certificate).__name__}"
        )
    try:
        extensions = ca_certificate.extensions
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
        ski_extension = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise InvalidInput(f"the CA certificate has no {exc.oid.dotted_string} extension") from exc
    except ValueError as exc:  # cryptography: a malformed or duplicated extension
        raise InvalidInput(f"the CA certificate's extensions do not parse: {exc}") from exc
    if not constraints.ca:
        raise InvalidInput("the CA certificate has basicConstraints CA:FALSE: it cannot issue")
    allowed = key_usage.key_cert_sign if usage == "key_cert_sign" else key_usage.crl_sign
    if not allowed:
        shown = "keyCertSign" if usage == "key_cert_sign" else "cRLSign"
        raise InvalidInput(f"the CA certificate's keyUsage lacks {shown} (RFC 5280 §4.2.1.3)")
    ca_public_key = _certifiable(ca_certificate.public_key(), "the CA certificate's key")
    if _spki_der(_certifiable(backend.public_key(ca_key), f"key {ca_key.kid!r}")) != _spki_der(ca_public_key):
        raise InvalidInput(f"key {ca_key.kid!r} is not the key certified by the CA certificate")
    # The issuer field must be the CA's subject byte for byte (RFC 5280 §7.1 compares names, and
    # some verifiers compare octets), so it is taken from the certificate's own DER.
    parsed = asn1_x509.Certificate.load(ca_certificate.public_bytes(Encoding.DER))
    return _Issuer(parsed["tbs_certificate"]["subject"].dump(), ski_extension.digest, ca_public_key)


def _load_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:  # we built it, so this is our defect, not the caller's
        raise BackendError(f"the certificate built does not parse: {exc}") from exc


def _sign_certificate(backend: KeyBackend, key: KeyRef, tbs: dict[str, Any]) -> bytes:
    tbs_certificate = asn1_x509.TbsCertificate(
        {"version": "v3", "signature": x509_signature_algorithm(key.algorithm), **tbs}
    )
    signature = sign_for_x509(backend, key, tbs_certificate.dump())
    certificate = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs_certificate,
            "signature_algorithm": x509_signature_algorithm(key.algorithm),
            "signature_value": signature,
        }
    )
    return bytes(certificate.dump())


def _checked(certificate: x509.Certificate, issuer: x509.Certificate) -> x509.Certificate:
    # A key backend that signs with the wrong key or mangles a signature would otherwise hand
    # out a certificate nobody can verify; catching it here costs one verification.
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise BackendError("the key backend's signature on the new certificate does not verify") from exc
    return certificate


# -- issuing ------------------------------------------------------------------------------------


def random_serial() -> int:
    """A random 159-bit serial: top bit set, so it always encodes in exactly 20 octets.

    158 random bits from the OS CSPRNG, well above the 64 bits CA/Browser Forum BR §7.1 asks for.
    """
    return (1 << 158) | secrets.randbits(158)


def issue_root_certificate(
    backend: KeyBackend,
    key: KeyRef,
    *,
    common_name: str,
    organisation: str,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A self-signed v3 root for the seal CA, signed by *key* in *backend*.

    Subject (= issuer) ``C=CN, O=organisation, CN=common_name``; basicConstraints
    critical CA:TRUE pathLenConstraint 0 (it issues end-entity seal certificates only);
    keyUsage critical keyCertSign + cRLSign; subjectKeyIdentifier; authorityKeyIdentifier =
    its own key identifier (RFC 5280 §4.2.1.1 allows leaving it out of a self-signed
    certificate, but path builders use it).
    """
    attributes = (
        ("country_name", "CN"),
        ("organization_name", _name_text(organisation, "organisation")),
        ("common_name", _name_text(common_name, "common_name")),
    )
    start, end = _validity(not_before, not_after)
    public_key = _certifiable(backend.public_key(key), f"key {key.kid!r}")
    key_identifier = _key_identifier(public_key)
    der = _sign_certificate(
        backend,
        key,
        {
            "serial_number": _serial(serial),
            "issuer": _name(*attributes),
            "validity": {"not_before": _time(start), "not_after": _time(end)},
            "subject": _name(*attributes),
            "subject_public_key_info": asn1_keys.PublicKeyInfo.load(_spki_der(public_key)),
            "extensions": [
                _extension("basic_constraints", {"ca": True, "path_len_constraint": 0}, critical=True),
                _extension("key_usage", {"key_cert_sign", "crl_sign"}, critical=True),
                _extension("key_identifier", key_identifier),
                _extension("authority_key_identifier", {"key_identifier": key_identifier}),
            ],
        },
    )
    certificate = _load_certificate(der)
    return _checked(certificate, certificate)


def issue_seal_certificate(
    backend: KeyBackend,
    ca_key: KeyRef,
    ca_certificate: x509.Certificate,
    subject_public_key: PublicKeyTypes,
    *,
    seal_name: str,
    department_name: str,
    department_code: str,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    crl_url: str,
) -> x509.Certificate:
    """A seal (end-entity) certificate for *subject_public_key*, issued by the CA.

    Subject ``C=CN, O=department_name, organizationIdentifier=NTRCN-<USCC>, CN=seal_name``
    (2.5.4.97 in the ETSI EN 319 412-1 §5.1.4 semantics-identifier style); issuer = the CA's
    subject, byte for byte; basicConstraints critical CA:FALSE; keyUsage critical
    digitalSignature + nonRepudiation; subjectKeyIdentifier; authorityKeyIdentifier = the
    CA's key identifier; cRLDistributionPoints = *crl_url*. No extendedKeyUsage.

    Raises ``InvalidInput`` when not_after is later than the CA certificate's, when the
    CA certificate cannot issue or is not *ca_key*'s, and for malformed names, codes, URLs,
    serials and times (``InvalidUSCC`` for a bad *department_code*).
    """
    issuer = _issuer(backend, ca_key, ca_certificate, "key_cert_sign")
    code = validate_uscc(department_code)
    subject = _name(
        ("country_name", "CN"),
        ("organization_name", _name_text(department_name, "department_name")),
        ("organization_identifier", _ORGANISATION_ID_PREFIX + code),
        ("common_name", _name_text(seal_name, "seal_name")),
    )
    start, end = _validity(not_before, not_after)
    ca_end = ca_certificate.not_valid_after_utc
    if end > ca_end:
        raise InvalidInput(
            f"not_after ({end.isoformat()}) is later than the CA certificate's ({ca_end.isoformat()}): "
            "a seal certificate cannot outlive its CA"
        )
    seal_key = _certifiable(subject_public_key, "subject_public_key")
    url = asn1_x509.GeneralName(name="uniform_resource_identifier", value=_crl_url(crl_url))
    distribution_points = [{"distribution_point": {"full_name": [url]}}]
    der = _sign_certificate(
        backend,
        ca_key,
        {
            "serial_number": _serial(serial),
            "issuer": asn1_x509.Name.load(issuer.name_der),
            "validity": {"not_before": _time(start), "not_after": _time(end)},
            "subject": subject,
            "subject_public_key_info": asn1_keys.PublicKeyInfo.load(_spki_der(seal_key)),
            "extensions": [
                _extension("basic_constraints", {"ca": False}, critical=True),  # DER: encodes as 30 00
                _extension("key_usage", {"digital_signature", "non_repudiation"}, critical=True),
                _extension("key_identifier", _key_identifier(seal_key)),
                _extension("authority_key_identifier", {"key_identifier": issuer.key_identifier}),
                _extension("crl_distribution_points", distribution_points),
            ],
        },
    )
    return _checked(_load_certificate(der), ca_certificate)


@dataclass(frozen=True, slots=True)
class RevokedCertificate:
    """One CRL entry: the certificate's serial, when it was revoked, and why.

    *reason* is an RFC 5280 §5.3.1 name (see :data:`REVOCATION_REASONS`); a suspended seal is
    ``"certificateHold"``.
    """

    serial: int
    revoked_at: datetime
    reason: str = "unspecified"

    def __post_init__(self) -> None:
        _serial(self.serial, "revoked certificate serial")
        _utc(self.revoked_at, "revoked_at")
        if self.reason not in REVOCATION_REASONS:
            raise InvalidInput(
                f"revocation reason {self.reason!r} is not one of {', '.join(REVOCATION_REASONS)} "
                "(RFC 5280 §5.3.1)"
            )


def _crl_entry(entry: RevokedCertificate) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "user_certificate": entry.serial,
        "revocation_date": _time(_utc(entry.revoked_at, "revoked_at")),
    }
    # RFC 5280 §5.3.1: the reasonCode extension SHOULD be absent rather than say unspecified.
    if entry.reason != "unspecified":
        fields["crl_entry_extensions"] = [_extension("crl_reason", REVOCATION_REASONS[entry.reason])]
    return fields


def issue_crl(
    backend: KeyBackend,
    ca_key: KeyRef,
    ca_certificate: x509.Certificate,
    *,
    revoked: Sequence[RevokedCertificate],
    crl_number: int,
    this_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """A v2 CRL (RFC 5280 §5) from the CA: entries sorted by serial, authorityKeyIdentifier, cRLNumber.

    Raises ``InvalidInput`` for a serial listed twice, a *crl_number* outside 0 … 2^159 - 1,
    *next_update* not after *this_update*, or a CA certificate that lacks cRLSign or is not
    *ca_key*'s.
    """
    issuer = _issuer(backend, ca_key, ca_certificate, "crl_sign")
    if isinstance(crl_number, bool) or not isinstance(crl_number, int) or not 0 <= crl_number <= MAX_SERIAL:
        raise InvalidInput("crl_number must be an integer from 0 to 2^159 - 1 (RFC 5280 §5.2.3)")
    start = _utc(this_update, "this_update")
    end = _utc(next_update, "next_update")
    if start >= end:
        raise InvalidInput(
            f"next_update ({end.isoformat()}) must be later than this_update ({start.isoformat()})"
        )
    for entry in revoked:
        if not isinstance(entry, RevokedCertificate):
            raise InvalidInput(f"revoked entries must be RevokedCertificate, not {type(entry).__name__}")
    entries = sorted(revoked, key=lambda entry: entry.serial)
    serials = [entry.serial for entry in entries]
    if len(set(serials)) != len(serials):
        raise InvalidInput("a serial is listed more than once in revoked")

    algorithm = x509_signature_algorithm(ca_key.algorithm)
    tbs: dict[str, Any] = {
        "version": "v2",
        "signature": algorithm,
        "issuer": asn1_x509.Name.load(issuer.name_der),
        "this_update": _time(start),
        "next_update": _time(end),
        "crl_extensions": [
            _extension("authority_key_identifier", {"key_identifier": issuer.key_identifier}),
            _extension("crl_number", crl_number),
        ],
    }
    if entries:  # RFC 5280 §5.1.2.6: absent, not empty, when nothing is revoked
        tbs["revoked_certificates"] = [_crl_entry(entry) for entry in entries]
    tbs_cert_list = asn1_crl.TbsCertList(tbs)
    signature = sign_for_x509(backend, ca_key, tbs_cert_list.dump())
    certificate_list = asn1_crl.CertificateList(
        {
            "tbs_cert_list": tbs_cert_list,
            "signature_algorithm": x509_signature_algorithm(ca_key.algorithm),
            "signature": signature,
        }
    )
    try:
        crl = x509.load_der_x509_crl(bytes(certificate_list.dump()))
    except ValueError as exc:
        raise BackendError(f"the CRL built does not parse: {exc}") from exc
    if not crl.is_signature_valid(issuer.public_key):
        raise BackendError("the key backend's signature on the new CRL does not verify")
    return crl


# -- checking -----------------------------------------------------------------------------------


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 over the certificate's DER, as lower-case hex (what ``openssl x509 -fingerprint`` shows)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def verify_issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> None:
    """Return if *issuer* directly issued *certificate*; raise ``InvalidInput`` otherwise.

    Checks that the issuer name matches the issuer's subject and that the signature
    verifies under the issuer's key (ECDSA, Ed25519 and RSASSA-PSS alike). Validity
    periods, extensions and revocation are path validation's business, not this check's.
    """
    try:
        certificate.verify_directly_issued_by(issuer)
    except InvalidSignature as exc:
        raise InvalidInput("the certificate's signature does not verify under the issuer's key") from exc
    except ValueError as exc:  # issuer name mismatch, or a signature algorithm that does not fit the key
        raise InvalidInput(f"the certificate was not issued by this issuer: {exc}") from exc
    except TypeError as exc:  # an issuer key type cryptography cannot verify with
        raise UnsupportedAlgorithm(f"cannot verify a certificate with this issuer's key: {exc}") from exc


def verify_crl_signature(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> None:
    """Return if *crl* names *issuer* and carries its valid signature; raise ``InvalidInput`` otherwise."""
    if crl.issuer.public_bytes() != issuer.subject.public_bytes():
        raise InvalidInput("the CRL's issuer is not this CA certificate's subject")
    valid = crl.is_signature_valid(_certifiable(issuer.public_key(), "the CA certificate's key"))
    if not valid:
        raise InvalidInput("the CRL's signature does not verify under the CA certificate's key")
