import pytest

from policies.model import CLOSED, HALF_OPEN, OPEN
from router.breaker import CircuitBreaker
from router.config import BreakerConfig

CFG = BreakerConfig(consecutive_failures=3, open_for=10.0, max_open_for=40.0,
                    failure_ratio=0.5, window=10.0, min_requests=10, half_open_requests=2)


def play(breaker, events):
    """events: (now, "ok" | "fail" | "cancel") -> list of (returned change, state)."""
    out = []
    for now, what in events:
        change = {"ok": breaker.on_success, "fail": breaker.on_failure,
                  "cancel": breaker.on_cancel}[what](now)
        out.append((change, breaker.state(now)))
    return out


def test_opens_after_consecutive_failures():
    b = CircuitBreaker(CFG)
    got = play(b, [(0.0, "fail"), (0.1, "fail"), (0.2, "ok"), (0.3, "fail"), (0.4, "fail"),
                   (0.5, "fail")])
    assert got == [(None, CLOSED)] * 5 + [(OPEN, OPEN)]
    assert b.transitions == 1


def test_open_time_then_half_open():
    b = CircuitBreaker(CFG)
    play(b, [(0.0, "fail")] * 3)
    assert b.allow(9.99) is False
    assert b.state(9.99) == OPEN
    assert b.tick(9.99) is None
    assert b.tick(10.0) == HALF_OPEN
    assert b.tick(10.5) is None
    assert b.transitions == 2


@pytest.mark.parametrize(
    "outcomes, state",
    [
        # 10 requests, 5 failures, never 3 in a row: share 0.5 >= 0.5 opens
        (["ok", "fail"] * 5, OPEN),
        # 9 requests: below min_requests
        (["ok", "fail"] * 4 + ["fail"], CLOSED),
        # 12 requests, 5 failures: share below 0.5
        (["ok", "ok", "fail"] * 2 + ["ok", "fail"] * 3, CLOSED),
    ],
)
def test_opens_on_failure_share_in_the_window(outcomes, state):
    cfg = BreakerConfig(consecutive_failures=100, open_for=10.0, failure_ratio=0.5,
                        window=10.0, min_requests=10)
    b = CircuitBreaker(cfg)
    play(b, [(i * 0.5, o) for i, o in enumerate(outcomes)])
    assert b.state(len(outcomes) * 0.5) == state


def test_window_forgets_old_requests():
    cfg = BreakerConfig(consecutive_failures=100, failure_ratio=0.5, window=10.0, min_requests=10)
    b = CircuitBreaker(cfg)
    play(b, [(0.0, "fail")] * 4 + [(0.5, "ok")] * 4)
    assert b.error_rate(1.0) == 0.5
    # 11 s later those 8 are gone: 2 failures in 4 requests now, then more failures
    play(b, [(11.0, "ok"), (11.0, "ok"), (11.0, "fail"), (11.0, "fail")])
    assert b.error_rate(11.0) == 0.5
    assert b.state(11.0) == CLOSED  # 8 + 4 = 12 >= 10 would have opened without expiry
    assert b.error_rate(30.0) == 0.0
    assert CircuitBreaker(cfg).error_rate(0.0) == 0.0


def test_half_open_admits_limited_trials_and_closes_after_all_succeed():
    b = CircuitBreaker(CFG)
    play(b, [(0.0, "fail")] * 3)
    assert [b.allow(10.0) for _ in range(3)] == [True, True, False]
    assert b.on_cancel(10.1) is None  # abandoned trial frees its slot
    assert b.allow(10.1) is True
    assert b.allow(10.1) is False
    assert b.on_success(10.2) is None
    assert b.state(10.2) == HALF_OPEN
    assert b.on_success(10.3) == CLOSED
    assert b.allow(10.3) is True
    assert b.transitions == 3  # open, half-open, closed


def test_half_open_failure_reopens_with_doubling_capped_and_reset_after_close():
    b = CircuitBreaker(CFG)
    play(b, [(0.0, "fail")] * 3)
    now, lengths = 0.0, []
    for _ in range(4):
        # half-open: one trial succeeds, the next fails -> open again, longer
        start = b.open_until
        assert b.allow(start) and b.allow(start)
        assert b.on_success(start) is None
        assert b.on_failure(start) == OPEN
        lengths.append(b.open_until - start)
        now = b.open_until
    assert lengths == [20.0, 40.0, 40.0, 40.0]
    assert b.state(now - 0.01) == OPEN
    assert b.allow(now) and b.allow(now)
    b.on_success(now)
    assert b.on_success(now) == CLOSED
    play(b, [(now + 1, "fail")] * 3)
    assert b.open_until == now + 1 + 10.0  # back to open_for


def test_closing_clears_the_window():
    cfg = BreakerConfig(consecutive_failures=100, open_for=1.0, failure_ratio=0.5,
                        window=10.0, min_requests=4, half_open_requests=1)
    b = CircuitBreaker(cfg)
    play(b, [(0.0, "fail")] * 4)
    assert b.state(0.0) == OPEN
    assert b.allow(1.0)
    assert b.on_success(1.0) == CLOSED
    assert b.error_rate(1.0) == 0.0
    assert b.on_failure(1.1) is None  # old failures do not trip it again at once
    assert b.state(1.1) == CLOSED


def test_late_results_while_open_change_nothing():
    b = CircuitBreaker(CFG)
    play(b, [(0.0, "fail")] * 3)
    assert b.on_success(1.0) is None
    assert b.on_failure(2.0) is None
    assert b.on_cancel(2.0) is None
    assert b.state(9.0) == OPEN
    assert b.open_until == 10.0
    assert b.transitions == 1


def test_calls_report_the_time_driven_half_open():
    b = CircuitBreaker(CFG)
    play(b, [(0.0, "fail")] * 3)
    # the first call after the open time sees half-open; a failure re-opens at once
    assert b.on_failure(12.0) == OPEN
    assert b.open_until == 32.0
    assert b.transitions == 3


def test_a_request_admitted_before_opening_does_not_underflow_trials():
    b = CircuitBreaker(CFG)
    play(b, [(0.0, "fail")] * 3)
    assert b.tick(10.0) == HALF_OPEN
    b.on_cancel(10.0)  # started while closed, ends now: no slot to free
    assert [b.allow(10.0) for _ in range(3)] == [True, True, False]
