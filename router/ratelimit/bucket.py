"""The token bucket, as GCRA: one float per key. Pure; `now` comes from the caller.

A bucket of `burst` tokens refilled at `rate` per second is equivalent to a
"theoretical arrival time" (tat): each request pushes tat one emission
interval T = 1/rate further; a request is over the limit when that would put
tat more than tau = burst * T ahead of now. A key whose tat is in the past
has a full bucket, which is exactly a key never seen: such entries can be
forgotten at no cost, which is what keeps the table small.

Bucket.take / remaining / full_in define the arithmetic; RateLimiter.check
inlines them (it runs for every request and rule), and tests/ratelimit/
test_bucket.py holds both to the same table.
"""
from __future__ import annotations

import math
from collections import OrderedDict


class Bucket:
    """The parameters of one rule's buckets (shared by all its keys)."""

    __slots__ = ("rate", "burst", "interval", "tau")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.interval = 1.0 / rate  # T: the time one token takes to come back
        self.tau = burst * self.interval  # how far ahead of now tat may run

    def scaled(self, share: int) -> "Bucket":
        """This bucket divided among `share` replicas (at least one token each)."""
        return Bucket(self.rate / share, max(1, self.burst // share))

    def take(self, tat: float | None, now: float) -> float:
        """The key's tat after one more request, or -(seconds to wait) when over the limit."""
        if tat is None or tat < now:
            tat = now
        new = tat + self.interval
        wait = new - now - self.tau
        return new if wait <= 1e-9 else -wait

    def remaining(self, tat: float, now: float) -> int:
        """Whole tokens left in the bucket (0..burst)."""
        return max(0, int((self.tau - (tat - now)) * self.rate + 1e-9))

    def full_in(self, tat: float, now: float) -> int:
        """Whole seconds until the bucket is full again (the draft's `t`)."""
        return max(0, math.ceil(tat - now - 1e-9))


class KeyTable:
    """key -> tat, least recently used first, at most `limit` keys.

    Memory bound: `limit` entries of one OrderedDict slot, one key string
    and one float each (about 200 bytes for an IPv4 key, measured by
    tests/ratelimit/test_table.py). When full, the least recently used key
    is dropped; its bucket restarts full if it comes back, which only loses
    anything when it had not refilled yet (counted in `evicted_active`).
    """

    __slots__ = ("limit", "tats", "evicted", "evicted_active")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.tats: OrderedDict[str, float] = OrderedDict()
        self.evicted = 0
        self.evicted_active = 0

    def __len__(self) -> int:
        return len(self.tats)

    def get(self, key: str) -> float | None:
        tats = self.tats
        tat = tats.get(key)
        if tat is not None:
            tats.move_to_end(key)
        return tat

    def put(self, key: str, tat: float, now: float) -> None:
        tats = self.tats
        if key not in tats:
            while len(tats) >= self.limit:  # a loop: a reload may have lowered the limit
                _, old = tats.popitem(last=False)
                self.evicted += 1
                if old > now:
                    self.evicted_active += 1
        tats[key] = tat

    def rescale(self, old_interval: float, new_interval: float, now: float) -> None:
        """A new rate (reload): each key keeps the tokens it has used, not the seconds."""
        tats = self.tats
        factor = new_interval / old_interval
        for key, tat in tats.items():
            if tat > now:
                tats[key] = now + (tat - now) * factor
