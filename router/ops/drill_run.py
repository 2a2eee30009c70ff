"""`edge-router drill`, the run: preflight, drain, watch, hold, enable, recover.

Talks to a running router's admin API (urllib: one request a second needs no
event loop), prints a progress line a second on stderr, hands the readings to
drill.judge and prints the report. Ctrl-C or SIGTERM at any point enables the
region again before exiting.
"""
from __future__ import annotations

import json
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import Callable, TextIO

from ..config import parse_duration
from .drill import NOT_RUN, Counts, Report, Window, judge, parse_counts, render_text

ABORT_WINDOW = 5.0  # seconds of traffic the abort check looks at ...
ABORT_MIN_REQUESTS = 20  # ... when it holds at least this many requests
GRACE = 1.0  # requests already sent when the drain completes may still finish


class AdminError(Exception):
    pass


class Admin:
    def __init__(self, base: str, token: str | None, timeout: float = 5.0) -> None:
        self.base = base if "://" in base else f"http://{base}"
        self.base = self.base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if method != "GET" and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise AdminError(f"cannot reach the admin API at {self.base}: {getattr(exc, 'reason', exc)}") from None

    def state(self) -> dict:
        status, body = self._call("GET", "/admin/state")
        if status != 200:
            raise AdminError(f"GET /admin/state answered {status}")
        return json.loads(body)

    def metrics(self) -> str:
        status, body = self._call("GET", "/metrics")
        if status != 200:
            raise AdminError(f"GET /metrics answered {status}")
        return body.decode()

    def post(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        status, raw = self._call("POST", path, body)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, {"detail": raw.decode(errors="replace")}


class Drill:
    def __init__(self, admin: Admin, region: str, *, over: float, hold: float, settle: float,
                 max_error_rate: float, recover_timeout: float, progress: TextIO,
                 now: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.admin = admin
        self.region = region
        self.over = over
        self.hold = hold
        self.settle = settle
        self.recover_timeout = recover_timeout
        self.max_error_rate = max_error_rate
        self.progress = progress
        self.now = now
        self.sleep = sleep
        self.t0 = now()
        self.drained = False  # the region needs enabling again
        self.readings: list[Counts] = []
        self.report = Report(region, [], [], over, hold, max_error_rate)

    # -- readings ----------------------------------------------------------------
    def read(self) -> Counts:
        c = parse_counts(self.admin.metrics(), self.now() - self.t0)
        self.readings.append(c)
        return c

    def tick(self, phase: str, until: float) -> Counts:
        """Wait for the next whole second (not past `until`), read, print a progress line."""
        self.sleep(max(0.0, min(1.0, until - (self.now() - self.t0))))
        c = self.read()
        last = Window.between(self.readings[-2], c) if len(self.readings) > 1 else None
        st: dict = next((r for r in self.admin.state()["regions"] if r["id"] == self.region), {})
        admits = st.get("effective_weight", 0) / st["weight"] if st.get("weight") else 0.0
        line = f"[+{c.t:6.1f}s] {phase:<9} {self.region}: "
        line += "disabled" if st.get("disabled") else f"admits {admits:.0%}"
        if last is not None and last.total:
            shares = last.shares(self.report.regions)
            line += f" | share(1s) " + " ".join(
                f"{r} {'-' if shares[r] is None else f'{shares[r]:.0%}'}" for r in self.report.regions)
            line += f" | {last.total / max(last.seconds, 1e-9):.0f} req/s, errors {last.error_rate():.1%}"
        else:
            line += " | no traffic in the last second"
        print(line, file=self.progress, flush=True)
        return c

    def recent(self, seconds: float, since: Counts) -> Window:
        """The last `seconds` of readings, not reaching back before `since`."""
        last = self.readings[-1]
        first = next((c for c in self.readings if c.t >= since.t and last.t - c.t <= seconds), since)
        return Window.between(first, last)

    # -- the drill -----------------------------------------------------------------
    def preflight(self) -> str:
        """"" when the drill can run, else why not."""
        state = self.admin.state()
        regions = {r["id"]: r for r in state["regions"]}
        self.report.regions = list(regions)
        me = regions.get(self.region)
        if me is None:
            return f"unknown region {self.region!r} (the router has: {', '.join(regions)})"
        problems = []
        if me["healthy"] is not True:
            problems.append("not healthy")
        if me["breaker"] != "closed":
            problems.append(f"breaker {me['breaker']}")
        if me["disabled"]:
            problems.append("disabled")
        if me["draining"]:
            problems.append("already draining")
        if problems:
            return f"{self.region} is {', '.join(problems)}: a drill needs a healthy router to start from"
        self.report.failover = fo = list(me.get("failover", []))
        ready = [r for r in fo if regions[r]["healthy"] is True and regions[r]["breaker"] != "open"
                 and not regions[r]["disabled"] and not regions[r]["draining"]]
        if not ready:
            return f"no failover region of {self.region} is available ({', '.join(fo) or 'none configured'})"
        if not self.admin.token:
            return "no admin token: set the token's environment variable (see --token-env)"
        self.report.event(self.now() - self.t0, f"preflight ok: {self.region} healthy, failover ready: {', '.join(ready)}")
        return ""

    def _post(self, action: str, body: dict | None = None) -> str:
        status, answer = self.admin.post(f"/admin/regions/{self.region}/{action}", body)
        if status >= 300:
            return f"{action} refused: HTTP {status}: {answer.get('detail', answer)}"
        return ""

    def restore(self) -> None:
        if self.drained:
            problem = self._post("enable")
            self.drained = bool(problem)
            self.report.event(self.now() - self.t0, problem or f"{self.region} enabled again")
            if problem:
                print(f"edge-router drill: could not enable {self.region} again: {problem}", file=sys.stderr)

    def run(self) -> Report:
        rep = self.report
        why = self.preflight()
        if why:
            return rep.cannot_run(why)
        # before: the traffic as it is
        start = self.read()
        c = start
        while c.t - start.t < self.settle - 0.05:
            c = self.tick("baseline", start.t + self.settle)
        rep.windows["before"] = before = Window.between(start, c)
        if before.total == 0:
            return rep.cannot_run(f"no traffic through the router during the {self.settle:g}s baseline: "
                                  "a drill needs traffic to move")
        if before.error_rate() >= self.max_error_rate:
            return rep.cannot_run(f"{before.error_rate():.1%} of the requests already fail (5xx) before the drill: "
                                  "a drill needs a healthy router to start from")
        rep.event(c.t, f"baseline: {before.total / before.seconds:.1f} req/s, "
                       f"{self.region} {before.shares(rep.regions)[self.region] or 0:.1%} of them")
        problem = self._post("drain", {"over": f"{self.over:g}s"})
        if problem:
            return rep.cannot_run(problem)
        self.drained = True
        drain_start = c
        rep.event(c.t, f"drain of {self.region} started over {self.over:g}s")
        aborted = ""
        reached_zero_at: float | None = None
        hold_start: Counts | None = None
        end = drain_start.t + self.over + GRACE + self.hold
        while c.t < end - 0.05:
            in_drain = c.t < drain_start.t + self.over + GRACE
            c = self.tick("draining" if in_drain else "holding", end)
            prev = self.readings[-2]
            if hold_start is None and c.t >= drain_start.t + self.over + GRACE:
                hold_start = c
                rep.event(c.t, f"drain complete; holding {self.hold:g}s")
            if reached_zero_at is None and c.t >= drain_start.t + self.over \
                    and Window.between(prev, c).answered(self.region) == 0:
                reached_zero_at = c.t - drain_start.t
                rep.event(c.t, f"{self.region}'s share reached 0")
            recent = self.recent(ABORT_WINDOW, since=drain_start)
            if recent.total >= ABORT_MIN_REQUESTS and recent.error_rate() >= self.max_error_rate:
                aborted = (f"aborted at +{c.t:.0f}s: {recent.error_rate():.1%} of the last "
                           f"{int(recent.total)} requests failed (limit {self.max_error_rate:.0%})")
                rep.event(c.t, aborted)
                break
        rep.windows["during"] = Window.between(drain_start, c)
        if hold_start is not None:
            rep.windows["hold"] = Window.between(hold_start, c)
        self.restore()
        if self.drained:
            return rep.cannot_run("the region could not be enabled again: enable it by hand")
        enabled = self.read()
        recovered_at: float | None = None
        deadline = enabled.t + self.recover_timeout
        c = enabled
        while before.answered(self.region) > 0 and c.t < deadline - 0.05:
            c = self.tick("enabled", deadline)
            if Window.between(self.readings[-2], c).answered(self.region) > 0:
                recovered_at = c.t - enabled.t
                rep.event(c.t, f"{self.region} answers requests again")
                break
        after_start = c
        while c.t - after_start.t < self.settle - 0.05:
            c = self.tick("after", after_start.t + self.settle)
        rep.windows["after"] = Window.between(after_start, c)
        judge(rep, reached_zero_at=reached_zero_at, recovered_at=recovered_at, aborted=aborted)
        rep.event(c.t, f"verdict: {rep.verdict}")
        return rep


def _on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def drill_command(args) -> int:
    """The CLI entry: exit 0 passed, 1 failed, 2 could not run (or interrupted)."""
    import os

    try:
        over, hold, settle, recover = (parse_duration(v) for v in (args.over, args.hold, args.settle, args.recover_timeout))
    except ValueError as exc:
        print(f"edge-router drill: {exc}", file=sys.stderr)
        return 2
    if not 0 <= args.max_error_rate <= 1:
        print("edge-router drill: --max-error-rate must be between 0 and 1 (0.05 = 5 %)", file=sys.stderr)
        return 2
    admin = Admin(args.admin, os.environ.get(args.token_env) or None)
    drill = Drill(admin, args.region, over=over, hold=hold, settle=settle, max_error_rate=args.max_error_rate,
                  recover_timeout=recover, progress=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        report = drill.run()
    except KeyboardInterrupt:
        drill.restore()
        report = drill.report.cannot_run("interrupted" + (f"; {args.region} enabled again" if not drill.drained else
                                                          f"; {args.region} could NOT be enabled again"))
    except AdminError as exc:
        try:
            drill.restore()
        except AdminError:
            pass
        report = drill.report.cannot_run(str(exc) + ("; the region may still be draining: enable it by hand"
                                                     if drill.drained else ""))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render_text(report))
    if report.verdict == NOT_RUN:
        print(f"edge-router drill: could not run: {'; '.join(report.reasons)}", file=sys.stderr)
    return report.exit_code
