"""Decision store: the document and its rules (pure), the file backend, the
book's local overrides and guard rail, [state] validation, reload planning."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import tomllib

import pytest

from router.config import ConfigError, default_config, parse_config
from router.defaults import SEED_TOML
from router.reload import plan_reload
from router.store import Conflict, DecisionBook, FileDecisionStore, MemoryDecisionStore, Mutation
from router.store.model import Decisions, Drain, apply, committed, decode, encode, guard

REGIONS = ("a", "b", "c")


def test_apply_each_action():
    d = Decisions("geographic")
    d = apply(d, Mutation("strategy", strategy="round-robin"))
    d = apply(d, Mutation("drain", "a", started=100.0, over=60.0))
    d = apply(d, Mutation("disable", "b"))
    d = apply(d, Mutation("weight", "c", weight=2.5))
    assert (d.strategy, d.disabled, dict(d.drains), dict(d.weights)) == (
        "round-robin", {"b"}, {"a": Drain(100.0, 60.0)}, {"c": 2.5})
    d = apply(apply(d, Mutation("enable", "a")), Mutation("enable", "b"))
    assert not d.disabled and not d.drains


def test_document_round_trip_and_ordering():
    d = committed(apply(Decisions("geographic"), Mutation("drain", "a", started=1.5, over=2.0)), "r1", 9.0)
    assert d.version == 1 and d.epoch and d.by == "r1"
    assert decode(encode(d)) == dataclasses.replace(d, drains=d.drains)
    newer = committed(d, "r2", 10.0)
    assert newer.newer_than(d) and not d.newer_than(newer) and not d.newer_than(d)
    # Another lineage (a Redis seeded afresh) wins whatever its version.
    assert dataclasses.replace(d, epoch="other", version=0).newer_than(newer)
    with pytest.raises(ValueError):
        decode(b'{"no": "strategy"}')
    with pytest.raises(ValueError):
        decode(b"not json")


def test_guard_names_every_region_out_of_rotation():
    d = apply(apply(Decisions("g"), Mutation("disable", "a")), Mutation("drain", "b", started=0, over=1))
    guard(d, REGIONS)  # c is left
    with pytest.raises(Conflict) as exc:
        guard(d, REGIONS, frozenset({"c"}))
    assert exc.value.regions == {"a": "disabled", "b": "draining", "c": "disabled locally"}
    assert "force" in str(exc.value)


def test_file_store_survives_restart_and_writes_atomically(tmp_path):
    path = tmp_path / "d.json"
    s = FileDecisionStore(str(path), "geographic", "r1")
    s.disable("b")
    s.drain("a", 10.0, 30.0)
    assert json.loads(path.read_text())["disabled"] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["d.json"]  # no temporary left behind
    again = FileDecisionStore(str(path), "health-based", "r2")
    assert again.current().disabled == {"b"} and again.current().drains["a"] == Drain(10.0, 30.0)
    assert again.current().strategy == "geographic" and again.current().version == 2
    path.write_text("{broken")
    assert FileDecisionStore(str(path), "round-robin").current().strategy == "round-robin"


def test_file_store_write_failure_changes_nothing(tmp_path):
    s = FileDecisionStore(str(tmp_path / "gone" / "d.json"), "geographic")
    with pytest.raises(OSError):
        s.disable("a")
    assert s.current().disabled == frozenset()


def _book() -> DecisionBook:
    book = DecisionBook(MemoryDecisionStore("geographic", "r1"), lambda: REGIONS, "r1", wall=lambda: 50.0)
    changes = []
    book.on_change.append(lambda: changes.append(book.current()))
    return book


def test_book_guard_force_and_local_overrides():
    async def run():
        book = _book()
        await book.mutate(Mutation("disable", "a"))
        d = await book.mutate(Mutation("drain", "b", over=5.0))
        assert d.drains["b"] == Drain(50.0, 5.0)  # the start time is the book's clock
        with pytest.raises(Conflict):
            await book.mutate(Mutation("disable", "c"))
        with pytest.raises(Conflict):
            await book.mutate(Mutation("disable", "c"), local=True)
        await book.mutate(Mutation("enable", "b"))
        d = await book.mutate(Mutation("disable", "c"), local=True)
        assert d.disabled == {"a", "c"} and book.shared.disabled == {"a"}
        assert book.describe()["local_overrides"] == {"disabled": ["c"]}
        with pytest.raises(ValueError):
            await book.mutate(Mutation("strategy", strategy="round-robin"), local=True)
        # An explicit enable clears the local override (and the shared state).
        d = await book.mutate(Mutation("enable", "c"))
        assert d.disabled == {"a"} and not book.local_disabled
        d = await book.mutate(Mutation("disable", "b"), force=False)
        d = await book.mutate(Mutation("disable", "c"), force=True)
        assert d.disabled == set(REGIONS)
    asyncio.run(run())


def _state(extra: str) -> str:
    return SEED_TOML + "\n" + extra


@pytest.mark.parametrize(("extra", "problem"), [
    ('[state]\nbackend = "file"', "state.path: required"),
    ('[state]\nbackend = "redis"', "state.url: required"),
    ('[state]\nbackend = "redis"\nurl = "http://x"', "state.url: bad URL"),
    ('[state]\nbackend = "etcd"', "state.backend: unknown state backend"),
    ('[state]\nbackend = "redis"\nurl = "rediss://x:6380"\ntls_cert = "c.pem"', "state.tls_key: required"),
    ('[state]\nttl = 3', "state.ttl: unknown key"),
])
def test_state_config_problems_name_the_key(extra, problem):
    with pytest.raises(ConfigError) as exc:
        parse_config(tomllib.loads(_state(extra)))
    assert any(p.startswith(problem) for p in exc.value.problems), exc.value.problems


def test_state_config_defaults_and_redis():
    assert default_config().state.backend == "memory"
    st = parse_config(tomllib.loads(_state('[state]\nbackend = "redis"\nurl = "rediss://r:6380/1"\n'
                                           'key_prefix = "p:"'))).state
    assert (st.backend, st.url, st.key_prefix) == ("redis", "rediss://r:6380/1", "p:")


def test_reload_plan_swaps_live_sections_and_keeps_restart_only_ones():
    running = default_config()
    data = tomllib.loads(SEED_TOML)
    data["listen"] = {"address": "0.0.0.0:9999"}
    data["probe"] = {**data.get("probe", {}), "interval": "7s"}
    data["geo"]["countries"]["eu-west-1"] = [c for c in data["geo"]["countries"]["eu-west-1"] if c != "GB"]
    plan = plan_reload(running, parse_config(data))
    assert plan.needs_restart == ("listen",)
    assert set(plan.changed) == {"probe", "geo.countries"}
    assert plan.config.listen == running.listen and plan.config.probe.interval == 7.0
    assert "GB" not in plan.config.country_home
    assert plan_reload(running, running).changed == ()


def test_same_version_other_content_is_taken_lost_write_case():
    base = committed(Decisions("geographic"), "r1", 1.0)
    lost = committed(apply(base, Mutation("disable", "a")), "r1", 2.0)
    held = committed(apply(base, Mutation("disable", "b")), "r2", 3.0)  # same version, after a failover
    assert lost.version == held.version
    assert held.newer_than(lost) and not lost.newer_than(lost)
