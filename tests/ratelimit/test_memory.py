"""A flood of a million distinct keys stays within the key table's bound."""
from __future__ import annotations

import sys

from router.clock import FakeClock
from router.config import RateLimitConfig, RateLimitRule
from router.ratelimit import RateLimiter

# The bound README states: per rule, max_keys entries of at most this many bytes
# (the OrderedDict's slot and link, an IPv6-length key string, a float).
BYTES_PER_KEY = 300


def held_bytes(table) -> int:
    tats = table.tats
    return sys.getsizeof(tats) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in tats.items())


def test_a_million_distinct_keys_stay_within_the_bound():
    max_keys = 20_000
    rule = RateLimitRule(name="ip", key="client_ip", rate=1.0, burst=1, rate_text="1/s")
    clock = FakeClock()
    rl = RateLimiter(RateLimitConfig(rules=(rule,), max_keys=max_keys), clock.now)
    check = rl.check
    table = rl.rules[0].table
    sizes = []
    for i in range(1_000_000):
        # IPv6-sized keys, about the longest a client_ip key gets
        check("GET", b"/", [], f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::1", None)
        if i % 8 == 0:  # over the limit: counted in the top list
            check("GET", b"/", [], f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::1", None)
        if i % 100_000 == 99_999:
            clock.advance(0.01)
            sizes.append(held_bytes(table))
    assert len(table) == max_keys and table.evicted == 1_000_000 - max_keys
    # flat from the first 100k keys on, and under the stated bound
    assert max(sizes) <= sizes[0] * 1.05, sizes
    per_key = max(sizes) / max_keys
    print(f"{per_key:.0f} bytes per key held")
    assert per_key < BYTES_PER_KEY
    assert len(rl.rules[0].top) <= 256  # the limited-keys counter is bounded too
