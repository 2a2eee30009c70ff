import itertools
from collections import Counter

import pytest

from policies.model import RegionSnapshot, RegionView, RequestFacts
from policies.round_robin import RoundRobinPolicy, integer_weights, smooth_wrr

FACTS = RequestFacts()


class Requests:
    """Consecutive requests, numbered as the data plane numbers them."""

    def __init__(self):
        self.seq = itertools.count()

    def rank(self, ranker):
        return ranker.rank(RequestFacts(seq=next(self.seq)))


def snap(*regions, version=0):
    return RegionSnapshot(regions=tuple(regions), default_region=regions[0].id, version=version)


def firsts(ranker, n, requests=None):
    requests = requests or Requests()
    return [requests.rank(ranker)[0] for _ in range(n)]


def test_equal_weights_share_exactly():
    r = RoundRobinPolicy().prepare(snap(*(RegionView(x) for x in "abcd")), None)
    assert Counter(firsts(r, 400)) == {"a": 100, "b": 100, "c": 100, "d": 100}


def test_every_order_is_complete_and_rotates():
    r = RoundRobinPolicy().prepare(snap(*(RegionView(x) for x in "abcd")), None)
    assert [q.rank(r) for q in [Requests()] for _ in range(5)] == [
        ("a", "b", "c", "d"), ("b", "c", "d", "a"), ("c", "d", "a", "b"),
        ("d", "a", "b", "c"), ("a", "b", "c", "d"),
    ]


def test_smooth_weighted_sequence_is_nginxs():
    # nginx's documented example: weights 5, 1, 1 -> a a b a c a a
    assert smooth_wrr([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]
    r = RoundRobinPolicy().prepare(snap(RegionView("a", effective_weight=5),
                                        RegionView("b", effective_weight=1),
                                        RegionView("c", effective_weight=1)), None)
    assert "".join(firsts(r, 7)) == "aabacaa"
    # after a pick, the others follow in the order the schedule picks them next
    assert r.rank(RequestFacts(seq=7)) == ("a", "b", "c")  # position 7 = 0 again: a, then b (2), c (4)


@pytest.mark.parametrize(
    "weights, shares",
    [
        ((3.0, 1.0), {"a": 300, "b": 100}),
        ((0.5, 0.25, 0.25), {"a": 200, "b": 100, "c": 100}),
        ((1.0, 2.0, 1.0, 0.0), {"a": 100, "b": 200, "c": 100}),  # drained: no picks
    ],
)
def test_weighted_shares(weights, shares):
    regions = [RegionView(x, effective_weight=w) for x, w in zip("abcd", weights)]
    r = RoundRobinPolicy().prepare(snap(*regions), None)
    assert Counter(firsts(r, 400)) == shares


def test_unavailable_regions_are_out_of_the_schedule_but_last_in_the_order():
    regions = (RegionView("a"), RegionView("b", healthy=False), RegionView("c", breaker="open"),
               RegionView("d", disabled=True), RegionView("e", breaker="half-open"))
    r = RoundRobinPolicy().prepare(snap(*regions), None)
    orders = [r.rank(RequestFacts(seq=i)) for i in range(4)]
    assert [o[0] for o in orders] == ["a", "e", "a", "e"]
    assert orders[0] == ("a", "e", "b", "c", "d")
    assert orders[1] == ("e", "a", "b", "c", "d")


def test_nothing_available_rotates_over_everything():
    r = RoundRobinPolicy().prepare(snap(RegionView("a", healthy=False),
                                        RegionView("b", disabled=True, effective_weight=0.0)), None)
    assert [r.rank(RequestFacts(seq=i)) for i in range(2)] == [("a", "b"), ("b", "a")]


def test_position_carries_across_unchanged_snapshots():
    p = RoundRobinPolicy()
    regions = [RegionView(x) for x in "abcd"]
    q = Requests()
    r = p.prepare(snap(*regions, version=1), None)
    picks = firsts(r, 3, q)
    for v in range(2, 6):  # republished every second with nothing changed
        r = p.prepare(snap(*regions, version=v), r)
        picks += firsts(r, 1, q)
    assert picks == ["a", "b", "c", "d", "a", "b", "c"]


def test_changed_schedule_continues_at_the_offset_not_slot_0():
    # Restarting at slot 0 on every change would pile traffic onto the first
    # region while health flaps; the request sequence number carries over instead.
    p, q = RoundRobinPolicy(), Requests()
    full = [RegionView(x) for x in "abcd"]
    r = p.prepare(snap(*full), None)
    assert firsts(r, 2, q) == ["a", "b"]
    r = p.prepare(snap(*full[:3], RegionView("d", healthy=False)), r)
    assert q.rank(r) == ("c", "a", "b", "d")
    r = p.prepare(snap(*full), r)
    assert firsts(r, 2, q) == ["d", "a"]


def test_rank_is_pure():
    r = RoundRobinPolicy().prepare(snap(*(RegionView(x) for x in "abc")), None)
    assert {r.rank(RequestFacts(seq=4)) for _ in range(10)} == {("b", "c", "a")}


def test_degraded_regions_leave_the_schedule_unless_all_are():
    regions = (RegionView("a", degraded=True), RegionView("b"), RegionView("c", healthy=False),
               RegionView("d"))
    r = RoundRobinPolicy().prepare(snap(*regions), None)
    assert Counter(firsts(r, 100)) == {"b": 50, "d": 50}
    assert r.rank(RequestFacts(seq=0)) == ("b", "d", "a", "c")
    every = tuple(RegionView(x, degraded=True) for x in "ab") + (RegionView("c", breaker="open"),)
    r = RoundRobinPolicy().prepare(snap(*every), None)
    assert Counter(firsts(r, 100)) == {"a": 50, "b": 50}
    assert r.rank(RequestFacts(seq=1)) == ("b", "a", "c")


@pytest.mark.parametrize(
    "weights, ints",
    [
        ([1.0, 1.0, 1.0], [1, 1, 1]),
        ([2.0, 4.0], [1, 2]),
        ([0.5, 0.25], [2, 1]),
        ([1.5, 1.0], [3, 2]),
        ([0.001, 1.0], [1, 100]),  # tiny weight still gets a slot
    ],
)
def test_integer_weights(weights, ints):
    assert integer_weights(weights) == ints


def test_long_cycles_are_approximated_within_the_cap():
    ints = integer_weights([0.37, 0.91, 0.53])
    assert sum(ints) <= 1024
    assert abs(ints[0] / sum(ints) - 0.37 / 1.81) < 0.01
