"""Issue 14: the status page at GET /, in a real headless Chromium, against a
router in front of the simulator; and JSON 404/405 on the admin listener."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from harness import REGIONS, REPO, TOKEN, Traffic, make_config, request, start_router, start_sim, wait_until

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = REPO / "artifacts"
CLIENTS = ("81.2.69.142", "202.196.224.1", "216.160.83.56", "2a02:d180::1")  # GB, PH, US, DE


@pytest.fixture(scope="module")
def sim():
    s = start_sim({"us-east-1": 0.005, "us-west-2": 0.02, "eu-west-1": 0.03, "ap-southeast-1": 0.06})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rp(sim):
    r = start_router(make_config(sim.ports, probe={"interval": "500ms"}))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def traffic(rp):
    """Steady background requests from a few countries, so rates and shares show."""
    with Traffic(rp.port, CLIENTS, pause=0.1):
        yield


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api as pw_sync  # the test extra has it: missing is a failure, not a skip
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    profile = tempfile.mkdtemp(prefix="edge-router-chromium-")
    with pw_sync.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


def field(page, region: str, name: str):
    return page.locator(f'article[data-region="{region}"] [data-field="{name}"]')


def wait_text(page, region: str, name: str, text: str, timeout: float):
    """Poll the page until the field contains text; the seconds it took."""
    t0 = time.monotonic()
    loc = field(page, region, name)
    wait_until(lambda: text in loc.inner_text(), timeout, 0.05,
               what=f"{region} {name} to show {text!r} (shows {loc.inner_text()!r})")
    return time.monotonic() - t0


def test_status_page_end_to_end(sim, rp, traffic, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page()
    # A person opening the page sees no error in the browser's console (a 404 for
    # /favicon.ico, a script blocked by the CSP, a JS exception).
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))
    page.goto(f"http://127.0.0.1:{rp.admin}/")
    assert page.title() == "edge-router status"

    # The four regions render, with their states as words.
    wait_until(lambda: page.locator("article[data-region]").count() == 4, 10, what="four region cards")
    assert page.locator("article[data-region] h2 span").all_inner_texts() == list(REGIONS)
    for rid in REGIONS:
        wait_text(page, rid, "health", "healthy", 10)
        assert field(page, rid, "breaker").inner_text() == "closed"
        assert field(page, rid, "admin").inner_text() == "enabled"
        assert field(page, rid, "latency").inner_text().endswith(" ms")
    wait_until(lambda: field(page, "eu-west-1", "rps").inner_text() not in ("–", "0.0"), 15,
               what="request rates from the background traffic")
    wait_until(lambda: field(page, "eu-west-1", "share").inner_text().endswith("%"), 10, what="share")
    assert page.locator("#strategy").input_value() == "geographic"

    # A region killed in the simulator turns unhealthy on the page within 3 s.
    sim.fault("ap-southeast-1", down=True)
    took = wait_text(page, "ap-southeast-1", "health", "UNHEALTHY", 3.0)
    assert took <= 3.0
    print(f"\nregion killed -> UNHEALTHY on the page in {took:.2f}s")
    assert "UNHEALTHY" in page.locator('article[data-region="ap-southeast-1"]').inner_text()
    page.screenshot(path=str(ARTIFACTS / "status-page-unhealthy-1280.png"), full_page=True)
    sim.reset("ap-southeast-1")
    wait_text(page, "ap-southeast-1", "health", "healthy", 15)

    # A wrong token: the 401 answer shows, nothing changes, the token is forgotten.
    page.locator('article[data-region="us-west-2"] button[data-action="disable"]').click()
    assert page.locator("#tokenbox").is_visible()
    page.fill("#token", "not-the-token")
    page.click("#tokenform button[type=submit]")
    wait_until(lambda: "401" in page.locator("#answer").inner_text(), 5, what="the 401 answer")
    assert "Unauthorized" in page.locator("#answer").inner_text()
    assert page.evaluate("sessionStorage.getItem('edge-router-token')") is None
    assert rp.region_state("us-west-2")["disabled"] is False

    # A drain started from the page, with the token: progress, down to 0, then enabled again.
    card = page.locator('article[data-region="eu-west-1"]')
    card.locator("input").fill("4s")
    card.locator('button[data-action="drain"]').click()
    assert page.locator("#tokenbox").is_visible()  # asked again after the 401
    page.fill("#token", TOKEN)
    page.click("#tokenform button[type=submit]")
    wait_until(lambda: "HTTP 200" in page.locator("#answer").inner_text(), 5, what="the drain's 200")
    answer = page.locator("#answer").inner_text()
    shown = json.loads(answer.split("\n", 1)[1])  # the server's answer, as it came
    assert {k: shown[k] for k in ("region", "draining", "over_seconds")} == {
        "region": "eu-west-1", "draining": True, "over_seconds": 4.0}
    wait_text(page, "eu-west-1", "admin", "draining", 5)
    wait_until(lambda: 0 < page.locator('article[data-region="eu-west-1"] progress').evaluate("e => e.value") < 1,
               5, 0.05, what="drain progress between 0 and 1")
    page.screenshot(path=str(ARTIFACTS / "status-page-draining-1280.png"), full_page=True)
    wait_text(page, "eu-west-1", "admin", "0 % left (drained)", 10)
    assert rp.region_state("eu-west-1")["effective_weight"] == 0
    # The token was asked once: the next mutation goes straight through.
    card.locator('button[data-action="enable"]').click()
    assert not page.locator("#tokenbox").is_visible()
    wait_text(page, "eu-west-1", "admin", "enabled", 5)
    # The page shows the admin API's answer once its fetch has returned (not when the server acted).
    wait_until(lambda: '"disabled":false' in page.locator("#answer").inner_text(), 5, what="the enable answer")

    # The token never went into the URL or a cookie.
    assert TOKEN not in page.url and browser.cookies() == []
    assert page.evaluate("sessionStorage.getItem('edge-router-token')") == TOKEN

    # Strategy selector.
    page.select_option("#strategy", "round-robin")
    page.click("#strategy-apply")
    wait_until(lambda: rp.state()["strategy"] == "round-robin", 5, what="strategy switched from the page")
    wait_until(lambda: '"previous":"geographic"' in page.locator("#answer").inner_text(), 5,
               what="the strategy answer")
    page.select_option("#strategy", "geographic")
    page.click("#strategy-apply")
    wait_until(lambda: rp.state()["strategy"] == "geographic", 5, what="strategy back")

    # Where does this client go?
    page.fill("#routeq", "GB")
    page.click("#routeform button")
    wait_until(lambda: "forwarded to eu-west-1" in page.locator("#routeout").inner_text(), 5, what="route answer")
    page.fill("#routeq", "not-an-ip")
    page.click("#routeform button")
    wait_until(lambda: "400" in page.locator("#routeout").inner_text(), 5, what="route 400")

    # The wrong token's 401 and the route's 400 are answers shown on the page; anything
    # else in the console is a defect.
    unexpected = [m for m in console_errors if "401" not in m and "400" not in m]
    assert unexpected == [], unexpected

    # Screenshots to look at, wide and phone-sized.
    page.fill("#routeq", "81.2.69.142")
    page.click("#routeform button")
    wait_until(lambda: "forwarded to" in page.locator("#routeout").inner_text(), 5, what="route answer")
    time.sleep(1.5)  # a little chart history
    page.screenshot(path=str(ARTIFACTS / "status-page-1280.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    time.sleep(1.2)
    page.screenshot(path=str(ARTIFACTS / "status-page-phone.png"), full_page=True)
    # Readable at phone width: nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.close()


def test_page_headers_and_json_errors(rp):
    r = request(rp.admin, "GET", "/")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "frame-ancestors 'none'" in csp
    assert b"<script src" not in r.body and b"http://" not in r.body.replace(b"http://www.w3.org/2000/svg", b"")
    _json_404_405(rp.admin)


def test_every_symbol_of_the_page_has_a_font():
    """States are words and symbols; a symbol no installed font has shows as an empty box
    in the screenshot (Debian's chromium with its fonts, as in CI)."""
    import subprocess

    fc_list = shutil.which("fc-list")
    if fc_list is None:
        pytest.skip("fc-list (fontconfig) is not installed")
    from router.ops.page import PAGE  # the page as served (the compiled CI run has no router/ in its tree)

    html = PAGE.decode("utf-8")
    missing = [f"{c} U+{ord(c):04X}" for c in sorted({c for c in html if ord(c) > 0x7F})
               if not subprocess.run([fc_list, f":charset={ord(c):x}", "family"], capture_output=True,
                                     text=True, timeout=30).stdout.strip()]
    assert missing == [], f"symbols no installed font can draw: {missing}"


def _json_404_405(admin: int) -> None:
    # HEAD goes wherever GET does (RFC 9110 9.3.2): load balancers and `curl -I` check with it.
    for path in ("/healthz", "/readyz", "/metrics", "/admin/state", "/"):
        r = request(admin, "HEAD", path)
        assert r.status == 200 and r.body == b"", (path, r.status)
    r = request(admin, "GET", "/admin/nope")
    assert r.status == 404 and r.headers["content-type"] == "application/json", r.body
    assert r.json()["error"] == "not_found" and "/admin/state" in r.json()["endpoints"]
    r = request(admin, "DELETE", "/admin/state")
    assert r.status == 405 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "method_not_allowed" and "GET" in r.json()["allowed"]
    assert "GET" in r.headers["allow"]
    r = request(admin, "GET", "/admin/regions/eu-west-1/drain")
    assert r.status == 405 and r.json()["allowed"] == ["POST"]
    r = request(admin, "POST", "/admin/regions/eu-west-1/drain", b"x" * 70000,
                {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert r.status == 413 and r.headers["content-type"] == "application/json", (r.status, r.body[:200])


def test_page_and_json_errors_under_workers(sim):
    rp = start_router(make_config(sim.ports), extra_args=["--workers", "2"])
    try:
        r = request(rp.admin, "GET", "/")
        assert r.status == 200 and b"edge-router status" in r.body
        _json_404_405(rp.admin)
    finally:
        rp.stop()
