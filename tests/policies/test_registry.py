import pytest

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


def test_a_strategy_declares_its_settings_and_the_config_reads_them():
    """Adding a strategy: a Policy subclass (with an optional Settings dataclass)
    and a REGISTRY line; the config derives the table and its checks."""
    from dataclasses import dataclass, field

    from policies.base import Policy, settings_table
    from router.config import _STRATEGY_SETTINGS, _Bad, _settings_spec

    assert set(_STRATEGY_SETTINGS) == {settings_table(n) for n, c in REGISTRY.items() if c.Settings}

    @dataclass(frozen=True)
    class FifthSettings:
        stickiness: float = field(default=5.0, metadata={"unit": "duration"})
        spread: int = field(default=2, metadata={"min": 1})
        ratio: float = 0.5

    class Fifth(Policy):
        name = "sticky-fifth"
        Settings = FifthSettings

    assert settings_table(Fifth.name) == "sticky_fifth"
    assert Fifth().settings == FifthSettings()
    spec = _settings_spec(FifthSettings)
    assert spec["stickiness"]("250ms") == 0.25 and spec["spread"](3) == 3 and spec["ratio"](0.7) == 0.7
    for key, bad in (("stickiness", 5), ("spread", 0), ("ratio", "x")):
        with pytest.raises(_Bad):
            spec[key](bad)


def test_every_policy_declares_how_shares_scale():
    assert {n: c.shares_by_weight for n, c in REGISTRY.items()} == {
        "geographic": False, "least-latency": False, "health-based": False, "round-robin": True}
