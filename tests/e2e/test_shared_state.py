"""Operator decisions shared through a real Redis, kept in a file, guarded;
config reload on SIGHUP and POST /admin/reload. Real processes on loopback."""
from __future__ import annotations

import http.client
import json
import signal
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.redisproc import RedisServer
from harness import REGIONS, make_config, request, start_sim, wait_until

GB = {"X-Forwarded-For": "81.2.69.142"}  # -> eu-west-1 in the default map
API = "/api/v1/echo"


@pytest.fixture(scope="module")
def sim():
    s = start_sim({r: 0.0 for r in REGIONS})
    yield s
    s.stop()


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


def redis_config(sim, url: str, **kw) -> str:
    return make_config(sim.ports, **kw) + f'[state]\nbackend = "redis"\nurl = "{url}"\nkey_prefix = "t:"\n'


def gauge(rp, name: str, labels: dict | None = None) -> float:
    text = request(rp.admin, "GET", "/metrics").body.decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and (labels is None or s.labels == labels):
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


def region(state: dict, rid: str) -> dict:
    return next(r for r in state["regions"] if r["id"] == rid)


def test_replicas_share_decisions_through_redis(sim, redis_server, router_factory):
    a = router_factory(redis_config(sim, redis_server.url))
    b = router_factory(redis_config(sim, redis_server.url))
    # A strategy switch on one is in force on the other within a second.
    r = a.admin_req("PUT", "/admin/strategy", {"strategy": "round-robin"})
    assert r.status == 200, r.body
    wait_until(lambda: b.state()["strategy"] == "round-robin", 1.0, 0.01, "B to take A's strategy")
    seen = {b.get(API, headers=GB).region for _ in range(12)}
    assert len(seen) > 1, seen  # B routes round-robin now, not geographically
    # A drain started on B: the same effective weight on A (one start time, shipped).
    assert b.admin_req("POST", "/admin/regions/eu-west-1/drain", {"over": "60s"}).status == 200
    wait_until(lambda: region(a.state(), "eu-west-1")["draining"], 1.0, 0.01, "A to see B's drain")
    wa, wb = region(a.state(), "eu-west-1")["effective_weight"], region(b.state(), "eu-west-1")["effective_weight"]
    assert 0.9 < wa <= 1.0 and abs(wa - wb) < 0.02, (wa, wb)
    assert gauge(a, "edge_router_region_admin_state", {"region": "eu-west-1"}) == 1
    # A disable on A: B stops sending there; audited once, by A, naming A.
    assert a.admin_req("POST", "/admin/regions/us-east-1/disable").status == 200
    wait_until(lambda: region(b.state(), "us-east-1")["disabled"], 1.0, 0.01, "B to see A's disable")
    assert gauge(b, "edge_router_region_admin_state", {"region": "us-east-1"}) == 2
    assert gauge(b, "edge_router_region_effective_weight", {"region": "us-east-1"}) == 0
    audits = [json.loads(line) for line in a.log().splitlines() if '"audit":true' in line]
    assert [x["action"] for x in audits] == ["set_strategy", "disable"] and audits[0]["replica"]
    assert [json.loads(line)["action"] for line in b.log().splitlines() if '"audit":true' in line] == ["drain"]
    dec = b.state()["decisions"]
    assert dec["backend"] == "redis" and dec["store_up"] is True and dec["version"] == 3
    assert "strategy" in dec["shared_fields"] and "regions[].healthy" in dec["local_fields"]
    # A late replica reports the same state by the time it is ready.
    c = router_factory(redis_config(sim, redis_server.url), wait_healthy=False)
    wait_until(lambda: request(c.admin, "GET", "/readyz").status == 200, 15, what="C ready")
    sc = c.state()
    assert sc["strategy"] == "round-robin" and region(sc, "us-east-1")["disabled"]
    assert region(sc, "eu-west-1")["draining"] and sc["decisions"]["version"] == 3
    # The guard rail holds across replicas: the last enabled region cannot go.
    for rid in ("us-west-2", "eu-west-1"):
        assert c.admin_req("POST", f"/admin/regions/{rid}/disable").status == 200
    r = b.admin_req("POST", "/admin/regions/ap-southeast-1/drain", {"over": "10s"})
    assert r.status == 409 and "ap-southeast-1" in r.json()["regions"], r.body


def test_redis_down_fail_static_then_catch_up(sim, redis_server, router_factory):
    a = router_factory(redis_config(sim, redis_server.url))
    b = router_factory(redis_config(sim, redis_server.url))
    assert a.admin_req("POST", "/admin/regions/eu-west-1/disable").status == 200
    wait_until(lambda: region(b.state(), "eu-west-1")["disabled"], 1.0, 0.01, "B to see the disable")

    redis_server.stop()
    for rp in (a, b):
        wait_until(lambda: rp.state()["decisions"]["store_up"] is False, 10, what="store down noticed")
        r = request(rp.admin, "GET", "/readyz")
        assert r.status == 200 and r.json()["decisions"]["store_up"] is False and r.json()["decisions"]["cause"]
        assert gauge(rp, "edge_router_state_store_up") == 0
        # Routing goes on with the last known decisions: GB's home is disabled.
        assert {rp.get(API, headers=GB).region for _ in range(5)} == {"us-east-1"}
    # Mutations: 503 naming the cause; nothing changes.
    r = a.admin_req("PUT", "/admin/strategy", {"strategy": "round-robin"})
    assert r.status == 503 and r.json()["error"] == "state_store_unavailable" and "redis" in r.json()["detail"]
    r = a.admin_req("POST", "/admin/regions/us-east-1/disable")
    assert r.status == 503 and '"scope": "local"' in r.json()["detail"]
    # ... except an emergency disable of this replica alone.
    r = a.admin_req("POST", "/admin/regions/us-east-1/disable", {"scope": "local"})
    assert r.status == 200 and r.json()["scope"] == "local", r.body
    sa = a.state()
    assert region(sa, "us-east-1")["disabled"] and sa["decisions"]["local_overrides"] == {"disabled": ["us-east-1"]}
    assert {a.get(API, headers=GB).region for _ in range(5)} == {"us-west-2"}
    assert not region(b.state(), "us-east-1")["disabled"]  # B: not touched
    assert {b.get(API, headers=GB).region for _ in range(5)} == {"us-east-1"}

    redis_server.start()
    for rp in (a, b):
        wait_until(lambda: rp.state()["decisions"]["store_up"] is True, 10, what="store back noticed")
        assert gauge(rp, "edge_router_state_store_up") == 1
    # Redis lost its data (no persistence): the replicas put back what they knew.
    assert region(a.state(), "eu-west-1")["disabled"] and region(b.state(), "eu-west-1")["disabled"]
    # A mutation works everywhere again.
    assert b.admin_req("POST", "/admin/regions/eu-west-1/enable").status == 200
    for rp in (a, b):
        wait_until(lambda: not region(rp.state(), "eu-west-1")["disabled"], 1.0, 0.01, "enable everywhere")
    # The local override lasts until an explicit enable on that replica.
    assert region(a.state(), "us-east-1")["disabled"]
    assert a.admin_req("POST", "/admin/regions/us-east-1/enable").status == 200
    assert not region(a.state(), "us-east-1")["disabled"]
    assert a.state()["decisions"]["local_overrides"] == {"disabled": []}
    assert {a.get(API, headers=GB).region for _ in range(5)} == {"eu-west-1"}


def test_file_backend_keeps_a_disable_across_restart(sim, tmp_path, router_factory):
    path = tmp_path / "decisions.json"
    cfg = make_config(sim.ports) + f'[state]\nbackend = "file"\npath = "{path}"\n'
    a = router_factory(cfg)
    assert a.admin_req("POST", "/admin/regions/eu-west-1/disable").status == 200
    assert a.admin_req("PUT", "/admin/strategy", {"strategy": "health-based"}).status == 200
    assert json.loads(path.read_text())["disabled"] == ["eu-west-1"]
    assert a.stop() == 0
    b = router_factory(cfg)
    st = b.state()
    assert region(st, "eu-west-1")["disabled"] and st["strategy"] == "health-based"
    assert st["decisions"]["backend"] == "file" and st["decisions"]["version"] == 2
    assert b.get(API, headers=GB).region != "eu-west-1"


def _config_path(rp) -> Path:
    return Path(rp.tmp.name) / "config.toml"


def test_sighup_reload_bad_file_keeps_serving_good_file_swaps_map_mid_download(sim, router_factory):
    cfg = make_config(sim.ports)
    rp = router_factory(cfg)
    assert rp.get(API, headers=GB).region == "eu-west-1"
    # A broken file: every problem logged with its key path, the old config runs on.
    _config_path(rp).write_text(cfg.replace('interval = "1s"', 'interval = "soon"').replace(
        'default_region = "us-east-1"', 'default_region = "mars-1"'))
    rp.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "probe.interval" in rp.log() and "default_region" in rp.log(), 10, what="problems logged")
    assert gauge(rp, "edge_router_config_reload_success") == 0
    assert rp.proc.poll() is None and rp.get(API, headers=GB).region == "eu-west-1"
    r = rp.admin_req("POST", "/admin/reload")
    assert r.status == 400 and any(p.startswith("probe.interval") for p in r.json()["problems"]), r.body
    assert rp.admin_req("POST", "/admin/reload", token="wrong").status == 401

    # A long download in flight while a good file moves GB to ap-southeast-1.
    size = 32 * 1024 * 1024
    conn = http.client.HTTPConnection("127.0.0.1", rp.port, timeout=30)
    conn.request("GET", f"/api/v1/large?bytes={size}", headers=GB)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("X-Edge-Region") == "eu-west-1"
    got = resp.read(65536)
    _config_path(rp).write_text(
        cfg.replace('["GB", ', "[").replace('"ap-southeast-1" = ["AU"', '"ap-southeast-1" = ["GB", "AU"'))
    rp.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: rp.get(API, headers=GB).region == "ap-southeast-1", 10, what="new country map")
    assert gauge(rp, "edge_router_config_reload_success") == 1
    rest = resp.read()
    conn.close()
    body = got + rest
    assert len(body) == size and body[:256] == bytes(range(256)) and body[-1] == (size - 1) % 256
    # POST /admin/reload: the same, answered with a summary.
    r = rp.admin_req("POST", "/admin/reload")
    assert r.status == 200 and r.json()["ok"] is True and r.json()["changed"] == [], r.body

    # A region's address changes under a download: new requests use a new pool
    # (here: the us-west-2 simulator), the old pool drains, the download completes.
    conn = http.client.HTTPConnection("127.0.0.1", rp.port, timeout=30)
    conn.request("GET", f"/api/v1/large?bytes={size}", headers=GB)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("X-Edge-Region") == "ap-southeast-1"
    got = resp.read(65536)
    moved = _config_path(rp).read_text().replace(
        f"http://127.0.0.1:{sim.ports['ap-southeast-1']}", f"http://127.0.0.1:{sim.ports['us-west-2']}")
    _config_path(rp).write_text(moved)
    r = rp.admin_req("POST", "/admin/reload")
    assert r.status == 200 and r.json()["regions"]["restarted"] == ["ap-southeast-1"], r.body
    answer = rp.get(API, headers=GB)
    assert answer.region == "ap-southeast-1" and answer.json()["region"] == "us-west-2"
    body = got + resp.read()
    conn.close()
    assert len(body) == size and body[-1] == (size - 1) % 256


def test_workers_follow_the_store_and_probe_once_per_process_tree(sim, redis_server, router_factory):
    w = router_factory(redis_config(sim, redis_server.url), extra_args=["--workers", "3"])
    other = router_factory(redis_config(sim, redis_server.url))
    # One decision, sent to the supervisor: in force in every worker and on the other replica.
    assert w.admin_req("POST", "/admin/regions/eu-west-1/disable").status == 200
    st = w.state()
    assert region(st, "eu-west-1")["disabled"] and st["decisions"]["version"] == 1
    assert len(st["workers"]) == 3
    for _ in range(30):  # fresh connections: spread over the three workers
        assert w.get(API, headers=GB).region == "us-east-1"
    wait_until(lambda: region(other.state(), "eu-west-1")["disabled"], 1.0, 0.01, "the other replica")
    assert other.admin_req("PUT", "/admin/strategy", {"strategy": "round-robin"}).status == 200
    wait_until(lambda: w.state()["strategy"] == "round-robin", 1.0, 0.01, "all workers")  # not "mixed:"
    audits = [json.loads(line) for line in w.log().splitlines() if '"audit":true' in line]
    assert [a["action"] for a in audits] == ["disable"]  # once, by the supervisor
    # Probing: one prober for the tree (3 workers would otherwise triple it).
    # Health and latency probes every 1s: about 2 per second per region.
    other.stop()
    sim.reset_stats("us-west-2")
    time.sleep(4.0)
    probes = sim.stats("us-west-2")["by_path"].get("/api/v1/health", 0)
    assert 3 <= probes <= 14, probes
    assert all(region(w.state(), rid)["healthy"] for rid in REGIONS)  # verdicts reach every worker
    # Reload through the supervisor: every worker swaps the map.
    cfg_path = _config_path(w)
    cfg_path.write_text(cfg_path.read_text().replace('["GB", ', "[").replace(
        '"ap-southeast-1" = ["AU"', '"ap-southeast-1" = ["GB", "AU"'))
    assert w.admin_req("POST", "/admin/regions/eu-west-1/enable").status == 200
    assert w.admin_req("PUT", "/admin/strategy", {"strategy": "geographic"}).status == 200
    r = w.admin_req("POST", "/admin/reload")
    assert r.status == 200 and r.json()["workers"] == 3 and "geo.countries" in r.json()["changed"], r.body
    for _ in range(30):
        assert w.get(API, headers=GB).region == "ap-southeast-1"


def test_workers_local_disable_while_redis_is_down_is_cleared_in_every_worker(sim, redis_server, router_factory):
    w = router_factory(redis_config(sim, redis_server.url), extra_args=["--workers", "3"])
    redis_server.stop()
    wait_until(lambda: w.state()["decisions"]["store_up"] is False, 10, what="the store seen down")
    r = w.admin_req("POST", "/admin/regions/eu-west-1/disable", {"scope": "local"})
    assert r.status == 200, r.body
    for _ in range(30):  # fresh connections: spread over the three workers
        assert w.get(API, headers=GB).region == "us-east-1"
    redis_server.start()
    wait_until(lambda: w.state()["decisions"]["store_up"], 15, what="the store seen back")
    # The explicit enable, sent to the supervisor, ends the override in every worker,
    # not only in the one that commits it to Redis.
    assert w.admin_req("POST", "/admin/regions/eu-west-1/enable").status == 200
    assert not region(w.state(), "eu-west-1")["disabled"]
    for _ in range(30):
        assert w.get(API, headers=GB).region == "eu-west-1"
