"""Performance-based failover windows on a fake clock."""
import pytest

from router.config import DegradeConfig
from router.degrade import DEGRADED, RECOVERED, RESTORED, Degrade

CFG = DegradeConfig(error_rate=0.05, latency=2.0, window=60.0, min_requests=20)


def feed(d, now, n, *, latency=0.05, failed=0, slow=0, slow_latency=2.5):
    """n requests at `now`: `failed` of them failed, `slow` answered after slow_latency."""
    for i in range(n):
        d.record(now, slow_latency if i < slow else latency, i >= n - failed)


@pytest.mark.parametrize(
    "n, failed, slow, verdict",
    [
        (19, 19, 0, None),  # below min_requests: no verdict whatever the numbers
        (20, 1, 0, None),  # exactly 5 %: not over
        (20, 2, 0, DEGRADED),  # 10 % errors
        (100, 6, 0, DEGRADED),
        (100, 0, 5, None),  # 5 % slower than 2 s: p95 is not over 2 s
        (100, 0, 6, DEGRADED),  # 6 %: p95 over 2 s
        (40, 0, 40, DEGRADED),  # every answer at 2.5 s
    ],
)
def test_degrade_verdicts(n, failed, slow, verdict):
    d = Degrade(CFG)
    feed(d, 0.0, n, failed=failed, slow=slow)
    assert d.evaluate(0.0) == verdict
    assert d.degraded is (verdict == DEGRADED)


def test_p95_estimate_and_stats():
    d = Degrade(CFG)
    feed(d, 0.0, 100, latency=0.04, slow=10, slow_latency=2.5)
    st = d.stats(0.0)
    assert (st.requests, st.errors, st.answered, st.slow) == (100, 0, 100, 10)
    assert 2.0 < st.p95 <= 4.0
    assert "error rate 0.0% (0 of 100 requests)" in st.describe()


def test_old_requests_leave_the_window():
    d = Degrade(CFG)
    feed(d, 0.0, 20, failed=10)  # would be degraded ...
    feed(d, 61.0, 20)  # ... but only these are in the window now
    assert d.evaluate(61.0) is None and not d.degraded


def test_recovery_needs_the_margin():
    d = Degrade(CFG)
    feed(d, 0.0, 100, failed=10)
    assert d.evaluate(0.0) == DEGRADED
    # 4.5 % errors: below the threshold but not below 80 % of it
    feed(d, 61.0, 200, failed=9)
    assert d.evaluate(61.0) is None and d.degraded
    feed(d, 122.0, 200, failed=7)  # 3.5 %
    assert d.evaluate(122.0) == RECOVERED and not d.degraded


def test_latency_recovery_needs_the_margin():
    d = Degrade(CFG)
    feed(d, 0.0, 40, slow=40, slow_latency=2.5)
    assert d.evaluate(0.0) == DEGRADED
    feed(d, 61.0, 40, slow=40, slow_latency=1.8)  # p95 1.8 s: under 2 s, over 1.6 s
    assert d.evaluate(61.0) is None
    feed(d, 122.0, 40, slow=40, slow_latency=1.2)
    assert d.evaluate(122.0) == RECOVERED


def test_without_traffic_a_degraded_region_is_restored_after_a_window():
    d = Degrade(CFG)
    feed(d, 0.0, 20, failed=5)
    assert d.evaluate(0.0) == DEGRADED
    assert d.evaluate(30.0) is None  # still inside the window: stays degraded
    feed(d, 40.0, 3, failed=3)  # a few requests while ranked last: not enough to judge
    assert d.evaluate(59.9) is None
    assert d.evaluate(60.0) == RESTORED and not d.degraded
    assert d.stats(60.0).requests == 0  # a fresh start: old failures do not count again
    feed(d, 61.0, 19)
    assert d.evaluate(61.0) is None


def test_still_bad_while_ranked_last_stays_degraded():
    d = Degrade(CFG)
    feed(d, 0.0, 20, failed=5)
    d.evaluate(0.0)
    for t in range(10, 130, 10):  # it is all that is left: keeps serving, keeps failing
        feed(d, float(t), 10, failed=2)
        assert d.evaluate(float(t)) is None and d.degraded


def test_recording_after_the_whole_window_expired_starts_a_new_bucket():
    d = Degrade(CFG)
    feed(d, 0.0, 5)
    assert d.stats(100.0).requests == 0  # everything expired, newest bucket included
    feed(d, 100.0, 3)
    assert d.stats(100.0).requests == 3
