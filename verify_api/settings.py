"""Settings: the only place that reads the environment (prefix ``YINXIN_``).

Read once into a frozen :class:`Settings`; everything else receives values
from it. Secrets are ``SecretStr`` so they never print by accident.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from hsm import BackendConfig
from schemas.errors import ConfigurationError
from vault import KEY_PURPOSE_LICENCE, MAX_READ_THREADS, KeyPolicy, SealSettings

__all__ = ["Settings", "load_settings"]

MAX_SECRET_FILE_BYTES = 4096


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YINXIN_", extra="ignore", frozen=True)

    home: Path = Field(default=Path("var"), description="data directory (database, keystore, logs)")
    database_url: str | None = Field(default=None, description="default: SQLite in YINXIN_HOME")
    environment: Literal["development", "production"] = "production"
    hsm: Literal["software", "pkcs11"] = "software"
    keystore_passphrase: SecretStr | None = None
    keystore_passphrase_file: Path | None = None
    pkcs11_module: str | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin: SecretStr | None = None
    pkcs11_pin_file: Path | None = None
    pkcs11_sessions: int = Field(default=4, ge=1, le=64)
    db_read_threads: int = Field(
        default=4,
        ge=1,
        le=MAX_READ_THREADS,
        description="PostgreSQL, per worker: the asynchronous connections verifications read on, "
        "and the threads for their rare blocking reads",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        pattern=r"^https?://[^\s/?#]+(:[0-9]{1,5})?(/[^\s?#]*)?$",
        max_length=200,
        description="the service's public base URL (QR links, status list URIs)",
    )
    # The CA and e-seals (vault._seals).
    ca_common_name: str = Field(default="Yinxin Root CA", min_length=1, max_length=64)
    ca_organisation: str = Field(default="Yinxin 印信", min_length=1, max_length=64)
    ca_validity_days: int = Field(default=3650, ge=30, le=9125, description="root certificate validity")
    seal_validity_days: int = Field(
        default=730, ge=1, le=3650, description="seal certificate validity (the seal key's cryptoperiod)"
    )
    crl_validity_hours: int = Field(default=168, ge=1, le=24 * 31, description="CRL nextUpdate - thisUpdate")
    cjk_font: Path | None = Field(
        default=None, description="CJK font (.otf/.ttf/.ttc) for seal images and printed licences"
    )
    tsa_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=500,
        description="RFC 3161 timestamp authority: sealed PDFs become PAdES B-T",
    )
    tsa_roots_file: Path | None = Field(
        default=None, description="PEM file of the root certificates trusted for timestamp tokens"
    )
    max_pdf_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, le=20 * 1024 * 1024, description="largest PDF accepted (413 above)"
    )
    # Key management (issue 5): cryptoperiods, dual control, signed audit checkpoints.
    licence_key_signing_days: int = Field(
        default=365,
        ge=0,
        le=3650,
        description="days a licence-signing key signs after activation (its cryptoperiod); 0: no limit",
    )
    licence_key_max_signatures: int | None = Field(
        default=None, ge=1, le=10**12, description="signature budget of new licence keys (default: none)"
    )
    approvals_required: int = Field(
        default=2, ge=1, le=10, description="security officers who must approve a dual-control operation (M)"
    )
    approval_ttl_hours: float = Field(
        default=24, gt=0, le=24 * 30, description="hours a dual-control request waits before it expires"
    )
    audit_checkpoint_interval: int = Field(
        default=100, ge=0, le=1_000_000, description="sign the audit head every N events (0: on demand only)"
    )
    trust_refresh_seconds: float = Field(
        default=5, ge=0, le=3600, description="seconds between re-reads of key states in each worker"
    )
    officer_password: SecretStr | None = Field(
        default=None, description="the acting officer's password for --officer (else the CLI prompts)"
    )
    # HTTP platform (verify_api.middleware, verify_api.ratelimit, verify_api.metrics).
    max_body_bytes: int = Field(
        default=65536, ge=1024, le=16 * 1024 * 1024, description="largest request body accepted (413 above)"
    )
    verify_rate_per_minute: float = Field(
        default=60, gt=0, le=100_000, description="POST /v1/verify: sustained requests per minute per client"
    )
    verify_burst: int = Field(
        default=30, ge=1, le=10_000, description="POST /v1/verify: requests a client may make at once"
    )
    # The token endpoint runs scrypt on every attempt (~50 ms): a tighter budget per address.
    token_rate_per_minute: float = Field(
        default=60, gt=0, le=100_000, description="POST /v1/oauth/token: requests per minute per client"
    )
    token_burst: int = Field(default=20, ge=1, le=10_000, description="POST /v1/oauth/token: burst")
    # prometheus_client's own variable (no YINXIN_ prefix): set, it switches to multiprocess mode.
    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"),
        description="directory shared by the workers' metric files (several uvicorn workers)",
    )

    @property
    def development(self) -> bool:
        return self.environment == "development"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'yinxin.db').resolve()}"

    def seal_settings(self) -> SealSettings:
        return SealSettings(
            ca_common_name=self.ca_common_name,
            ca_organisation=self.ca_organisation,
            ca_validity_days=self.ca_validity_days,
            seal_validity_days=self.seal_validity_days,
            crl_validity_hours=self.crl_validity_hours,
            cjk_font=self.cjk_font,
            font_cache=self.home / "fonts",
            timestamp_url=self.tsa_url,
            timestamp_roots=_pem_certificates(self.tsa_roots_file, "TSA_ROOTS_FILE"),
        )

    def key_policy(self) -> KeyPolicy:
        days = self.licence_key_signing_days or None
        return KeyPolicy(
            signing_days={KEY_PURPOSE_LICENCE: days}, max_signatures=self.licence_key_max_signatures
        )

    def vault_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`vault.Vault` that come from settings."""
        return {
            "public_url": self.public_url,
            "seal_settings": self.seal_settings(),
            "key_policy": self.key_policy(),
            "approvals_required": self.approvals_required,
            "approval_ttl": timedelta(hours=self.approval_ttl_hours),
            "audit_checkpoint_interval": self.audit_checkpoint_interval,
            "trust_refresh_seconds": self.trust_refresh_seconds,
        }

    def backend_config(self) -> BackendConfig:
        passphrase = _secret(self.keystore_passphrase, self.keystore_passphrase_file, "KEYSTORE_PASSPHRASE")
        pin = _secret(self.pkcs11_pin, self.pkcs11_pin_file, "PKCS11_PIN")
        return BackendConfig(
            kind=self.hsm,
            home=self.home,
            keystore_passphrase=passphrase.encode() if passphrase is not None else None,
            development=self.development,
            pkcs11_module=self.pkcs11_module,
            pkcs11_token_label=self.pkcs11_token_label,
            pkcs11_pin=pin,
            pkcs11_sessions=self.pkcs11_sessions,
        )


def _pem_certificates(path: Path | None, name: str) -> tuple[x509.Certificate, ...]:
    if path is None:
        return ()
    try:
        data = path.read_bytes()[: 1024 * 1024 + 1]
        certificates = tuple(x509.load_pem_x509_certificates(data))
    except OSError as exc:
        raise ConfigurationError(f"YINXIN_{name} {path}: cannot read ({exc.strerror})") from exc
    except ValueError as exc:
        raise ConfigurationError(f"YINXIN_{name} {path}: not a PEM file of certificates") from exc
    return certificates


def _secret(value: SecretStr | None, path: Path | None, name: str) -> str | None:
    if value is not None and path is not None:
        raise ConfigurationError(f"set YINXIN_{name} or YINXIN_{name}_FILE, not both")
    if value is not None:
        return value.get_secret_value()
    if path is None:
        return None
    try:
        raw = path.read_bytes()[: MAX_SECRET_FILE_BYTES + 1]
    except OSError as exc:
        raise ConfigurationError(f"YINXIN_{name}_FILE {path}: cannot read ({exc.strerror})") from exc
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise ConfigurationError(f"YINXIN_{name}_FILE {path}: larger than {MAX_SECRET_FILE_BYTES} bytes")
    text = raw.decode("utf-8", errors="strict").rstrip("\r\n")
    if not text:
        raise ConfigurationError(f"YINXIN_{name}_FILE {path} is empty")
    return text


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]).upper()
        raise ConfigurationError(f"setting YINXIN_{field}: {first['msg']}") from None
