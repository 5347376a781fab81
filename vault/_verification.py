"""The verdict: what a token's own checks and the vault's live record say together.

Order of precedence: a token that fails its own checks (format, key, signature,
claims) is ``invalid``; then the licence must be on record here, signed by the
key that issued it, and be exactly the token that was issued; then revocation
and suspension win over the validity window (a revoked licence that has also
expired is reported as revoked).
"""

from __future__ import annotations

from datetime import datetime

from signing import TokenVerdict
from vault._types import LicenceState, LicenceStatus, Verdict

__all__ = ["judge", "live_verdict", "signature_holds", "unknown_licence"]

_TIME_CODES = frozenset({"expired", "not_yet_valid"})


def signature_holds(tv: TokenVerdict) -> bool:
    """True when the token is authentic, even if only its time window fails."""
    return tv.valid or set(tv.codes) <= _TIME_CODES


def _presented_text(token: str | bytes) -> str:
    if isinstance(token, bytes | bytearray):
        return bytes(token).decode("ascii", errors="replace").strip()
    return token.strip()


def judge(
    tv: TokenVerdict, presented: str | bytes, licence: LicenceState | None, last_reason: str, now: datetime
) -> Verdict:
    if not signature_holds(tv):
        return Verdict(False, LicenceStatus.INVALID, tv.reasons, tv.codes, now, tv.kid)
    if licence is None:
        return unknown_licence(str((tv.claims or {}).get("jti", "")), tv, now)
    if licence.kid != tv.kid:
        return Verdict(
            False,
            LicenceStatus.INVALID,
            ("the token was not signed by the key that issued this licence",),
            ("key_mismatch",),
            now,
            tv.kid,
            licence.summary(),
        )
    if licence.token != _presented_text(presented):
        # Authentic signature, right key, but not the token on record: the key signed
        # something the vault never issued (misuse or compromise of the key).
        return Verdict(
            False,
            LicenceStatus.INVALID,
            ("the token is not the one issued for this licence (signed outside the vault?)",),
            ("token_mismatch",),
            now,
            tv.kid,
            licence.summary(),
        )
    return live_verdict(tv, licence, last_reason, now)


def unknown_licence(identifier: str, tv: TokenVerdict, now: datetime) -> Verdict:
    return Verdict(
        False,
        LicenceStatus.INVALID,
        (f"licence {identifier} is not in this vault (signed by a known key, but never stored here)",),
        ("unknown_licence",),
        now,
        tv.kid,
    )


def live_verdict(tv: TokenVerdict, licence: LicenceState, last_reason: str, now: datetime) -> Verdict:
    """The verdict of an authentic token for *licence*: its live state at *now*.

    Revocation and suspension win over the validity window. Should the token's own
    time window fail while the record's does not, the stricter answer (expired) stands.
    """
    status = licence.effective_status(now)
    if status == LicenceStatus.VALID and not tv.valid:
        status = LicenceStatus.EXPIRED
    reasons: list[str] = []
    codes: list[str] = []
    if status in (LicenceStatus.REVOKED, LicenceStatus.SUSPENDED):
        reasons.append(f"licence is {status}" + (f": {last_reason}" if last_reason else ""))
        codes.append(status)
    elif status != LicenceStatus.VALID:
        reasons.extend(tv.reasons or (f"licence is {status.replace('_', ' ')}",))
        codes.append(status)
    valid = status == LicenceStatus.VALID
    return Verdict(valid, status, tuple(reasons), tuple(codes), now, tv.kid, licence.summary())
