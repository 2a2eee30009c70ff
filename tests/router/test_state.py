"""The region store on a fake clock: drains, disables, panic, skip reasons."""
from __future__ import annotations

from dataclasses import replace

from router.clock import FakeClock
from router.config import default_config
from router.store import MemoryDecisionStore
from router.explain import explain_route
from router.metrics import Metrics
from router.candidates import skip_reason
from router.state import RegionStore


class Wall:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def make_store(**cfg):
    config = default_config()
    if cfg:
        config = replace(config, **cfg)
    clock, wall = FakeClock(), Wall()
    store = RegionStore(config, MemoryDecisionStore(config.strategy), Metrics(tuple(r.id for r in config.regions)), clock, wall)
    return store, clock, wall


def test_drain_falls_linearly_to_zero():
    store, clock, wall = make_store()
    store.drain("eu-west-1", 10.0)
    rt = store.regions["eu-west-1"]
    seen = []
    for _ in range(6):
        store.tick()
        seen.append(round(rt.effective_weight, 2))
        wall.t += 2.0
    assert seen == [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    assert rt.draining and skip_reason(rt, 0.0, clock.now(), 100) == "draining"
    store.enable("eu-west-1")
    assert rt.effective_weight == 1.0 and not rt.draining


def test_drain_share_follows_draw():
    store, clock, wall = make_store()
    store.drain("eu-west-1", 10.0)
    wall.t += 7.0
    store.tick()
    rt = store.regions["eu-west-1"]
    assert abs(rt.admit - 0.3) < 1e-9
    assert skip_reason(rt, 0.29, clock.now(), 100) == ""
    assert skip_reason(rt, 0.31, clock.now(), 100) == "draining"


def test_disable_is_immediate_and_explained():
    store, clock, wall = make_store()
    store.disable("eu-west-1")
    rt = store.regions["eu-west-1"]
    assert rt.admit == 0 and rt.effective_weight == 0
    out = explain_route(store, country="GB", client_ip=None, max_in_flight=100)
    assert out["candidates"][0] == {"region": "eu-west-1", "usable": False, "reason": "disabled"}
    assert out["chosen"] == "us-east-1"
    assert store.state_json()["regions"][2]["disabled"] is True


def test_panic_when_prober_holds_every_region_down():
    store, clock, wall = make_store()
    for rt in store.regions.values():
        for _ in range(store.config.probe.fall):
            store.record_probe(rt, False, None)
    assert store.panic
    # unhealthy verdicts are ignored in panic: nothing is excluded for health
    assert all(not rt.health_excluded for rt in store.regions.values())
    for _ in range(store.config.probe.rise):
        assert store.panic  # rise successes are needed, as for any recovery
        store.record_probe(store.regions["us-east-1"], True, 0.01)
    assert not store.panic
    assert store.regions["eu-west-1"].health_excluded


def test_breaker_open_skips_and_half_open_lets_one_trial():
    store, clock, wall = make_store()
    rt = store.regions["us-east-1"]
    for _ in range(store.config.breaker.consecutive_failures):
        store.breaker_changed(rt, rt.breaker.on_failure(clock.now()))
    assert store.state_json()["regions"][0]["breaker"] == "open"
    assert skip_reason(rt, -1, clock.now(), 100) == "breaker_open"
    clock.advance(store.config.breaker.open_for + 0.1)
    assert skip_reason(rt, -1, clock.now(), 100) == ""  # half-open: usable, no trial slot taken
    assert rt.breaker.state(clock.now()) == "half-open"
    assert skip_reason(rt, -1, clock.now(), 100) == ""  # asking again takes nothing either
    assert rt.breaker.allow(clock.now())  # the sender takes the trial slot itself


def test_strategy_switch_republishes_with_new_ranker():
    store, clock, wall = make_store()
    v = store.snapshot.version
    store.set_strategy("round-robin")
    assert store.strategy == "round-robin" and store.snapshot.version > v
    from policies.model import RequestFacts

    firsts = [store.ranker.rank(RequestFacts("GB", seq=store.next_seq()))[0] for _ in range(8)]
    assert sorted(set(firsts)) == sorted(store.regions)


def test_residency_map():
    from router.config import ResidencyRule

    store, clock, wall = make_store(residency=(ResidencyRule(frozenset({"DE", "FR"}), ("eu-west-1",)),))
    assert store.residency["DE"] == frozenset({"eu-west-1"})
    store.disable("eu-west-1")
    out = explain_route(store, country="DE", client_ip=None, max_in_flight=100)
    assert out["chosen"] is None and out["residency"] == ["eu-west-1"]
    assert all(c["region"] == "eu-west-1" or c["reason"] == "residency" for c in out["candidates"])
