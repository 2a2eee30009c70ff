"""Locust load test for edge-router.

Standard Locust command line plus options of its own:

    --mode round-robin | geographic | mixed   (default round-robin)
    --admin-url URL        the router's admin listener, e.g. http://127.0.0.1:9901
                           (or EDGE_ROUTER_ADMIN_URL); the bearer token for admin
                           mutations comes from EDGE_ROUTER_ADMIN_TOKEN
    --clients SPEC         geographic mode: auto | test | demo | FILE
    --think-time SECONDS   pause between a user's requests: "0", "0.5" or "0.1-0.5"
    --max-deviation POINTS round-robin mode: allowed distance from an even split (5)
    --paths LIST           what to request instead of the simulator's paths, for a real
                           API: "GET /api/v1/health:3,POST /api/v1/orders:1" (method,
                           path, weight); any answer below 400 counts as a success
    --body FILE            JSON body sent with the POST/PUT/PATCH entries of --paths

Modes:

round-robin   Capacity planning. At test start the router is switched to
              round-robin through the admin API (the run stops at once, exit 1, if
              that fails) and left there. Every response's X-Edge-Region is tallied;
              at the end a per-region table (requests, share %, p50, p95) is printed
              and the run exits 1 when any region's share is more than
              --max-deviation points off an even split, or when any request failed.
              "Even" is 100 / the number of regions in GET /admin/state -- every
              configured region, disabled or not -- so a disabled or broken region
              (0 %) fails the run: the check is "every region takes its share".
              (Regions with unequal configured weights expect weight / total weight.)
geographic    Virtual users carry client addresses from countries of each region and
              send them as X-Forwarded-For (the router must list the load generator
              in [geo] trusted_proxies); a response from any other region than the
              client country's home region is a failure. With --admin-url the router
              is first switched to geographic. --clients picks the addresses: "auto"
              (default; asks the router's GET /admin/route?ip= which built-in
              addresses its GeoIP DB knows, and their home region), "test" (the
              MaxMind GeoLite2-Country-Test.mmdb addresses), "demo" (the demo DB of
              `edge-router demo`), or a file of "ip,region" lines.
mixed         Realistic API traffic: GET /api/v1/echo, JSON POST /api/v1/payments
              (201 expected), and now and then a 1 MiB GET /api/v1/large, with a
              think time of 0.1-0.5 s. With --websocket, now and then a WebSocket
              session too (GET /api/v1/ws?greet=1 through the router, then 5
              messages echoed): "WS connect [region]" times the handshake,
              "WS echo [region]" each message's round trip. With --admin-url (or --clients test|demo|FILE)
              users send X-Forwarded-For addresses from around the world, so every
              home region gets traffic; the answering region is not checked. Leaves
              the strategy alone.

Every request is named after the region that answered it ("GET /api/v1/echo
[eu-west-1]"), so Locust's statistics -- the web UI's table and charts while the
test runs, and the console -- show the per-region split live. Every mode also
prints the per-region table at the end (on the master/local runner only; workers
send their tallies to the master). Headless:

    EDGE_ROUTER_ADMIN_TOKEN=... locust -f bench/locustfile.py --headless -u 50 -r 50 \\
        --run-time 1m --host http://127.0.0.1:8080 --mode round-robin \\
        --admin-url http://127.0.0.1:9901 --only-summary

Web UI: the same without --headless/-u/-r/--run-time, plus --web-host 127.0.0.1
(Locust listens on every interface by default); open http://127.0.0.1:8089, the
mode, admin URL and paths are editable there; the table is printed on the console
at each stop.
"""
from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import random
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from types import SimpleNamespace

import gevent
from locust import FastHttpUser, events, task
from locust.runners import MasterRunner, WorkerRunner

try:  # the seed's country map and the demo addresses: geodata/, the one source
    from geodata.countries import seed_region
    from geodata.demo import demo_clients
except ImportError:  # a checkout without the package installed: Locust puts only bench/ on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from geodata.countries import seed_region
    from geodata.demo import demo_clients

log = logging.getLogger("edge_router.locust")

MODES = ("round-robin", "geographic", "mixed")
TOKEN_ENV = "EDGE_ROUTER_ADMIN_TOKEN"
ADMIN_URL_ENV = "EDGE_ROUTER_ADMIN_URL"
NO_REGION = "(no header)"
WORKER_REPORT_INTERVAL = 3.0  # locust.runners.WORKER_REPORT_INTERVAL
LARGE_BYTES = 1 << 20
WS_PATH = "/api/v1/ws?greet=1"  # the simulator's WebSocket echo; greet=1 names the region first
WS_MESSAGES = 5  # echoed per session

# Addresses of tests/data/geo/GeoLite2-Country-Test.mmdb (MaxMind's test data).
TEST_DB_CLIENTS: tuple[tuple[str, str], ...] = (
    ("81.2.69.142", "GB"),
    ("216.160.83.56", "US"),
    ("202.196.224.1", "PH"),
    ("2001:218::1", "JP"),
    ("2a02:d180::1", "DE"),
)


def demo_db_clients() -> tuple[tuple[str, str], ...]:
    """Addresses of the demo DB (geodata/demo.py, `edge-router demo`): one per network."""
    return tuple((c.ip, c.country) for c in demo_clients())


# -- command line ------------------------------------------------------------------

@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--mode", choices=MODES, default="round-robin",
                        help="round-robin (even split check), geographic (X-Forwarded-For clients "
                             "per region, region check) or mixed (API traffic); default round-robin")
    parser.add_argument("--admin-url", default=os.environ.get(ADMIN_URL_ENV, ""),
                        help="edge-router admin API base URL, e.g. http://127.0.0.1:9901 (env "
                             f"{ADMIN_URL_ENV}); the token comes from {TOKEN_ENV}")
    parser.add_argument("--clients", default="auto",
                        help="geographic mode: auto | test | demo | FILE of 'ip,region' lines")
    parser.add_argument("--think-time", default="",
                        help="seconds between a user's requests: 0, 0.5 or 0.1-0.5 "
                             "(default 0; mixed mode 0.1-0.5)")
    parser.add_argument("--max-deviation", type=float, default=5.0,
                        help="round-robin mode: largest allowed distance, in percentage points, "
                             "of a region's share from an even split (default 5)")
    parser.add_argument("--paths", default="",
                        help='requests for a real API instead of the simulator\'s paths: '
                             '"GET /api/v1/health:3,POST /api/v1/orders:1" (method path:weight)')
    parser.add_argument("--body", default="",
                        help="JSON file sent as the body of the POST/PUT/PATCH entries of --paths")
    parser.add_argument("--websocket", action="store_true", default=False,
                        help=f"mixed mode: WebSocket sessions too ({WS_PATH}, {WS_MESSAGES} messages "
                             "echoed; needs websocket-client, in the [load] extra)")


# -- --paths: a real API's requests -------------------------------------------------

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
WITH_BODY = ("POST", "PUT", "PATCH")


@dataclass(frozen=True)
class PathSpec:
    method: str
    path: str
    weight: int

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


def parse_paths(text: str) -> list[PathSpec]:
    """'GET /api/v1/health:3,POST /api/v1/orders:1' -> PathSpecs; SetupError naming the bad entry."""
    specs = []
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        method, _, rest = entry.partition(" ")
        rest = rest.strip()
        path, weight = rest, 1
        head, sep, tail = rest.rpartition(":")
        if sep and tail.strip().isdigit():
            path, weight = head.strip(), int(tail)
        if method.upper() not in METHODS:
            raise SetupError(f"--paths {entry!r}: method must be one of {', '.join(METHODS)}")
        if not path.startswith("/") or " " in path:
            raise SetupError(f"--paths {entry!r}: expected 'METHOD /path[:weight]'")
        if weight < 1:
            raise SetupError(f"--paths {entry!r}: weight must be 1 or more")
        specs.append(PathSpec(method.upper(), path, weight))
    if not specs:
        raise SetupError("--paths: no entries (e.g. 'GET /api/v1/health:3,POST /api/v1/orders:1')")
    return specs


def load_body(path: str) -> bytes | None:
    """The --body file, checked to be JSON (sent as it is)."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read()
        json.loads(raw)
    except OSError as exc:
        raise SetupError(f"--body {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SetupError(f"--body {path}: not JSON ({exc})") from None
    return raw


# -- admin API -----------------------------------------------------------------------

class SetupError(Exception):
    pass


def admin_call(admin_url: str, method: str, path: str, body: dict | None = None,
               auth: bool = False, timeout: float = 5.0) -> dict:
    base = (admin_url or "").rstrip("/")
    if not base:
        raise SetupError("--admin-url is required (the router's admin listener, e.g. http://127.0.0.1:9901)")
    url = base + path
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if auth:
        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            raise SetupError(f"{TOKEN_ENV} is not set: admin mutations need the router's bearer token")
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise SetupError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SetupError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        raise SetupError(f"{method} {url}: answer is not JSON: {raw[:200]!r}") from None


def switch_strategy(admin_url: str, strategy: str) -> dict:
    answer = admin_call(admin_url, "PUT", "/admin/strategy", {"strategy": strategy}, auth=True)
    state = admin_call(admin_url, "GET", "/admin/state")
    if state.get("strategy") != strategy:
        raise SetupError(f"router reports strategy {state.get('strategy')!r} after switching to {strategy!r}")
    log.info("edge-router strategy: %s -> %s", answer.get("previous"), strategy)
    return state


# -- geographic clients ----------------------------------------------------------------

@dataclass(frozen=True)
class Client:
    ip: str
    country: str
    region: str


def resolve_clients(spec: str, admin_url: str) -> list[Client]:
    spec = (spec or "auto").strip()
    if spec not in ("auto", "test", "demo"):
        return _clients_from_file(spec)
    if spec == "test":
        candidates = TEST_DB_CLIENTS
    elif spec == "demo":
        candidates = demo_db_clients()
    else:
        candidates = TEST_DB_CLIENTS + demo_db_clients()
    if not admin_url:
        if spec == "auto":
            raise SetupError("--clients auto needs --admin-url (to ask the router which addresses its "
                             "GeoIP DB knows); or pass --clients test|demo|FILE")
        return [Client(ip, cc, seed_region(cc)) for ip, cc in candidates]
    # Ask the router: its GeoIP DB's country for each address and its map's home region.
    clients, unknown = [], []
    for ip, cc in candidates:
        info = admin_call(admin_url, "GET", "/admin/route?ip=" + urllib.parse.quote(ip))
        if info.get("country") == cc and info.get("home_region"):
            clients.append(Client(ip, cc, info["home_region"]))
        else:
            unknown.append(f"{ip} ({cc}: router says {info.get('country')})")
    if spec != "auto" and unknown:
        log.warning("the router's GeoIP DB does not place these as expected, left out: %s", ", ".join(unknown))
    if not clients:
        raise SetupError("the router's GeoIP DB knows none of the built-in client addresses; "
                         "pass --clients FILE with 'ip,region' lines")
    return clients


def _clients_from_file(path: str) -> list[Client]:
    clients = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = [p.strip() for p in line.split(",")]
                if len(parts) < 2 or not parts[0] or not parts[1]:
                    raise SetupError(f"{path}:{n}: expected 'ip,region', got {line!r}")
                clients.append(Client(parts[0], parts[2] if len(parts) > 2 else "?", parts[1]))
    except OSError as exc:
        raise SetupError(f"--clients {path}: {exc}") from None
    if not clients:
        raise SetupError(f"--clients {path}: no clients in the file")
    return clients


# -- per-region tally (workers ship theirs to the master) -------------------------------

def bucket_ms(ms: float) -> float:
    """Response time rounded so that the histogram stays small (as Locust does)."""
    if ms < 10:
        return round(ms, 1)
    if ms < 100:
        return float(round(ms))
    if ms < 1000:
        return float(round(ms, -1))
    return float(round(ms, -2))


def percentile(hist: collections.Counter, q: float) -> float:
    total = sum(hist.values())
    if not total:
        return 0.0
    rank = q * total
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist)


class Tally:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.hist: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def add(self, region: str, ms: float) -> None:
        self.counts[region] += 1
        self.hist[region][bucket_ms(ms)] += 1

    def export(self) -> dict:
        return {"counts": dict(self.counts),
                "hist": {r: [[k, v] for k, v in h.items()] for r, h in self.hist.items()}}

    def merge(self, data: dict | None) -> None:
        if not data:
            return
        self.counts.update(data.get("counts", {}))
        for region, pairs in data.get("hist", {}).items():
            for k, v in pairs:
                self.hist[region][float(k)] += v


@dataclass
class Run:
    mode: str = "round-robin"
    started: bool = False
    reported: bool = True
    setup_error: str | None = None
    regions: list[dict] = field(default_factory=list)  # /admin/state regions at test start
    think: tuple[float, float] = (0.0, 0.0)  # --think-time, seconds
    clients: list[Client] = field(default_factory=list)
    paths: list[PathSpec] = field(default_factory=list)  # --paths; empty: the simulator's
    body: bytes | None = None  # --body
    websocket: bool = False  # --websocket (mixed mode)


RUN = Run()
TALLY = Tally()


def _is_worker(environment) -> bool:
    return isinstance(environment.runner, WorkerRunner)


def _options(environment):
    return environment.parsed_options


@events.test_start.add_listener
def _on_test_start(environment, **_kw) -> None:
    opts = _options(environment)
    TALLY.reset()
    RUN.mode = getattr(opts, "mode", "round-robin") if opts else "round-robin"
    RUN.started, RUN.reported, RUN.setup_error = True, False, None
    RUN.regions, RUN.clients, RUN.paths, RUN.body = [], [], [], None
    admin_url = getattr(opts, "admin_url", "") if opts else ""
    try:
        RUN.think = _parse_think_time(getattr(opts, "think_time", "") if opts else "", RUN.mode)
        if opts is not None and getattr(opts, "paths", ""):
            RUN.paths = parse_paths(opts.paths)
            RUN.body = load_body(getattr(opts, "body", ""))
            if RUN.body is None and any(p.method in WITH_BODY for p in RUN.paths):
                log.info("--paths has %s entries and no --body: they are sent with an empty JSON object",
                         "/".join(sorted({p.method for p in RUN.paths if p.method in WITH_BODY})))
        if RUN.mode == "geographic":
            if admin_url and not _is_worker(environment):
                switch_strategy(admin_url, "geographic")
            RUN.clients = resolve_clients(getattr(opts, "clients", "auto"), admin_url)
            if not _is_worker(environment):
                log.info("geographic clients (X-Forwarded-For -> expected region): %s",
                         ", ".join(f"{c.ip} {c.country}->{c.region}" for c in RUN.clients))
                users = getattr(opts, "num_users", None)
                if users and users < len(RUN.clients):
                    log.warning("%d users carry only the first %d of %d client addresses; use -u %d "
                                "or more to cover them all", users, users, len(RUN.clients), len(RUN.clients))
        RUN.websocket = bool(getattr(opts, "websocket", False)) if opts else False
        if RUN.websocket:
            if RUN.mode != "mixed" or RUN.paths:
                raise SetupError("--websocket adds WebSocket sessions to --mode mixed (without --paths)")
            try:
                import websocket  # noqa: F401
            except ImportError:
                raise SetupError("--websocket needs websocket-client: pip install 'edge-router[load]'") from None
        if RUN.mode == "mixed":
            spec = getattr(opts, "clients", "auto") if opts else "auto"
            if admin_url or spec != "auto":
                # Spread the traffic over the world like real clients; no region check here.
                try:
                    RUN.clients = resolve_clients(spec, admin_url)
                except SetupError as exc:
                    log.warning("mixed mode: no X-Forwarded-For clients (%s); all traffic comes from "
                                "this machine's address", exc)
        if _is_worker(environment):
            return
        if RUN.mode == "round-robin":
            state = switch_strategy(admin_url, "round-robin")
            RUN.regions = list(state.get("regions", []))
            if not RUN.regions:
                raise SetupError("GET /admin/state lists no regions")
            off = [r["id"] for r in RUN.regions if r.get("disabled") or r.get("draining")]
            if off:
                log.warning("disabled/draining regions %s will take no share: this run will fail the "
                            "even-split check", ", ".join(off))
        elif admin_url:
            try:
                RUN.regions = list(admin_call(admin_url, "GET", "/admin/state").get("regions", []))
            except SetupError as exc:
                log.warning("could not read the router's regions: %s", exc)
    except SetupError as exc:
        RUN.setup_error = str(exc)
        log.error("edge-router setup for --mode %s failed, stopping the test: %s", RUN.mode, exc)
        environment.process_exit_code = 1
        runner = environment.runner
        if opts is not None and getattr(opts, "headless", False):
            gevent.spawn_later(0, runner.quit)
        elif runner is not None:
            gevent.spawn_later(0, runner.stop)


@events.request.add_listener
def _on_request(response_time=None, response=None, exception=None, **_kw) -> None:
    region = None
    headers = getattr(response, "headers", None)
    if headers is not None:
        try:
            region = headers.get("X-Edge-Region")
        except Exception:
            region = None
    if isinstance(region, list):
        region = region[-1] if region else None
    TALLY.add(region or NO_REGION, float(response_time or 0.0))


@events.report_to_master.add_listener
def _on_report_to_master(data, **_kw) -> None:
    data["edge_router_tally"] = TALLY.export()
    TALLY.reset()


@events.worker_report.add_listener
def _on_worker_report(data, **_kw) -> None:
    TALLY.merge(data.get("edge_router_tally"))


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw) -> None:
    if _is_worker(environment) or not RUN.started or RUN.reported:
        return
    if isinstance(environment.runner, MasterRunner):
        opts = _options(environment)
        if opts is not None and getattr(opts, "headless", False):
            return  # quitting reports, after the workers' last tallies came in
        gevent.spawn_later(WORKER_REPORT_INTERVAL + 1, report, environment)
        return
    report(environment)


@events.quitting.add_listener
def _on_quitting(environment, **_kw) -> None:
    if not _is_worker(environment) and RUN.started and not RUN.reported:
        report(environment)


# -- the report -------------------------------------------------------------------------

def _weight(region: dict) -> float:
    try:
        w = float(region.get("weight", 1.0))
    except (TypeError, ValueError):
        return 1.0
    return w if w > 0 else 1.0


def report(environment) -> list[str]:
    """Print the per-region table; in round-robin mode decide pass/fail (exit code)."""
    RUN.reported = True
    stats = environment.stats.total
    total_requests, failures = stats.num_requests, stats.num_failures
    lines = [""]
    problems: list[str] = []
    if RUN.setup_error:
        problems.append(f"setup failed: {RUN.setup_error}")
    configured = [r["id"] for r in RUN.regions]
    state_of = {r["id"]: ("disabled" if r.get("disabled") else "draining" if r.get("draining") else "")
                for r in RUN.regions}
    seen = [r for r in sorted(TALLY.counts) if r not in configured]
    rows = configured + seen
    tallied = sum(TALLY.counts.values())
    # Expected share: the region's weight over all regions' weights (equal weights:
    # an even split). Every region counts, disabled or draining ones too.
    weights = {r["id"]: _weight(r) for r in RUN.regions}
    for r in rows:
        if r != NO_REGION:
            weights.setdefault(r, 1.0)  # answered but not in /admin/state
    weight_sum = sum(weights.values()) or 1.0
    expected = {r: 100.0 * w / weight_sum for r, w in weights.items()}
    equal = len(set(weights.values())) <= 1
    even = next(iter(expected.values()), 0.0)
    max_dev = float(getattr(_options(environment), "max_deviation", 5.0) or 5.0)
    rr = RUN.mode == "round-robin"
    title = f"edge-router per-region split, --mode {RUN.mode}"
    if rr:
        title += (f": {len(configured)} regions in /admin/state, "
                  + (f"even share {even:.1f} %" if equal else "shares by weight")
                  + f", allowed ±{max_dev:g} points")
    lines.append(title)
    header = f"{'region':<20} {'requests':>9} {'share':>8}"
    if rr:
        header += f" {'expected':>9} {'off by':>7}"
    header += f" {'p50 ms':>8} {'p95 ms':>8}  note"
    lines.append(header)
    lines.append("-" * len(header))
    for region in rows:
        n = TALLY.counts.get(region, 0)
        share = 100.0 * n / tallied if tallied else 0.0
        hist = TALLY.hist.get(region, collections.Counter())
        note = state_of.get(region, "" if region in configured else "not in /admin/state")
        row = f"{region:<20} {n:>9} {share:>7.1f}%"
        if rr:
            if region == NO_REGION:
                row += f" {'-':>9} {'-':>7}"
                problems.append(f"{n} responses carried no X-Edge-Region")
            else:
                want = expected.get(region, 0.0)
                off = share - want
                row += f" {want:>8.1f}% {off:>+7.1f}"
                if abs(off) > max_dev:
                    problems.append(f"{region} took {share:.1f} % ({off:+.1f} points off {want:.1f} %)")
                    note = (note + " " if note else "") + "FAIL"
        row += f" {percentile(hist, 0.5):>8g} {percentile(hist, 0.95):>8g}  {note}".rstrip()
        lines.append(row)
    lines.append("-" * len(header))
    lines.append(f"{'total':<20} {tallied:>9} {100.0 if tallied else 0.0:>7.1f}%")
    if rr and tallied == 0 and not RUN.setup_error:
        problems.append("no responses at all")
    if failures:
        problems.append(f"{failures} of {total_requests} requests failed")
    if rr:
        if problems:
            lines.append("FAIL: " + "; ".join(problems))
            environment.process_exit_code = 1
        else:
            lines.append(f"PASS: every region within {max_dev:g} points of "
                         + (f"{even:.1f} %" if equal else "its weighted share") + ", no failed requests")
            environment.process_exit_code = None
    elif problems:
        lines.append("FAIL: " + "; ".join(problems))
        if RUN.setup_error:
            environment.process_exit_code = 1
    if RUN.setup_error and not tallied:
        lines = ["", title, lines[-1]]
    print("\n".join(lines), flush=True)
    return lines


# -- the virtual user -------------------------------------------------------------------

def _parse_think_time(text: str, mode: str) -> tuple[float, float]:
    text = (text or "").strip() or ("0.1-0.5" if mode == "mixed" else "0")
    lo, _, hi = text.partition("-")
    try:
        a, b = float(lo), float(hi or lo)
    except ValueError:
        raise SetupError(f"--think-time {text!r}: use 0, 0.5 or 0.1-0.5") from None
    if a < 0 or b < a:
        raise SetupError(f"--think-time {text!r}: use 0, 0.5 or 0.1-0.5")
    return a, b


class EdgeRouterUser(FastHttpUser):
    """One client of the router; what it sends depends on --mode."""

    _numbers = itertools.count()

    def wait_time(self) -> float:
        lo, hi = self._think
        return lo if lo == hi else random.uniform(lo, hi)

    def on_start(self) -> None:
        self.mode = RUN.mode
        self._think = RUN.think
        # Distributed: worker i of W numbers its users i, i+W, i+2W, ... so that the
        # workers together cover the client list like one process would.
        runner = self.environment.runner
        opts = self.environment.parsed_options
        workers = max(1, int(getattr(opts, "expect_workers", 1) or 1)) if _is_worker(self.environment) else 1
        self.number = next(self._numbers) * workers + (getattr(runner, "worker_index", 0) or 0) % workers
        self.client_addr: Client | None = None
        # A failed setup stops the run; until then this user sends nothing.
        self.idle = bool(RUN.setup_error) or (self.mode == "geographic" and not RUN.clients)
        if self.idle:
            self._think = (1.0, 1.0)
        elif self.mode in ("geographic", "mixed") and RUN.clients:
            self.client_addr = RUN.clients[self.number % len(RUN.clients)]

    @task
    def step(self) -> None:
        if self.idle:
            return
        if RUN.paths:
            self.api_path(random.choices(RUN.paths, weights=[p.weight for p in RUN.paths])[0])
        elif self.mode == "geographic":
            self.geographic()
        elif self.mode == "mixed":
            random.choices((self.echo, self.payment, self.large, self.ws_session),
                           weights=(12, 5, 1, 1 if RUN.websocket else 0))[0]()
        else:
            self.echo()

    def _headers(self) -> dict[str, str]:
        return {"X-Forwarded-For": self.client_addr.ip} if self.client_addr else {}

    @staticmethod
    def _by_region(resp, name: str) -> str | None:
        """Name the request after the region that answered: Locust's live statistics
        (web UI and console) then show the per-region split. The region, or None."""
        region = resp.headers.get("X-Edge-Region") if resp.headers is not None else None
        resp.request_meta["name"] = f"{name} [{region or NO_REGION}]"
        return region

    def _check_region(self, resp, region: str | None) -> bool:
        """Geographic mode: the client's home region must answer."""
        c = self.client_addr
        if self.mode != "geographic" or c is None or region == c.region:
            return True
        resp.failure(f"client {c.ip} ({c.country}) expected region {c.region}, answered by {region}"
                     " (wrong --clients for the router's GeoIP DB, or the load generator not in its trusted_proxies?)")
        return False

    def api_path(self, spec: PathSpec) -> None:
        headers = self._headers()
        body = None
        if spec.method in WITH_BODY:
            body = RUN.body if RUN.body is not None else b"{}"
            headers["Content-Type"] = "application/json"
        with self.client.request(spec.method, spec.path, data=body, name=spec.name, headers=headers,
                                 catch_response=True) as resp:
            region = self._by_region(resp, spec.name)
            if not resp.status_code or resp.status_code >= 400:
                resp.failure(f"HTTP {resp.status_code}")
            elif self._check_region(resp, region):
                resp.success()

    def echo(self) -> None:
        with self.client.get(f"/api/v1/echo?n={random.randrange(1 << 20)}", name="/api/v1/echo",
                             headers=self._headers(), catch_response=True) as resp:
            self._by_region(resp, "/api/v1/echo")
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
            else:
                resp.success()

    def geographic(self) -> None:
        c = self.client_addr
        assert c is not None
        with self.client.get(f"/api/v1/echo?n={random.randrange(1 << 20)}", name="/api/v1/echo",
                             headers={"X-Forwarded-For": c.ip}, catch_response=True) as resp:
            got = self._by_region(resp, "/api/v1/echo")
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
            elif self._check_region(resp, got):
                resp.success()

    def payment(self) -> None:
        body = {"amount": f"{random.randint(100, 99999) / 100:.2f}",
                "currency": random.choice(("USD", "EUR", "GBP", "SGD")),
                "reference": uuid.uuid4().hex}
        with self.client.post("/api/v1/payments", json=body, name="/api/v1/payments",
                              headers={"Idempotency-Key": body["reference"], **self._headers()},
                              catch_response=True) as resp:
            self._by_region(resp, "/api/v1/payments")
            if resp.status_code != 201:
                resp.failure(f"HTTP {resp.status_code}")
                return
            try:
                answer = resp.json()
            except ValueError:
                resp.failure("payment answer is not JSON")
                return
            region = resp.headers.get("X-Edge-Region")
            if answer.get("amount") != body["amount"]:
                resp.failure(f"amount {answer.get('amount')!r} != {body['amount']!r}")
            elif answer.get("region") and region and answer["region"] != region:
                resp.failure(f"answered by {answer['region']} but X-Edge-Region says {region}")
            else:
                resp.success()

    def large(self) -> None:
        with self.client.get(f"/api/v1/large?bytes={LARGE_BYTES}", name="/api/v1/large (1 MiB)",
                             headers=self._headers(), catch_response=True) as resp:
            self._by_region(resp, "/api/v1/large (1 MiB)")
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
            elif len(resp.content or b"") != LARGE_BYTES:
                resp.failure(f"got {len(resp.content or b'')} bytes, expected {LARGE_BYTES}")
            else:
                resp.success()

    def ws_session(self) -> None:
        """A WebSocket session through the router: the handshake, named after the region
        of its 101, then WS_MESSAGES messages echoed, each timed on its own."""
        import websocket  # websocket-client's blocking sockets, made cooperative by Locust's gevent

        fire = self.environment.events.request.fire
        url = "ws" + (self.host or "").removeprefix("http") + WS_PATH
        start = perf_counter()
        try:
            ws = websocket.create_connection(url, timeout=10,
                                             header=[f"{k}: {v}" for k, v in self._headers().items()])
        except Exception as exc:  # refused, or the router or region answered without a 101
            fire(request_type="WS", name=f"WS connect [{NO_REGION}]", response_time=(perf_counter() - start) * 1000,
                 response_length=0, response=None, context={}, exception=exc)
            return
        region = ws.getheaders().get("x-edge-region") or NO_REGION
        answered = SimpleNamespace(headers={"X-Edge-Region": region})  # for the per-region tally
        name, started = f"WS connect [{region}]", start
        try:
            greeting = json.loads(ws.recv())  # the region names itself
            if greeting.get("region") != region:
                raise AssertionError(f"greeted by {greeting.get('region')!r} but X-Edge-Region says {region}")
            fire(request_type="WS", name=name, response_time=(perf_counter() - start) * 1000,
                 response_length=0, response=answered, context={}, exception=None)
            name = f"WS echo [{region}]"
            for i in range(WS_MESSAGES):
                text = f"{self.number}:{i}:{uuid.uuid4().hex}"
                started = perf_counter()
                ws.send(text)
                got = ws.recv()
                fire(request_type="WS", name=name, response_time=(perf_counter() - started) * 1000,
                     response_length=len(got), response=answered, context={},
                     exception=None if got == text else AssertionError(f"echo {got!r} != {text!r}"))
        except Exception as exc:
            fire(request_type="WS", name=name, response_time=(perf_counter() - started) * 1000,
                 response_length=0, response=answered, context={}, exception=exc)
        finally:
            ws.close()
