import pytest

from policies.least_latency import LeastLatencyPolicy, LeastLatencySettings
from policies.model import RegionSnapshot, RegionView, RequestFacts
from policies.round_robin import RoundRobinPolicy

FACTS = RequestFacts()


def snap(now=0.0, **latency):
    """snap(now, a=50.0, b=None) -> regions in keyword order."""
    return RegionSnapshot(
        regions=tuple(RegionView(rid, latency_ms=ms) for rid, ms in latency.items()),
        default_region=next(iter(latency)), now=now,
    )


def run(policy, timeline):
    """Feed (now, snapshot) in order; return the leader after each."""
    ranker, leaders = None, []
    for s in timeline:
        ranker = policy.prepare(s, ranker)
        leaders.append(ranker.rank(FACTS)[0])
    return leaders


@pytest.mark.parametrize(
    "latency, expected",
    [
        (dict(a=80.0, b=20.0, c=50.0), ("b", "c", "a")),
        (dict(a=None, b=90.0, c=None, d=10.0), ("d", "b", "a", "c")),  # unmeasured last
        (dict(a=30.0, b=30.0, c=10.0), ("c", "a", "b")),  # ties in config order
        (dict(a=None, b=None), ("a", "b")),  # nothing measured: config order
    ],
)
def test_fresh_order(latency, expected):
    assert LeastLatencyPolicy().prepare(snap(**latency), None).rank(FACTS) == expected


def test_unusable_regions_are_not_leader_and_go_last():
    s = RegionSnapshot(
        regions=(RegionView("a", latency_ms=5.0, healthy=False),
                 RegionView("b", latency_ms=6.0, breaker="open"),
                 RegionView("c", latency_ms=7.0, disabled=True),
                 RegionView("d", latency_ms=8.0, effective_weight=0.0),
                 RegionView("e", latency_ms=90.0, breaker="half-open"),
                 RegionView("f", latency_ms=40.0, healthy=None)),
        default_region="a",
    )
    assert LeastLatencyPolicy().prepare(s, None).rank(FACTS) == ("f", "e", "a", "b", "c", "d")


def test_near_equal_regions_do_not_flap():
    # 50 vs 51 ms, swapping every second for a minute: the first leader stays.
    timeline = [snap(t, a=50.0 + (t % 2), b=51.0 - (t % 2)) for t in range(60)]
    assert set(run(LeastLatencyPolicy(), timeline)) == {"a"}


def test_switches_after_dwell_when_leader_slows():
    # a leads at 50 ms, slows to 70 ms at t=1.0 (a small loss); snapshots every 0.5 s
    timeline = [snap(0.0, a=50.0, b=51.0)] + [snap(t / 2, a=70.0, b=51.0) for t in range(2, 40)]
    leaders = dict(zip((s.now for s in timeline), run(LeastLatencyPolicy(), timeline)))
    # dwell 10 s: b leads from t=11.0 on, not before
    assert {t: l for t, l in leaders.items() if t < 11.0} == {t: "a" for t in leaders if t < 11.0}
    assert {t: l for t, l in leaders.items() if t >= 11.0} == {t: "b" for t in leaders if t >= 11.0}
    ranker = None
    for s in timeline:
        ranker = LeastLatencyPolicy().prepare(s, ranker)
    assert ranker.rank(FACTS) == ("b", "a")


def test_dwell_restarts_when_the_leader_recovers_in_between():
    lat = {**{t: 70.0 for t in range(0, 8)}, 8: 50.0, **{t: 70.0 for t in range(9, 30)}}
    timeline = [snap(0.0 - 1, a=50.0, b=51.0)] + [snap(t, a=lat[t], b=51.0) for t in range(30)]
    leaders = dict(zip((s.now for s in timeline), run(LeastLatencyPolicy(), timeline)))
    assert leaders[18.0] == "a"  # 9..18 is < 10 s of continuous loss
    assert leaders[19.0] == "b"


@pytest.mark.parametrize(
    "slow, fast, switches",
    [
        (10.0, 7.0, False),  # 30 % better but only 3 ms: absolute margin not met
        (300.0, 290.0, False),  # 10 ms better but only 3 %: relative margin not met
        (100.0, 80.0, True),  # exactly 20 % and 20 ms
        (100.0, 81.0, False),
    ],
)
def test_both_margins_are_required(slow, fast, switches):
    timeline = [snap(0.0, a=1.0, b=fast)] + [snap(t, a=slow, b=fast) for t in range(1, 30)]
    assert run(LeastLatencyPolicy(), timeline)[-1] == ("b" if switches else "a")


@pytest.mark.parametrize(
    "change",
    [dict(healthy=False), dict(breaker="open"), dict(disabled=True), dict(effective_weight=0.0)],
)
def test_unusable_leader_is_replaced_at_once(change):
    p = LeastLatencyPolicy()
    r = p.prepare(snap(0.0, a=10.0, b=30.0), None)
    down = RegionSnapshot(
        regions=(RegionView("a", latency_ms=10.0, **change), RegionView("b", latency_ms=30.0)),
        default_region="a", now=0.5,
    )
    r = p.prepare(down, r)
    assert r.rank(FACTS) == ("b", "a")
    # and a recovered faster region must win the dwell again to come back
    # (20 ms faster is below the 50 ms takeover margin)
    r = p.prepare(snap(1.0, a=10.0, b=30.0), r)
    assert r.rank(FACTS)[0] == "b"
    r = p.prepare(snap(11.0, a=10.0, b=30.0), r)
    assert r.rank(FACTS)[0] == "a"


def test_unmeasured_leader_gives_way_to_first_measurement():
    p = LeastLatencyPolicy()
    r = p.prepare(snap(0.0, a=None, b=None), None)
    assert r.rank(FACTS)[0] == "a"
    r = p.prepare(snap(0.1, a=None, b=70.0), r)
    assert r.rank(FACTS) == ("b", "a")


def test_leader_removed_from_snapshot_is_replaced():
    p = LeastLatencyPolicy()
    r = p.prepare(snap(0.0, a=10.0, b=60.0, c=40.0), None)
    r = p.prepare(snap(0.1, b=60.0, c=40.0), r)
    assert r.rank(FACTS) == ("c", "b")


def test_tuning_and_foreign_previous_ranker():
    p = LeastLatencyPolicy(LeastLatencySettings(relative_margin=0.0, absolute_margin=0.0, dwell=0.0))
    foreign = RoundRobinPolicy().prepare(snap(0.0, a=1.0), None)
    r = p.prepare(snap(0.0, a=50.0, b=51.0), foreign)
    assert p.prepare(snap(0.0, a=51.0, b=50.0), r).rank(FACTS)[0] == "b"


@pytest.mark.parametrize(
    "lead, chal, at_once",
    [
        (200.0, 10.0, True),  # 20x: the leader slowed 10 -> 200 ms
        (100.0, 50.0, True),  # exactly 2x and 50 ms
        (99.0, 50.0, False),  # 2x not met: the dwell applies
        (80.0, 35.0, False),  # 2.3x but 45 ms: absolute takeover margin not met
        (2500.0, 1300.0, False),  # 1.9x: the dwell applies
    ],
)
def test_a_large_win_takes_over_at_once(lead, chal, at_once):
    timeline = [snap(0.0, a=1.0, b=chal), snap(0.5, a=lead, b=chal), snap(1.0, a=lead, b=chal)]
    assert run(LeastLatencyPolicy(), timeline)[1:] == (["b", "b"] if at_once else ["a", "a"])


def test_takeover_settings():
    p = LeastLatencyPolicy(LeastLatencySettings(takeover_factor=3.0, takeover_margin=0.01))
    timeline = [snap(0.0, a=1.0, b=10.0), snap(0.5, a=25.0, b=10.0), snap(1.0, a=30.0, b=10.0)]
    assert run(p, timeline) == ["a", "a", "b"]


def test_near_equal_regions_never_flap_under_noise():
    # 40 ms and 44 ms, each sample +-3 ms of noise, for 30 s of snapshots
    import random
    rnd = random.Random(7)
    timeline = [snap(t / 2, a=40.0 + rnd.uniform(-3, 3), b=44.0 + rnd.uniform(-3, 3)) for t in range(60)]
    assert set(run(LeastLatencyPolicy(), timeline)) == {"a"}


def test_explanation_names_the_latencies_compared():
    p = LeastLatencyPolicy()
    r = p.prepare(snap(0.0, a=40.0, b=44.0), None)
    r = p.prepare(snap(0.5, a=52.0, b=44.0), r)
    e = r.explain(FACTS)
    assert e["leader"] == "a" and e["latencies_ms"] == {"b": 44.0, "a": 52.0}
    assert "a (52.0 ms) stays leader: b (44.0 ms) is within the margins" in e["why"]
    r = p.prepare(snap(1.0, a=200.0, b=44.0), r)
    assert r.explain(FACTS)["why"].startswith("b (44.0 ms) took over at once from a (200.0 ms)")


def test_degraded_leader_is_replaced_and_ranked_after_usable():
    p = LeastLatencyPolicy()
    r = p.prepare(snap(0.0, a=10.0, b=30.0, c=90.0), None)
    s = RegionSnapshot(
        regions=(RegionView("a", latency_ms=10.0, degraded=True), RegionView("b", latency_ms=30.0),
                 RegionView("c", latency_ms=90.0, healthy=False)),
        default_region="a", now=0.5,
    )
    assert p.prepare(s, r).rank(FACTS) == ("b", "a", "c")
