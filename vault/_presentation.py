"""Presentation tokens for stored licences: sign one for a QR code, judge one that was scanned.

A presentation token (``signing._presentation``) names a licence and is signed
by the issuing department's *active* licence key (a retired key verifies, never
signs: after a rotation, new QR codes come from the new key). Verifying it
mirrors :func:`vault._verification.judge` with one difference: the token is
not the stored licence token, so there is no exact-token comparison. The rules, in order:

1. the token's own checks (format, key, bound algorithm, signature, claims)
   fail → ``invalid``; an ``exp`` in the past alone does not stop here;
2. the licence named by ``sub`` is not in this vault → ``invalid``;
3. the token's ``kid`` is not a licence key of the department that issued the
   licence → ``invalid`` (one department cannot vouch for another's licences);
4. the licence's live state: revoked and suspended win over the validity
   window, then ``not_yet_valid`` / ``expired`` / ``valid``.
"""

from __future__ import annotations

from typing import Final

from hsm import KeyRef
from schemas.errors import Conflict, InvalidInput, KeyNotFound, LicenceNotFound
from signing import sign_presentation, verify_presentation
from vault._keys import KEY_PURPOSE_LICENCE
from vault._types import Licence, LicenceStatus, Verdict, licence_window
from vault._vault import Vault, unverified_member
from vault._verification import live_verdict, signature_holds, unknown_licence

__all__ = [
    "DEFAULT_PUBLIC_URL",
    "IssuingKeyUnavailable",
    "presentation_for",
    "public_url",
    "verify_presentation_token",
]

DEFAULT_PUBLIC_URL: Final = "http://127.0.0.1:8000"


class IssuingKeyUnavailable(Conflict):
    """The key that issued a licence is gone from the backend, so it cannot sign a presentation."""

    code = "issuing_key_unavailable"


def public_url(vault: Vault) -> str:
    """Where the verification page is reached from outside (``YINXIN_PUBLIC_URL``)."""
    value = getattr(vault, "public_url", None)
    return value if isinstance(value, str) and value else DEFAULT_PUBLIC_URL


def presentation_for(vault: Vault, identifier: str | Licence, *, key: KeyRef | None = None) -> str:
    """A presentation token for the stored licence *identifier*, signed by its department's active key.

    *identifier* may be the :class:`Licence` itself, as just issued or read: it is not read again.
    *key*, for a licence issued just now: the key that signed it, which its transaction found
    active and usable as it committed (``IssueResult.key``); otherwise the active key is read.

    Raises ``LicenceNotFound`` / ``InvalidIdentifier`` for an unknown or
    malformed identifier, ``Conflict`` for a licence past its validity,
    ``NoActiveKey`` when the issuing department has no active key, and
    :class:`IssuingKeyUnavailable` when that key is missing from the backend.
    """
    licence = vault.get(identifier) if isinstance(identifier, str) else identifier
    now = vault.clock()
    _, end = licence_window(licence.valid_from, licence.valid_until)
    if end is not None and end <= now:
        # exp must follow iat; an expired licence gets no new QR code (409: the licence's state,
        # not the request, is the obstacle).
        raise Conflict(
            f"licence {licence.identifier} expired on {licence.valid_until}: an expired licence gets no "
            "QR code"
        )
    if key is None:
        with vault.db.read() as s:
            # NoActiveKey when there is none; KeyNotUsable past its signing period or budget.
            key = vault.keys.active_key(s, licence.issuer_code, now=now)
    try:
        return sign_presentation(vault.backend, key, licence.identifier, iat=now, exp=end)
    except KeyNotFound:
        raise IssuingKeyUnavailable(
            f"the active key {key.kid} of department {licence.issuer_code} is not in the "
            f"{vault.backend.name} key backend, so no QR code can be signed: check the backend"
        ) from None


def verify_presentation_token(vault: Vault, token: str | bytes) -> Verdict:
    """Signature, key, time and the licence's live status; never raises for a bad token."""
    now = vault.clock()
    trust = vault.trust_store()
    tv = verify_presentation(token, trust, now=now)
    if "unknown_key" in tv.codes and tv.kid is not None:
        # Another process may have added the key since this one cached the trust store.
        trust = vault.trust_store(refresh=True)
        if trust.get(tv.kid) is not None:
            tv = verify_presentation(token, trust, now=now)
    if not signature_holds(tv):
        compromised = (
            vault.compromised_key(unverified_member(token, 0, "kid")) if "unknown_key" in tv.codes else None
        )
        if compromised is not None:
            return vault.compromised_verdict(compromised, token, now)
        return Verdict(False, LicenceStatus.INVALID, tv.reasons, tv.codes, now, tv.kid)
    identifier = str((tv.claims or {}).get("sub", ""))
    try:
        licence: Licence | None = vault.get(identifier)
    except (LicenceNotFound, InvalidInput):
        licence = None
    if licence is None:
        return unknown_licence(identifier, tv, now)
    if not _department_key(vault, tv.kid, licence.issuer_code):
        return Verdict(
            False,
            LicenceStatus.INVALID,
            ("the code was not signed by a key of the department that issued this licence",),
            ("key_mismatch",),
            now,
            tv.kid,
            licence.summary(),
        )
    last_reason = ""
    if licence.status != LicenceStatus.VALID:
        history = vault.status_history(licence.identifier)
        last_reason = history[-1].reason if history else ""
    return live_verdict(tv, licence, last_reason, now)


def _department_key(vault: Vault, kid: str | None, department_code: str) -> bool:
    if kid is None:
        return False
    with vault.db.read() as s:
        try:
            info = vault.keys.get(s, kid)
        except KeyNotFound:
            return False
    return info.purpose == KEY_PURPOSE_LICENCE and info.department_code == department_code
