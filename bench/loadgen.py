"""Closed-loop GET load on keep-alive connections, recording who answered.

Used by bench/failover.py and by the end-to-end tests: N threads, each on its
own connection, send the next request as soon as the last answer is in, until
stopped or `limit` requests are done. Each answer is recorded as
(monotonic time, status or -1, X-Edge-Region or the error's name).
"""
from __future__ import annotations

import http.client
import threading
import time
from collections import Counter

Record = tuple[float, int, "str | None"]


class ClosedLoopLoad:
    def __init__(self, port: int, clients: int = 8, *, path: str = "/api/v1/echo",
                 headers: dict[str, str] | None = None, limit: int | None = None, host: str = "127.0.0.1"):
        self.port, self.path, self.host = port, path, host
        self.headers = headers or {}
        self.limit = limit
        self.results: list[Record] = []
        self.lock = threading.Lock()
        self.issued = 0
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _take(self) -> bool:
        with self.lock:
            if self.limit is not None and self.issued >= self.limit:
                return False
            self.issued += 1
            return True

    def _run(self) -> None:
        conn = None
        while not self.stopping.is_set() and self._take():
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                conn.request("GET", self.path, headers=self.headers)
                r = conn.getresponse()
                r.read()
                rec = (time.monotonic(), r.status, r.getheader("X-Edge-Region"))
                if r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                rec = (time.monotonic(), -1, type(exc).__name__)
                conn.close()
                conn = None
            with self.lock:
                self.results.append(rec)
        if conn is not None:
            conn.close()

    def start(self) -> "ClosedLoopLoad":
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)

    def wait(self, timeout: float = 60.0) -> None:
        """With a limit: until every request is answered (bounded)."""
        for t in self.threads:
            t.join(timeout)

    def __enter__(self) -> "ClosedLoopLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- reading the record ------------------------------------------------------------
    def snapshot(self) -> list[Record]:
        with self.lock:
            return list(self.results)

    def since(self, t0: float) -> list[Record]:
        with self.lock:
            return [r for r in self.results if r[0] >= t0]

    def regions_since(self, t0: float) -> Counter:
        return Counter(r[2] for r in self.since(t0))

    def regions(self) -> Counter:
        return self.regions_since(0.0)

    def last(self, n: int) -> list[Record]:
        with self.lock:
            return self.results[-n:]

    def first(self, since: float, region: str) -> float | None:
        """When `region` first answered 200 after `since`."""
        with self.lock:
            return next((t for t, s, r in self.results if t >= since and s == 200 and r == region), None)


class PacedLoad:
    """Light traffic: one GET at a time, a new connection each, `every` seconds
    after the last answer. Each answer is recorded as (sent, answered, status or
    -1, X-Edge-Region or the error's name)."""

    def __init__(self, port: int, every: float = 0.1, *, path: str = "/api/v1/echo",
                 headers: dict[str, str] | None = None, host: str = "127.0.0.1"):
        self.port, self.every, self.path, self.host = port, every, path, host
        self.headers = headers or {}
        self.results: list[tuple[float, float, int, str | None]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            sent = time.monotonic()
            try:
                conn.request("GET", self.path, headers=self.headers)
                r = conn.getresponse()
                r.read()
                rec = (sent, time.monotonic(), r.status, r.getheader("X-Edge-Region"))
            except (OSError, http.client.HTTPException) as exc:
                rec = (sent, time.monotonic(), -1, type(exc).__name__)
            finally:
                conn.close()
            self.results.append(rec)
            self.stopping.wait(self.every)

    def regions(self) -> list[str | None]:
        return [r[3] for r in self.results]

    def first(self, match, sent_after: float) -> float | None:
        """When the first answer matching `match(region)` to a request sent after
        `sent_after` came (None if none yet)."""
        return next((done for sent, done, _, got in list(self.results) if sent > sent_after and match(got)), None)

    def __enter__(self) -> "PacedLoad":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(15)
