"""The token bucket (GCRA) and the key table, on a fake clock."""
from __future__ import annotations

import pytest

from router.clock import FakeClock
from router.config import RateLimitConfig, RateLimitRule
from router.ratelimit import RateLimiter
from router.ratelimit.bucket import Bucket, KeyTable


def run(bucket: Bucket, times: list[float]) -> list[bool]:
    """Requests at these times against one key: allowed or not."""
    tat = None
    out = []
    for t in times:
        new = bucket.take(tat, t)
        out.append(new >= 0)
        if new >= 0:
            tat = new
    return out


@pytest.mark.parametrize(
    "rate, burst, times, expected",
    [
        # a burst of `burst` at once, then nothing until a token comes back
        (1.0, 3, [0, 0, 0, 0], [True, True, True, False]),
        (10.0, 1, [0, 0.05, 0.1, 0.15, 0.2], [True, False, True, False, True]),
        # steady at the rate: all pass; just faster: the burst absorbs it, then refusals
        (2.0, 1, [0, 0.5, 1.0, 1.5, 2.0], [True] * 5),
        (2.0, 2, [0, 0.1, 0.2, 0.3, 0.6], [True, True, False, False, True]),
        # a long pause refills to burst, never beyond
        (1.0, 2, [0, 0, 100, 100, 100], [True, True, True, True, False]),
        # rejected requests take no token
        (1.0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0], [True, False, False, False, False, True]),
        # 6000/m == 100/s
        (6000 / 60, 100, [0] * 101, [True] * 100 + [False]),
    ],
)
def test_bucket_table(rate, burst, times, expected):
    assert run(Bucket(rate, burst), times) == expected
    # the limiter's inlined hot path agrees with the reference
    clock = FakeClock(0.0)
    rule = RateLimitRule(name="t", key="client_ip", rate=rate, burst=burst, rate_text="-")
    rl = RateLimiter(RateLimitConfig(rules=(rule,)), clock.now)
    got = []
    for t in times:
        clock.t = float(t)
        got.append(rl.check("GET", b"/", [], "192.0.2.1", None).__class__ is bytes)
    assert got == expected


def test_wait_remaining_and_reset():
    b = Bucket(2.0, 4)  # a token every 0.5 s
    tat = None
    for _ in range(4):
        tat = b.take(tat, 10.0)
    assert b.remaining(tat, 10.0) == 0
    assert b.full_in(tat, 10.0) == 2  # four tokens at 2/s
    assert b.take(tat, 10.0) == pytest.approx(-0.5)  # over: wait half a second
    assert b.take(tat, 10.5) > 0
    assert b.remaining(tat, 11.0) == 2
    assert b.remaining(b.take(None, 0.0), 0.0) == 3


def test_share_divides_rate_and_burst():
    b = Bucket(100.0, 200).scaled(4)
    assert (b.rate, b.burst) == (25.0, 50)
    assert Bucket(1.0, 1).scaled(3).burst == 1  # at least one token


def test_table_is_lru_and_bounded():
    t = KeyTable(3)
    for i, k in enumerate("abc"):
        t.put(k, 100.0 + i, now=0.0)
    t.get("a")  # a is recent now: b is the oldest
    t.put("d", 1.0, now=50.0)
    assert list(t.tats) == ["c", "a", "d"]
    assert (t.evicted, t.evicted_active) == (1, 1)  # b had not refilled (tat 101 > now 50)
    t.put("e", 1.0, now=500.0)
    assert len(t) == 3 and (t.evicted, t.evicted_active) == (2, 1)
