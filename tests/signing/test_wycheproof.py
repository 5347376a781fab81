"""Project Wycheproof vectors against our signature checks and token verifier.

The vectors live outside the repository (``../shared/vectors/wycheproof``, or
``$YINXIN_VECTORS_DIR``) and are read at test time; without them these tests
skip. Each test loops over a whole file and collects failures by ``tcId``, so
one run reports every disagreement at once.

Rules: no ``invalid`` vector is accepted; every ``valid`` one is, where the
vector is in our format. ``acceptable`` vectors (none in the files we use
today) are counted and not asserted: our choice for the one such class that
matters, high-S ECDSA, is to accept (see ``signing._signature``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key

from hsm import SignatureAlgorithm
from schemas.errors import YinxinError
from signing import TrustedKey, TrustStore, trusted_key_from_jwk, verify_signature, verify_token
from tests.signing._support import NOW

SUPPORTED = {"ES256", "EdDSA", "PS256"}


def load(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        # In CI a missing vector file is a failure, as the missing folder is (conftest's fixture).
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(
            f"Wycheproof file {name} is missing from {folder}"
        )
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def run_raw_file(
    data: dict[str, Any], algorithm: SignatureAlgorithm, group_type: str
) -> tuple[Counter[str], list[str]]:
    """verify_signature over every vector; returns (tally, failures)."""
    tally: Counter[str] = Counter()
    failures: list[str] = []
    for group in data["testGroups"]:
        assert group["type"] == group_type, group["type"]
        public_key: PublicKeyTypes = load_der_public_key(bytes.fromhex(group["publicKeyDer"]))
        for test in group["tests"]:
            accepted = verify_signature(
                algorithm, public_key, bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
            )
            result = test["result"]
            tally[f"{result}:{'accepted' if accepted else 'rejected'}"] += 1
            if (result == "valid" and not accepted) or (result == "invalid" and accepted):
                failures.append(f"tcId {test['tcId']} ({result}, {test['comment']!r}, {test['flags']})")
    return tally, failures


def test_ecdsa_p256_sha256_p1363(wycheproof: Path) -> None:
    data = load(wycheproof, "ecdsa_secp256r1_sha256_p1363_test.json")
    tally, failures = run_raw_file(data, SignatureAlgorithm.ES256, "EcdsaP1363Verify")
    assert not failures, failures
    assert tally["valid:accepted"] > 0 and tally["invalid:rejected"] > 0
    assert sum(tally.values()) == data["numberOfTests"]


def test_ed25519(wycheproof: Path) -> None:
    data = load(wycheproof, "ed25519_test.json")
    tally, failures = run_raw_file(data, SignatureAlgorithm.EDDSA, "EddsaVerify")
    assert not failures, failures
    assert sum(tally.values()) == data["numberOfTests"]


def test_rsa_pss_3072_sha256_mgf1_32(wycheproof: Path) -> None:
    data = load(wycheproof, "rsa_pss_3072_sha256_mgf1_32_test.json")
    for group in data["testGroups"]:
        # Exactly PS256's parameters (RFC 7518 §3.5), so "valid" means valid for us.
        assert (group["sha"], group["mgf"], group["mgfSha"], group["sLen"]) == (
            "SHA-256",
            "MGF1",
            "SHA-256",
            32,
        )
    tally, failures = run_raw_file(data, SignatureAlgorithm.PS256, "RsassaPssVerify")
    assert not failures, failures
    assert sum(tally.values()) == data["numberOfTests"]


def test_der_ecdsa_signatures_are_not_jws_form(wycheproof: Path) -> None:
    """JWS ECDSA signatures are r || s (RFC 7518 §3.4): DER is refused outright.

    The same file cross-checks our r || s path: each valid DER signature,
    re-encoded as r || s, is accepted.
    """
    data = load(wycheproof, "ecdsa_secp256r1_sha256_test.json")
    accepted_der: list[int] = []
    refused_converted: list[int] = []
    for group in data["testGroups"]:
        public_key = load_der_public_key(bytes.fromhex(group["publicKeyDer"]))
        for test in group["tests"]:
            message, der = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
            if verify_signature(SignatureAlgorithm.ES256, public_key, message, der):
                accepted_der.append(test["tcId"])
            if test["result"] == "valid":
                r, s = decode_dss_signature(der)
                jose = r.to_bytes(32, "big") + s.to_bytes(32, "big")
                if not verify_signature(SignatureAlgorithm.ES256, public_key, message, jose):
                    refused_converted.append(test["tcId"])
    assert not accepted_der, f"DER signatures accepted as JWS: tcIds {accepted_der}"
    assert not refused_converted, f"valid signatures refused after conversion: tcIds {refused_converted}"


# --- JSON Web Signature vectors through verify_token ----------------------------------------


def _header_alg(token: str) -> str | None:
    """The header's alg, read leniently (only to sort vectors, never to decide)."""
    try:
        segment = token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        return None
    alg = header.get("alg") if isinstance(header, dict) else None
    return alg if isinstance(alg, str) else None


def _trusted(group: dict[str, Any]) -> TrustedKey | None:
    public = group.get("public")
    if public is None:
        return None  # an HMAC-only group: nothing a trust list could hold
    try:
        return trusted_key_from_jwk(public)
    except YinxinError:
        return None  # RS256, PS384, use=enc, no alg ...: not a key we would trust


def test_json_web_signature(wycheproof: Path) -> None:
    """Every vector through verify_token (typ check off: the vectors have no typ).

    Vectors whose key or alg we do not support must come out rejected before
    any signature is checked. The valid ES256/PS256 vectors sign payloads such
    as "foo" that are not claims sets, so the right answer for them is: the
    signature verifies (checked with verify_signature), and then the payload is
    refused as ``malformed``. The file has no EdDSA vectors and no JWE.
    """
    data = load(wycheproof, "json_web_signature_test.json")
    tally: Counter[str] = Counter()
    failures: list[str] = []
    for group in data["testGroups"]:
        if group["type"] != "JsonWebSignature":
            tally[f"skipped:{group['type']}"] += len(group["tests"])
            continue
        key = _trusted(group)
        trust = TrustStore([key] if key is not None else [])
        for test in group["tests"]:
            token = test["jws"] if isinstance(test["jws"], str) else json.dumps(test["jws"])
            verdict = verify_token(token, trust, now=NOW, expected_typ=None)
            result, tc = test["result"], f"tcId {test['tcId']} ({test['result']}, {test['comment']!r})"
            tally[f"{result}:{'accepted' if verdict.valid else 'rejected'}"] += 1
            alg = _header_alg(token)
            if result == "invalid" and verdict.valid:
                failures.append(f"{tc}: accepted")
            if key is None or alg not in SUPPORTED:
                if verdict.valid or verdict.codes[0] not in {
                    "malformed",
                    "unsupported_algorithm",
                    "unknown_key",
                }:
                    failures.append(f"{tc}: unsupported alg {alg!r} gave {verdict.codes}")
                continue
            if result == "valid":
                signing_input, _, signature = token.rpartition(".")
                raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
                signature_ok = verify_signature(
                    key.algorithm, key.public_key, signing_input.encode(), raw_signature
                )
                payload_refused = (
                    verdict.codes == ("malformed",)
                    and "payload" in verdict.reasons[0]
                    and (verdict.kid, verdict.algorithm) == (key.kid, alg)
                )
                if not (verdict.valid or (signature_ok and payload_refused)):
                    failures.append(f"{tc}: valid {alg} vector gave {verdict.codes} {verdict.reasons}")
                else:
                    tally["valid:signature-verified"] += 1
    assert not failures, "\n".join(failures)
    assert tally["valid:signature-verified"] > 0
    assert (
        sum(v for k, v in tally.items() if k.split(":")[1] in {"accepted", "rejected"})
        == data["numberOfTests"]
    )
