"""Per-region circuit breaker: a pure state machine on an injected clock.

closed --(consecutive failures, or failure share over the rolling window)--> open
open --(open time elapsed; seen by any call taking `now`)--> half-open
half-open --(half_open_requests trial successes in a row)--> closed
half-open --(any trial failure)--> open, for twice as long (capped)

Closing rule (resilience4j's "all permitted half-open calls must pass", with a
zero failure threshold): one lucky success says little about a region that just
failed, so `half_open_requests` trials must all succeed; at most that many run at
once. A successful close ends the doubling (next open lasts `open_for`) and clears the window
so old failures cannot trip the breaker again at once.

Every mutating call returns the new state if the state changed (else None) and
bumps `transitions`, so the caller knows to publish a snapshot. Time-driven
open -> half-open is also reported by `tick(now)`; call it when republishing.

What counts as a failure: connect failures, resets, timeouts and the gateway
statuses 502/503/504; other statuses only if `failure_statuses` lists them
(one endpoint answering 500 is the application's error, not the region's).
Closed -> open also asks `may_open` (the region store's ejection cap).
"""
from __future__ import annotations

from collections import deque
from math import ceil
from typing import Callable

from policies.model import CLOSED, HALF_OPEN, OPEN

from .config import BreakerConfig


class _Bucket:
    """One time slice of a _Window (a class, not a list: typed fields compile to
    plain integer arithmetic)."""

    __slots__ = ("idx", "total", "failures", "errors")

    def __init__(self, idx: int) -> None:
        self.idx = idx
        self.total = 0
        self.failures = 0
        self.errors = 0


class _Window:
    """Request, failure and error counts over a rolling window, in time buckets.
    Failures trip the breaker; errors (answers such as a 500 that do not count
    against the region) only show in the error rate that strategies rank by."""

    __slots__ = ("width", "span", "buckets", "last", "total", "failures", "errors")

    def __init__(self, window: float):
        self.width = min(1.0, window / 10) if window > 0 else 1.0
        self.span = max(1, ceil(window / self.width))  # buckets kept, current included
        self.buckets: deque[_Bucket] = deque()  # oldest first
        self.last: _Bucket | None = None  # the newest bucket (buckets[-1])
        self.total = 0
        self.failures = 0
        self.errors = 0

    def _expire(self, idx: int) -> None:
        buckets = self.buckets
        while buckets and buckets[0].idx <= idx - self.span:
            gone = buckets.popleft()
            self.total -= gone.total
            self.failures -= gone.failures
            self.errors -= gone.errors
        if not buckets:
            self.last = None

    def add(self, now: float, failed: bool, error: bool = False) -> None:
        idx = int(now // self.width)
        self._expire(idx)
        last = self.last
        if last is None or last.idx < idx:
            last = self.last = _Bucket(idx)
            self.buckets.append(last)
        # (a clock that stepped back lands in the newest bucket)
        last.total += 1
        self.total += 1
        if failed:
            last.failures += 1
            self.failures += 1
        elif error:
            last.errors += 1
            self.errors += 1

    def counts(self, now: float) -> tuple[int, int]:
        self._expire(int(now // self.width))
        return self.total, self.failures

    def clear(self) -> None:
        self.buckets.clear()
        self.last = None
        self.total = self.failures = self.errors = 0


GATEWAY_FAILURES = frozenset((502, 503, 504))


class CircuitBreaker:
    __slots__ = ("cfg", "_state", "open_until", "open_for", "_consecutive", "_trials",
                 "_trial_oks", "_window", "transitions", "_failing", "may_open", "why", "_on_change")

    def __init__(self, cfg: BreakerConfig, may_open: Callable[[], bool] | None = None,
                 on_change: Callable[[str], None] | None = None):
        self.cfg = cfg
        self._on_change = on_change  # told every state entered (metrics)
        self._state = CLOSED
        self.open_until = 0.0  # while open: when half-open begins
        self.open_for = cfg.open_for  # length of the current / last open period
        self._consecutive = 0  # consecutive failures
        self._trials = 0  # half-open trials in flight
        self._trial_oks = 0  # half-open trial successes so far
        self._window = _Window(cfg.window)
        self.transitions = 0
        self.why = ""  # what made the last transition, for the log
        self._failing = GATEWAY_FAILURES | cfg.failure_statuses
        # Asked before closed -> open: False keeps the region in (ejection cap).
        self.may_open = may_open

    def is_failure(self, status: int) -> bool:
        """Does an answer with this status count against the region?"""
        return status in self._failing

    @property
    def ejected(self) -> bool:
        """Open or half-open: out of (full) rotation."""
        return self._state != CLOSED

    # -- queries -------------------------------------------------------------

    def state(self, now: float) -> str:
        self._advance(now)
        return self._state

    def error_rate(self, now: float) -> float:
        """Share of failures and errors over the rolling window (0.0 when empty)."""
        window = self._window
        total, failures = window.counts(now)
        return (failures + window.errors) / total if total else 0.0

    # -- events ----------------------------------------------------------------

    def tick(self, now: float) -> str | None:
        """Apply time-driven transitions; the new state if it changed."""
        return self._advance(now)

    def allow(self, now: float) -> bool:
        """May a request go to this region now? A True in half-open takes a
        trial slot, which on_success / on_failure / on_cancel gives back."""
        state = self._advance(now) or self._state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and self._trials < self._trial_limit:
            self._trials += 1
            return True
        return False

    def on_success(self, now: float, error: bool = False) -> str | None:
        """The region answered; `error`: with a status that does not count
        against it (a 500 not in failure_statuses), shown in error_rate only."""
        changed = self._advance(now)
        self._window.add(now, False, error)
        self._consecutive = 0
        if self._state == HALF_OPEN:
            self._end_trial()
            self._trial_oks += 1
            if self._trial_oks >= self._trial_limit:
                self._window.clear()
                self.why = f"{self._trial_oks} trial requests succeeded"
                changed = self._set(CLOSED)
        return changed

    def on_failure(self, now: float) -> str | None:
        changed = self._advance(now)
        self._window.add(now, True)
        self._consecutive += 1
        if self._state == CLOSED:
            # Opening from closed always starts at open_for: the doubling only
            # spans an unbroken open -> half-open -> open run.
            if self._consecutive >= self.cfg.consecutive_failures:
                why = f"{self._consecutive} consecutive failures"
            elif self._ratio_tripped(now):
                total, failures = self._window.counts(now)
                why = (f"{failures} of {total} requests failed in the last {self.cfg.window:g}s"
                       f" ({failures / total:.0%} >= {self.cfg.failure_ratio:.0%})")
            else:
                why = ""
            if why and (self.may_open is None or self.may_open()):
                self.why = why
                changed = self._open(now, self.cfg.open_for)
        elif self._state == HALF_OPEN:
            self.why = "a half-open trial request failed"
            changed = self._open(now, min(self.open_for * 2, self.cfg.max_open_for))
        # Already open: a late result of a request let through earlier; counted only.
        return changed

    def probe_recovered(self, now: float) -> str | None:
        """The active prober saw the region come back (Envoy's
        successful_active_health_check_uneject_host): an open breaker goes
        half-open now, so trial requests decide instead of waiting out
        open_for. The doubling is kept: a failing trial re-opens for longer."""
        if self._state == OPEN:
            self.open_until = now
            changed = self._advance(now)
            self.why = "the prober saw the region recover"
            return changed
        return None

    def on_cancel(self, now: float) -> str | None:
        """A request ended without a verdict (client went away): free its slot."""
        changed = self._advance(now)
        if self._state == HALF_OPEN:
            self._end_trial()
        return changed

    # -- internals -------------------------------------------------------------

    @property
    def _trial_limit(self) -> int:
        return max(1, self.cfg.half_open_requests)

    def _end_trial(self) -> None:
        # A request admitted while closed may finish in half-open; never go below 0.
        self._trials = max(0, self._trials - 1)

    def _ratio_tripped(self, now: float) -> bool:
        total, failures = self._window.counts(now)
        return (total > 0 and total >= self.cfg.min_requests
                and failures >= self.cfg.failure_ratio * total)

    def _advance(self, now: float) -> str | None:
        if self._state == OPEN and now >= self.open_until:
            self._trials = self._trial_oks = 0
            self.why = f"open time of {self.open_for:g}s elapsed, letting trial requests through"
            return self._set(HALF_OPEN)
        return None

    def _open(self, now: float, duration: float) -> str:
        self.open_for = duration
        self.open_until = now + duration
        self._consecutive = 0
        return self._set(OPEN)

    def _set(self, state: str) -> str:
        self._state = state
        self.transitions += 1
        if self._on_change is not None:
            self._on_change(state)
        return state
