"""Fuzz licence-token verification: ``signing.verify_token`` and ``signing.trusted_key_from_jwk``.

The trust store holds real ES256, EdDSA and PS256 public keys, and the harness signs with
the matching private keys, so fuzzed headers and payloads get past the signature and the
whole path runs: size, ASCII, segments, header, key and bound algorithm, signature, payload
JSON, claims, time checks.

Modes (first input byte):

0. raw bytes, as ``bytes`` and (when ASCII) as ``str``: both must give the same verdict;
1. a genuine token with a few edits;
2. a fuzzed protected header over genuine claims, signed with a real key;
3. the genuine header over fuzzed claims (structured, or raw payload bytes), signed;
4. a trust-list JWK (a real one with members changed, or raw JSON) for ``trusted_key_from_jwk``;
5. header, payload and signature spliced from different genuine tokens.

Crashes: any exception from ``verify_token`` (bad tokens are verdicts, never exceptions),
any exception but a ``YinxinError`` from ``trusted_key_from_jwk``, and broken promises: a
verdict that is valid for a token nobody signed, a signature we made reported as invalid,
claims handed out from a payload that is not strict JSON (duplicate names, NaN, lone
surrogates), a malformed verdict (codes and reasons).
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import atheris

with atheris.instrument_imports(include=["signing", "schemas"]):
    from hsm import SignatureAlgorithm
    from schemas.errors import YinxinError
    from signing import (
        TOKEN_TYP,
        VERDICT_CODES,
        TokenVerdict,
        TrustStore,
        public_jwk,
        sign_licence_token,
        trusted_key_from_jwk,
        verify_token,
    )
    from signing._jws import MALFORMED, SIGNATURE_INVALID

# Everything below is imported after the instrumented block (see _common's docstring).
import _common
from _common import IDENTIFIER, NOW, NOW_TS, attempt, b64, finding

MODES = 6
ES256, EDDSA, PS256 = SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA, SignatureAlgorithm.PS256
# Re-signing with RSA-3072 costs milliseconds: one fuzzed token in eight uses it.
SIGNERS = (ES256, EDDSA, ES256, EDDSA, ES256, EDDSA, ES256, PS256)


def licence_claims() -> dict[str, Any]:
    """Shaped like the vault's claims, valid at NOW."""
    return {
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


KEYS = _common.make_keys()
TRUST: TrustStore = KEYS.trust
GENUINE = {alg: sign_licence_token(KEYS.backend, ref, licence_claims()) for alg, ref in KEYS.refs.items()}
GENUINE_LIST = list(GENUINE.values())
GENUINE_SET = frozenset(GENUINE_LIST)
JWKS = [public_jwk(key) for key in TRUST]
JWK_MEMBERS = ["kty", "crv", "x", "y", "n", "e", "kid", "alg", "use", "key_ops", "d", "k", "oth"]


# -- a reference reading of JSON, independent of signing._jws --------------------------------


class _NotStrict(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise _NotStrict("duplicate member name")
    return dict(pairs)


def _constant(name: str) -> Any:
    raise _NotStrict(name)


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def strict_object(payload: bytes) -> bool:
    """Whether *payload* is what RFC 7515/7519 and I-JSON call a JSON object: checked without our code."""
    try:
        value = json.loads(payload.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_constant)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and not _has_surrogate(value)


# -- checks ---------------------------------------------------------------------------------


def judge(token: str | bytes, *, authentic: bool, signed_payload: bytes | None = None) -> TokenVerdict:
    """Verify *token* and hold the verdict to verify_token's promises.

    *authentic*: the token was signed by a key of the trust store over exactly these bytes
    (so SIGNATURE_INVALID would be a false rejection). *signed_payload*: the payload bytes
    we signed, to compare the payload verdict with the reference JSON reading.
    """
    verdict = attempt("verify_token", token, lambda: verify_token(token, TRUST, now=NOW), ())
    assert verdict is not None
    if not isinstance(verdict, TokenVerdict):
        finding("verify_token", token, f"not a TokenVerdict: {verdict!r:.200}")
    if verdict.valid != (not verdict.codes) or len(verdict.codes) != len(verdict.reasons):
        finding("verify_token", token, f"inconsistent verdict: {verdict!r:.300}")
    _common.check_reasons("verify_token", token, verdict.codes, verdict.reasons, VERDICT_CODES)
    if verdict.valid:
        text = token.decode("ascii") if isinstance(token, bytes) else token
        if not authentic and text not in GENUINE_SET:
            finding("verify_token", token, "a token nobody signed was accepted")
        key = TRUST.get(verdict.kid or "")
        if verdict.claims is None or key is None or key.algorithm.value != verdict.algorithm:
            finding("verify_token", token, f"valid verdict without claims or a trusted key: {verdict!r:.300}")
    if authentic and SIGNATURE_INVALID in verdict.codes:
        finding("verify_token", token, "a signature made by a trusted key was reported invalid")
    if signed_payload is not None and verdict.claims is not None and not strict_object(signed_payload):
        finding("verify_token", token, "claims were read from a payload that is not a strict JSON object")
    if (
        signed_payload is not None
        and authentic
        and verdict.codes == (MALFORMED,)
        and verdict.header is not None
        and strict_object(signed_payload)
        and len(token) <= 8192
    ):
        finding("verify_token", token, "a strict JSON payload signed by a trusted key was called malformed")
    return verdict


def run_raw(body: bytes) -> None:
    as_bytes = judge(body, authentic=False)
    if body.isascii():
        text = body.decode("ascii")
        as_text = judge(text, authentic=False)
        if as_text != as_bytes:
            finding("verify_token", body, "bytes and str of the same token gave different verdicts")


def run_mutated(fdp: atheris.FuzzedDataProvider) -> None:
    original = fdp.PickValueInList(GENUINE_LIST)
    token = _common.mutate_text(fdp, original)
    if token.isascii():
        judge(token.encode("ascii"), authentic=token == original)
    else:
        judge(token.encode("utf-8", "surrogatepass"), authentic=False)
    judge(token, authentic=token == original)


def run_header(fdp: atheris.FuzzedDataProvider) -> None:
    algorithm = SIGNERS[fdp.ConsumeIntInRange(0, len(SIGNERS) - 1)]
    kid = KEYS.refs[algorithm].kid
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 0:
        header = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))
    else:
        fields: dict[str, Any] = {"alg": algorithm.value, "kid": kid, "typ": TOKEN_TYP}
        for _ in range(fdp.ConsumeIntInRange(1, 3)):
            name = fdp.PickValueInList(["alg", "kid", "typ", "crit", "jwk", "b64", "zip", "x5c", "cty"])
            if fdp.ConsumeBool():
                fields.pop(name, None)
            else:
                fields[name] = _common.json_value(fdp)
        try:
            header = json.dumps(fields, ensure_ascii=fdp.ConsumeBool()).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):
            return
    payload = json.dumps(licence_claims(), separators=(",", ":"), ensure_ascii=False).encode()
    token = KEYS.sign_compact(algorithm, header, payload)
    judge(token, authentic=True, signed_payload=payload)


def run_claims(fdp: atheris.FuzzedDataProvider) -> None:
    algorithm = SIGNERS[fdp.ConsumeIntInRange(0, len(SIGNERS) - 1)]
    ref = KEYS.refs[algorithm]
    header = json.dumps({"alg": algorithm.value, "kid": ref.kid, "typ": TOKEN_TYP}, separators=(",", ":"))
    if fdp.ConsumeBool():
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2000))
    else:
        claims: dict[str, Any] = licence_claims()
        for _ in range(fdp.ConsumeIntInRange(1, 4)):
            name = fdp.PickValueInList([*claims, "nbf", "exp", "cnf", ""])
            if fdp.ConsumeBool():
                claims.pop(name, None)
            else:
                claims[name] = _common.json_value(fdp)
        compact = (",", ":") if fdp.ConsumeBool() else (", ", ": ")
        try:
            text = json.dumps(claims, separators=compact, ensure_ascii=fdp.ConsumeBool())
        except (TypeError, ValueError):
            return
        payload = text.encode("utf-8", "surrogatepass")
    token = KEYS.sign_compact(algorithm, header.encode(), payload)
    verdict = judge(token, authentic=True, signed_payload=payload)
    if verdict.valid and (verdict.claims is None or verdict.claims.get("sub") != verdict.claims.get("jti")):
        finding("verify_token", token, "valid verdict for claims whose sub and jti differ")


def run_jwk(fdp: atheris.FuzzedDataProvider) -> None:
    jwk: Any
    if fdp.ConsumeIntInRange(0, 3) == 0:
        raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1200))
        try:
            jwk = json.loads(raw)
        except (ValueError, RecursionError):
            return
    else:
        jwk = dict(fdp.PickValueInList(JWKS))
        for _ in range(fdp.ConsumeIntInRange(1, 3)):
            name = fdp.PickValueInList(JWK_MEMBERS)
            op = fdp.ConsumeIntInRange(0, 3)
            if op == 0:
                jwk.pop(name, None)
            elif op == 1:
                jwk[name] = b64(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600)))
            elif op == 2:
                value = jwk.get(name)
                jwk[name] = _common.mutate_text(fdp, value) if isinstance(value, str) else value
            else:
                jwk[name] = _common.json_value(fdp)
    key = attempt("trusted_key_from_jwk", jwk, lambda: trusted_key_from_jwk(jwk), (YinxinError,))
    if key is None:
        return
    store = attempt("TrustStore", jwk, lambda: TrustStore([key]), (YinxinError,))
    if store is None:
        finding("TrustStore", jwk, "a key trusted_key_from_jwk returned does not go in a trust store")
    if public_jwk(key)["alg"] != jwk.get("alg"):
        finding("trusted_key_from_jwk", jwk, "the key is bound to another algorithm than its JWK's alg")
    for token in GENUINE_LIST:
        verdict = verify_token(token, store, now=NOW)
        original = TRUST.get(key.kid)
        if verdict.valid and (original is None or public_jwk(original) != public_jwk(key)):
            finding("trusted_key_from_jwk", jwk, "a different key verified a genuine token")


def run_spliced(fdp: atheris.FuzzedDataProvider) -> None:
    parts = [fdp.PickValueInList(GENUINE_LIST).split(".")[i] for i in range(3)]
    token = ".".join(parts)
    judge(token, authentic=token in GENUINE_SET)
    skew = timedelta(seconds=fdp.ConsumeIntInRange(-(2**35), 2**35))
    leeway = fdp.ConsumeIntInRange(0, 2**40)
    verdict = attempt(
        "verify_token", token, lambda: verify_token(token, TRUST, now=NOW + skew, leeway=leeway), ()
    )
    assert verdict is not None
    _common.check_reasons("verify_token", token, verdict.codes, verdict.reasons, VERDICT_CODES)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % MODES, data[1:]
    if mode == 0:
        run_raw(body)
        return
    fdp = atheris.FuzzedDataProvider(body)
    (run_mutated, run_header, run_claims, run_jwk, run_spliced)[mode - 1](fdp)


def seeds() -> list[bytes]:
    out = [bytes([0]) + token.encode() for token in GENUINE_LIST]
    out += [bytes([0]) + b"eyJhbGciOiJub25lIn0.e30.", bytes([0]) + b"a.b.c", bytes([0])]
    for mode in range(1, MODES):
        out += [bytes([mode]) + bytes([i]) * 24 for i in range(4)]
    out.append(bytes([4]) + json.dumps(JWKS[0]).encode())
    return out


if __name__ == "__main__":
    _common.main("token", test_one_input, seeds)
    sys.exit(0)
