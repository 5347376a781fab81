"""Fuzz the QR path: scanned text to presentation token to verdict, and the QR builders.

A licence's QR code holds ``{public_url}/v/{presentation token}`` (``signing._qr``). A phone
opens it as the verification page, whose route (``GET /v/{token:path}``) hands everything
after ``/v/``, percent-decoded, to ``verify_presentation``; an offline verifier does the
same with the scanned text. ``scanned_token`` below is that reading: the product function
under test is ``signing.verify_presentation`` with a trust store of real ES256, EdDSA and
PS256 keys.

Modes (first input byte):

0. raw scanned text (bytes, and the UTF-8/ASCII text of them) read as a URL;
1. a genuine QR URL with a few edits, anywhere in it (scheme, host, path, token);
2. a presentation token with a fuzzed header or payload, signed with a real key;
3. ``presentation_url`` with a fuzzed public URL and token: an ``InvalidInput`` or a URL
   whose scanned token is the token given;
4. ``qr_version`` on fuzzed content: a version 1-40, ``InvalidInput`` or ``InputTooLarge``;
5. the raw bytes straight to ``verify_presentation`` as ``bytes`` and ``str``.

Crashes: any exception from ``verify_presentation``, any exception but a ``YinxinError``
from the builders, a valid verdict for a token nobody signed, a signature we made called
invalid, a malformed verdict.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

import atheris

with atheris.instrument_imports(include=["signing", "schemas"]):
    from hsm import SignatureAlgorithm
    from schemas.errors import YinxinError
    from signing import (
        MAX_PRESENTATION_BYTES,
        PRESENTATION_TYP,
        VERDICT_CODES,
        TokenVerdict,
        presentation_url,
        qr_version,
        sign_presentation,
        verify_presentation,
    )
    from signing._jws import SIGNATURE_INVALID

# Everything below is imported after the instrumented block (see _common's docstring).
import _common
from _common import IDENTIFIER, NOW, NOW_TS, attempt, finding

MODES = 6
PUBLIC_URL = "https://zhengzhao.example.gov.cn"
ES256, EDDSA, PS256 = SignatureAlgorithm.ES256, SignatureAlgorithm.EDDSA, SignatureAlgorithm.PS256
SIGNERS = (ES256, EDDSA, ES256, EDDSA, ES256, EDDSA, ES256, PS256)
URL_ALPHABET = _common.B64URL + ".=/:?#%@[]+ \t\n"

KEYS = _common.make_keys()
TRUST = KEYS.trust
GENUINE = {
    alg: sign_presentation(KEYS.backend, ref, IDENTIFIER, iat=NOW_TS - 60, exp=NOW_TS + 86400)
    for alg, ref in KEYS.refs.items()
}
GENUINE_LIST = list(GENUINE.values())
GENUINE_SET = frozenset(GENUINE_LIST)
GENUINE_URLS = [presentation_url(PUBLIC_URL, token) for token in GENUINE_LIST]


def scanned_token(text: str) -> str | None:
    """What the verification page's route hands on: the path after ``/v/``, percent-decoded."""
    # A token never holds '/', so the last "/v/" starts it, whatever prefix the public URL has.
    try:
        path = urlsplit(text).path
    except ValueError:  # "Invalid IPv6 URL": no page would be opened
        return None
    _, sep, tail = path.rpartition("/v/")
    if not sep:
        return None
    return unquote(tail)


def judge(token: str | bytes, *, authentic: bool) -> TokenVerdict:
    verdict = attempt("verify_presentation", token, lambda: verify_presentation(token, TRUST, now=NOW), ())
    assert verdict is not None
    if not isinstance(verdict, TokenVerdict):
        finding("verify_presentation", token, f"not a TokenVerdict: {verdict!r:.200}")
    if verdict.valid != (not verdict.codes) or len(verdict.codes) != len(verdict.reasons):
        finding("verify_presentation", token, f"inconsistent verdict: {verdict!r:.300}")
    _common.check_reasons("verify_presentation", token, verdict.codes, verdict.reasons, VERDICT_CODES)
    text = token.decode("ascii", "replace") if isinstance(token, bytes) else token
    if verdict.valid:
        if not authentic and text not in GENUINE_SET:
            finding("verify_presentation", token, "a presentation token nobody signed was accepted")
        if verdict.claims is None or set(verdict.claims) - {"sub", "iat", "exp"}:
            finding("verify_presentation", token, f"valid verdict with odd claims: {verdict.claims!r:.300}")
    if authentic and SIGNATURE_INVALID in verdict.codes and len(text) <= MAX_PRESENTATION_BYTES:
        finding("verify_presentation", token, "a signature made by a trusted key was reported invalid")
    return verdict


def run_scanned(body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    token = scanned_token(text)
    if token is not None:
        judge(token, authentic=False)


def run_mutated_url(fdp: atheris.FuzzedDataProvider) -> None:
    index = fdp.ConsumeIntInRange(0, len(GENUINE_URLS) - 1)
    url = _common.mutate_text(fdp, GENUINE_URLS[index], URL_ALPHABET)
    token = scanned_token(url)
    if token is not None:
        judge(token, authentic=token == GENUINE_LIST[index])


def run_signed(fdp: atheris.FuzzedDataProvider) -> None:
    algorithm = SIGNERS[fdp.ConsumeIntInRange(0, len(SIGNERS) - 1)]
    kid = KEYS.refs[algorithm].kid
    header_fields: dict[str, Any] = {"alg": algorithm.value, "kid": kid, "typ": PRESENTATION_TYP}
    claims: dict[str, Any] = {"sub": IDENTIFIER, "iat": NOW_TS - 60, "exp": NOW_TS + 86400}
    target = header_fields if fdp.ConsumeBool() else claims
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        name = fdp.PickValueInList([*target, "crit", "jti", "typ", "nbf"])
        if fdp.ConsumeBool():
            target.pop(name, None)
        else:
            target[name] = _common.json_value(fdp)
    try:
        header = json.dumps(header_fields, separators=(",", ":")).encode()
        payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=fdp.ConsumeBool())
    except (TypeError, ValueError):
        return
    token = KEYS.sign_compact(algorithm, header, payload.encode("utf-8", "surrogatepass"))
    judge(token, authentic=True)


def run_url_builder(fdp: atheris.FuzzedDataProvider) -> None:
    if fdp.ConsumeBool():
        base = _common.mutate_text(fdp, PUBLIC_URL, URL_ALPHABET)
    else:
        base = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 80))
    token = (
        fdp.PickValueInList(GENUINE_LIST)
        if fdp.ConsumeBool()
        else fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 200))
    )
    value = (base, token)
    url = attempt("presentation_url", value, lambda: presentation_url(base, token), (YinxinError,))
    if url is None:
        return
    if not (url.isascii() and url.isprintable()) or " " in url:
        finding("presentation_url", value, f"the QR URL is not printable ASCII: {url!r:.200}")
    if scanned_token(url) != token:
        finding("presentation_url", value, f"scanning {url!r:.200} does not give the token back")


def run_qr_version(fdp: atheris.FuzzedDataProvider) -> None:
    content = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 2500))
    version = attempt("qr_version", content, lambda: qr_version(content), (YinxinError,))
    if version is not None and not (isinstance(version, int) and 1 <= version <= 40):
        finding("qr_version", content, f"QR version {version!r} is not 1-40")


def run_raw(body: bytes) -> None:
    as_bytes = judge(body, authentic=False)
    if body.isascii():
        as_text = judge(body.decode("ascii"), authentic=False)
        if as_text != as_bytes:
            finding("verify_presentation", body, "bytes and str of the same token gave different verdicts")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % MODES, data[1:]
    if mode == 0:
        run_scanned(body)
    elif mode == 5:
        run_raw(body)
    else:
        fdp = atheris.FuzzedDataProvider(body)
        (run_mutated_url, run_signed, run_url_builder, run_qr_version)[mode - 1](fdp)


def seeds() -> list[bytes]:
    out = [bytes([0]) + url.encode() for url in GENUINE_URLS]
    out += [bytes([5]) + token.encode() for token in GENUINE_LIST]
    out += [bytes([0]) + b"http://127.0.0.1:8000/v/a.b.c", bytes([0]) + b"/v/%2e%2e"]
    for mode in range(1, 5):
        out += [bytes([mode]) + bytes([i]) * 24 for i in range(4)]
    return out


if __name__ == "__main__":
    _common.main("qr", test_one_input, seeds)
    sys.exit(0)
