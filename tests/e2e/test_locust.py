"""Issue 5: bench/locustfile.py in round-robin mode, run as the README says.

Locust monkey-patches the standard library with gevent when it is imported, so
it only ever runs here as its own process (`locust -f bench/locustfile.py ...`);
this module never imports locust or the locustfile.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REGIONS, REPO, TOKEN, make_config, start_router, start_sim  # noqa: E402

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                       reason="locust is not installed (pip install 'edge-router[load]')"),
]

LOCUSTFILE = REPO / "bench" / "locustfile.py"
API = "/api/v1/echo"


def locust_command() -> list[str]:
    script = Path(sys.executable).parent / "locust"
    if script.exists():
        return [str(script)]
    found = shutil.which("locust")
    return [found] if found else [sys.executable, "-m", "locust"]


def run_locust(router, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env["EDGE_ROUTER_ADMIN_TOKEN"] = TOKEN
    args = [
        *locust_command(), "-f", str(LOCUSTFILE), "--headless", "-u", "8", "-r", "8",
        "--run-time", "4s", "--stop-timeout", "2",
        "--host", f"http://127.0.0.1:{router.port}",
        "--mode", "round-robin", "--admin-url", f"http://127.0.0.1:{router.admin}",
        "--only-summary", *extra,
    ]
    # cwd: a scratch directory, so no locust.conf or pyproject [tool.locust] is picked up
    return subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=40)


def shares(output: str) -> dict[str, float]:
    """region -> share % from the locustfile's per-region table."""
    found = {}
    for rid in REGIONS:
        m = re.search(rf"^{re.escape(rid)}\s+(\d+)\s+([\d.]+)%", output, re.M)
        if m:
            found[rid] = float(m.group(2))
    return found


@pytest.fixture(scope="module")
def stack():
    sim = start_sim()  # four regions, no added latency
    router = start_router(make_config(sim.ports, strategy="geographic"))
    try:
        yield sim, router
    finally:
        router.stop()
        sim.stop()


def test_round_robin_even_split_then_disabled_region_fails(stack, tmp_path):
    sim, router = stack
    assert router.state()["strategy"] == "geographic"
    sim.reset_stats()

    done = run_locust(router, tmp_path)
    out = done.stdout
    assert done.returncode == 0, out[-4000:]
    assert "PASS" in out, out[-4000:]
    # the router was switched, and left, on round-robin
    assert router.state()["strategy"] == "round-robin"
    # the report names every region with its share, each about 25 %
    got = shares(out)
    assert set(got) == set(REGIONS), out[-4000:]
    for rid, share in got.items():
        assert abs(share - 25.0) <= 5.0, (rid, share, out[-4000:])
    # the regions' own counters agree: an even split of the API requests
    served = {rid: sim.stats(rid)["by_path"].get(API, 0) for rid in REGIONS}
    total = sum(served.values())
    assert total > 100, served
    for rid, n in served.items():
        assert abs(100.0 * n / total - 25.0) <= 5.0, served

    # one region disabled: the same run must fail, naming the region at 0 %
    r = router.admin_req("POST", "/admin/regions/us-west-2/disable")
    assert r.status == 200, r.body
    try:
        sim.reset_stats()
        done = run_locust(router, tmp_path)
        out = done.stdout
        assert done.returncode != 0, out[-4000:]
        assert "FAIL" in out, out[-4000:]
        got = shares(out)
        assert got.get("us-west-2") == 0.0, out[-4000:]
        assert sim.stats("us-west-2")["by_path"].get(API, 0) == 0
        assert router.state()["strategy"] == "round-robin"
    finally:
        router.admin_req("POST", "/admin/regions/us-west-2/enable")


def test_admin_failure_stops_the_run(stack, tmp_path):
    """A round-robin run that cannot switch the strategy fails loudly, sending nothing."""
    sim, router = stack
    sim.reset_stats()
    env_token = {"EDGE_ROUTER_ADMIN_TOKEN": "not-the-token"}
    args = [
        *locust_command(), "-f", str(LOCUSTFILE), "--headless", "-u", "2", "-r", "2",
        "--run-time", "4s", "--host", f"http://127.0.0.1:{router.port}",
        "--mode", "round-robin", "--admin-url", f"http://127.0.0.1:{router.admin}", "--only-summary",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")} | env_token
    done = subprocess.run(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=40)
    assert done.returncode == 1, done.stdout[-4000:]
    assert "401" in done.stdout and "setup failed" in done.stdout, done.stdout[-4000:]
    assert sum(sim.stats(rid)["by_path"].get(API, 0) for rid in REGIONS) == 0


def test_paths_for_a_real_api_named_per_region(stack, tmp_path):
    """--paths with weights and a JSON body; the stats rows are per answering region."""
    sim, router = stack
    sim.reset_stats()
    body = tmp_path / "payment.json"
    body.write_text('{"amount": "12.50", "currency": "EUR"}')
    r = run_locust(router, tmp_path, "--paths", "GET /api/v1/health:3,POST /api/v1/payments:1",
                   "--body", str(body), "--csv", str(tmp_path / "run"))
    assert r.returncode == 0, r.stdout[-3000:]
    import csv

    with open(tmp_path / "run_stats.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["Name"] != "Aggregated"]
    count = {row["Name"]: int(row["Request Count"]) for row in rows}
    for rid in REGIONS:  # round-robin: every region answered both paths
        assert f"GET /api/v1/health [{rid}]" in count, count
        assert f"POST /api/v1/payments [{rid}]" in count, count
    served = {rid: sim.stats(rid) for rid in REGIONS}
    assert sum(s["payments"] for s in served.values()) > 0  # the JSON body was accepted (201)
    assert sum(s["by_path"].get(API, 0) for s in served.values()) == 0  # only the given paths
    gets = sum(n for name, n in count.items() if name.startswith("GET /api/v1/health"))
    posts = sum(n for name, n in count.items() if name.startswith("POST /api/v1/payments"))
    assert 1.5 < gets / posts < 6, (gets, posts)  # weights 3:1


def test_mixed_mode_with_websocket_sessions(stack, tmp_path):
    """--mode mixed --websocket: WebSocket sessions through the router, named per region."""
    import csv

    sim, router = stack
    sim.reset_stats()
    r = run_locust(router, tmp_path, "--mode", "mixed", "--websocket", "--think-time", "0.05",
                   "--csv", str(tmp_path / "run"))
    assert r.returncode == 0, r.stdout[-3000:]
    with open(tmp_path / "run_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f) if row["Type"] == "WS"}
    connects = [n for n in rows if n.startswith("WS connect [") and n[12:-1] in REGIONS]
    echoes = [n for n in rows if n.startswith("WS echo [") and n[9:-1] in REGIONS]
    assert connects and echoes, sorted(rows)
    assert all(int(row["Failure Count"]) == 0 for row in rows.values()), rows
    sessions = sum(int(rows[n]["Request Count"]) for n in connects)
    assert 0 < sum(int(rows[n]["Request Count"]) for n in echoes) <= 5 * sessions  # 5 a session, or fewer if cut at the end
    assert sum(sim.stats(rid)["by_path"].get("/api/v1/ws", 0) for rid in REGIONS) >= len(connects)


def test_bad_paths_stop_the_run(stack, tmp_path):
    sim, router = stack
    r = run_locust(router, tmp_path, "--paths", "FETCH /x:1")
    assert r.returncode == 1
    assert "--paths 'FETCH /x:1': method must be one of" in r.stdout


def test_web_ui_shows_the_split_live(stack, tmp_path):
    """The web UI (on 127.0.0.1) lists per-region rows while the test is still running."""
    import json
    import time
    import urllib.request

    from harness import free_port

    sim, router = stack
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env["EDGE_ROUTER_ADMIN_TOKEN"] = TOKEN
    proc = subprocess.Popen(
        [*locust_command(), "-f", str(LOCUSTFILE), "--web-host", "127.0.0.1", "--web-port", str(port),
         "--autostart", "-u", "4", "-r", "4", "--run-time", "60s",
         "--host", f"http://127.0.0.1:{router.port}", "--admin-url", f"http://127.0.0.1:{router.admin}",
         "--mode", "round-robin"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        names: set[str] = set()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not all(f"/api/v1/echo [{r}]" in names for r in REGIONS):
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/requests", timeout=5) as resp:
                    names = {row["name"] for row in json.load(resp)["stats"]}
            except OSError:
                continue
        assert all(f"/api/v1/echo [{r}]" in names for r in REGIONS), names
        assert proc.poll() is None  # still running: the split is live, not an end-of-run report
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
