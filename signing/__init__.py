"""Formats Yinxin signs and verifies; for now, licence tokens.

A licence token is a JWS compact serialisation (RFC 7515 §7.1) whose protected
header is exactly ``{"alg", "kid", "typ": "licence+jwt"}`` and whose payload is
the licence's JWT claims set (RFC 7519)::

    token = sign_licence_token(backend, key_ref, claims)       # hsm signs
    verdict = verify_token(token, TrustStore(keys), now=clock())
    verdict.valid, verdict.codes, verdict.reasons

Verification never trusts the token to say how to check it: the key is found
by ``kid`` in a :class:`TrustStore`, and the algorithm is the one bound to that
key (:class:`TrustedKey`). Public keys travel as JWK/JWKS (:func:`public_jwk`,
:func:`jwks_document`, :func:`trusted_key_from_jwk`), so any standard JOSE
library can verify our tokens.

This package never opens key-backend sessions, reads private keys or touches a
database; it imports only ``schemas`` and ``hsm``.
"""

from __future__ import annotations

from ._jwk import jwks_document, public_jwk, trusted_key_from_jwk
from ._jws import MAX_TOKEN_BYTES, TOKEN_TYP, VERDICT_CODES
from ._signature import verify_signature
from ._token import TokenVerdict, sign_licence_token, verify_token
from ._trust import TrustedKey, TrustStore

__all__ = [
    "MAX_TOKEN_BYTES",
    "TOKEN_TYP",
    "VERDICT_CODES",
    "TokenVerdict",
    "TrustStore",
    "TrustedKey",
    "jwks_document",
    "public_jwk",
    "sign_licence_token",
    "trusted_key_from_jwk",
    "verify_signature",
    "verify_token",
]
