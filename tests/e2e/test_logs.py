"""Issue 15, logs: `[log] format = "json"` makes every process line an object, the access
log and every line carry ISO-8601 UTC times, DEBUG shows routing decisions, probe errors
read as words, and under --workers each line names its process."""
from __future__ import annotations

import json
import re

import pytest

from harness import make_config, start_router, start_sim, stop_process, wait_until

GB = {"X-Forwarded-For": "81.2.69.142"}  # -> eu-west-1
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def sim():
    s = start_sim({"us-east-1": 0.0, "us-west-2": 0.0, "eu-west-1": 0.0})
    yield s
    s.stop()


def stopped(rp) -> tuple[str, str]:
    """Stop the router; its stderr and stdout, read before its temp dir goes."""
    stop_process(rp.proc, timeout=30)
    try:
        return rp.log(), rp.stdout_path.read_text()
    finally:
        rp.tmp.cleanup()


def test_json_logs_access_log_debug_routes_and_probe_errors(sim):
    rp = start_router(make_config(sim.ports, log={"format": "json", "level": "debug", "access_log": True}))
    try:
        resp = rp.get("/api/v1/echo", headers=GB)
        assert resp.region == "eu-west-1"
        assert "x-edge-country" not in resp.headers  # [geo] country_header is off by default
        sim.fault("us-west-2", down=True)
        port = sim.ports["us-west-2"]
        wait_until(lambda: "us-west-2 is now UNHEALTHY" in rp.log(), 20, what="region lost")
        wait_until(lambda: rp.stdout_path.read_text().strip(), 10, what="access log line")
    finally:
        sim.reset("us-west-2")
        log, out = stopped(rp)
    lines = [json.loads(line) for line in log.splitlines()]  # every line is an object
    assert all(ISO.match(x["time"]) and x["level"] in ("debug", "info", "warning", "error") for x in lines)
    routes = [x["message"] for x in lines if x["logger"] == "edge_router.routing"]
    assert any(m.startswith("route GET /api/v1/echo") and "country=GB" in m and "-> eu-west-1" in m
               for m in routes), routes
    probe = [x for x in lines if f"connect refused to 127.0.0.1:{port}" in x["message"]]
    assert probe and all("SSLContext" not in x["message"] for x in probe)
    lost = [x for x in lines if "us-west-2 is now UNHEALTHY" in x["message"]]
    assert lost and lost[0]["level"] == "warning"
    found = [x for x in lines if "us-east-1 is now healthy" in x["message"]]
    assert found and found[0]["level"] == "info"
    access = [json.loads(line) for line in out.splitlines()]
    assert access and all(ISO.match(a["time"]) for a in access)
    assert access[0]["region"] == "eu-west-1" and access[0]["country"] == "GB"


def test_every_line_names_its_worker(sim):
    rp = start_router(make_config(sim.ports), extra_args=["--workers", "2"])
    try:
        assert rp.get("/api/v1/echo", headers=GB).status == 200
        assert rp.admin_req("POST", "/admin/regions/us-west-2/disable").status == 200
        wait_until(lambda: '"audit":true' in rp.log(), 10, what="audit line")
    finally:
        rp.admin_req("POST", "/admin/regions/us-west-2/enable")
        log, _ = stopped(rp)
    text_lines = [ln for ln in log.splitlines() if not ln.startswith("{")]
    audit = [json.loads(ln) for ln in log.splitlines() if ln.startswith("{")]
    assert text_lines and audit
    named = re.compile(r"^\S+Z [A-Z]+ \S+ \[(worker [01]|supervisor)\]: ")
    assert all(named.match(ln) for ln in text_lines), [ln for ln in text_lines if not named.match(ln)]
    assert {m.group(1) for ln in text_lines if (m := named.match(ln))} == {"worker 0", "worker 1", "supervisor"}
    assert all(a["process"] == "supervisor" for a in audit)
