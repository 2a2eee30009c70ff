"""Notifications, the pure parts: coalescing, failover episodes, the message, the
queue bound, and [[notify]] in the config. Delivery is in tests/e2e/test_notify.py."""
from __future__ import annotations

import tomllib

import pytest

from router.config import NOTIFY_EVENTS, ConfigError, NotifyConfig, parse_config
from router.defaults import SEED_TOML
from router.ops.notify import EVENT_KINDS, Coalescer, Event, FailoverEpisodes, Notifier, message


def ev(kind: str, region: str | None = "eu-west-1", at: float = 0.0, **fields) -> Event:
    return Event(kind, region, fields, at, 1_700_000_000.0 + at)


def test_coalescer_one_message_per_region_and_kind_per_interval():
    c = Coalescer(30.0)
    assert c.offer(ev("region_unhealthy", at=0), 0) is not None
    assert c.offer(ev("region_healthy", at=1), 1) is not None  # another kind: not held
    assert c.offer(ev("region_unhealthy", "us-east-1", at=2), 2) is not None  # another region
    assert c.offer(ev("region_unhealthy", at=5), 5) is None  # the same again: held
    assert c.offer(ev("region_unhealthy", at=9, detail="third"), 9) is None
    assert c.due(29.9) == []
    out = c.due(30.0)
    assert len(out) == 1 and out[0].coalesced == 2 and out[0].fields == {"detail": "third"}
    assert c.due(100) == []
    # The held event went out at 30: the next one within 30 s of that is held again.
    assert c.offer(ev("region_unhealthy", at=40), 40) is None
    assert c.offer(ev("region_unhealthy", at=45), 45) is None
    assert [e.coalesced for e in c.due(60)] == [2]
    # One more held, and no tick before the next event: that event goes, counting it.
    assert c.offer(ev("region_unhealthy", at=70), 70) is None
    late = c.offer(ev("region_unhealthy", at=95), 95)
    assert late is not None and late.at == 95 and late.coalesced == 1
    assert c.due(200) == []


def test_coalescer_lets_held_events_out_in_their_order():
    c = Coalescer(10.0)
    c.offer(ev("region_unhealthy", at=0), 0)
    c.offer(ev("region_healthy", at=1), 1)
    c.offer(ev("region_unhealthy", at=3), 3)  # held
    c.offer(ev("region_healthy", at=4), 4)  # held: the region's last state
    assert [e.kind for e in c.due(11)] == ["region_unhealthy", "region_healthy"]


def test_zero_interval_sends_everything():
    c = Coalescer(0.0)
    assert all(c.offer(ev("breaker_open", at=t), t) is not None for t in (0, 0, 0.1))


def test_failover_episodes_start_once_and_end_after_quiet():
    f = FailoverEpisodes(quiet=10.0)
    assert f.record("us-east-1", "us-west-2", "breaker_open", 0.0) == {
        "from_region": "us-east-1", "to_region": "us-west-2", "reason": "breaker_open"}
    assert f.record("us-east-1", "us-west-2", "breaker_open", 1.0) is None
    assert f.record("us-east-1", "eu-west-1", "unhealthy", 5.0) is None
    assert f.record("us-east-1", "us-west-2", "unhealthy", 6.0) is None
    assert f.due(15.9) == []
    [(src, fields)] = f.due(16.0)
    assert src == "us-east-1" and fields["total"] == 4 and fields["duration_s"] == 6.0
    assert (fields["to_region"], fields["reason"]) == ("us-west-2", "breaker_open")
    assert fields["counts"][0] == {"to_region": "us-west-2", "reason": "breaker_open", "requests": 2}
    assert f.record("us-east-1", "us-west-2", "unhealthy", 20.0) is not None  # a new episode


def test_message_is_slack_compatible_text_plus_fields():
    body = message(ev("failover_ended", "us-east-1", from_region="us-east-1", to_region="us-west-2",
                      reason="unhealthy", total=12, duration_s=3.5), host="edge-1")
    assert body["text"] == "edge-router: failover from us-east-1 ended after 3.5s: 12 requests moved"
    assert body["event"] == "failover_ended" and body["group"] == "failover" and body["region"] == "us-east-1"
    assert body["total"] == 12 and body["to_region"] == "us-west-2" and body["host"] == "edge-1"
    assert body["time"] == "2023-11-14T22:13:20Z"
    held = Event("region_unhealthy", "eu-west-1", {}, 0, 0, coalesced=3)
    b = message(held)
    assert b["coalesced"] == 3 and "3 more like it" in b["text"] and "UNHEALTHY" in b["text"]
    # A missing field never breaks the text.
    assert "?" in message(ev("strategy_changed", None))["text"]


def test_every_kind_has_a_known_group_and_a_text():
    assert {g for g, _ in EVENT_KINDS.values()} == set(NOTIFY_EVENTS)
    for kind in EVENT_KINDS:
        assert message(ev(kind))["text"].startswith("edge-router: ")


def test_every_admin_mutation_is_an_operator_event():
    """Stakeholders hear of every operator mutation the admin API takes."""
    from router.admin import MUTATIONS, OPERATOR_EVENTS

    assert set(OPERATOR_EVENTS) == set(MUTATIONS)
    for kind in OPERATOR_EVENTS.values():
        assert EVENT_KINDS[kind][0] == "operator"
    lift = message(ev("rate_limit_lifted", None, who="sha256:abc", rule="per-ip", key="203.0.113.7",
                      lifted_for_seconds=600.0))
    assert lift["text"] == "edge-router: operator sha256:abc lifted rate limit per-ip for 203.0.113.7 for 600.0 s"


def test_emit_filters_by_group_coalesces_and_bounds_the_queue(caplog):
    counted: list[str] = []
    t = [0.0]
    n = Notifier(
        (NotifyConfig("http://127.0.0.1:9/a", events=("health",)), NotifyConfig("http://127.0.0.1:9/b")),
        count=counted.append, now=lambda: t[0], wall=lambda: 0.0, env={}, queue_size=2,
    )
    a, b = n.targets
    with pytest.raises(KeyError):
        n.emit("no_such_event", "eu-west-1")
    n.emit("breaker_open", "eu-west-1")
    assert a.queue.qsize() == 0 and b.queue.qsize() == 1  # a wants health only
    n.emit("region_unhealthy", "eu-west-1")
    n.emit("region_unhealthy", "eu-west-1")  # held by both coalescers
    assert counted == ["coalesced", "coalesced"]
    n.emit("region_unhealthy", "us-east-1")  # b's queue is full now: dropped, counted
    assert a.queue.qsize() == 2 and b.queue.qsize() == 2 and counted[-1] == "dropped"
    t[0] = 31.0
    n.tick()  # the held events are due: queues are full, so they are dropped and counted too
    assert counted.count("dropped") == 3
    t[0] = 32.0
    n.emit("region_unhealthy", "ap-southeast-1")  # dropped by both, within 10 s of their last log line
    assert counted.count("dropped") == 5
    # Logged, once per 10 s per webhook, not once per message.
    overflow = [r.getMessage().split(": ", 1)[1] for r in caplog.records if "queue full" in r.getMessage()]
    assert overflow == ["queue full (2 messages): dropped 1, the last region_unhealthy us-east-1",  # b at 0
                        "queue full (2 messages): dropped 1, the last region_unhealthy eu-west-1",  # a at 31
                        "queue full (2 messages): dropped 1, the last region_unhealthy eu-west-1"]  # b at 31


def test_failover_feeds_episodes_into_events():
    t = [0.0]
    n = Notifier((NotifyConfig("http://127.0.0.1:9/", events=("failover",)),), now=lambda: t[0], env={})
    for _ in range(5):
        n.failover("us-east-1", "us-west-2", "connect_failed")
    q = n.targets[0].queue
    assert q.qsize() == 1 and q.get_nowait().kind == "failover_started"
    t[0] = 11.0
    n.tick()
    ended = q.get_nowait()
    assert ended.kind == "failover_ended" and ended.fields["total"] == 5


def test_no_targets_costs_nothing():
    n = Notifier(())
    n.emit("region_unhealthy", "eu-west-1")
    n.failover("a", "b", "c")
    assert n.episodes.open == {}


def _config(notify: list[dict]) -> dict:
    data = tomllib.loads(SEED_TOML)
    data["notify"] = notify
    return data


def test_notify_config():
    cfg = parse_config(_config([{"url": "https://hooks.example.com/x", "token_env": "HOOK_TOKEN",
                                 "events": ["health", "failover"], "min_interval": "10s"},
                                {"url": "http://127.0.0.1:8000/"}]))
    assert cfg.notify[0] == NotifyConfig("https://hooks.example.com/x", "HOOK_TOKEN", ("health", "failover"), 10.0)
    assert cfg.notify[1].events == NOTIFY_EVENTS and cfg.notify[1].min_interval == 30.0
    with pytest.raises(ConfigError) as e:
        parse_config(_config([{"url": "ftp://x", "events": ["health", "weather"], "min_interval": "5"},
                              {"events": []}, {"url": "http://h/", "secret": "x"}]))
    problems = "\n".join(e.value.problems)
    assert "notify[0].url: bad URL 'ftp://x'" in problems
    assert "notify[0].events[1]: unknown event 'weather'" in problems
    assert "notify[0].min_interval: bad duration" in problems
    assert "notify[1].url: required key missing" in problems
    assert "notify[1].events: must not be empty" in problems
    assert "notify[2].secret: unknown key" in problems
