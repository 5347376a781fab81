"""Prometheus metrics: one :class:`Metrics` per app, with its own registry (never the global one).

The app factory builds it and the middleware and routes feed it; ``GET /metrics`` renders it.

Labels are bounded by construction, because every label value is a time series: ``route`` is the
matched route template (``/v1/licences/{identifier}``, never the raw path, so no identifier or token
reaches a label), ``method`` is one of the standard methods or ``OTHER``, ``verdict`` one of the six
verdicts, ``kind`` a short code with a cap on distinct values.

Several uvicorn workers are several processes, each with its own registry: a scrape sees whichever
worker answered. prometheus_client's multiprocess mode sums them: set ``PROMETHEUS_MULTIPROC_DIR`` to
an empty directory writable by the workers *in the environment that starts the server* (the library
reads it when it is imported, so it cannot be switched on later). ``yinxin serve`` empties the
directory's metric files at start, as the library requires. In multiprocess mode the metrics are
written to files in that directory and ``render`` merges the files of all workers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

from schemas.errors import ConfigurationError
from signing import PDF_VERDICT_CODES
from vault import LicenceStatus

__all__ = ["CONTENT_TYPE", "UNMATCHED_ROUTE", "VERDICTS", "Metrics", "MetricsDep", "get_metrics"]

log = logging.getLogger("yinxin.api")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text/plain; version=0.0.4; charset=utf-8

VERDICTS = (
    LicenceStatus.VALID,
    LicenceStatus.INVALID,
    LicenceStatus.REVOKED,
    LicenceStatus.SUSPENDED,
    LicenceStatus.EXPIRED,
    LicenceStatus.NOT_YET_VALID,
)
# Sealed-PDF verification outcomes: valid, or the first failure code (signing.PDF_VERDICT_CODES).
PDF_OUTCOMES = ("valid", "invalid", *PDF_VERDICT_CODES)
# The label for requests no route matched (404s, and bodies refused before routing).
UNMATCHED_ROUTE = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
_MAX_KINDS = 32
# Verification is about a millisecond; issuance with an HSM tens of milliseconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's counters and histograms, in a registry of their own."""

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        # The metric objects live in a registry of their own. In multiprocess mode their values go to
        # files (prometheus_client decides that at import, from the environment), and what a scrape
        # sees is a second registry whose only collector merges the files of every worker.
        metric_registry = CollectorRegistry(auto_describe=True)
        if multiprocess_dir is None:
            self.registry = metric_registry
        else:
            _check_multiprocess(multiprocess_dir)
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
        self.multiprocess = multiprocess_dir is not None
        self._requests = Counter(
            "yinxin_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=metric_registry,
        )
        self._duration = Histogram(
            "yinxin_http_request_duration_seconds",
            "Time from the request's arrival to the last byte of the response, by route template.",
            ("method", "route"),
            buckets=_BUCKETS,
            registry=metric_registry,
        )
        self._issued = Counter(
            "yinxin_licences_issued",
            "Licences issued (not counting idempotent replays).",
            registry=metric_registry,
        )
        self._verifications = Counter(
            "yinxin_verifications",
            "Licence verifications, by verdict.",
            ("verdict",),
            registry=metric_registry,
        )
        self._sealed = Counter(
            "yinxin_documents_sealed",
            "PDFs sealed over the API (printed licences included), by kind.",
            ("kind",),
            registry=metric_registry,
        )
        self._pdf_verifications = Counter(
            "yinxin_pdf_verifications",
            "Sealed-PDF verifications, by outcome (valid, or the first failure code).",
            ("outcome",),
            registry=metric_registry,
        )
        self._backend_errors = Counter(
            "yinxin_backend_errors",
            "Failures of the database or the key backend, by kind.",
            ("kind",),
            registry=metric_registry,
        )
        self._kinds: set[str] = set()
        # Every verdict shows, at 0, from the first scrape; its child is kept (labels() costs more
        # than the count, on every verification).
        self._by_verdict = {verdict: self._verifications.labels(verdict) for verdict in VERDICTS}
        for outcome in PDF_OUTCOMES:
            self._pdf_verifications.labels(outcome)
        for kind in ("document", "licence"):
            self._sealed.labels(kind)

    # ---- what the middleware and the routes call ----------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request; *route* is the route template, never the raw path."""
        method = method if method in _METHODS else "OTHER"
        self._requests.labels(method, route, str(status)).inc()
        self._duration.labels(method, route).observe(seconds)

    def issued(self, n: int = 1) -> None:
        """*n* licences were issued (count new licences only, not idempotent replays)."""
        if n > 0:
            self._issued.inc(n)

    def verified(self, verdict: str) -> None:
        """One verification answered with *verdict* (``valid``, ``revoked``, …; see ``VERDICTS``)."""
        counter = self._by_verdict.get(verdict)
        if counter is None:
            log.warning("metrics: unknown verdict %r counted as invalid", verdict[:40])
            counter = self._by_verdict[LicenceStatus.INVALID]
        counter.inc()

    def sealed(self, kind: str) -> None:
        """A PDF was sealed: ``document`` (POST /v1/seals/…/pdf) or ``licence`` (a printed licence)."""
        self._sealed.labels(kind if kind in ("document", "licence") else "document").inc()

    def pdf_verified(self, valid: bool, codes: Sequence[str]) -> None:
        outcome = "valid" if valid else (codes[0] if codes and codes[0] in PDF_OUTCOMES else "invalid")
        self._pdf_verifications.labels(outcome).inc()

    def backend_error(self, kind: str) -> None:
        """The database or key backend failed; *kind* is a short code such as ``database`` or ``hsm``."""
        if not _KIND.fullmatch(kind):
            kind = "other"
        elif kind not in self._kinds:
            if len(self._kinds) >= _MAX_KINDS:
                kind = "other"
            else:
                self._kinds.add(kind)
        self._backend_errors.labels(kind).inc()

    # ---- exposition -------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text format (version 0.0.4), all workers merged in multiprocess mode."""
        return generate_latest(self.registry)


def _check_multiprocess(directory: Path) -> None:
    if prometheus_values.ValueClass is prometheus_values.MutexValue:
        raise ConfigurationError(
            "PROMETHEUS_MULTIPROC_DIR must be set in the environment before the server starts "
            "(prometheus_client reads it when it is imported)"
        )
    if not directory.is_dir():
        raise ConfigurationError(
            f"PROMETHEUS_MULTIPROC_DIR {str(directory)!r} is not a directory: create it (empty) first"
        )


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
