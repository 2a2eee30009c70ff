import pytest

from policies.health_based import HealthBasedPolicy
from policies.model import RegionSnapshot, RegionView, RequestFacts


def order(*regions):
    snap = RegionSnapshot(regions=tuple(regions), default_region=regions[0].id)
    return HealthBasedPolicy().prepare(snap, None).rank(RequestFacts())


R = RegionView


@pytest.mark.parametrize(
    "regions, expected",
    [
        # the region without errors wins, whatever the config order
        ((R("a", healthy=True, error_rate=0.3), R("b", healthy=True, error_rate=0.0),
          R("c", healthy=True, error_rate=0.05)), ("b", "c", "a")),
        # health before errors: unhealthy last, unknown after healthy
        ((R("a", healthy=False), R("b", healthy=None), R("c", healthy=True, error_rate=0.1)),
         ("c", "b", "a")),
        # breaker: closed > half-open > open
        ((R("a", breaker="open"), R("b", breaker="half-open"), R("c")), ("c", "b", "a")),
        # open breaker is unusable even with a healthy prober verdict
        ((R("a", healthy=True, breaker="open"), R("b", healthy=None, error_rate=0.4)),
         ("b", "a")),
        # equal errors: lower latency, unmeasured last
        ((R("a", latency_ms=None), R("b", latency_ms=80.0), R("c", latency_ms=20.0)),
         ("c", "b", "a")),
        # all equal: config order
        ((R("a"), R("b"), R("c")), ("a", "b", "c")),
        # disabled and drained-to-zero regions only as a last resort
        ((R("a", disabled=True, effective_weight=0.0), R("b", effective_weight=0.0),
          R("c", healthy=None, error_rate=0.2)), ("c", "a", "b")),
    ],
)
def test_order(regions, expected):
    assert order(*regions) == expected
