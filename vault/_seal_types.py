"""The seal registry's value types: seal states, CA/seal settings, and what the registry hands out."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["CertificateAuthority", "Seal", "SealSettings", "SealState", "SealedDocument", "font_cache_dir"]


class SealState:
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class SealSettings:
    """CA and seal policy, built by ``verify_api`` from settings."""

    ca_common_name: str = "Yinxin Root CA"
    ca_organisation: str = "Yinxin 印信"
    ca_validity_days: int = 3650
    seal_validity_days: int = 730
    crl_validity_hours: int = 168
    cjk_font: Path | None = None  # a .otf/.ttf/.ttc; found among the system fonts when None
    font_cache: Path | None = None  # where a face extracted from a .ttc collection is kept
    timestamp_url: str | None = None  # RFC 3161 TSA: PAdES B-T when set, B-B otherwise
    # Roots trusted for timestamp tokens (the TSA's CA); a timestamp under another root is ignored.
    timestamp_roots: tuple[x509.Certificate, ...] = ()


def font_cache_dir(settings: SealSettings) -> Path:
    """Where a CJK face extracted from a .ttc collection is kept (YINXIN_HOME/fonts by default)."""
    return settings.font_cache or Path(tempfile.gettempdir()) / "yinxin-fonts"


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    ca_id: str
    kid: str
    algorithm: str
    certificate: x509.Certificate
    created_at: datetime
    not_after: datetime

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(Encoding.PEM)


@dataclass(frozen=True, slots=True)
class Seal:
    seal_id: str
    department_code: str
    department_name: str
    name: str
    kid: str
    algorithm: str
    ca_id: str
    certificate_serial: str
    fingerprint: str
    certificate: x509.Certificate
    image_png: bytes
    image_generated: bool
    state: str
    not_before: datetime
    not_after: datetime
    created_at: datetime
    state_changed_at: datetime | None
    state_reason: str | None

    def summary(self) -> dict[str, object]:
        return {
            "seal_id": self.seal_id,
            "department": self.department_code,
            "department_name": self.department_name,
            "name": self.name,
            "state": self.state,
            "kid": self.kid,
            "algorithm": self.algorithm,
            "certificate_serial": self.certificate_serial,
            "certificate_fingerprint": self.fingerprint,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "created_at": self.created_at.isoformat(),
            "state_changed_at": self.state_changed_at.isoformat() if self.state_changed_at else None,
            "state_reason": self.state_reason,
            "image": "generated" if self.image_generated else "supplied",
        }


@dataclass(frozen=True, slots=True)
class SealedDocument:
    pdf: bytes
    seal_id: str
    sha256: str  # of the sealed output
