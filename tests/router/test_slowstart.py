"""Slow start shares on a fake clock."""
import pytest

from router.slowstart import SlowStart


@pytest.mark.parametrize("elapsed, share", [(0.0, 0.1), (10.0, 0.4), (15.0, 0.55), (29.9, 0.997), (30.0, 1.0)])
def test_linear_ramp_from_10_percent(elapsed, share):
    s = SlowStart(30.0)
    s.update(False, 0.0)
    s.update(True, 100.0)
    assert s.share(100.0 + elapsed) == pytest.approx(share)


def test_no_ramp_at_start_up_or_when_off():
    s = SlowStart(30.0)
    s.update(True, 0.0)
    assert s.share(0.0) == 1.0
    off = SlowStart(0.0)
    off.update(False, 0.0)
    off.update(True, 1.0)
    assert off.share(1.0) == 1.0


def test_going_out_again_restarts_the_ramp():
    s = SlowStart(30.0)
    s.update(False, 0.0)
    s.update(True, 10.0)
    s.update(True, 20.0)  # still back: the ramp goes on
    assert s.share(25.0) == pytest.approx(0.1 + 0.9 * 15 / 30)
    s.update(False, 26.0)
    assert s.share(26.0) == 1.0  # out: no share to scale (the data plane skips it)
    s.update(True, 40.0)
    assert s.share(40.0) == pytest.approx(0.1)


def test_ramped_ranker_moves_the_region_to_the_end_for_the_rest_of_the_requests():
    from policies.model import RequestFacts
    from router.slowstart import RampedRanker

    class Fixed:
        def rank(self, facts):
            return ("a", "b", "c")

        def explain(self, facts):
            return {"inner": True}

    r = RampedRanker(Fixed(), {"a": 0.25})
    orders = [r.rank(RequestFacts(seq=n)) for n in range(1, 401)]
    assert orders.count(("a", "b", "c")) == pytest.approx(100, abs=1)
    assert orders.count(("b", "c", "a")) == pytest.approx(300, abs=1)
    # evenly spread: every run of 20 consecutive requests gives it 4 to 6
    assert all(3 <= [o[0] for o in orders[i:i + 20]].count("a") <= 7 for i in range(0, 380, 20))
    assert r.rank(RequestFacts(seq=7)) == r.rank(RequestFacts(seq=7))  # pure
    assert r.explain(RequestFacts()) == {"inner": True}
