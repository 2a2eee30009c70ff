"""round-robin: smooth weighted round-robin (nginx) over the available regions.

`prepare` runs the algorithm for one full cycle and stores, for every position,
(picked, then the other regions in the order the schedule would pick them next),
followed by the degraded, then the unavailable regions in config order. `rank`
is one list index by the request's sequence number; a skipped pick spills to the
region that was next anyway. Shares follow effective_weight, so drains and slow
start scale them here (shares_by_weight).
"""
from __future__ import annotations

from fractions import Fraction
from math import gcd, lcm

from .base import Policy, Prepared
from .model import RegionSnapshot, RequestFacts, tier

MAX_CYCLE = 1024  # longer cycles are approximated (share error < 0.1 %)


def integer_weights(weights: list[float]) -> list[int]:
    """Smallest integers in the same proportions (weights > 0)."""
    fracs = [max(Fraction(w).limit_denominator(100), Fraction(1, 100)) for w in weights]
    den = lcm(*(f.denominator for f in fracs))
    ints = [int(f * den) for f in fracs]
    g = gcd(*ints)
    ints = [i // g for i in ints]
    if sum(ints) > MAX_CYCLE:
        total = sum(weights)
        ints = [max(1, round(w * MAX_CYCLE / total)) for w in weights]
    return ints


def smooth_wrr(weights: list[int]) -> list[int]:
    """One full cycle of nginx's smooth weighted round-robin (indices into weights)."""
    total = sum(weights)
    current = [0] * len(weights)
    picks = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=current.__getitem__)  # first max wins ties
        current[best] -= total
        picks.append(best)
    return picks


def rotations(picks: list[int], n: int) -> list[tuple[int, ...]]:
    """For each position: the pick, then the others by their next pick after it."""
    size = len(picks)
    nxt = [size * 2] * n  # next position (in a doubled schedule) each index is picked
    out: list[tuple[int, ...]] = [()] * size
    for pos in range(size * 2 - 1, -1, -1):
        nxt[picks[pos % size]] = pos
        if pos < size:
            out[pos] = tuple(sorted(range(n), key=nxt.__getitem__))
    return out


class RoundRobinRanker(Prepared):
    __slots__ = ("key", "orders")

    def __init__(self, key: tuple, orders: list[tuple[str, ...]]):
        self.key = key  # (scheduled ids, weights, tail): what the schedule was built from
        self.orders = orders

    def rank(self, facts: RequestFacts) -> tuple[str, ...]:
        orders = self.orders
        return orders[facts.seq % len(orders)]


class RoundRobinPolicy(Policy):
    name = "round-robin"
    shares_by_weight = True

    def prepare(self, snapshot: RegionSnapshot, previous: object | None) -> RoundRobinRanker:
        # Unusable regions are left out of the schedule so that their share is
        # spread by weight instead of all spilling onto their successor; degraded
        # ones too, unless nothing better is left.
        tiers = [tier(r) for r in snapshot.regions]
        best = min(tiers, default=2)
        pool = [r for r, t in zip(snapshot.regions, tiers) if t == best]
        if best < 2:
            weights = [r.effective_weight for r in pool]
        else:  # nothing usable: rotate over everything, let the data plane decide
            weights = [1.0] * len(pool)
        ids = tuple(r.id for r in pool)
        scheduled = set(ids)
        # The rest by tier (degraded before unusable), config order within one.
        tail = tuple(snapshot.regions[i].id for t, i in sorted((t, i) for i, t in enumerate(tiers))
                     if snapshot.regions[i].id not in scheduled)
        key = (ids, tuple(weights), tail)
        # The sequence number carries the position: an unchanged schedule
        # continues exactly, a changed one at the same offset.
        if isinstance(previous, RoundRobinRanker) and previous.key == key:
            return previous
        if not pool:
            return RoundRobinRanker(key, [()])
        interned: dict[tuple[int, ...], tuple[str, ...]] = {}
        orders = []
        for rot in rotations(smooth_wrr(integer_weights(weights)), len(ids)):
            order = interned.get(rot)
            if order is None:
                order = interned[rot] = tuple(ids[i] for i in rot) + tail
            orders.append(order)
        return RoundRobinRanker(key, orders)
