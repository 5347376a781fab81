"""Attack corpus against licence-token verification, through the three service entry points.

Every malicious token is built from a genuine licence (issued by the vault with a real
software-keystore key of each algorithm) by base64url surgery, and forged signatures are
made with ``cryptography``/``hmac`` directly. "Insider" cases sign with the department's
own key in the backend: they stand for a key used outside the vault, and show which check
stops the token when the signature itself is good. Each case runs through

- ``Vault.verify(token)``;
- ``POST /v1/verify`` (FastAPI TestClient): 200 JSON with ``valid: false``; a token over
  ``signing.MAX_TOKEN_BYTES`` is refused by the request model (422 problem+json), a body
  over ``YINXIN_MAX_BODY_BYTES`` (10 MB) by the body limit (413 problem+json), an empty
  token by the request model (422);
- ``yinxin verify TOKEN --json`` (``verify_api.cli.main``): exit 1, no traceback. (A token
  starting with ``-`` is an argparse usage error, exit 2 with one line; ``--`` reads it.)

Every attack must give ``valid: false`` with at least one reason and the expected code,
never an exception and never a 5xx.

=================  =====
category           cases
=================  =====
algorithm             12
key confusion         11
header injection       8
kid                   10
signature forgery     10
encoding              10
JSON                   9
structure/size        10
claims                12
token type             6
key state              4
=================  =====

Documented behaviour asserted as a contrast, outside the table: a high-S ECDSA signature
verifies at the signing layer (signing/_signature.py) but the vault does not take it for the
licence on record (``token_mismatch``, naming the same licence); a licence signed by a key
destroyed after it was retired still verifies as valid (destroyed keys verify history).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID

from hsm import KeyRef, SignatureAlgorithm
from signing import MAX_TOKEN_BYTES
from tests.security._token_world import Genuine, World, world_fixture  # noqa: F401  (the "world" fixture)

ES256, EDDSA, PS256 = "ES256", "EdDSA", "PS256"
ALGORITHMS = (ES256, EDDSA, PS256)
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
TEN_MB = 10 * 1024 * 1024

# -- base64url and JSON surgery ------------------------------------------------------------------


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def segments(token: str) -> tuple[str, str, str]:
    h, p, s = token.split(".")
    return h, p, s


def header_of(token: str) -> dict[str, Any]:
    return json.loads(b64d(token.split(".")[0]))


def claims_of(token: str) -> dict[str, Any]:
    return json.loads(b64d(token.split(".")[1]))


# -- attacker keys and signatures ----------------------------------------------------------------


@cache
def attacker_key(alg: str) -> Any:
    if alg == ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if alg == EDDSA:
        return Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def attacker_sign(alg: str, data: bytes) -> bytes:
    """A JOSE-form signature (RFC 7518 §3.4/§3.5, RFC 8037 §3.1) by the attacker's own key."""
    key = attacker_key(alg)
    if alg == ES256:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == EDDSA:
        return key.sign(data)
    return key.sign(data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())


def attacker_jwk(alg: str) -> dict[str, str]:
    public = attacker_key(alg).public_key()
    if alg == ES256:
        n = public.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64e(n.x.to_bytes(32, "big")),
            "y": b64e(n.y.to_bytes(32, "big")),
        }
    if alg == EDDSA:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64e(raw)}
    n = public.public_numbers()
    return {"kty": "RSA", "n": b64e(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")), "e": "AQAB"}


@cache
def attacker_certificate_b64() -> str:
    """A self-signed certificate for the attacker's EC key, standard base64 DER (x5c, RFC 7515 §4.1.6)."""
    key = attacker_key(ES256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "北京市市场监督管理局")])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def forge(header: dict[str, Any] | bytes, payload: bytes, sign: Callable[[bytes], bytes] | str) -> str:
    """header.payload.signature; *sign* makes the signature over the signing input, or is the
    base64url signature segment to keep."""
    h = b64e(header if isinstance(header, bytes) else compact(header))
    signing_input = f"{h}.{b64e(payload)}"
    sig = sign if isinstance(sign, str) else b64e(sign(signing_input.encode("ascii")))
    return f"{signing_input}.{sig}"


def by_attacker(alg: str) -> Callable[[bytes], bytes]:
    return lambda data: attacker_sign(alg, data)


def by_vault_key(w: World, kid: str, alg: str) -> Callable[[bytes], bytes]:
    """The department's own key in the backend (an insider, or a thief holding the key)."""
    ref = KeyRef(kid, SignatureAlgorithm.parse(alg))
    return lambda data: w.vault.backend.sign(ref, data)


def licence_header(kid: str, alg: str, **extra: Any) -> dict[str, Any]:
    return {"alg": alg, "kid": kid, "typ": "licence+jwt", **extra}


# -- the cases -----------------------------------------------------------------------------------

Build = Callable[[World], str]


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    build: Build
    codes: frozenset[str]  # at least one of these must be in the verdict's codes
    api_status: int = 200  # 413/422 problem+json where the request model or body limit answers first
    bug: str | None = None  # set for a production misbehaviour: the case is a strict xfail


CASES: list[Case] = []


def case(
    case_id: str, category: str, build: Build, *codes: str, api_status: int = 200, bug: str | None = None
) -> None:
    CASES.append(Case(case_id, category, build, frozenset(codes), api_status, bug))


def g(w: World, which: str = ES256) -> Genuine:
    return w.genuine[which]


def genuine_payload(w: World, which: str = ES256) -> bytes:
    return b64d(segments(g(w, which).token)[1])


def genuine_signature(w: World, which: str = ES256) -> str:
    return segments(g(w, which).token)[2]


# algorithm: "none" in three spellings with an empty and a garbage signature; header alg swapped.

for _none in ("none", "None", "NONE"):
    for _sig_name, _sig in (("empty-sig", ""), ("garbage-sig", b64e(b"garbage" * 9))):
        case(
            f"alg-{_none}-{_sig_name}",
            "algorithm",
            lambda w, n=_none, s=_sig: forge(licence_header(g(w).kid, n), genuine_payload(w), s),
            "unsupported_algorithm",
        )

for _key_alg in ALGORITHMS:
    for _claimed in ALGORITHMS:
        if _claimed == _key_alg:
            continue
        case(
            f"alg-swap-{_key_alg}-key-claimed-{_claimed}",
            "algorithm",
            lambda w, k=_key_alg, c=_claimed: forge(
                licence_header(g(w, k).kid, c), genuine_payload(w, k), by_attacker(c)
            ),
            "algorithm_mismatch",
        )


# key confusion: HS256 keyed with the public key (PEM, DER SPKI, JWK text); other-purpose keys.


def _public_secret(w: World, which: str, form: str) -> bytes:
    kid = g(w, which).kid
    public = w.vault.backend.public_key(kid)
    if form == "pem":
        return public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if form == "der":
        return public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return compact(dict(w.vault.key_details(kid)[0].public_jwk))


for _key_alg in ALGORITHMS:
    for _form in ("pem", "der", "jwk"):
        case(
            f"hs256-{_key_alg}-public-key-{_form}",
            "key confusion",
            lambda w, k=_key_alg, f=_form: forge(
                licence_header(g(w, k).kid, "HS256"),
                genuine_payload(w, k),
                lambda data: hmac.new(_public_secret(w, k, f), data, hashlib.sha256).digest(),
            ),
            "unsupported_algorithm",
        )


def _other_purpose_key(w: World, token: str) -> str:
    """A licence signed by the status-list or service-token key (real keys of this vault)."""
    kid = header_of(token)["kid"]
    return forge(licence_header(kid, ES256), genuine_payload(w), by_vault_key(w, kid, ES256))


case(
    "status-list-key-signs-a-licence",
    "key confusion",
    lambda w: _other_purpose_key(w, w.status_list_token),
    "unknown_key",
)
case(
    "service-token-key-signs-a-licence",
    "key confusion",
    lambda w: _other_purpose_key(w, w.access_token),
    "unknown_key",
)


# header injection: keys from the token (jwk, jku, x5u, x5c), crit.

for _alg in ALGORITHMS:
    case(
        f"embedded-jwk-{_alg}",
        "header injection",
        lambda w, a=_alg: forge(
            licence_header(g(w, a).kid, a, jwk=attacker_jwk(a)), genuine_payload(w, a), by_attacker(a)
        ),
        "forbidden_header",
    )
for _name, _value in (
    ("jku", "https://attacker.example/.well-known/jwks.json"),
    ("x5u", "https://attacker.example/cert.pem"),
    ("x5c", None),
):
    case(
        f"header-{_name}",
        "header injection",
        lambda w, n=_name, v=_value: forge(
            licence_header(g(w).kid, ES256, **{n: v if v is not None else [attacker_certificate_b64()]}),
            genuine_payload(w),
            by_attacker(ES256),
        ),
        "forbidden_header",
    )
case(
    "crit-unknown-extension",
    "header injection",
    lambda w: forge(
        licence_header(g(w).kid, ES256, crit=["urn:yinxin:trusted"], **{"urn:yinxin:trusted": True}),
        genuine_payload(w),
        by_vault_key(w, g(w).kid, ES256),
    ),
    "crit_unsupported",
)
case(
    "crit-b64-false",
    "header injection",
    lambda w: forge(
        licence_header(g(w).kid, ES256, b64=False, crit=["b64"]),
        genuine_payload(w),
        by_vault_key(w, g(w).kid, ES256),
    ),
    "crit_unsupported",
)


# kid: path, SQL, NoSQL, 10 000 characters, empty, non-strings, control characters, another key's kid.

for _kid_name, _kid, _code in (
    ("path", "../../etc/passwd", "unknown_key"),
    ("sql", "' OR 1=1 --", "unknown_key"),
    ("nosql-object", {"$ne": ""}, "unknown_key"),
    ("10000-chars", "A" * 10_000, "too_large"),  # API: 422, the request model's max_length
    ("empty", "", "unknown_key"),
    ("integer", 42, "unknown_key"),
    ("null", None, "unknown_key"),
    ("list", ["kid"], "unknown_key"),
    ("nul-suffix", "\x00", "unknown_key"),
):
    case(
        f"kid-{_kid_name}",
        "kid",
        lambda w, k=_kid: forge(
            licence_header(g(w).kid + k if k == "\x00" else k, ES256),
            genuine_payload(w),
            genuine_signature(w),
        ),
        _code,
        api_status=422 if _kid_name == "10000-chars" else 200,
    )
case(
    "kid-of-another-algorithms-key",
    "kid",
    lambda w: forge(licence_header(g(w, EDDSA).kid, ES256), genuine_payload(w), genuine_signature(w)),
    "algorithm_mismatch",
)


# signature forgery: all-zero (CVE-2022-21449 for ES256), attacker key under our kid, empty,
# truncated, spliced from another licence, DER instead of r||s.

for _alg, _size in ((ES256, 64), (EDDSA, 64), (PS256, 384)):
    case(
        f"all-zero-signature-{_alg}",
        "signature forgery",
        lambda w, a=_alg, n=_size: forge(header_of(g(w, a).token), genuine_payload(w, a), b64e(bytes(n))),
        "signature_invalid",
    )
for _alg in ALGORITHMS:
    case(
        f"attacker-key-under-our-kid-{_alg}",
        "signature forgery",
        lambda w, a=_alg: forge(header_of(g(w, a).token), genuine_payload(w, a), by_attacker(a)),
        "signature_invalid",
    )
case(
    "empty-signature",
    "signature forgery",
    lambda w: g(w).token.rsplit(".", 1)[0] + ".",
    "signature_invalid",
    "malformed",
)
case(
    "truncated-signature",
    "signature forgery",
    lambda w: g(w).token.rsplit(".", 1)[0] + "." + b64e(b64d(genuine_signature(w))[:-3]),
    "signature_invalid",
)
case(
    "signature-spliced-from-another-licence",
    "signature forgery",
    lambda w: g(w).token.rsplit(".", 1)[0] + "." + genuine_signature(w, "ES256-second"),
    "signature_invalid",
)


def _der_signature(w: World) -> str:
    raw = b64d(genuine_signature(w))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    return g(w).token.rsplit(".", 1)[0] + "." + b64e(der)


case("der-ecdsa-signature", "signature forgery", _der_signature, "signature_invalid")


# encoding: padding, the standard base64 alphabet, whitespace, stray bits, non-ASCII.


def _pad(token: str, index: int) -> str:
    parts = list(segments(token))
    parts[index] += "="
    return ".".join(parts)


for _index, _part in enumerate(("header", "payload", "signature")):
    case(f"padded-{_part}", "encoding", lambda w, i=_index: _pad(g(w).token, i), "malformed")
case(
    "standard-base64-alphabet",
    "encoding",
    lambda w: g(w).token.replace("-", "+").replace("_", "/"),
    "malformed",
)
case(
    "standard-base64-padded-segments",
    "encoding",
    lambda w: ".".join(base64.b64encode(b64d(p)).decode("ascii") for p in segments(g(w).token)),
    "malformed",
)


def _insert(token: str, index: int, text: str) -> str:
    parts = list(segments(token))
    middle = len(parts[index]) // 2
    parts[index] = parts[index][:middle] + text + parts[index][middle:]
    return ".".join(parts)


case("space-inside-payload", "encoding", lambda w: _insert(g(w).token, 1, " "), "malformed")
case("newline-inside-signature", "encoding", lambda w: _insert(g(w).token, 2, "\n"), "malformed")
case("tab-inside-header", "encoding", lambda w: _insert(g(w).token, 0, "\t"), "malformed")


def _stray_bits(token: str) -> str:
    # 64 bytes → 86 characters: the last one carries 4 unused bits (RFC 4648 §3.5); set one.
    body, sig = token.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(sig) % 4 == 2
    return f"{body}.{sig[:-1]}{alphabet[alphabet.index(sig[-1]) + 1]}"


case("non-canonical-last-character", "encoding", lambda w: _stray_bits(g(w).token), "malformed")
case("fullwidth-dots", "encoding", lambda w: g(w).token.replace(".", "．"), "malformed")


# JSON: duplicate members, the JSON serialisations of JWS, non-objects, a byte-order mark.


def _duplicate_in_header(w: World, first: str) -> str:
    h = header_of(g(w).token)
    name, value = first.split("=", 1)
    rest = compact(h)[1:]
    raw = b"{" + compact({name: value})[1:-1] + b"," + rest
    return forge(raw, genuine_payload(w), genuine_signature(w))


case("duplicate-alg-in-header", "JSON", lambda w: _duplicate_in_header(w, "alg=none"), "malformed")
case("duplicate-kid-in-header", "JSON", lambda w: _duplicate_in_header(w, "kid=attacker"), "malformed")


def _duplicate_in_payload(w: World, name: str, value: Any, insider: bool) -> str:
    raw = b"{" + compact({name: value})[1:-1] + b"," + genuine_payload(w)[1:]
    sign = by_vault_key(w, g(w).kid, ES256) if insider else genuine_signature(w)
    return forge(header_of(g(w).token), raw, sign)


case(
    "duplicate-jti-in-payload-insider-signed",
    "JSON",
    lambda w: _duplicate_in_payload(w, "jti", g(w, "ES256-second").identifier, True),
    "malformed",
)
case(
    "duplicate-jti-in-payload-original-signature",
    "JSON",
    lambda w: _duplicate_in_payload(w, "jti", g(w, "ES256-second").identifier, False),
    "signature_invalid",
)
case(
    "duplicate-status-in-payload-insider-signed",
    "JSON",
    lambda w: _duplicate_in_payload(
        w, "status", {"status_list": {"idx": 0, "uri": "https://x.example/1"}}, True
    ),
    "malformed",
)


def _json_serialisation(token: str, flattened: bool) -> str:
    h, p, s = segments(token)
    if flattened:
        return json.dumps({"payload": p, "protected": h, "signature": s})
    return json.dumps({"payload": p, "signatures": [{"protected": h, "signature": s}]})


case("jws-json-general", "JSON", lambda w: _json_serialisation(g(w).token, False), "malformed")
case("jws-json-flattened", "JSON", lambda w: _json_serialisation(g(w).token, True), "malformed")
case(
    "header-json-array",
    "JSON",
    lambda w: forge(compact([header_of(g(w).token)]), genuine_payload(w), genuine_signature(w)),
    "malformed",
)
case(
    "header-with-byte-order-mark",
    "JSON",
    lambda w: forge(
        b"\xef\xbb\xbf" + compact(header_of(g(w).token)), genuine_payload(w), genuine_signature(w)
    ),
    "malformed",
)


# structure/size: nested JWS, parts, size limits, empty.

case(
    "nested-jws-with-cty",
    "structure/size",
    lambda w: forge(
        licence_header(g(w).kid, ES256, cty="JWT"),
        g(w).token.encode("ascii"),
        by_vault_key(w, g(w).kid, ES256),
    ),
    "forbidden_header",
)
case(
    "nested-jws-insider-signed",
    "structure/size",
    lambda w: forge(header_of(g(w).token), g(w).token.encode("ascii"), by_vault_key(w, g(w).kid, ES256)),
    "malformed",
)
case(
    "just-over-max-token-bytes",
    "structure/size",
    lambda w: g(w).token + "A" * (MAX_TOKEN_BYTES + 1 - len(g(w).token)),
    "too_large",
    api_status=422,  # the request model's max_length (MAX_TOKEN_BYTES) answers first
)
case(
    "ten-megabytes",
    "structure/size",
    lambda w: g(w).token + "A" * (TEN_MB - len(g(w).token)),
    "too_large",
    api_status=413,  # YINXIN_MAX_BODY_BYTES (64 KiB) answers first
)
case("two-parts", "structure/size", lambda w: g(w).token.rsplit(".", 1)[0], "malformed")
case("four-parts", "structure/size", lambda w: g(w).token + "." + genuine_signature(w), "malformed")
case(
    "five-parts-jwe-shaped",
    "structure/size",
    lambda w: forge({"alg": "RSA-OAEP", "enc": "A256GCM"}, b"", "") + ".AAAA.AAAA.AAAA",
    "malformed",
)
case("only-dots", "structure/size", lambda w: "..", "malformed")
case("empty", "structure/size", lambda w: "", "malformed", api_status=422)
case("whitespace-only", "structure/size", lambda w: " \t ", "malformed")


# claims: one claim changed under the original signature; claims signed by the key outside the vault.


def _changed_claim(w: World, which: str, change: Callable[[dict[str, Any]], None]) -> str:
    claims = claims_of(g(w, which).token)
    change(claims)
    return forge(header_of(g(w, which).token), compact(claims), genuine_signature(w, which))


def _set(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(claims: dict[str, Any]) -> None:
        claims[name] = value

    return change


def _set_identifier(identifier: str) -> Callable[[dict[str, Any]], None]:
    def change(claims: dict[str, Any]) -> None:
        claims["sub"] = claims["jti"] = identifier

    return change


def _set_data_name(claims: dict[str, Any]) -> None:
    claims["data"] = {**claims["data"], "name": "北京市东城区冒名顶替有限公司"}


for _alg in ALGORITHMS:
    case(
        f"changed-jti-{_alg}",
        "claims",
        lambda w, a=_alg: _changed_claim(w, a, _set_identifier(g(w, "ES256-second").identifier)),
        "signature_invalid",
    )
    case(
        f"changed-exp-{_alg}",
        "claims",
        lambda w, a=_alg: _changed_claim(w, a, _set("exp", 4102444800)),
        "signature_invalid",
    )
    case(
        f"changed-data-field-{_alg}",
        "claims",
        lambda w, a=_alg: _changed_claim(w, a, _set_data_name),
        "signature_invalid",
    )


def _insider(w: World, which: str, change: Callable[[dict[str, Any]], None], signer: str = ES256) -> str:
    claims = claims_of(g(w, which).token)
    change(claims)
    kid = g(w, signer).kid
    alg = g(w, signer).algorithm.value
    return forge(licence_header(kid, alg), compact(claims), by_vault_key(w, kid, alg))


case(
    "insider-changed-data-field",
    "claims",
    lambda w: _insider(w, ES256, _set_data_name),
    "token_mismatch",
)
case(
    "insider-unknown-licence",
    "claims",
    lambda w: _insider(
        w, ES256, _set_identifier("1.2.156.3005.2.11100000000013101Q001.11110101000000123B.20269999999.001.X")
    ),
    "unknown_licence",
)
case(
    "insider-other-departments-licence",
    "claims",
    lambda w: _insider(w, PS256, lambda claims: None, signer=ES256),
    "key_mismatch",
)


# token type: typ missing or another JWT's; real status-list and access tokens presented as licences.

for _typ_name, _typ in (
    ("missing", None),
    ("JWT", "JWT"),
    ("status-list+jwt", "status-list+jwt"),
    ("licence-presentation+jwt", "licence-presentation+jwt"),
):
    case(
        f"typ-{_typ_name}",
        "token type",
        lambda w, t=_typ: forge(
            {k: v for k, v in {"alg": ES256, "kid": g(w).kid, "typ": t}.items() if v is not None},
            genuine_payload(w),
            by_vault_key(w, g(w).kid, ES256),
        ),
        "typ_invalid",
    )
case("status-list-token", "token type", lambda w: w.status_list_token, "typ_invalid")
case("oauth-access-token", "token type", lambda w: w.access_token, "typ_invalid")


# key state: a compromised key (its own licence, a thief's token, a forgery under its kid);
# a forgery under a destroyed key's kid.

case("compromised-key-genuine-licence", "key state", lambda w: g(w, "compromised").token, "key_compromised")
case(
    "compromised-key-thief-signed",
    "key state",
    lambda w: _insider(w, "compromised", _set_data_name, signer="compromised"),
    "key_compromised",
)
case(
    "compromised-kid-attacker-signed",
    "key state",
    lambda w: forge(
        header_of(g(w, "compromised").token), genuine_payload(w, "compromised"), by_attacker(ES256)
    ),
    "key_compromised",
)
case(
    "destroyed-kid-attacker-signed",
    "key state",
    lambda w: forge(header_of(g(w, "destroyed").token), genuine_payload(w, "destroyed"), by_attacker(ES256)),
    "signature_invalid",
)


PARAMS = [
    pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=f"BUG: {c.bug}")] if c.bug else [])
    for c in CASES
]


def token_for(w: World, c: Case) -> str:
    if c.id not in w.cache:
        w.cache[c.id] = c.build(w)
    token: str = w.cache[c.id]
    return token


# -- the three entry points ------------------------------------------------------------------------


@pytest.mark.parametrize("c", PARAMS)
def test_vault_verify_rejects(world: World, c: Case) -> None:
    verdict = world.vault.verify(token_for(world, c))
    assert verdict.valid is False
    assert verdict.status == "invalid"
    assert verdict.reasons and all(verdict.reasons)
    assert set(verdict.codes) & c.codes, verdict.codes


def assert_problem(response: Any, status: int) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["code"] and body["type"]


@pytest.mark.parametrize("c", PARAMS)
def test_api_verify_rejects(world: World, c: Case) -> None:
    response = world.api.post("/v1/verify", json={"token": token_for(world, c)})
    if c.api_status != 200:
        assert_problem(response, c.api_status)
        return
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["valid"] is False and body["status"] == "invalid"
    assert body["reasons"] and body["codes"]
    assert set(body["codes"]) & c.codes, body["codes"]


@pytest.mark.parametrize("c", PARAMS)
def test_cli_verify_rejects(world: World, c: Case) -> None:
    result, verdict = world.cli_verify(token_for(world, c))
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert result.code == 1, (result.code, result.err)
    assert verdict["valid"] is False and verdict["reasons"] and verdict["codes"]
    assert set(verdict["codes"]) & c.codes, verdict["codes"]


def test_cli_human_output_names_the_verdict_without_a_traceback(world: World) -> None:
    result = world.cli("verify", g(world).token.replace("-", "+"))
    assert result.code == 1 and "Traceback" not in result.err
    assert result.out.strip() and "reason:" in result.out


def test_cli_token_that_looks_like_an_option_is_a_usage_error(world: World) -> None:
    """A token starting with '-' is taken by argparse for an option: exit 2 with one line on
    stderr (unreadable input, not a verdict); ``yinxin verify -- TOKEN`` reads it as a token."""
    usage = world.cli("verify", "-" + g(world).token)
    assert usage.code == 2 and usage.out == ""
    assert usage.err.startswith("yinxin: error:") and usage.err.count("\n") == 1
    result, verdict = world.cli_verify_after_separator("-" + g(world).token)
    assert result.code == 1 and "Traceback" not in result.err
    assert verdict["codes"] == ["malformed"]


# -- request bodies that are not a token (the API's own refusals) ----------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"token": 123}, 422, id="token-integer"),
        pytest.param({"token": None}, 422, id="token-null"),
        pytest.param({"token": ["a.b.c"]}, 422, id="token-list"),
        pytest.param({"token": {"protected": "x"}}, 422, id="token-object"),
        pytest.param({}, 422, id="missing-token"),
        pytest.param({"token": "a.b.c", "kid": "x"}, 422, id="extra-member"),
        pytest.param([], 422, id="array-body"),
        pytest.param(b"not json", 422, id="non-json-body"),
        pytest.param(b'{"token": "\\ud800.e30.AA"}', 422, id="lone-surrogate-in-token"),
        pytest.param({"token": "A" * TEN_MB}, 413, id="ten-megabyte-body"),
    ],
)
def test_api_refuses_bodies_that_are_not_a_token(world: World, body: Any, status: int) -> None:
    if isinstance(body, bytes):
        response = world.api.post("/v1/verify", content=body, headers={"content-type": "application/json"})
    else:
        response = world.api.post("/v1/verify", json=body)
    assert_problem(response, status)


# -- documented contrasts: what is NOT an attack ----------------------------------------------------


def _high_s(token: str) -> str:
    body, sig = token.rsplit(".", 1)
    raw = b64d(sig)
    s = int.from_bytes(raw[32:], "big")
    return f"{body}.{b64e(raw[:32] + (P256_N - s).to_bytes(32, 'big'))}"


def test_high_s_ecdsa_is_not_taken_for_the_licence_on_record(world: World) -> None:
    """signing/_signature.py accepts high-S (ECDSA is malleable; RFC 7518 does not require low-S),
    so the signature verifies; the vault then finds the token is not the one on record and
    answers ``token_mismatch`` for the same licence, never a different one."""
    genuine = g(world)
    malleated = _high_s(genuine.token)
    assert malleated != genuine.token

    verdict = world.vault.verify(malleated)
    assert (verdict.valid, verdict.codes, verdict.kid) == (False, ("token_mismatch",), genuine.kid)
    assert verdict.licence is not None and verdict.licence["identifier"] == genuine.identifier

    body = world.api.post("/v1/verify", json={"token": malleated}).json()
    assert (body["valid"], body["codes"], body["licence"]["identifier"]) == (
        False,
        ["token_mismatch"],
        genuine.identifier,
    )
    result, cli_verdict = world.cli_verify(malleated)
    assert result.code == 1 and cli_verdict["codes"] == ["token_mismatch"]
    assert cli_verdict["licence"]["identifier"] == genuine.identifier


def test_a_destroyed_keys_licence_still_verifies(world: World) -> None:
    """Destroying a retired key deletes its private half, not its public key: what it signed
    while trusted is history and stays valid (contrast with key_compromised above)."""
    genuine = g(world, "destroyed")
    (info,) = [k for k in world.vault.list_keys() if k.kid == genuine.kid]
    assert info.state == "destroyed"

    verdict = world.vault.verify(genuine.token)
    assert (verdict.valid, verdict.status, verdict.codes, verdict.kid) == (True, "valid", (), genuine.kid)
    body = world.api.post("/v1/verify", json={"token": genuine.token}).json()
    assert (body["valid"], body["codes"]) == (True, [])
    result, cli_verdict = world.cli_verify(genuine.token)
    assert result.code == 0 and cli_verdict["valid"] is True


def test_the_genuine_tokens_are_valid_everywhere(world: World) -> None:
    """The attack base: without this, every rejection above could be for the wrong reason."""
    for which in (ES256, EDDSA, PS256, "ES256-second"):
        token = g(world, which).token
        assert world.vault.verify(token).valid, which
        assert world.api.post("/v1/verify", json={"token": token}).json()["valid"] is True, which
        assert world.cli_verify(token)[0].code == 0, which


def test_docstring_table_counts_the_cases() -> None:
    table = {}
    for line in (__doc__ or "").splitlines():
        name, _, count = line.rpartition(" ")
        if count.isdigit() and name.strip():
            table[name.strip()] = int(count)
    assert table == dict(Counter(c.category for c in CASES))
