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


# Golden-ratio sequence: request n's point in [0, 1) is frac(n x phi), evenly
# spread for any run of consecutive requests, so shares hold over short windows.
_PHI = 0.6180339887498949


class RampedRanker:
    """Slow start for strategies that do not spread by weight (geographic,
    least-latency, health-based): a region ramping at share s keeps its place in
    the order for a share s of the requests and goes to the end of the order for
    the rest, so that they go to whatever the strategy ranks next (under
    geographic: the region's failover region). Moved, never removed: a ramping
    region still serves when nothing after it can. Pure, by the request's
    sequence number."""

    __slots__ = ("inner", "shares")

    def __init__(self, inner, shares: dict[str, float]):
        self.inner = inner  # the strategy's own prepared ranker
        self.shares = shares  # region -> share, for the regions ramping now

    def rank(self, facts) -> tuple[str, ...]:
        order = self.inner.rank(facts)
        point = (facts.seq * _PHI) % 1.0
        shares = self.shares
        late = [rid for rid in order if point >= shares.get(rid, 1.0)]
        if not late:
            return order
        return tuple(rid for rid in order if rid not in late) + tuple(late)

    def explain(self, facts) -> dict:
        return self.inner.explain(facts)
