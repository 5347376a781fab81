"""Helpers for the key-management tests: officers, approvals, and independent signature checks.

The independent checks use ``cryptography`` (and, for SoftHSM2, a raw python-pkcs11
session) rather than our own ``signing`` package, so a bug there cannot hide itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta, timezone
from typing import TYPE_CHECKING, Any

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, ObjectClass
from sqlalchemy import func, select

from tests._builders import example
from vault import Vault
from vault._approvals import ApprovalRequest
from vault._models import AuditEventRecord, LicenceRecord
from vault._officers import Officer, Role
from vault._types import KeyInfo, Licence

if TYPE_CHECKING:
    from tests.conftest import SoftHSMToken

__all__ = [
    "CST",
    "DEPT",
    "PASSWORD",
    "active_licence_key",
    "approve",
    "approvers",
    "audit_text",
    "b64url_decode",
    "b64url_encode",
    "enrol",
    "issue",
    "licence_count",
    "private_key_labels",
    "raw_session",
    "security_officers",
    "spki_sha256",
    "token_serial",
    "verify_es256_jws",
]

DEPT = "11110101000000123B"  # the issuer of the first example licence type (holder kind 001)
PASSWORD = "correct horse battery"
CST = timezone(timedelta(hours=8))
SECURITY_OFFICER_NAMES = ("zhang.wei", "li.na", "wang.fang", "zhao.lei")


# ---- vault helpers ----------------------------------------------------------------------------


def issue(vault: Vault, **changes: Any) -> Licence:
    return vault.issue(example(vault, **changes), actor="operator-a").licence


def active_licence_key(vault: Vault, department: str = DEPT) -> KeyInfo:
    (key,) = [
        k
        for k in vault.list_keys()
        if k.purpose == "licence-signing" and k.department_code == department and k.state == "active"
    ]
    return key


def licence_count(vault: Vault) -> int:
    with vault.db.read() as s:
        return int(s.execute(select(func.count()).select_from(LicenceRecord)).scalar_one())


def audit_text(vault: Vault) -> list[str]:
    """Every stored audit event as one text (all columns), for "never appears in the log" checks."""
    with vault.db.read() as s:
        rows = s.execute(select(AuditEventRecord).order_by(AuditEventRecord.seq)).scalars().all()
        return [f"{r.seq}|{r.at}|{r.actor}|{r.action}|{r.subject}|{r.details}" for r in rows]


def enrol(vault: Vault, name: str, role: str = Role.SECURITY_OFFICER, *, acting: Officer | None) -> Officer:
    """Enrol *name* with the test password, and log in as them (as the CLI does per command)."""
    vault.add_officer(name, role, password=PASSWORD, acting=acting, actor="test")
    return vault.officer_login(name, PASSWORD)


def security_officers(vault: Vault, count: int) -> list[Officer]:
    """*count* security officers, logged in: the first enrolled in setup mode, the rest by the first."""
    first = enrol(vault, SECURITY_OFFICER_NAMES[0], acting=None)
    return [first] + [enrol(vault, name, acting=first) for name in SECURITY_OFFICER_NAMES[1:count]]


def approve(
    vault: Vault, operation: str, params: Mapping[str, Any], officers: Sequence[Officer]
) -> ApprovalRequest:
    """The first officer requests, each of the others approves; the last decision is returned."""
    request = vault.approvals.request(operation, params, officers[0])
    for officer in officers[1:]:
        request = vault.approvals.approve(request.id, officer)
    return request


def approvers(actor: str) -> set[str]:
    """The officers an operation's audit actor names (``officers:a,b``); order is not significant."""
    assert actor.startswith("officers:"), actor
    return set(actor.removeprefix("officers:").split(","))


# ---- independent cryptography -------------------------------------------------------------------


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _ec_public_key(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
    x = int.from_bytes(b64url_decode(jwk["x"]), "big")
    y = int.from_bytes(b64url_decode(jwk["y"]), "big")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def spki_sha256(jwk: Mapping[str, Any]) -> str:
    """SHA-256 of the SubjectPublicKeyInfo DER of a P-256 public JWK, built with ``cryptography``."""
    der = _ec_public_key(jwk).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def verify_es256_jws(token: str, jwk: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, payload) of a compact ES256 JWS whose signature verifies under *jwk*.

    RFC 7515 §5.2 by hand: the signing input is ``header.payload`` as sent; an ES256
    signature is r || s (RFC 7518 §3.4), DER-encoded here for ``cryptography``.
    Raises ``cryptography.exceptions.InvalidSignature`` when it does not verify.
    """
    header_b64, payload_b64, signature_b64 = token.split(".")
    signature = b64url_decode(signature_b64)
    assert len(signature) == 64
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    _ec_public_key(jwk).verify(der, f"{header_b64}.{payload_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    return json.loads(b64url_decode(header_b64)), json.loads(b64url_decode(payload_b64))


# ---- SoftHSM2, seen from outside the backend ---------------------------------------------------------


@contextmanager
def raw_session(token: SoftHSMToken) -> Iterator[pkcs11.Session]:
    """A plain python-pkcs11 session on the token, beside the backend.

    The backend is logged in, and a login belongs to the whole application
    (PKCS#11 v2.40 §5.6), so this session sees private objects without a PIN.
    """
    lib = pkcs11.lib(token.module)
    with lib.get_token(token_label=token.label).open() as session:
        yield session


def private_key_labels(token: SoftHSMToken) -> set[str]:
    """Labels of every private key object on the token."""
    with raw_session(token) as session:
        return {
            obj[Attribute.LABEL] for obj in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        }


def token_serial(token: SoftHSMToken) -> str:
    with raw_session(token) as session:
        serial = session.token.serial
    return (serial.decode() if isinstance(serial, bytes) else str(serial)).strip()
