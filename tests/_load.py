"""Steady prediction traffic for tests that cross a switch (deploy, rollback, promote)."""

from __future__ import annotations

import threading
from collections import Counter

import httpx


class Load:
    """Steady prediction traffic on a URL from background threads; counts every answer."""

    def __init__(self, url: str, body: str, threads: int = 4) -> None:
        self.url, self.body = url, body
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30, trust_env=False) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(f"{self.url}/predict", content=self.body,
                                    headers={"content-type": "application/json"})
                    with self._lock:
                        self.statuses[r.status_code] += 1
                        self.versions[r.headers.get("x-nbserve-version", "?")] += 1
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(repr(exc))

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.failures)
