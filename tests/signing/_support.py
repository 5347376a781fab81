"""Helpers for licence-token tests: a fixed clock, claims, a token forge.

:class:`Forge` builds tokens our signer never would (other headers, broken
claims, odd encodings) but still signs them with a real key backend, so each
test isolates the one check it is about.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from hsm import KeyBackend, KeyRef, SignatureAlgorithm
from signing import VERDICT_CODES, TokenVerdict, TrustStore, verify_token

# A fixed clock (DESIGN §5.5): 2026-06-01 08:00 Beijing time.
NOW = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
NOW_TS = int(NOW.timestamp())
IDENTIFIER = "1.2.156.3005.2.11100000000013338W001.91110000000000000X.2026000001.001.K"

ALGORITHMS = (SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA, SignatureAlgorithm.PS256)
# NIST P-256 group order (SEC 2 §2.4.2).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def licence_claims(**changes: Any) -> dict[str, Any]:
    """A claims set shaped like the vault's, valid at NOW."""
    claims: dict[str, Any] = {
        "iss": "91110000000000000X",
        "sub": IDENTIFIER,
        "jti": IDENTIFIER,
        "iat": NOW_TS - 86400,
        "nbf": NOW_TS - 86400,
        "exp": NOW_TS + 365 * 86400,
        "licence_type": "11100000000013338W001",
        "licence_type_name": "营业执照",
        "issuer_name": "北京市市场监督管理局",
        "holder": {"name": "北京某某科技有限公司", "id_type": "001", "id_masked": "9111************0X"},
        "data": {"name": "北京某某科技有限公司", "registered_capital": "100万元人民币"},
    }
    claims.update(changes)
    return claims


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(segment: str) -> bytes:
    """Lenient decoding, for inspecting tokens in tests."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def compact(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def rejected(token: str | bytes, trust: TrustStore, **kwargs: Any) -> TokenVerdict:
    """Verify, check the verdict's shape, and return it (must be invalid)."""
    verdict = verify_token(token, trust, now=kwargs.pop("now", NOW), **kwargs)
    assert not verdict.valid, f"token accepted: {verdict}"
    assert verdict.codes and len(verdict.codes) == len(verdict.reasons), verdict
    assert set(verdict.codes) <= VERDICT_CODES, verdict.codes
    for reason in verdict.reasons:
        assert reason and "\n" not in reason and reason.endswith(".") and len(reason) < 400, reason
    return verdict


def code_of(token: str | bytes, trust: TrustStore, **kwargs: Any) -> str:
    verdict = rejected(token, trust, **kwargs)
    assert len(verdict.codes) == 1, verdict
    return verdict.codes[0]


def with_signature(token: str, signature: bytes) -> str:
    return token.rpartition(".")[0] + "." + b64(signature)


class Forge:
    """Sign arbitrary headers and payloads with the session's real keys."""

    def __init__(self, backend: KeyBackend, keys: Mapping[SignatureAlgorithm, KeyRef]) -> None:
        self.backend = backend
        self.keys = keys

    def key(self, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256) -> KeyRef:
        return self.keys[algorithm]

    def header(
        self, algorithm: SignatureAlgorithm = SignatureAlgorithm.ES256, **changes: Any
    ) -> dict[str, Any]:
        """Our header for the session key of *algorithm*; a value of None removes a member."""
        header: dict[str, Any] = {
            "alg": algorithm.value,
            "kid": self.keys[algorithm].kid,
            "typ": "licence+jwt",
        }
        for name, value in changes.items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value
        return header

    def token(
        self,
        header: Mapping[str, Any] | bytes | None = None,
        payload: Mapping[str, Any] | bytes | None = None,
        *,
        signer: SignatureAlgorithm = SignatureAlgorithm.ES256,
    ) -> str:
        """header.payload.signature, signed by the session key of *signer*."""
        if header is None:
            header = self.header(signer)
        if payload is None:
            payload = licence_claims()
        raw_header = header if isinstance(header, bytes) else compact(header)
        raw_payload = payload if isinstance(payload, bytes) else compact(payload)
        signing_input = b64(raw_header) + "." + b64(raw_payload)
        signature = self.backend.sign(self.keys[signer], signing_input.encode("ascii"))
        return signing_input + "." + b64(signature)

    def public_key(self, algorithm: SignatureAlgorithm) -> PublicKeyTypes:
        return self.backend.public_key(self.keys[algorithm])


def vectors_dir() -> Path | None:
    """shared/vectors/wycheproof beside the repository, or $YINXIN_VECTORS_DIR."""
    candidates = [Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors" / "wycheproof"]
    override = os.environ.get("YINXIN_VECTORS_DIR")
    if override:
        candidates.insert(0, Path(override))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return None
