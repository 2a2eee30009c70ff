"""`serve --workers N`: several processes on one port, one admin API, one view."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import make_config, raw, request, start_router, start_sim, wait_until

GB = {"X-Forwarded-For": "81.2.69.142"}  # -> eu-west-1


@pytest.fixture(scope="module")
def sim():
    s = start_sim({"us-east-1": 0.0, "us-west-2": 0.0, "eu-west-1": 0.0, "ap-southeast-1": 0.0})
    yield s
    s.stop()


def requests_total(rp) -> float:
    text = request(rp.admin, "GET", "/metrics").body.decode()
    return sum(
        s.value for fam in text_string_to_metric_families(text) for s in fam.samples
        if s.name == "edge_router_requests_total"
    )


def test_two_workers_share_the_port_and_act_as_one(sim):
    rp = start_router(make_config(sim.ports), extra_args=["--workers", "2"])
    try:
        state = rp.state()
        assert len(state["workers"]) == 2 and len({w["pid"] for w in state["workers"]}) == 2
        # fresh connections: the kernel spreads them over both workers (SO_REUSEPORT)
        statuses = []

        def burst():
            for _ in range(50):
                r = request(rp.port, "GET", "/api/v1/echo", headers=GB)
                statuses.append((r.status, r.region))

        threads = [threading.Thread(target=burst) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert statuses == [(200, "eu-west-1")] * 200
        per_worker = [w["requests"] for w in rp.state()["workers"]]
        assert sum(per_worker) == 200 and min(per_worker) > 0, per_worker
        assert requests_total(rp) == 200  # /metrics adds the workers up

        # one mutation reaches every worker, and is audited once
        r = rp.admin_req("POST", "/admin/regions/eu-west-1/disable")
        assert r.status == 200
        for _ in range(40):
            assert request(rp.port, "GET", "/api/v1/echo", headers=GB).region == "us-east-1"
        assert rp.state()["regions"][2]["disabled"] is True
        r = rp.admin_req("PUT", "/admin/strategy", {"strategy": "round-robin"})
        assert r.status == 200 and rp.state()["strategy"] == "round-robin"  # not "mixed:..."
        audits = [json.loads(line) for line in rp.log().splitlines() if '"audit":true' in line]
        assert [a["action"] for a in audits] == ["disable", "set_strategy"]
        assert "test-admin-token" not in rp.log()

        # validation answers are those of one process; nothing is half-applied
        r = rp.admin_req("PUT", "/admin/strategy", {"strategy": "nope"})
        assert r.status == 400 and "round-robin" in r.json()["detail"]
        assert rp.admin_req("POST", "/admin/regions/mars-1/disable").status == 404
        assert rp.admin_req("POST", "/admin/regions/eu-west-1/enable", token="wrong").status == 401
        assert rp.state()["strategy"] == "round-robin"
        assert request(rp.admin, "GET", "/readyz").status == 200
    finally:
        assert rp.stop() == 0


def test_a_dead_worker_is_replaced_while_the_other_serves(sim):
    rp = start_router(make_config(sim.ports), extra_args=["--workers", "2"])
    try:
        assert rp.admin_req("POST", "/admin/regions/eu-west-1/disable").status == 200
        before = [w["pid"] for w in rp.state()["workers"]]
        victim = before[1]
        os.kill(victim, signal.SIGKILL)
        # the survivor keeps serving while the replacement starts
        statuses = [request(rp.port, "GET", "/api/v1/echo", headers=GB).status for _ in range(20)]
        assert statuses == [200] * 20

        def replaced():
            pids = [w["pid"] for w in rp.state()["workers"]]
            return len(pids) == 2 and victim not in pids and before[0] in pids and pids

        pids = wait_until(replaced, 30, what="a replacement worker")
        assert rp.proc.poll() is None
        log = rp.log()
        assert f"worker {victim} exited (killed by SIGKILL): replaced by worker" in log
        # the replacement got the operator's decisions: eu-west-1 stays disabled everywhere
        for _ in range(40):
            r = request(rp.port, "GET", "/api/v1/echo", headers=GB)
            assert (r.status, r.region) == (200, "us-east-1")
        assert all(w["requests"] >= 0 for w in rp.state()["workers"]) and len(set(pids)) == 2
    finally:
        code = rp.proc.poll()
        log = rp.log()
        assert rp.stop() == 0, (code, log[-3000:])


def _children(pid: int) -> list[int]:
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for task in tasks:  # threads come and go
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def test_a_crash_loop_stops_the_whole_process(sim):
    rp = start_router(make_config(sim.ports), extra_args=["--workers", "2"])
    try:
        killed: set[int] = set()
        deadline = time.monotonic() + 60
        while rp.proc.poll() is None and time.monotonic() < deadline:
            for child in _children(rp.proc.pid):
                if child not in killed:
                    killed.add(child)
                    try:
                        os.kill(child, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)
        assert rp.proc.wait(30) == 1
        log = rp.log()
        assert log.count("replaced by worker") == 5  # five deaths replaced ...
        assert log.count("a crash loop: stopping") == 1  # ... the sixth stops everything
        assert len(killed) == 7  # the two first workers and the five replacements
    finally:
        rp.stop()


def test_workers_do_not_outlive_a_killed_supervisor(sim):
    rp = start_router(make_config(sim.ports), extra_args=["--workers", "2"])
    pids = [w["pid"] for w in rp.state()["workers"]]
    rp.proc.kill()  # SIGKILL: no chance to stop its workers itself
    rp.proc.wait(10)

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for init counts as gone
            return f.read().split(")")[1].split()[0] == "Z"

    wait_until(lambda: all(gone(p) for p in pids), 30, what="workers to exit")
    rp.stop()


def test_supervisor_acts_on_exactly_the_region_it_audits(sim):
    """An encoded path that decodes to another region's path is 404, as in one
    process; a token that is not ASCII is a 401, not a 500."""
    rp = start_router(make_config(sim.ports), extra_args=["--workers", "2"])
    single = start_router(make_config(sim.ports))
    try:
        for target in (rp, single):
            for path in ("/admin/regions/x%2F..%2Fus-west-2/disable", "/admin/regions/x%2f..%2fus-west-2/disable"):
                r = target.admin_req("POST", path)
                assert r.status == 404, (target.port, path, r.status, r.body)
            assert all(not reg["disabled"] for reg in target.state()["regions"])
            for token in ("\u00e9t\u00e9-token", "caf\u00e9"):
                r = request(target.admin, "POST", "/admin/regions/us-west-2/disable",
                            headers={"Authorization": "Bearer " + token}, body=b"")
                assert r.status == 401, (r.status, r.body)
            out = raw(target.admin, b"POST /admin/regions/us-west-2/disable HTTP/1.1\r\nHost: a\r\n"
                      b"Authorization: Bearer \xff\xfe\x80\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 401"), out[:100]
            assert all(not reg["disabled"] for reg in target.state()["regions"])
        assert '"audit":true' not in rp.log()
    finally:
        single.stop()
        assert rp.stop() == 0
