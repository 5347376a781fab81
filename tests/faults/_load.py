"""Concurrent issuance through the API while a fault is injected, every answer recorded."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from tests.faults._support import Service, licence_request

__all__ = ["Answer", "Load"]


@dataclass(frozen=True)
class Answer:
    key: str  # the Idempotency-Key (one per request)
    body: dict[str, Any]
    started: float  # time.monotonic()
    finished: float
    status: int
    problem: dict[str, Any] | None  # the problem document of an error answer
    identifier: str | None  # of the licence issued


class Load:
    """*threads* threads issuing licences, each with a key of its own, until :meth:`stop`."""

    def __init__(self, service: Service, *, threads: int = 4, name: str = "load") -> None:
        self.service = service
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(f"{name}-{n}",), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive(), "a request did not return within 60 s"

    def wait_for(self, count: int, *, status: int = 201, since: float = 0.0, timeout: float = 30.0) -> None:
        """Until *count* answers with *status* to requests started after *since* are in."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.select(status=status, since=since)) >= count:
                return
            time.sleep(0.01)
        raise AssertionError(f"fewer than {count} answers {status} within {timeout} s: {self.summary()}")

    def select(self, *, status: int | None = None, since: float = 0.0) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.started >= since and (status is None or a.status == status)]

    def summary(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        with self._lock:
            for answer in self.answers:
                counts[answer.status] = counts.get(answer.status, 0) + 1
        return counts

    def _run(self, name: str) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            key = f"{name}-{n}"
            body = licence_request(n)
            started = time.monotonic()
            r = self.service.issue(body, key)
            finished = time.monotonic()
            problem = (
                r.json() if r.headers.get("content-type", "").startswith("application/problem") else None
            )
            identifier = r.json()["identifier"] if r.status_code in (200, 201) else None
            with self._lock:
                self.answers.append(Answer(key, body, started, finished, r.status_code, problem, identifier))
