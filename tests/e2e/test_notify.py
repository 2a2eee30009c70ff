"""Issue 14: [[notify]] webhooks, with a real HTTP receiver on loopback."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import TOKEN, make_config, request, start_sim, toml_str, wait_until

pytestmark = pytest.mark.timeout(120)

HOOK_TOKEN = "hook-secret-42"
US = {"X-Forwarded-For": "216.160.83.56"}


class Receiver:
    """A webhook endpoint that records every message (body and Authorization)."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.auth: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.messages.append(json.loads(body))
                outer.auth.append(self.headers.get("Authorization"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, kind: str, region: str | None = None) -> list[dict]:
        return [m for m in list(self.messages) if m["event"] == kind and (region is None or m["region"] == region)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notify_toml(url: str, **extra) -> str:
    lines = ["[[notify]]", f"url = {toml_str(url)}"]
    lines += [f"{k} = {toml_str(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def sim():
    s = start_sim({"us-east-1": 0.002, "us-west-2": 0.002, "eu-west-1": 0.002, "ap-southeast-1": 0.002})
    yield s
    s.stop()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def notifications_total(rp) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = request(rp.admin, "GET", "/metrics").body.decode()
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "edge_router_notifications_total"}


def test_kill_and_revive_give_one_unhealthy_and_one_healthy_message(clean_sim, receiver, router_factory):
    sim = clean_sim
    rp = router_factory(make_config(sim.ports) + notify_toml(receiver.url, token_env="HOOK_TOKEN"),
                        env={"HOOK_TOKEN": HOOK_TOKEN})
    time.sleep(1.0)
    assert receiver.messages == []  # startup (first "healthy" verdicts) is not news

    t0 = time.monotonic()
    sim.fault("ap-southeast-1", down=True)
    wait_until(lambda: receiver.events("region_unhealthy", "ap-southeast-1"), 15, what="the unhealthy message")
    print(f"\nregion killed -> unhealthy message received in {time.monotonic() - t0:.2f}s")
    time.sleep(1.5)  # more failed probes: still one message
    sim.reset("ap-southeast-1")
    wait_until(lambda: receiver.events("region_healthy", "ap-southeast-1"), 15, what="the healthy message")
    time.sleep(2.5)
    health = [m for m in receiver.messages if m["group"] == "health"]
    assert [(m["event"], m["region"]) for m in health] == [
        ("region_unhealthy", "ap-southeast-1"), ("region_healthy", "ap-southeast-1")]
    down = health[0]
    assert down["text"] == "edge-router: region ap-southeast-1 is UNHEALTHY: the prober's checks fail"
    assert down["time"].endswith("Z") and down["host"]
    assert set(receiver.auth) == {f"Bearer {HOOK_TOKEN}"}

    # Operator mutations are told too, with who did it (the token's fingerprint, never the token).
    assert rp.admin_req("POST", "/admin/regions/eu-west-1/drain", {"over": "30s"}).status == 200
    assert rp.admin_req("POST", "/admin/regions/eu-west-1/enable").status == 200
    wait_until(lambda: receiver.events("region_enabled", "eu-west-1"), 10, what="operator messages")
    drained = receiver.events("region_drained", "eu-west-1")[0]
    assert drained["over"] == "30s" and drained["who"].startswith("sha256:") and TOKEN not in json.dumps(drained)
    assert "is draining eu-west-1 over 30s" in drained["text"]
    assert notifications_total(rp)["sent"] == len(receiver.messages)


def test_failover_episode_and_breaker_messages(clean_sim, receiver, router_factory):
    sim = clean_sim
    rp = router_factory(make_config(sim.ports, probe={"interval": "30s", "fast_interval": "30s",
                                                      "down_interval": "30s"})
                        + notify_toml(receiver.url, events=["failover", "breaker"]))
    sim.fault("us-east-1", down=True)  # the prober is slow here: requests find out first
    for _ in range(20):
        assert request(rp.port, "GET", "/api/v1/echo", headers=US).status == 200
    wait_until(lambda: receiver.events("failover_started", "us-east-1"), 10, what="failover started")
    started = receiver.events("failover_started", "us-east-1")
    assert len(started) == 1 and started[0]["to_region"] == "us-west-2"
    assert started[0]["from_region"] == "us-east-1" and started[0]["reason"]
    wait_until(lambda: receiver.events("breaker_open", "us-east-1"), 10, what="breaker open")
    # No failover for 10 s: the episode ends, with its counts.
    wait_until(lambda: receiver.events("failover_ended", "us-east-1"), 20, 0.2, what="failover ended")
    ended = receiver.events("failover_ended", "us-east-1")[0]
    assert ended["total"] >= 5 and ended["counts"] and "requests moved" in ended["text"]
    assert not [m for m in receiver.messages if m["group"] not in ("failover", "breaker")]


def test_a_receiver_that_is_down_does_not_slow_requests(clean_sim, router_factory):
    sim = clean_sim
    # One webhook refuses connections; the other accepts them and never answers.
    with socket.socket() as hang:
        hang.bind(("127.0.0.1", 0))
        hang.listen(100)
        refused = socket.socket()
        refused.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{refused.getsockname()[1]}/"
        refused.close()
        rp = router_factory(make_config(sim.ports) + notify_toml(closed_url, min_interval="0s")
                            + notify_toml(f"http://127.0.0.1:{hang.getsockname()[1]}/", min_interval="0s"))
        slowest = 0.0
        for i in range(6):  # regions going down and up: messages the receivers will not take
            rid = ("us-west-2", "eu-west-1")[i % 2]
            assert rp.admin_req("POST", f"/admin/regions/{rid}/disable").status == 200
            assert rp.admin_req("POST", f"/admin/regions/{rid}/enable").status == 200
            for _ in range(20):
                t0 = time.monotonic()
                r = request(rp.port, "GET", "/api/v1/echo", headers=US)
                slowest = max(slowest, time.monotonic() - t0)
                assert r.status == 200
        # Delivery tries (5 s timeouts, backoff) run beside the traffic, never in front of it.
        assert slowest < 1.0, slowest
        wait_until(lambda: notifications_total(rp)["retried"] >= 2, 15, what="retries")
        assert notifications_total(rp)["sent"] == 0
        wait_until(lambda: notifications_total(rp)["failed"] >= 1, 30, 0.2, what="a message given up on")
        assert "notify http://127.0.0.1" in rp.log() and "gave up" in rp.log()


def test_under_workers_one_message_per_event_naming_the_operator(clean_sim, receiver, router_factory):
    from router.admin import token_fingerprint

    sim = clean_sim
    rp = router_factory(make_config(sim.ports) + notify_toml(receiver.url), extra_args=["--workers", "2"])
    assert rp.admin_req("POST", "/admin/regions/eu-west-1/disable").status == 200
    sim.fault("ap-southeast-1", down=True)
    wait_until(lambda: receiver.events("region_unhealthy", "ap-southeast-1"), 15, what="the unhealthy message")
    time.sleep(2.0)  # the other worker's prober saw it too: still one message
    assert len(receiver.events("region_unhealthy", "ap-southeast-1")) == 1
    [disabled] = receiver.events("region_disabled", "eu-west-1")
    assert disabled["who"] == token_fingerprint(TOKEN)


def test_a_degraded_region_is_told_and_so_is_its_recovery(clean_sim, receiver, router_factory):
    from harness import Traffic

    sim = clean_sim
    rp = router_factory(make_config(sim.ports, degrade={"window": "3s", "min_requests": 10})
                        + notify_toml(receiver.url, events=["degraded"]))
    sim.fault("eu-west-1", error_rate=0.2)
    with Traffic(rp.port, ("81.2.69.142",) * 4, pause=0.02):
        wait_until(lambda: receiver.events("region_degraded", "eu-west-1"), 20, what="the degraded message")
        sim.reset("eu-west-1")
        wait_until(lambda: receiver.events("region_recovered", "eu-west-1"), 20, what="the recovered message")
    [degraded] = receiver.events("region_degraded", "eu-west-1")
    assert degraded["text"].startswith("edge-router: region eu-west-1 is DEGRADED (degraded: error rate")
    assert [m["event"] for m in receiver.messages] == ["region_degraded", "region_recovered"]
