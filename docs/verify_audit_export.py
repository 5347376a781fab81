#!/usr/bin/env python3
"""Verify a Yinxin audit export offline, without Yinxin.

    python3 verify_audit_export.py EXPORT.jsonl [--trusted-checkpoint JWS_OR_FILE]
                                                [--audit-key-sha256 HEX ...]

EXPORT.jsonl is what ``yinxin audit export [--since SEQ] --out EXPORT.jsonl`` wrote
(format ``yinxin-audit-export/1``, described in docs/audit.md). The script needs the
Python standard library and the ``cryptography`` package (for the ES256, EdDSA and PS256
checkpoint signatures), and nothing from Yinxin, so an auditor can run it on a machine of
their own. It

1. reads the header and prints each audit key's SHA-256 fingerprint (of its DER
   SubjectPublicKeyInfo): compare them with the fingerprints recorded out of band at the
   key ceremony (``yinxin keys show AUDIT_KID``), or pin them with ``--audit-key-sha256``;
2. recomputes every event's hash: SHA-256 over the UTF-8 JSON of
   ``[seq, at, actor, action, subject, details, prev_hash]`` (no spaces, non-ASCII
   characters as themselves; ``details`` is the stored JSON text, a string);
3. checks that the sequence has no gap and that each event's ``prev_hash`` is the hash
   of the event before it, starting from the header's ``prev_hash``;
4. checks each checkpoint line: its compact JWS (RFC 7515, ``typ: audit-checkpoint+jwt``)
   verifies under the audit key it names, with that key's algorithm, and its payload
   ``{seq, head, at}`` matches the line and the hash of event ``seq``;
5. with ``--trusted-checkpoint`` (a checkpoint kept from an earlier export or from
   ``yinxin audit checkpoint --json``, stored away from the database), checks that this
   export still contains the chain that checkpoint signed.

Exit status: 0 verified, 1 a problem was found (each is printed), 2 the files or
arguments could not be read, or the check asked for cannot be made.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
except ImportError:  # pragma: no cover - depends on the auditor's machine
    sys.stderr.write("this script needs the 'cryptography' package: pip install cryptography\n")
    sys.exit(2)

FORMAT = "yinxin-audit-export/1"
CHECKPOINT_TYP = "audit-checkpoint+jwt"
GENESIS_HASH = "0" * 64
MAX_LISTED = 50


class Unusable(Exception):
    """The input cannot be read or the requested check cannot be made (exit 2)."""


# ---- small strict readers ---------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a JSON member name appears twice")
    return obj


def parse_json(text: str | bytes) -> Any:
    return json.loads(text, object_pairs_hook=_no_duplicates)


def b64url_decode(segment: str) -> bytes:
    if not isinstance(segment, str) or any(c in segment for c in "=+/"):
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def event_hash(event: dict[str, Any]) -> str:
    """What the vault computes (vault/_audit.py ``event_hash``): SHA-256 over the compact JSON
    array, non-ASCII characters as UTF-8. For an array of strings and an integer this is the
    vault's canonical JSON byte for byte (sorted keys do not arise)."""
    material = json.dumps(
        [
            event["seq"],
            event["at"],
            event["actor"],
            event["action"],
            event["subject"],
            event["details"],
            event["prev_hash"],
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


# ---- keys and signatures ---------------------------------------------------------------------


class AuditKey:
    def __init__(self, jwk: dict[str, Any]) -> None:
        kid, alg = jwk.get("kid"), jwk.get("alg")
        if not isinstance(kid, str) or alg not in ("ES256", "EdDSA", "PS256"):
            raise ValueError("an audit key needs a kid and an alg of ES256, EdDSA or PS256")
        self.kid: str = kid
        self.alg: str = alg
        self.state = str(jwk.get("state", "?"))
        kty = jwk.get("kty")
        if kty == "EC" and self.alg == "ES256" and jwk.get("crv") == "P-256":
            x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
            if len(x) != 32 or len(y) != 32:
                raise ValueError("P-256 coordinates are 32 bytes")
            self.key: Any = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
        elif kty == "OKP" and self.alg == "EdDSA" and jwk.get("crv") == "Ed25519":
            self.key = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
        elif kty == "RSA" and self.alg == "PS256":
            n = int.from_bytes(b64url_decode(jwk["n"]), "big")
            e = int.from_bytes(b64url_decode(jwk["e"]), "big")
            self.key = rsa.RSAPublicNumbers(e, n).public_key()
            if self.key.key_size < 2048:
                raise ValueError("PS256 needs an RSA key of at least 2048 bits")
        else:
            raise ValueError(f"key type {kty!r} does not fit algorithm {self.alg!r}")
        der = self.key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        self.sha256 = hashlib.sha256(der).hexdigest()

    def verifies(self, data: bytes, signature: bytes) -> bool:
        try:
            if self.alg == "ES256":
                if len(signature) != 64:
                    return False
                r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                if r == 0 or s == 0:
                    return False
                self.key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
            elif self.alg == "EdDSA":
                self.key.verify(signature, data)
            else:
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
                self.key.verify(signature, data, pss, hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True


def check_checkpoint_token(token: Any, keys: dict[str, AuditKey]) -> tuple[dict[str, Any], AuditKey]:
    """The payload and key of a checkpoint JWS that verifies; else ValueError saying why."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise ValueError("the token is not a compact JWS (three dot-separated parts)")
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = parse_json(b64url_decode(header_b64))
    if not isinstance(header, dict) or set(header) - {"alg", "kid", "typ"}:
        raise ValueError("the JWS header must hold alg, kid and typ only")
    if str(header.get("typ", "")).lower() != CHECKPOINT_TYP:
        raise ValueError(f"the JWS typ is {header.get('typ')!r}, not {CHECKPOINT_TYP!r}")
    key = keys.get(str(header.get("kid")))
    if key is None:
        raise ValueError(f"it names audit key {header.get('kid')!r}, which the export header does not list")
    if header.get("alg") != key.alg:
        # The algorithm comes from the key, never from the token (RFC 8725 §3.1).
        raise ValueError(f"the JWS says {header.get('alg')!r} but audit key {key.kid} is {key.alg}")
    signing_input = (header_b64 + "." + payload_b64).encode("ascii")
    if not key.verifies(signing_input, b64url_decode(signature_b64)):
        raise ValueError(f"its signature does not verify under audit key {key.kid}")
    payload = parse_json(b64url_decode(payload_b64))
    if not isinstance(payload, dict):
        raise ValueError("the JWS payload is not a JSON object")
    return payload, key


def read_trusted_checkpoint(value: str) -> str:
    path = Path(value)
    text = value
    try:
        is_file = path.is_file()
    except OSError:  # a JWS is longer than a file name may be
        is_file = False
    if value.count(".") != 2 or is_file:
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Unusable(
                f"--trusted-checkpoint {value}: neither a JWS nor a readable file ({exc})"
            ) from None
    text = text.strip()
    if text.startswith("{"):  # `yinxin audit checkpoint --json`, or a checkpoint line of an export
        try:
            text = str(parse_json(text)["token"])
        except (ValueError, KeyError, TypeError):
            raise Unusable(f"--trusted-checkpoint {value}: JSON without a 'token' member") from None
    return text


# ---- the walk --------------------------------------------------------------------------------


def verify(path: Path, trusted: str | None, pins: set[str]) -> int:
    try:
        raw_lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise Unusable(f"cannot read {path}: {exc.strerror}") from None
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    if not raw_lines:
        raise Unusable(f"{path} is empty")
    try:
        header = parse_json(raw_lines[0].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Unusable(f"line 1 of {path} is not a JSON header: {exc}") from None
    if not isinstance(header, dict) or header.get("type") != "header" or header.get("format") != FORMAT:
        raise Unusable(f"{path} does not start with a {FORMAT} header")
    since, prev, head_seq, head_hash = (
        header.get("since"),
        header.get("prev_hash"),
        header.get("head_seq"),
        header.get("head_hash"),
    )
    if not (isinstance(since, int) and since >= 1 and isinstance(prev, str) and isinstance(head_seq, int)):
        raise Unusable("the header lacks since, prev_hash or head_seq")

    problems: list[str] = []
    warnings: list[str] = []
    keys: dict[str, AuditKey] = {}
    for jwk in header.get("audit_keys") or []:
        try:
            key = AuditKey(jwk)
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"header: audit key {jwk.get('kid')!r} cannot be read: {exc}")
            continue
        keys[key.kid] = key
    if since == 1 and prev != GENESIS_HASH:
        problems.append("header: an export from event 1 must start from the genesis hash (64 zeros)")

    print(f"{path}: {FORMAT}, from event {since}, exported {header.get('exported_at')}")
    print("audit keys (compare each SHA-256 with the fingerprint recorded out of band):")
    for key in keys.values():
        pinned = " (pinned)" if key.sha256 in pins else ""
        print(f"  {key.kid}  {key.alg}  {key.state:<11} SHA-256 {key.sha256}{pinned}")

    hashes_by_seq: dict[int, str] = {}
    expected_seq, previous_hash = since, prev
    last_seq: int | None = None
    checkpoints_ok: list[int] = []
    for number, raw in enumerate(raw_lines[1:], start=2):
        try:
            item = parse_json(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            problems.append(f"line {number}: not JSON ({exc})")
            continue
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "event":
            fields = ("at", "actor", "action", "subject", "details", "prev_hash", "hash")
            seq = item.get("seq")
            if type(seq) is not int or not all(isinstance(item.get(f), str) for f in fields):
                problems.append(f"line {number}: an event line needs an integer seq and text fields")
                continue
            if seq != expected_seq:
                if seq > expected_seq:
                    problems.append(
                        f"events {expected_seq}..{seq - 1} are missing (line {number} is event {seq})"
                    )
                else:
                    problems.append(
                        f"event {seq} (line {number}) is out of order: event {expected_seq} expected"
                    )
            if item["prev_hash"] != previous_hash:
                problems.append(
                    f"event {seq}: previous-hash link broken (an earlier event changed or is missing)"
                )
            try:
                recomputed = event_hash(item)
            except UnicodeEncodeError:
                recomputed = ""
            if recomputed != item["hash"]:
                problems.append(f"event {seq}: content does not match its hash (the event was edited)")
            hashes_by_seq[seq] = item["hash"]
            previous_hash, expected_seq, last_seq = item["hash"], seq + 1, seq
            if item["action"] == "key.generate" and item["subject"] in keys:
                # The audit key's own generation event records its fingerprint.
                try:
                    recorded = parse_json(item["details"]).get("public_key_sha256")
                except (ValueError, AttributeError):
                    recorded = None
                if recorded != keys[item["subject"]].sha256:
                    problems.append(
                        f"event {seq}: audit key {item['subject']} was generated with public key SHA-256 "
                        f"{recorded}, but the header's key has {keys[item['subject']].sha256}"
                    )
        elif kind == "checkpoint":
            seq = item.get("seq")
            where = f"checkpoint at event {seq} (line {number})"
            named = keys.get(str(item.get("kid")))
            if named is not None and named.state == "compromised":
                # As `yinxin audit verify` does: a compromised audit key's signature proves nothing.
                warnings.append(f"{where} is signed by audit key {named.kid}, declared compromised: ignored")
                continue
            try:
                payload, key = check_checkpoint_token(item.get("token"), keys)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                problems.append(f"{where}: {exc} (the checkpoint was forged or edited)")
                continue
            if (payload.get("seq"), payload.get("head"), payload.get("at")) != (
                seq,
                item.get("head_hash"),
                item.get("at"),
            ):
                problems.append(
                    f"{where}: the line differs from what was signed (signed: event {payload.get('seq')})"
                )
                continue
            if seq not in hashes_by_seq:
                problems.append(f"{where}: event {seq} is not in the export before it")
                continue
            if hashes_by_seq[seq] != payload["head"]:
                problems.append(
                    f"event {seq}: its hash differs from the head the signed checkpoint records "
                    "(the chain was rewritten and re-hashed)"
                )
                continue
            if pins and key.sha256 not in pins:
                problems.append(f"{where}: audit key {key.kid} (SHA-256 {key.sha256}) is not one you pinned")
                continue
            checkpoints_ok.append(seq)
        else:
            problems.append(f"line {number}: neither an event nor a checkpoint line")

    # The header's head: the export was read in one go, so it reaches at least that far.
    if last_seq is None:
        if head_seq >= since:
            problems.append(f"the export holds no events, but the header's head is event {head_seq}")
    elif last_seq < head_seq:
        problems.append(
            f"the export ends at event {last_seq}, but the header's head is event {head_seq}: "
            "events are missing from the end"
        )
    elif head_seq >= since and hashes_by_seq.get(head_seq) != head_hash:
        problems.append(f"event {head_seq}: its hash differs from the header's head hash")

    if trusted is not None:
        try:
            payload, key = check_checkpoint_token(trusted, keys)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            problems.append(f"trusted checkpoint: {exc}")
        else:
            t_seq, t_head = payload.get("seq"), payload.get("head")
            if pins and key.sha256 not in pins:
                problems.append(f"trusted checkpoint: audit key {key.kid} is not one you pinned")
            elif type(t_seq) is not int:
                problems.append("trusted checkpoint: its payload has no sequence number")
            elif last_seq is not None and t_seq > last_seq:
                problems.append(
                    f"trusted checkpoint at event {t_seq}: the export ends at event {last_seq}; "
                    f"events {last_seq + 1}..{t_seq} were deleted (the chain was rewound)"
                )
            elif t_seq in hashes_by_seq:
                if hashes_by_seq[t_seq] != t_head:
                    problems.append(
                        f"event {t_seq}: its hash differs from the trusted checkpoint's head "
                        "(the chain was rewritten since that checkpoint)"
                    )
                else:
                    print(f"trusted checkpoint at event {t_seq} ({payload.get('at')}): matches event {t_seq}")
            elif t_seq == since - 1:
                if prev != t_head:
                    problems.append(
                        f"the header's prev_hash differs from the trusted checkpoint at event {t_seq} "
                        "(the chain was rewritten since that checkpoint)"
                    )
                else:
                    print(f"trusted checkpoint at event {t_seq}: the export continues from it")
            else:
                raise Unusable(
                    f"the trusted checkpoint is at event {t_seq}, before this export (from event {since}): "
                    f"export with --since {t_seq + 1} or earlier"
                )

    for warning in warnings:
        print(f"warning: {warning}")
    if problems:
        print(f"FAILED: {len(problems)} problem(s)")
        for problem in problems[:MAX_LISTED]:
            print(f"  {problem}")
        if len(problems) > MAX_LISTED:
            print(f"  … and {len(problems) - MAX_LISTED} more")
        return 1
    count = 0 if last_seq is None else last_seq - since + 1
    span = f"events {since}..{last_seq}" if last_seq is not None else "no events"
    print(f"OK: {span} ({count} events): every hash recomputes and every link holds")
    if checkpoints_ok:
        print(
            f"  {len(checkpoints_ok)} signed checkpoint(s) verified, the last at event {checkpoints_ok[-1]}"
        )
        if last_seq is not None and last_seq > checkpoints_ok[-1]:
            print(
                f"  events {checkpoints_ok[-1] + 1}..{last_seq} come after the last checkpoint: "
                "no signature covers them yet"
            )
    else:
        print("  no signed checkpoint verified: nothing here is covered by a signature")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a Yinxin audit export (JSON lines) offline.")
    parser.add_argument("export", type=Path, help="the file `yinxin audit export --out` wrote")
    parser.add_argument(
        "--trusted-checkpoint",
        metavar="JWS_OR_FILE",
        help="a checkpoint kept away from the database: its JWS, or a file with the JWS, the JSON of "
        "`yinxin audit checkpoint --json`, or a checkpoint line of an earlier export",
    )
    parser.add_argument(
        "--audit-key-sha256",
        action="append",
        default=[],
        metavar="HEX",
        help="accept checkpoints only from audit keys with this public key SHA-256 (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        trusted = read_trusted_checkpoint(args.trusted_checkpoint) if args.trusted_checkpoint else None
        return verify(args.export, trusted, {pin.strip().lower() for pin in args.audit_key_sha256})
    except Unusable as exc:
        sys.stderr.write(f"verify_audit_export: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
