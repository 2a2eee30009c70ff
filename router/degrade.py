"""Performance-based failover: is a region degraded by its live requests?

A pure state machine on an injected clock, one per region. The data plane
records each request's outcome (failed or not, and the upstream latency of an
answered one); `evaluate(now)` decides:

- degraded when, over the rolling `window` with at least `min_requests` in it,
  the error rate exceeds `error_rate` or the p95 latency exceeds `latency`
  (that is: more than 5 % of the answers took longer than `latency`);
- recovered when, with enough requests, both are below the thresholds with a
  margin (RECOVER_MARGIN of each), so that a region hovering at a threshold
  does not flap;
- restored when a whole window has passed since it was degraded with too few
  requests to judge (ranked last, it may get none): the window is cleared and
  it is tried again (with slow start), as an ejected host is after Envoy's
  ejection time.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from math import ceil

from .config import DegradeConfig
from .metrics import bucket_of

PERCENTILE = 0.95
RECOVER_MARGIN = 0.8  # recover below 80 % of each threshold: 4 % errors, p95 1.6 s
# Histogram bounds (seconds) for the p95 estimate, plus finer ones around the
# latency threshold (_NEAR x threshold); the threshold and RECOVER_MARGIN x
# threshold are exact bounds, so that the verdicts themselves are exact counts.
_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
_NEAR = (0.25, 0.5, 0.65, 0.9, 1.1, 1.25, 1.5, 2.0, 3.0)

DEGRADED, RECOVERED, RESTORED = "degraded", "recovered", "restored"


@dataclass(frozen=True, slots=True)
class DegradeStats:
    """What the window holds now."""

    requests: int
    errors: int
    answered: int  # requests with a latency sample
    p95: float | None  # seconds, estimated from the histogram; None without samples
    slow: int  # answers slower than the latency threshold
    slowish: int  # answers slower than RECOVER_MARGIN x the threshold

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def describe(self) -> str:
        p95 = "n/a" if self.p95 is None else f"{self.p95:.3f}s"
        return (f"error rate {self.error_rate:.1%} ({self.errors} of {self.requests} requests),"
                f" p95 {p95} ({self.slow} of {self.answered} answers over the latency threshold)")


class Degrade:
    __slots__ = ("cfg", "bounds", "_slow_bin", "_slowish_bin", "width", "span", "buckets", "_cur",
                 "degraded", "since", "stats_at_change")

    def __init__(self, cfg: DegradeConfig):
        self.cfg = cfg
        slowish = cfg.latency * RECOVER_MARGIN
        self.bounds: tuple[float, ...] = tuple(sorted({*_BOUNDS, *(cfg.latency * k for k in _NEAR), cfg.latency, slowish}))
        self._slow_bin = self.bounds.index(cfg.latency) + 1  # first bin above the threshold
        self._slowish_bin = self.bounds.index(slowish) + 1
        self.width = cfg.window / 10  # ten time buckets per window
        self.span = max(1, ceil(cfg.window / self.width))
        # [bucket index, requests, errors, histogram (len(bounds) + 1 bins)]
        self.buckets: deque[list] = deque()
        self._cur: list | None = None  # the newest bucket
        self.degraded = False
        self.since = 0.0  # when the current verdict began
        self.stats_at_change: DegradeStats | None = None

    def record(self, now: float, latency: float | None, failed: bool) -> None:
        """One request's outcome; `latency` None when it got no answer. Per request: keep it lean."""
        idx = int(now // self.width)
        cur = self._cur
        if cur is None or cur[0] < idx:
            self._expire(idx)
            cur = self._cur = [idx, 0, 0, [0] * (len(self.bounds) + 1)]
            self.buckets.append(cur)
        # (a clock that stepped back lands in the newest bucket)
        cur[1] += 1
        if failed:
            cur[2] += 1
        if latency is not None:
            cur[3][bucket_of(self.bounds, latency)] += 1

    def _expire(self, idx: int) -> None:
        buckets = self.buckets
        while buckets and buckets[0][0] <= idx - self.span:
            buckets.popleft()
        if not buckets:
            self._cur = None  # the newest bucket went too

    def stats(self, now: float) -> DegradeStats:
        self._expire(int(now // self.width))
        requests = errors = 0
        hist = [0] * (len(self.bounds) + 1)
        for _, n, e, h in self.buckets:
            requests += n
            errors += e
            for i, c in enumerate(h):
                hist[i] += c
        answered = sum(hist)
        return DegradeStats(requests, errors, answered, self._p95(hist, answered),
                            sum(hist[self._slow_bin:]), sum(hist[self._slowish_bin:]))

    def _p95(self, hist: list[int], answered: int) -> float | None:
        """Linear interpolation within the bin (as Prometheus histogram_quantile)."""
        if not answered:
            return None
        rank = PERCENTILE * answered
        seen = 0
        bounds = self.bounds
        for i, c in enumerate(hist):
            if c and seen + c >= rank:
                if i == len(bounds):  # above the last bound: say the last bound
                    return bounds[-1]
                low = bounds[i - 1] if i else 0.0
                return low + (bounds[i] - low) * (rank - seen) / c
            seen += c
        return bounds[-1]

    def evaluate(self, now: float) -> str | None:
        """Apply the rules; DEGRADED, RECOVERED or RESTORED when the verdict changed."""
        cfg = self.cfg
        st = self.stats(now)
        enough = st.requests >= cfg.min_requests
        if not self.degraded:
            if enough and (st.error_rate > cfg.error_rate or st.slow > (1 - PERCENTILE) * st.answered):
                return self._set(True, now, st, DEGRADED)
            return None
        if enough:
            if (st.error_rate < cfg.error_rate * RECOVER_MARGIN
                    and st.slowish <= (1 - PERCENTILE) * st.answered):
                return self._set(False, now, st, RECOVERED)
        elif now - self.since >= cfg.window:
            self.buckets.clear()
            self._cur = None
            return self._set(False, now, st, RESTORED)
        return None

    def _set(self, degraded: bool, now: float, st: DegradeStats, change: str) -> str:
        self.degraded = degraded
        self.since = now
        self.stats_at_change = st
        return change
