"""Slow start (Envoy's slow_start_window, HAProxy's slowstart): a region that
comes back takes a share that grows linearly from 10 % to 100 % over the
window, instead of its whole share at once (cold caches, cold pools, and a
region that just failed deserves a careful return).

"Back" means: not disabled, not held down by the prober, breaker closed and
not degraded. A region that was never out (start-up) takes its full share.
"""
from __future__ import annotations

FLOOR = 0.1  # share at the moment a region comes back


class SlowStart:
    __slots__ = ("window", "back", "since")

    def __init__(self, window: float):
        self.window = window
        self.back = True  # in rotation, as far as the last update knew
        self.since: float | None = None  # when it came back; None = not ramping

    def update(self, back: bool, now: float) -> None:
        """Tell the current availability; starts a ramp on a return."""
        if back and not self.back and self.window > 0:
            self.since = now
        elif not back:
            self.since = None
        self.back = back

    def share(self, now: float) -> float:
        """The share of its traffic the region takes now (1.0 when not ramping)."""
        since = self.since
        if since is None:
            return 1.0
        elapsed = now - since
        if elapsed >= self.window:
            self.since = None
            return 1.0
        return FLOOR + (1.0 - FLOOR) * max(0.0, elapsed) / self.window
