"""Per-client rate limits for public endpoints: an in-process token bucket per client address.

``rate_limited("verify")`` is a FastAPI dependency: ``POST /v1/verify`` declares
``dependencies=[Depends(rate_limited("verify"))]``. Bucket *name* takes its limits from the settings
``YINXIN_<NAME>_RATE_PER_MINUTE`` and ``YINXIN_<NAME>_BURST`` (``verify``: 60 per minute, burst 30).
A client may make *burst* requests at once, then one each ``60 / rate`` seconds; over that it gets
429 ``application/problem+json`` (code ``rate_limited``) with ``Retry-After`` in whole seconds.

What a "client" is:

- the peer address uvicorn reports (``request.client.host``). ``X-Forwarded-For`` is never read
  here: a header any client can write is no basis for a limit. Behind a reverse proxy every request
  comes from the proxy's address, so run uvicorn with ``--proxy-headers`` and
  ``--forwarded-allow-ips`` set to the proxy's address (``yinxin serve --forwarded-allow-ips``), and
  uvicorn replaces the peer address with the one the trusted proxy saw.
- IPv6 addresses count per /64 network: one host usually holds a whole /64 and could otherwise
  step through 2^64 addresses.

Limits are per process. With ``yinxin serve --workers N`` each worker keeps its own buckets and
the kernel spreads connections over workers, so a client gets up to N times the limit; a shared
limit belongs in front of the service (the reverse proxy) or in a shared store.

Memory is bounded: a bucket left alone long enough to fill up again is the same as no bucket and is
dropped (least recently used first, checked on every request), and the table never holds more than
``max_clients`` buckets (the least recently used goes first; that client starts again with a full
bucket, the price of a bounded table).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from fastapi import Request

from schemas.errors import ConfigurationError
from verify_api.problems import Problem
from verify_api.settings import Settings

__all__ = ["MAX_CLIENTS", "RateLimiter", "RateLimits", "rate_limited"]

MAX_CLIENTS = 100_000  # about 20 MB of buckets at most
_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")


class RateLimiter:
    """Token buckets, one per client key; *clock* returns seconds (monotonic)."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0 or burst < 1 or max_clients < 1:
            raise ConfigurationError("a rate limit needs a positive rate, a burst of at least 1 and room")
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._refill_seconds = self.burst / self.rate  # an idle bucket is full again after this
        # key -> [tokens, last update]; least recently used first. One event loop serves all calls
        # (the dependency is async), so no lock is needed.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str) -> float:
        """Take one token for *key*: 0 if allowed, else the seconds until a token is available."""
        now = self.clock()
        self._evict(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = [self.burst, now]
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / self.rate

    def _evict(self, now: float) -> None:
        # The front is the least recently used; a bucket idle for the full refill time is full.
        buckets = self._buckets
        while buckets:
            key, (_, last) = next(iter(buckets.items()))
            if now - last < self._refill_seconds:
                return
            del buckets[key]


class RateLimits:
    """The limiters of one app, by bucket name; kept on ``app.state.rate_limits``."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.max_clients = max_clients
        self._limiters: dict[str, RateLimiter] = {}

    def limiter(self, name: str) -> RateLimiter:
        found = self._limiters.get(name)
        if found is None:
            per_minute = getattr(self.settings, f"{name}_rate_per_minute", None)
            burst = getattr(self.settings, f"{name}_burst", None)
            if not isinstance(per_minute, int | float) or not isinstance(burst, int):
                raise ConfigurationError(
                    f"rate limit {name!r} has no settings YINXIN_{name.upper()}_RATE_PER_MINUTE / _BURST"
                )
            found = self._limiters[name] = RateLimiter(
                per_minute, burst, max_clients=self.max_clients, clock=self.clock
            )
        return found


def rate_limited(name: str) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that spends one token of bucket *name* for the requesting client."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"rate limit name {name!r}: lower-case letters, digits and _")

    async def check(request: Request) -> None:
        # async: it runs on the event loop (no thread hop, no lock), and it is a dict look-up.
        wait = _limits(request).limiter(name).acquire(client_key(request))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise Problem(
                429,
                "rate_limited",
                f"too many requests from your address; retry after {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

    check.__name__ = f"rate_limited_{name}"
    return check


def client_key(request: Request) -> str:
    """The bucket key of the peer: its address, or its /64 network for IPv6."""
    return _host_key(request.client.host if request.client else "")


@functools.lru_cache(maxsize=4096)
def _host_key(host: str) -> str:
    # Cached: parsing an address costs more than the rest of the limiter, and busy clients repeat.
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"  # not an IP (a test client, a Unix socket): the name itself
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _limits(request: Request) -> RateLimits:
    state = request.app.state
    limits: RateLimits | None = getattr(state, "rate_limits", None)
    if limits is None:
        # Built on first use from the app's settings; the app factory (or a test) may set its own.
        limits = state.rate_limits = RateLimits(request.app.state.settings)
    return limits
