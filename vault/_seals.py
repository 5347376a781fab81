"""The CA and the seal registry (印章库): seal keys, certificates, images, states, the CRL.

A seal is a key in the backend (purpose ``seal``), an X.509 certificate issued by
Yinxin's CA (whose key, purpose ``ca``, is in the same backend) and the stamp image.
States: ``active`` → ``suspended`` ⇄ ``active``; ``active``/``suspended`` → ``revoked``
(final). Suspended seals appear on the CRL with reason certificateHold, revoked ones
with their RFC 5280 reason; neither can seal. Every change is one transaction with its
audit event, and re-issues the CRL in that same transaction.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from schemas.errors import (
    AlreadyExists,
    CANotInitialised,
    DepartmentNotFound,
    IllegalTransition,
    InvalidInput,
    NoActiveSeal,
    SealNotFound,
    SealNotUsable,
)
from signing import (
    REVOCATION_REASONS,
    PdfVerdict,
    RevokedCertificate,
    SealCertificateStatus,
    SealCredentials,
    StampPlacement,
    certificate_fingerprint,
    issue_crl,
    issue_root_certificate,
    issue_seal_certificate,
    load_seal_image,
    prepare_cjk_font,
    random_serial,
    render_seal_image,
    seal_pdf,
    verify_sealed_pdf,
)
from vault._audit import AuditEntry, AuditLog, lock_head
from vault._db import Database
from vault._keys import KEY_PURPOSE_CA, KEY_PURPOSE_SEAL, KeyRegistry
from vault._models import CertificateAuthorityRecord, DepartmentRecord, KeyRecord, SealRecord
from vault._seal_types import (
    CertificateAuthority,
    Seal,
    SealedDocument,
    SealSettings,
    SealState,
    font_cache_dir,
)
from vault._types import Clock

__all__ = ["SealRegistry"]

log = logging.getLogger("yinxin.vault")

_SEAL_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{2,30}$")
MAX_REASON_CHARS = 500


class SealRegistry:
    """Every CA and seal operation; each public method is one transaction."""

    def __init__(
        self,
        db: Database,
        backend: KeyBackend,
        keys: KeyRegistry,
        audit: AuditLog,
        clock: Clock,
        public_url: str,
        settings: SealSettings,
    ) -> None:
        self._db = db
        self._backend = backend
        self._keys = keys
        self._audit = audit
        self._clock = clock
        self._public_url = public_url.rstrip("/")
        self.settings = settings

    @property
    def crl_url(self) -> str:
        return f"{self._public_url}/v1/ca/crl"

    # ---- the CA -------------------------------------------------------------------

    def init_ca(
        self, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256, *, actor: str
    ) -> CertificateAuthority:
        """Generate the root CA key in the backend and its self-signed certificate (once)."""
        if algorithm is SignatureAlgorithm.EDDSA:
            # PDF validators (poppler/NSS, Adobe) still refuse Ed25519 certificate chains.
            raise InvalidInput("the CA key must be ES256 or PS256 (Ed25519 chains are not widely validated)")
        now = self._clock()
        with self._db.write() as s:
            # Serialise concurrent `ca init`s (PostgreSQL; SQLite's BEGIN IMMEDIATE already does):
            # the audit-chain head is the one row every writer locks.
            lock_head(s)
            existing = self._active_ca_row(s)
            if existing is not None:
                raise AlreadyExists(
                    f"the CA {existing.ca_id} already exists: `yinxin ca cert` prints its certificate"
                )
            info = self._keys.generate_for(
                s,
                KEY_PURPOSE_CA,
                department_code=None,
                algorithm=algorithm,
                kid_prefix="ca",
                actor=actor,
                now=now,
            )
            ref = KeyRef(info.kid, algorithm)
            not_after = now + timedelta(days=self.settings.ca_validity_days)
            cert = issue_root_certificate(
                self._backend,
                ref,
                common_name=self.settings.ca_common_name,
                organisation=self.settings.ca_organisation,
                serial=random_serial(),
                not_before=now - timedelta(minutes=5),
                not_after=not_after,
            )
            ca_id = f"ca-{now:%Y%m%d}-{secrets.token_hex(3)}"
            row = CertificateAuthorityRecord(
                ca_id=ca_id,
                kid=info.kid,
                certificate=cert.public_bytes(Encoding.DER),
                state="active",
                created_at=now,
                not_after=cert.not_valid_after_utc,
                crl_number=0,
                crl=None,
                crl_next_update=None,
            )
            s.add(row)
            self._audit.append(
                s,
                AuditEntry(
                    actor,
                    "ca.init",
                    ca_id,
                    {
                        "kid": info.kid,
                        "algorithm": algorithm.value,
                        "subject": cert.subject.rfc4514_string(),
                        "fingerprint": certificate_fingerprint(cert),
                        "not_after": cert.not_valid_after_utc.isoformat(),
                    },
                ),
                at=now,
            )
            self._reissue_crl(s, row, now)
            return self._to_ca(row, algorithm.value)

    def ca(self) -> CertificateAuthority:
        with self._db.read() as s:
            row = self._require_ca(s)
            return self._to_ca(row, self._keys.get(s, row.kid).algorithm)

    def crl(self) -> bytes:
        """The current CRL (DER), re-issued when it has used half of its validity."""
        now = self._clock()
        with self._db.read() as s:
            row = self._require_ca(s)
            if row.crl is not None and row.crl_next_update is not None and now < self._refresh_at(row):
                return row.crl
        with self._db.write() as s:
            row = self._require_ca(s, lock=True)
            if row.crl is None or row.crl_next_update is None or now >= self._refresh_at(row):
                self._reissue_crl(s, row, now)
            assert row.crl is not None
            return row.crl

    def _refresh_at(self, row: CertificateAuthorityRecord) -> datetime:
        assert row.crl_next_update is not None
        return row.crl_next_update - timedelta(hours=self.settings.crl_validity_hours / 2)

    def _reissue_crl(self, s: Session, ca_row: CertificateAuthorityRecord, now: datetime) -> None:
        rows = s.execute(
            select(SealRecord).where(
                SealRecord.ca_id == ca_row.ca_id,
                SealRecord.state.in_([SealState.REVOKED, SealState.SUSPENDED]),
            )
        ).scalars()
        revoked = [
            RevokedCertificate(
                serial=int(r.certificate_serial, 16),
                revoked_at=r.state_changed_at or now,
                reason="certificateHold"
                if r.state == SealState.SUSPENDED
                else (r.crl_reason or "unspecified"),
            )
            for r in rows
        ]
        ca_cert = x509.load_der_x509_certificate(ca_row.certificate)
        algorithm = SignatureAlgorithm.parse(self._keys.get(s, ca_row.kid).algorithm)
        next_update = now + timedelta(hours=self.settings.crl_validity_hours)
        crl = issue_crl(
            self._backend,
            KeyRef(ca_row.kid, algorithm),
            ca_cert,
            revoked=revoked,
            crl_number=ca_row.crl_number + 1,
            this_update=now,
            next_update=next_update,
        )
        ca_row.crl_number += 1
        ca_row.crl = crl.public_bytes(Encoding.DER)
        ca_row.crl_next_update = next_update
        s.flush()

    # ---- seals --------------------------------------------------------------------

    def create(
        self,
        department_code: str,
        name: str,
        *,
        image: bytes | None = None,
        algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256,
        actor: str,
    ) -> Seal:
        name = name.strip()
        if not _SEAL_NAME_RE.fullmatch(name):
            raise InvalidInput(
                "seal name must be 2-30 characters without control characters, "
                'e.g. "XX市市场监督管理局行政审批专用章"'
            )
        # The image first: a bad upload must not leave a key behind.
        image_png = load_seal_image(image) if image is not None else self._render_image(name)
        now = self._clock()
        with self._db.write() as s:
            dept = s.get(DepartmentRecord, department_code)
            if dept is None:
                raise DepartmentNotFound(
                    f"department {department_code} is not registered: add it with "
                    f"`yinxin dept add --code {department_code} --name NAME`"
                )
            ca_row = self._require_ca(s)
            ca_cert = x509.load_der_x509_certificate(ca_row.certificate)
            ca_alg = SignatureAlgorithm.parse(self._keys.get(s, ca_row.kid).algorithm)
            not_after = min(
                now + timedelta(days=self.settings.seal_validity_days), ca_cert.not_valid_after_utc
            )
            if not_after <= now + timedelta(days=1):
                raise SealNotUsable(
                    f"the CA certificate expires on {ca_cert.not_valid_after_utc:%Y-%m-%d}: "
                    "renew the CA before creating seals"
                )
            info = self._keys.generate_for(
                s,
                KEY_PURPOSE_SEAL,
                department_code=department_code,
                algorithm=algorithm,
                kid_prefix=f"{department_code}-seal",
                actor=actor,
                now=now,
            )
            cert = issue_seal_certificate(
                self._backend,
                KeyRef(ca_row.kid, ca_alg),
                ca_cert,
                self._backend.public_key(KeyRef(info.kid, algorithm)),
                seal_name=name,
                department_name=dept.name,
                department_code=department_code,
                serial=random_serial(),
                not_before=now - timedelta(minutes=5),
                not_after=not_after,
                crl_url=self.crl_url,
            )
            seal_id = f"seal-{secrets.token_hex(5)}"
            row = SealRecord(
                seal_id=seal_id,
                department_code=department_code,
                name=name,
                kid=info.kid,
                ca_id=ca_row.ca_id,
                certificate_serial=format(cert.serial_number, "X"),
                certificate=cert.public_bytes(Encoding.DER),
                fingerprint=certificate_fingerprint(cert),
                image_png=image_png,
                image_generated=image is None,
                state=SealState.ACTIVE,
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                created_at=now,
                state_changed_at=None,
                state_reason=None,
                crl_reason=None,
            )
            s.add(row)
            self._audit.append(
                s,
                AuditEntry(
                    actor,
                    "seal.create",
                    seal_id,
                    {
                        "department": department_code,
                        "name": name,
                        "kid": info.kid,
                        "algorithm": algorithm.value,
                        "certificate_serial": row.certificate_serial,
                        "fingerprint": row.fingerprint,
                        "not_after": row.not_after.isoformat(),
                        "image": "generated" if image is None else "supplied",
                        "image_sha256": hashlib.sha256(image_png).hexdigest(),
                    },
                ),
                at=now,
            )
            s.flush()
            return self._to_seal(s, row)

    def get(self, seal_id: str) -> Seal:
        with self._db.read() as s:
            return self._to_seal(s, self._require_seal(s, seal_id))

    def list(self, department_code: str | None = None) -> list[Seal]:
        with self._db.read() as s:
            query = select(SealRecord).order_by(SealRecord.created_at, SealRecord.seal_id)
            if department_code is not None:
                query = query.where(SealRecord.department_code == department_code)
            return [self._to_seal(s, r) for r in s.execute(query).scalars()]

    def active_seal(self, department_code: str) -> Seal:
        """The department's newest usable seal (for printed licences)."""
        now = self._clock()
        with self._db.read() as s:
            row = s.execute(
                select(SealRecord)
                .where(
                    SealRecord.department_code == department_code,
                    SealRecord.state == SealState.ACTIVE,
                    SealRecord.not_before <= now,
                    SealRecord.not_after > now,
                )
                .order_by(SealRecord.created_at.desc(), SealRecord.seal_id)
                .limit(1)
            ).scalar_one_or_none()
            if row is None:
                raise NoActiveSeal(
                    f"department {department_code} has no usable seal: create one with "
                    f'`yinxin seal create --dept {department_code} --name "…专用章"`'
                )
            return self._to_seal(s, row)

    def suspend(self, seal_id: str, reason: str, *, actor: str) -> Seal:
        return self._transition(seal_id, SealState.SUSPENDED, reason, None, actor)

    def reinstate(self, seal_id: str, reason: str, *, actor: str) -> Seal:
        return self._transition(seal_id, SealState.ACTIVE, reason, None, actor)

    def revoke(self, seal_id: str, reason: str, *, crl_reason: str = "unspecified", actor: str) -> Seal:
        if crl_reason not in REVOCATION_REASONS or crl_reason == "certificateHold":
            allowed = ", ".join(r for r in REVOCATION_REASONS if r != "certificateHold")
            raise InvalidInput(f"CRL reason {crl_reason!r} is not one of: {allowed}")
        return self._transition(seal_id, SealState.REVOKED, reason, crl_reason, actor)

    # Allowed transitions (target → sources) and their verbs; revocation is final.
    _ALLOWED: ClassVar[Mapping[str, tuple[str, ...]]] = {
        SealState.SUSPENDED: (SealState.ACTIVE,),
        SealState.ACTIVE: (SealState.SUSPENDED,),
        SealState.REVOKED: (SealState.ACTIVE, SealState.SUSPENDED),
    }
    _ACTIONS: ClassVar[Mapping[str, str]] = {
        SealState.SUSPENDED: "suspend",
        SealState.ACTIVE: "reinstate",
        SealState.REVOKED: "revoke",
    }

    def _transition(self, seal_id: str, target: str, reason: str, crl_reason: str | None, actor: str) -> Seal:
        reason = reason.strip()
        if not 1 <= len(reason) <= MAX_REASON_CHARS:
            raise InvalidInput(f"a reason of 1-{MAX_REASON_CHARS} characters is required")
        now = self._clock()
        with self._db.write() as s:
            row = self._require_seal(s, seal_id, lock=True)
            if row.state not in self._ALLOWED[target]:
                raise IllegalTransition(
                    f"seal {seal_id} is {row.state}: it cannot be {self._ACTIONS[target]}d"
                    + (" (revocation is final)" if row.state == SealState.REVOKED else "")
                )
            previous = row.state
            row.state = target
            row.state_changed_at = now
            row.state_reason = reason
            row.crl_reason = crl_reason
            if target == SealState.REVOKED:
                # A revoked seal never signs again: its key retires (and may then be destroyed).
                self._keys.retire(s, row.kid, actor=actor, now=now, reason=f"seal {seal_id} revoked")
            self._audit.append(
                s,
                AuditEntry(
                    actor,
                    f"seal.{self._ACTIONS[target]}",
                    seal_id,
                    {"from": previous, "to": target, "reason": reason, "crl_reason": crl_reason},
                ),
                at=now,
            )
            ca_row = s.get(CertificateAuthorityRecord, row.ca_id, with_for_update=True)
            assert ca_row is not None
            self._reissue_crl(s, ca_row, now)
            return self._to_seal(s, row)

    # ---- sealing and verifying documents ----------------------------------------------

    def seal_document(
        self,
        seal_id: str,
        pdf: bytes,
        *,
        placement: StampPlacement | None = None,
        reason: str | None = None,
        location: str | None = None,
        actor: str,
        audit_action: str = "seal.use",
        audit_subject: str | None = None,
        audit_details: dict[str, object] | None = None,
    ) -> SealedDocument:
        """Seal *pdf*; the sealed file is handed out only once its audit event is committed."""
        seal = self.get(seal_id)
        self._check_usable(seal)
        with self._db.read() as s:
            ca_row = self._require_ca(s, ca_id=seal.ca_id)
            if ca_row.state != "active":
                raise SealNotUsable(f"seal {seal_id}'s CA {ca_row.ca_id} is {ca_row.state}: it cannot seal")
            # Signing period, signature budget and state of the seal's key (SealNotUsable-like 409).
            self._keys.check_usable(s, seal.kid, self._clock())
            chain = [x509.load_der_x509_certificate(ca_row.certificate)]
        credentials = SealCredentials(
            key=KeyRef(seal.kid, SignatureAlgorithm.parse(seal.algorithm)),
            certificate=seal.certificate,
            chain=chain,
            image_png=seal.image_png,
            name=seal.name,
        )
        now = self._clock()
        sealed = seal_pdf(
            pdf,
            self._backend,
            credentials,
            signing_time=now,
            placement=placement,
            reason=reason,
            location=location,
            timestamp_url=self.settings.timestamp_url,
        )
        digest = hashlib.sha256(sealed).hexdigest()
        with self._db.write() as s:
            # The seal may have been suspended while the document was being signed.
            row = self._require_seal(s, seal_id, lock=True)
            self._check_usable(self._to_seal(s, row))
            self._keys.check_usable(s, row.kid, now)
            self._keys.count_signatures(s, {row.kid: 1})
            details: dict[str, object] = {
                "department": seal.department_code,
                "certificate_serial": seal.certificate_serial,
                "input_sha256": hashlib.sha256(pdf).hexdigest(),
                "output_sha256": digest,
                "bytes": len(sealed),
            }
            details.update(audit_details or {})
            self._audit.append(s, AuditEntry(actor, audit_action, audit_subject or seal_id, details), at=now)
        return SealedDocument(sealed, seal_id, digest)

    def verify_document(self, pdf: bytes) -> PdfVerdict:
        now = self._clock()
        with self._db.read() as s:
            cas = s.execute(
                select(CertificateAuthorityRecord).where(CertificateAuthorityRecord.state != "compromised")
            ).scalars()
            roots = [x509.load_der_x509_certificate(r.certificate) for r in cas]
        if not roots:
            raise CANotInitialised(
                "this service has no CA yet, so no seal can be trusted: run `yinxin ca init`"
            )

        def lookup(cert: x509.Certificate) -> SealCertificateStatus | None:
            with self._db.read() as s:
                row = s.execute(
                    select(SealRecord).where(SealRecord.certificate_serial == format(cert.serial_number, "X"))
                ).scalar_one_or_none()
                if row is None or row.fingerprint != certificate_fingerprint(cert):
                    return None
                key = s.get(KeyRecord, row.kid)
                if key is not None and key.state == "compromised":
                    # Whatever the seal's own state: nothing a compromised key signed is trusted.
                    since = key.compromised_at
                    return SealCertificateStatus(
                        "revoked",
                        row.seal_id,
                        since,
                        "the seal's key was declared compromised"
                        + (f" (since {since.isoformat()})" if since else "")
                        + ": a stolen key can backdate, so no document it sealed is trusted",
                    )
                return SealCertificateStatus(row.state, row.seal_id, row.state_changed_at, row.state_reason)

        return verify_sealed_pdf(
            pdf,
            trust_roots=roots,
            certificate_status=lookup,
            now=now,
            timestamp_roots=self.settings.timestamp_roots,
        )

    def _check_usable(self, seal: Seal) -> None:
        now = self._clock()
        if seal.state != SealState.ACTIVE:
            raise SealNotUsable(
                f"seal {seal.seal_id} is {seal.state}"
                + (f" ({seal.state_reason})" if seal.state_reason else "")
                + ": it cannot seal documents"
            )
        if not seal.not_before <= now < seal.not_after:
            raise SealNotUsable(
                f"seal {seal.seal_id}'s certificate is valid from {seal.not_before:%Y-%m-%d} to "
                f"{seal.not_after:%Y-%m-%d}: create a new seal"
            )

    # ---- helpers --------------------------------------------------------------------

    def _render_image(self, name: str) -> bytes:
        font = prepare_cjk_font(font_cache_dir(self.settings), self.settings.cjk_font)
        return render_seal_image(name, font=font)

    def _active_ca_row(self, s: Session, *, lock: bool = False) -> CertificateAuthorityRecord | None:
        query = (
            select(CertificateAuthorityRecord)
            .where(CertificateAuthorityRecord.state == "active")
            .order_by(CertificateAuthorityRecord.created_at.desc())
            .limit(1)
        )
        return s.execute(query.with_for_update() if lock else query).scalar_one_or_none()

    def _require_ca(
        self, s: Session, *, lock: bool = False, ca_id: str | None = None
    ) -> CertificateAuthorityRecord:
        row = (
            s.get(CertificateAuthorityRecord, ca_id, with_for_update=lock)
            if ca_id is not None
            else self._active_ca_row(s, lock=lock)
        )
        if row is None:
            raise CANotInitialised("Yinxin's CA is not initialised: run `yinxin ca init` first")
        return row

    def _require_seal(self, s: Session, seal_id: str, *, lock: bool = False) -> SealRecord:
        if not isinstance(seal_id, str) or not re.fullmatch(r"seal-[0-9a-f]{10}", seal_id):
            raise SealNotFound(f"{str(seal_id)[:40]!r} is not a seal ID (they look like seal-0123456789)")
        row = s.get(SealRecord, seal_id, with_for_update=lock)
        if row is None:
            raise SealNotFound(f"no seal {seal_id}: `yinxin seal list` shows them")
        return row

    def _to_seal(self, s: Session, row: SealRecord) -> Seal:
        dept = s.get(DepartmentRecord, row.department_code)
        return Seal(
            seal_id=row.seal_id,
            department_code=row.department_code,
            department_name=dept.name if dept else "",
            name=row.name,
            kid=row.kid,
            algorithm=self._keys.get(s, row.kid).algorithm,
            ca_id=row.ca_id,
            certificate_serial=row.certificate_serial,
            fingerprint=row.fingerprint,
            certificate=x509.load_der_x509_certificate(row.certificate),
            image_png=row.image_png,
            image_generated=row.image_generated,
            state=row.state,
            not_before=row.not_before,
            not_after=row.not_after,
            created_at=row.created_at,
            state_changed_at=row.state_changed_at,
            state_reason=row.state_reason,
        )

    @staticmethod
    def _to_ca(row: CertificateAuthorityRecord, algorithm: str) -> CertificateAuthority:
        return CertificateAuthority(
            ca_id=row.ca_id,
            kid=row.kid,
            algorithm=algorithm,
            certificate=x509.load_der_x509_certificate(row.certificate),
            created_at=row.created_at,
            not_after=row.not_after,
        )
