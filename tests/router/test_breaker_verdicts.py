"""Breakers judge a region by what it did: gateway failures count, an
application's 500 does not (unless listed); an ejection cap; and panic when
every candidate's breaker is open. Pure logic first, then through the
in-memory data plane (memstack) on a fake clock."""
from __future__ import annotations

import asyncio
import logging

import pytest

from policies.model import CLOSED, OPEN
from router.breaker import CircuitBreaker
from router.config import BreakerConfig
from router.candidates import panic_pick

from memstack import Stack, config  # noqa: E402


@pytest.mark.parametrize("listed,status,counts", [
    ((), 502, True), ((), 503, True), ((), 504, True),
    ((), 500, False), ((), 404, False), ((), 200, False), ((), 429, False),
    ((500,), 500, True), ((500,), 501, False), ((429,), 429, True),
])
def test_which_statuses_count(listed, status, counts):
    b = CircuitBreaker(BreakerConfig(failure_statuses=frozenset(listed)))
    assert b.is_failure(status) is counts


def test_the_gate_keeps_a_breaker_closed():
    allowed = [False]
    b = CircuitBreaker(BreakerConfig(consecutive_failures=2), may_open=lambda: allowed[0])
    for t in range(5):
        assert b.on_failure(float(t)) is None
    assert b.state(5.0) == CLOSED and not b.ejected
    allowed[0] = True
    assert b.on_failure(6.0) == OPEN and b.ejected


@pytest.mark.parametrize("skipped,attempts,pick", [
    ([("a", "breaker_open"), ("b", "breaker_open")], 0, "a"),
    ([("a", "disabled"), ("b", "breaker_open"), ("c", "breaker_open")], 0, "b"),
    ([("a", "unhealthy"), ("b", "draining"), ("c", "breaker_open")], 0, "c"),
    ([("a", "breaker_open"), ("b", "overloaded")], 0, None),  # b is a candidate, only busy
    ([("a", "breaker_open"), ("b", "connection refused")], 1, None),  # a region was tried
    ([("a", "disabled")], 0, None),  # no breaker involved: the operator's choice
    (None, 0, None),
])
def test_panic_pick(skipped, attempts, pick):
    assert panic_pick(skipped, attempts) == pick


# -- through the data plane -------------------------------------------------------------
def get(rid: str, path: str = "/x") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: api\r\nX-Request-Id: {rid}\r\n\r\n".encode()


def answer(status: int, body: bytes = b"app") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


async def ask(s: Stack, rid: str, status: int | None, region: str | None = None) -> bytes:
    """One request; the region it reached answers `status`. The client's bytes."""
    before = {id(c) for _, c, _ in s.opened if c._busy}
    _, wire = await s.request(get(rid))
    busy = [(r, c) for r, c, _ in s.opened if c._busy and id(c) not in before]
    if status is not None and busy:
        r, conn = busy[-1]
        assert region is None or r == region
        conn.data_received(answer(status))
        await s.settle()
    return bytes(wire.out)


def state(s: Stack, rid: str) -> str:
    return s.store.regions[rid].breaker.state(s.clock.now())


def test_a_region_answering_500_is_not_ejected():
    async def main():
        s = Stack(config(breaker="consecutive_failures = 3"))
        for i in range(10):
            out = await ask(s, f"q{i}", 500)
            assert out.startswith(b"HTTP/1.1 500") and out.endswith(b"app")  # relayed as it is
        assert state(s, "r1") == CLOSED
    asyncio.run(main())


def test_a_region_answering_503_is():
    async def main():
        s = Stack(config(breaker="consecutive_failures = 3\nmax_ejected_percent = 100"))
        for i in range(3):
            out = await ask(s, f"q{i}", 503)
            assert out.startswith(b"HTTP/1.1 503")
        assert state(s, "r1") == OPEN
    asyncio.run(main())


def test_listed_statuses_count():
    async def main():
        s = Stack(config(breaker="consecutive_failures = 3\nfailure_statuses = [500]"))
        for i in range(3):
            await ask(s, f"q{i}", 500)
        assert state(s, "r1") == OPEN
    asyncio.run(main())


def test_ejection_cap_keeps_half_the_regions_in():
    async def main():
        regions = ("r1", "r2", "r3", "r4")
        s = Stack(config(regions, breaker="consecutive_failures = 1"))
        now = s.clock.now()
        for rid in regions:  # every region fails once
            rt = s.store.regions[rid]
            s.store.breaker_changed(rt, rt.breaker.on_failure(now))
        states = [state(s, r) for r in regions]
        assert states.count(OPEN) == 2 and states.count(CLOSED) == 2  # 50 % of 4
        # cap 0: breakers never open; 100: all may
        s0 = Stack(config(regions, breaker="consecutive_failures = 1\nmax_ejected_percent = 0"))
        s1 = Stack(config(regions, breaker="consecutive_failures = 1\nmax_ejected_percent = 100"))
        for st in (s0, s1):
            for rid in regions:
                rt = st.store.regions[rid]
                st.store.breaker_changed(rt, rt.breaker.on_failure(now))
        assert [state(s0, r) for r in regions] == [CLOSED] * 4
        assert [state(s1, r) for r in regions] == [OPEN] * 4
    asyncio.run(main())


def test_panic_sends_to_the_first_candidate_and_logs_once(caplog):
    async def main():
        s = Stack(config(("r1", "r2"), breaker="consecutive_failures = 1\nmax_ejected_percent = 100"))
        now = s.clock.now()
        for rid in ("r1", "r2"):
            rt = s.store.regions[rid]
            s.store.breaker_changed(rt, rt.breaker.on_failure(now))
        assert state(s, "r1") == state(s, "r2") == OPEN
        with caplog.at_level(logging.ERROR, logger="edge_router.state"):
            for i in range(3):
                out = await ask(s, f"p{i}", 200, region="r1")
                assert out.startswith(b"HTTP/1.1 200") and b"X-Edge-Region: r1" in out
        assert s.metrics.breaker_panic._value.get() == 3
        assert sum("breaker panic" in r.getMessage() for r in caplog.records) == 1
        # r1 comes back (its breaker closes): the episode is over; a new one logs again
        s.clock.advance(1000)
        s.store.tick()
        rt = s.store.regions["r1"]
        for _ in range(3):
            assert rt.breaker.allow(s.clock.now())
            s.store.breaker_changed(rt, rt.breaker.on_success(s.clock.now()))
        assert state(s, "r1") == CLOSED
        s.store.breaker_changed(rt, rt.breaker.on_failure(s.clock.now()))
        rt2 = s.store.regions["r2"]
        s.store.breaker_changed(rt2, rt2.breaker.on_failure(s.clock.now()))
        s.store.breaker_changed(rt2, rt2.breaker.on_failure(s.clock.now()))
        with caplog.at_level(logging.ERROR, logger="edge_router.state"):
            await ask(s, "p9", 200)
        assert sum("breaker panic" in r.getMessage() for r in caplog.records) == 2
    asyncio.run(main())


def test_panic_keeps_residency():
    async def main():
        s = Stack(config(("r1", "r2"), breaker="consecutive_failures = 1\nmax_ejected_percent = 100"))
        s.store.residency["GB"] = frozenset({"r2"})
        s.proxy.geo = type("Geo", (), {"lookup": staticmethod(lambda ip: "GB")})()
        now = s.clock.now()
        rt = s.store.regions["r2"]
        s.store.breaker_changed(rt, rt.breaker.on_failure(now))
        assert state(s, "r2") == OPEN and state(s, "r1") == CLOSED
        out = await ask(s, "gb", 200, region="r2")  # never r1, though r1 is fine
        assert b"X-Edge-Region: r2" in out and s.metrics.breaker_panic._value.get() == 1
    asyncio.run(main())


def test_uncounted_errors_show_in_the_error_rate_only():
    b = CircuitBreaker(BreakerConfig(consecutive_failures=2, min_requests=2, failure_ratio=0.5))
    for t in range(10):
        b.on_success(float(t) / 10, error=True)  # ten 500s: the region answered
    assert b.state(1.0) == CLOSED and b.error_rate(1.0) == 1.0
    b.on_failure(1.0)
    assert b.state(1.0) == CLOSED  # 1 failure of 11: not the ratio, not 2 in a row
    assert b.on_failure(1.1) == OPEN
