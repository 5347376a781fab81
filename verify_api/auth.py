"""Bearer-token authorisation for the HTTP API (RFC 6750) with RFC 9068 access tokens.

A route states the scope it needs; the dependency hands it the caller::

    IssuerDep = Annotated[Principal, Depends(require_scope("licence:issue"))]

    @router.post("/v1/licences")
    def issue(body: LicenceCreateIn, principal: IssuerDep, vault: VaultDep) -> ...:
        require_own_department(principal, body.issuer)

No token, or one that is malformed, expired, not signed by a service key or
held by a disabled client: 401 with ``WWW-Authenticate: Bearer …``
(RFC 6750 §3). A good token without the scope: 403 with
``error="insufficient_scope"`` and the scope needed (RFC 6750 §3.1). Bodies
are problem+json like every other API error; the token itself is never
logged nor echoed.

The access-token trust store holds the service keys only. It is built once
per app and kept on ``app.state``; a token naming a kid it does not know
triggers a refresh (at most one every few seconds once a service key is
known, so random kids cannot turn every request into a database query).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from fastapi import Request

from schemas.errors import InvalidInput
from signing import (
    ACCESS_TOKEN_AUDIENCE,
    InvalidAccessToken,
    TrustStore,
    check_access_token_times,
    verify_access_token,
)
from vault import CLIENT_SCOPES as SCOPES
from vault import ClientRegistry, Vault, service_trust_store
from verify_api.problems import Problem

__all__ = [
    "MAX_VERIFIED_TOKENS",
    "AccessTokenTrust",
    "Principal",
    "access_token_trust",
    "authorise",
    "authorise_async",
    "authorises",
    "client_registry",
    "require_own_department",
    "require_scope",
]

log = logging.getLogger("yinxin.api")

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

REALM: Final = "yinxin"
# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive (RFC 9110 §11.1).
_BEARER_RE: Final = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")
# error_description is limited to %x20-21 / %x23-5B / %x5D-7E (RFC 6750 §3).
_DESCRIPTION_UNSAFE: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API client of one department, with the scopes its token grants."""

    client_id: str
    department_code: str
    scopes: frozenset[str]


# Access tokens verified under the current trust store, at most this many (each at most 4 KiB).
MAX_VERIFIED_TOKENS: Final = 4096


class AccessTokenTrust:
    """The service keys that verify access tokens: re-read every few seconds, and at once
    (rate-limited) when an unknown kid shows up.

    It also remembers the claims of the access tokens it verified under the store it holds now
    (:meth:`verified`, :meth:`remember`): a client sends the same token with every request for
    the token's lifetime, and its signature and claims check (about 80 µs, ES256) give the same
    answer each time; only the time checks, run on every use, can change it. The memory goes
    with the store whenever the store is re-read (every few seconds, or when this process
    changes a key), so a service key declared compromised or destroyed stops authenticating
    here no later than it did without it.
    """

    def __init__(self, vault: Vault, *, min_refresh_seconds: float = 5.0) -> None:
        self._vault = vault
        self._min_refresh = min_refresh_seconds
        self._lock = threading.Lock()
        self._store: TrustStore | None = None
        self._refreshed_at = 0.0
        self._generation = -1
        self._verified: dict[str, dict[str, Any]] = {}  # token -> claims, under self._store

    def verified(self, token: str, store: TrustStore) -> dict[str, Any] | None:
        """The claims of *token* if it was verified under *store* and *store* is still current."""
        with self._lock:
            return self._verified.get(token) if store is self._store else None

    def remember(self, token: str, store: TrustStore, claims: dict[str, Any]) -> None:
        """Keep *claims*, just verified under *store*, for :meth:`verified` (the oldest make way)."""
        with self._lock:
            if store is not self._store:
                return  # re-read meanwhile: verified under a store no longer current
            verified = self._verified
            if len(verified) >= MAX_VERIFIED_TOKENS:
                del verified[next(iter(verified))]
            verified[token] = claims

    def store(self) -> TrustStore:
        # Re-read every few seconds, not only on an unknown kid: a service key declared
        # compromised (or destroyed) elsewhere must stop authenticating here too.
        with self._lock:
            if not self._due():
                assert self._store is not None
                return self._store
        return self._reload()

    def fresh_store(self) -> TrustStore | None:
        """The store if it needs no re-read now, else None (:meth:`store` would read the database)."""
        with self._lock:
            return None if self._due() else self._store

    def _due(self) -> bool:
        return (
            self._store is None
            or self._generation != self._vault.trust_generation
            or time.monotonic() - self._refreshed_at >= self._min_refresh
        )

    def refresh_for(self, kid: str | None, *, force: bool = False) -> bool:
        """Reload if *kid* is not known yet (rate-limited unless *force*); whether it is known now."""
        with self._lock:
            if self._store is not None and kid is not None and kid in self._store:
                return True
            # An empty store means no service key yet: the first token, made by another worker,
            # must be accepted at once. Otherwise unknown kids reload at most every few seconds.
            due = time.monotonic() - self._refreshed_at >= self._min_refresh
            if not (force or due or self._store is None or len(self._store) == 0):
                return False
        store = self._reload()
        return kid is not None and kid in store

    def _reload(self) -> TrustStore:
        """Read the service keys and make them the store. The read happens outside the lock, so
        an event loop asking :meth:`fresh_store` or :meth:`verified` never waits for the database;
        of two reads that overlap, the one that started later is kept."""
        started = time.monotonic()
        generation = self._vault.trust_generation
        store = service_trust_store(self._vault)
        with self._lock:
            if self._store is None or started >= self._refreshed_at:
                self._generation = generation
                self._store = store
                self._refreshed_at = started
                self._verified = {}
            return self._store


def _vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


def client_registry(request: Request) -> ClientRegistry:
    """The app's client registry (authentication cache, service key), made on first use."""
    registry: ClientRegistry | None = getattr(request.app.state, "clients", None)
    if registry is None:
        registry = ClientRegistry(_vault(request))
        request.app.state.clients = registry
    return registry


def access_token_trust(request: Request) -> AccessTokenTrust:
    """The app's access-token trust store, made on first use."""
    trust: AccessTokenTrust | None = getattr(request.app.state, "access_token_trust", None)
    if trust is None:
        trust = AccessTokenTrust(_vault(request))
        request.app.state.access_token_trust = trust
    return trust


def _challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    params = [f'realm="{REALM}"']
    if error is not None:
        params.append(f'error="{error}"')
    if description is not None:
        params.append(f'error_description="{_DESCRIPTION_UNSAFE.sub("", description)}"')
    if scope is not None:
        params.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(params)


def _unauthorised(detail: str, *, error: str | None = "invalid_token") -> Problem:
    code = error or "unauthorised"
    return Problem(
        401, code, detail, headers={"WWW-Authenticate": _challenge(error, detail if error else None)}
    )


def _bearer_token(request: Request) -> str:
    values = request.headers.getlist("authorization")
    if not values:
        # RFC 6750 §3.1: a request with no credentials at all gets a challenge without an error code.
        raise _unauthorised(
            "this endpoint needs an access token: send 'Authorization: Bearer TOKEN' "
            "(get one from POST /v1/oauth/token)",
            error=None,
        )
    if len(values) > 1:
        raise _unauthorised("send exactly one Authorization header")
    match = _BEARER_RE.fullmatch(values[0].strip())
    if match is None:
        if not values[0].strip().lower().startswith("bearer"):
            # Another scheme (Basic …) counts as no credentials for this resource (RFC 6750 §3.1).
            raise _unauthorised(
                "this endpoint takes OAuth bearer tokens only: send 'Authorization: Bearer TOKEN' "
                "(get one from POST /v1/oauth/token)",
                error=None,
            )
        raise _unauthorised("the Authorization header does not hold a bearer token (RFC 6750 §2.1)")
    return match.group(1)


class _NeedsRead(Exception):
    """:func:`authorise` without reads could not answer without reading the database."""


def _verify(request: Request, token: str, *, reads: bool = True) -> Principal:
    """The caller of *token*; with *reads* false, :class:`_NeedsRead` where a read would be needed."""
    trust = access_token_trust(request)
    now = _vault(request).clock()
    try:
        store = trust.store() if reads else trust.fresh_store()
        if store is None:
            raise _NeedsRead
        claims = trust.verified(token, store)
        if claims is not None:
            check_access_token_times(claims, now=now)  # verified before: only time has moved
        else:
            try:
                claims = verify_access_token(token, store, now=now, audience=ACCESS_TOKEN_AUDIENCE)
            except InvalidAccessToken as exc:
                # Another worker may have created the service key after this one loaded the store.
                if exc.details.get("reason") != "unknown_key":
                    raise
                if not reads:
                    raise _NeedsRead from None
                if not trust.refresh_for(_kid_of(exc)):
                    raise
                store = trust.store()
                claims = verify_access_token(token, store, now=now, audience=ACCESS_TOKEN_AUDIENCE)
            trust.remember(token, store, claims)
    except InvalidAccessToken as exc:
        log.info("refused an access token: %s", exc.details.get("reason", "invalid"))
        raise _unauthorised(str(exc)) from None
    client_id = claims["client_id"]
    registry = client_registry(request)
    if not reads and not registry.enabled_if_known(client_id):
        raise _NeedsRead
    if not registry.is_enabled(client_id):
        raise _unauthorised(f"client {client_id} is disabled or unknown: its tokens are no longer accepted")
    return Principal(client_id, claims["dept"], frozenset(claims["scope"].split()))


def _kid_of(exc: InvalidAccessToken) -> str | None:
    kid = exc.details.get("kid")
    return kid if isinstance(kid, str) else None


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise InvalidInput(f"unknown scope {scope!r}: use one of {', '.join(sorted(SCOPES))}")


def require_scope(scope: str) -> Callable[[Request], Principal]:
    """A dependency that admits callers whose access token grants *scope*; it returns the caller.

    Use it as ``Annotated[Principal, Depends(require_scope("licence:read"))]``.
    """
    _check_scope(scope)

    def dependency(request: Request) -> Principal:
        return authorise(request, scope)

    dependency.__name__ = f"require_scope_{scope.replace(':', '_')}"
    return dependency


def authorises(scope: str) -> Callable[[Endpoint], Endpoint]:
    """Mark a route that checks its caller itself, with ``authorise(request, scope)``.

    For the hot paths that read their own request (``POST /v1/licences``). The mark is what a
    ``require_scope`` dependency's name is to whatever reads the routes, such as the security
    tests, which then send the route every kind of bad token.
    """
    _check_scope(scope)

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, "required_scope", scope)  # noqa: B010 (a function has no declared attribute)
        return endpoint

    return mark


async def authorise_async(request: Request, scope: str) -> Principal:
    """:func:`authorise` for a coroutine, without blocking its event loop on a network database.

    The common case, a token seen before under a trust store and a client state this process
    read recently, runs on the loop (as it does for any token on SQLite, an in-process library);
    what needs a blocking read (the store's re-read every few seconds, a token naming a key not
    loaded yet, the client's state once its cache lapses) runs on one of the database's read
    threads.
    """
    vault = _vault(request)
    if vault.db.in_process:
        return authorise(request, scope)
    try:
        return _authorise(request, scope, reads=False)
    except _NeedsRead:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(vault.db.read_executor(), authorise, request, scope)


def authorise(request: Request, scope: str) -> Principal:
    """The caller of *request* if its access token grants *scope*, else the 401 or 403 Problem.

    What ``require_scope`` runs; a route marked with :func:`authorises` calls it itself (or
    :func:`authorise_async`).
    """
    return _authorise(request, scope, reads=True)


def _authorise(request: Request, scope: str, *, reads: bool) -> Principal:
    principal = _verify(request, _bearer_token(request), reads=reads)
    if scope not in principal.scopes:
        raise Problem(
            403,
            "insufficient_scope",
            f"this operation needs scope {scope}; the access token grants "
            f"{' '.join(sorted(principal.scopes))}: ask for a token with scope {scope}",
            headers={"WWW-Authenticate": _challenge("insufficient_scope", scope=scope)},
        )
    request.state.principal = principal
    return principal


def require_own_department(principal: Principal, department_code: str) -> None:
    """403 unless *principal* acts for *department_code*: a department manages only its own licences."""
    if principal.department_code != department_code:
        raise Problem(
            403,
            "other_department",
            f"a department manages only its own licences: client {principal.client_id} acts for "
            f"{principal.department_code}, not {str(department_code)[:40]}",
        )
