from policies import NAMES, REGISTRY
from policies.model import RegionSnapshot, RegionView, RequestFacts


def test_every_name_has_a_policy_with_that_name():
    assert tuple(REGISTRY) == NAMES
    for name, cls in REGISTRY.items():
        assert cls.name == name


def test_every_policy_prepares_and_ranks_without_arguments():
    snap = RegionSnapshot(
        regions=(RegionView("a", failover=("b", "c"), latency_ms=30.0), RegionView("b"),
                 RegionView("c", latency_ms=10.0)),
        default_region="a",
    )
    for cls in REGISTRY.values():
        policy = cls()
        first = policy.prepare(snap, None)
        ranker = policy.prepare(snap, first)
        got = ranker.rank(RequestFacts("US"))
        assert isinstance(got, tuple) and got
        assert len(set(got)) == len(got)
        assert set(got) <= {"a", "b", "c"}
