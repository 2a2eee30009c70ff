"""round-robin: smooth weighted round-robin (nginx) over the available regions.

`prepare` runs the algorithm for one full cycle and stores, for every position,
(picked, then the other regions in the order the schedule would pick them next),
followed by the unavailable regions in config order. `rank` is then one counter
step and one list index; a skipped pick spills to the region that was next anyway.
"""
from __future__ import annotations

import itertools
from fractions import Fraction
from math import gcd, lcm

from .model import OPEN, RegionSnapshot, RegionView, RequestFacts

MAX_CYCLE = 1024  # longer cycles are approximated (share error < 0.1 %)


def available(r: RegionView) -> bool:
    # Unhealthy / open regions are left out of the schedule so that their share
    # is spread by weight instead of all spilling onto their successor.
    return not r.disabled and r.effective_weight > 0 and r.healthy is not False and r.breaker != OPEN


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


class RoundRobinRanker:
    # rank() moves the rotation on: a dry run (explain) must use a fresh copy.
    advances = True
    __slots__ = ("key", "orders", "counter")

    def __init__(self, key: tuple, orders: list[tuple[str, ...]], counter: itertools.count):
        self.key = key  # (ids, weights) the schedule was built from
        self.orders = orders
        self.counter = counter

    def rank(self, facts: RequestFacts) -> tuple[str, ...]:
        orders = self.orders
        return orders[next(self.counter) % len(orders)]


class RoundRobinPolicy:
    name = "round-robin"
    # Shares follow effective_weight (drains included): the data plane must not
    # thin a drained region's picks a second time.
    uses_effective_weight = True

    def prepare(self, snapshot: RegionSnapshot, previous: object | None) -> RoundRobinRanker:
        pool = [r for r in snapshot.regions if available(r)]
        if pool:
            weights = [r.effective_weight for r in pool]
        else:  # nothing available: rotate over everything, let the data plane decide
            pool = list(snapshot.regions)
            weights = [1.0] * len(pool)
        ids = tuple(r.id for r in pool)
        key = (snapshot.ids, ids, tuple(weights))
        # The counter always carries over: an unchanged schedule continues exactly,
        # a changed one continues at the same offset instead of favouring slot 0.
        counter = previous.counter if isinstance(previous, RoundRobinRanker) else itertools.count()
        if isinstance(previous, RoundRobinRanker) and previous.key == key:
            return RoundRobinRanker(key, previous.orders, counter)
        if not pool:
            return RoundRobinRanker(key, [()], counter)
        scheduled = set(ids)
        tail = tuple(rid for rid in snapshot.ids if rid not in scheduled)
        interned: dict[tuple[int, ...], tuple[str, ...]] = {}
        orders = []
        for rot in rotations(smooth_wrr(integer_weights(weights)), len(ids)):
            order = interned.get(rot)
            if order is None:
                order = interned[rot] = tuple(ids[i] for i in rot) + tail
            orders.append(order)
        return RoundRobinRanker(key, orders, counter)
