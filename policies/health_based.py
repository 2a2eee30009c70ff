"""health-based: the healthiest region first.

Score, compared in order: usable at all, degraded or not, prober verdict (healthy > unknown >
unhealthy), breaker (closed > half-open > open), recent error rate, smoothed
latency (unmeasured last), config order.
"""
from __future__ import annotations

from .base import Policy, Prepared
from .model import CLOSED, HALF_OPEN, RegionSnapshot, RegionView, RequestFacts, tier

_HEALTH = {True: 0, None: 1, False: 2}
_BREAKER = {CLOSED: 0, HALF_OPEN: 1}  # anything else (open) ranks 2


class HealthBasedRanker(Prepared):
    __slots__ = ("order",)

    def __init__(self, order: tuple[str, ...]):
        self.order = order

    def rank(self, facts: RequestFacts) -> tuple[str, ...]:
        return self.order


def score(r: RegionView, position: int) -> tuple:
    """Lower is healthier."""
    # Disabled, drained to zero, down or open regions only serve as a last
    # resort; degraded ones just before them.
    latency = r.latency_ms
    return (tier(r), _HEALTH[r.healthy], _BREAKER.get(r.breaker, 2), r.error_rate,
            latency is None, latency or 0.0, position)


class HealthBasedPolicy(Policy):
    name = "health-based"

    def prepare(self, snapshot: RegionSnapshot, previous: object | None) -> HealthBasedRanker:
        scored = sorted((score(r, i), r.id) for i, r in enumerate(snapshot.regions))
        return HealthBasedRanker(tuple(rid for _, rid in scored))
