"""health-based: the healthiest region first.

Score, compared in order: usable at all, prober verdict (healthy > unknown >
unhealthy), breaker (closed > half-open > open), recent error rate, smoothed
latency (unmeasured last), config order.
"""
from __future__ import annotations

from .model import CLOSED, HALF_OPEN, RegionSnapshot, RegionView, RequestFacts

_HEALTH = {True: 0, None: 1, False: 2}
_BREAKER = {CLOSED: 0, HALF_OPEN: 1}  # anything else (open) ranks 2


class HealthBasedRanker:
    __slots__ = ("order",)

    def __init__(self, order: tuple[str, ...]):
        self.order = order

    def rank(self, facts: RequestFacts) -> tuple[str, ...]:
        return self.order


def score(r: RegionView, position: int) -> tuple:
    """Lower is healthier."""
    health = _HEALTH[r.healthy]
    breaker = _BREAKER.get(r.breaker, 2)
    # Disabled, drained to zero, down or open regions only serve as a last resort.
    unusable = r.disabled or r.effective_weight <= 0 or health == 2 or breaker == 2
    latency = r.latency_ms
    return (unusable, health, breaker, r.error_rate, latency is None, latency or 0.0, position)


class HealthBasedPolicy:
    name = "health-based"

    def prepare(self, snapshot: RegionSnapshot, previous: object | None) -> HealthBasedRanker:
        scored = sorted((score(r, i), r.id) for i, r in enumerate(snapshot.regions))
        return HealthBasedRanker(tuple(rid for _, rid in scored))
