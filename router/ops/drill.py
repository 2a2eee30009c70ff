"""A planned failover drill, the verdict part: counters in, checks and report out.

No I/O and no clock here: the runner (drill_run.py) reads /metrics and
/admin/state and hands the numbers over. Counters are cumulative, so every
figure is the difference between two readings (a Window).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

PASSED, FAILED, NOT_RUN = "passed", "failed", "could not run"
EXIT_CODES = {PASSED: 0, FAILED: 1, NOT_RUN: 2}
MOVED_ENOUGH = 0.5  # failover regions must take at least half of the region's former rate


@dataclass(frozen=True, slots=True)
class Counts:
    """One reading of /metrics: cumulative requests per answering region."""

    t: float
    requests: dict[str, float]  # region -> answered requests ("none": the router's own answers)
    errors: dict[str, float]  # region -> 5xx among them
    buckets: tuple[tuple[float, float], ...]  # request duration: (upper bound, cumulative count)


def parse_counts(text: str, t: float) -> Counts:
    requests: dict[str, float] = {}
    errors: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "edge_router_requests_total":
                r = s.labels.get("region", "none")
                requests[r] = requests.get(r, 0.0) + s.value
                if s.labels.get("code") == "5xx":
                    errors[r] = errors.get(r, 0.0) + s.value
            elif s.name == "edge_router_request_duration_seconds_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return Counts(t, requests, errors, tuple(sorted(buckets.items())))


@dataclass(frozen=True, slots=True)
class Window:
    """What happened between two readings."""

    seconds: float
    requests: dict[str, float]
    errors: dict[str, float]
    buckets: tuple[tuple[float, float], ...]

    @classmethod
    def between(cls, a: Counts, b: Counts) -> "Window":
        def diff(x: dict[str, float], y: dict[str, float]) -> dict[str, float]:
            return {k: max(0.0, y[k] - x.get(k, 0.0)) for k in y}

        before = dict(a.buckets)
        return cls(b.t - a.t, diff(a.requests, b.requests), diff(a.errors, b.errors),
                   tuple((le, max(0.0, n - before.get(le, 0.0))) for le, n in b.buckets))

    @property
    def total(self) -> float:
        return sum(self.requests.values())

    def answered(self, region: str) -> float:
        return self.requests.get(region, 0.0)

    def rate(self, regions) -> float:
        """Requests per second answered by these regions."""
        return sum(self.answered(r) for r in regions) / self.seconds if self.seconds > 0 else 0.0

    def shares(self, regions) -> dict[str, float | None]:
        """Each region's share of the requests regions answered (None: no traffic)."""
        answered = sum(self.answered(r) for r in regions)
        return {r: (round(self.answered(r) / answered, 4) if answered else None) for r in regions}

    def error_rate(self) -> float:
        return sum(self.errors.values()) / self.total if self.total else 0.0

    def quantile(self, q: float) -> float | None:
        """histogram_quantile(q) as Prometheus computes it (linear within a bucket)."""
        if not self.buckets or self.buckets[-1][1] <= 0:
            return None
        rank = q * self.buckets[-1][1]
        prev_le, prev_n = 0.0, 0.0
        for le, n in self.buckets:
            if n >= rank:
                if math.isinf(le):
                    return prev_le
                if n == prev_n:
                    return le
                return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
            prev_le, prev_n = le, n
        return prev_le


@dataclass
class Report:
    region: str
    failover: list[str]
    regions: list[str]
    over: float
    hold: float
    max_error_rate: float
    verdict: str = NOT_RUN
    reasons: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)
    windows: dict[str, Window] = field(default_factory=dict)  # before, during, hold, after

    def event(self, t: float, text: str) -> None:
        self.timeline.append({"t": round(t, 1), "event": text})

    def check(self, name: str, ok: bool | None, detail: str) -> None:
        """ok None: not checked (the drill did not get that far)."""
        self.checks.append({"check": name, "ok": ok, "detail": detail})

    def cannot_run(self, why: str) -> "Report":
        self.verdict = NOT_RUN
        self.reasons.append(why)
        return self

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_json(self) -> dict:
        w = self.windows
        return {
            "region": self.region, "failover": self.failover, "over_s": self.over, "hold_s": self.hold,
            "max_error_rate": self.max_error_rate, "verdict": self.verdict, "reasons": self.reasons,
            "checks": self.checks, "timeline": self.timeline,
            "share": {name: win.shares(self.regions) for name, win in w.items()},
            "requests": {name: {"total": int(win.total), "errors": int(sum(win.errors.values())),
                                "error_rate": round(win.error_rate(), 4), "seconds": round(win.seconds, 1),
                                "per_second": round(win.total / win.seconds, 2) if win.seconds else None}
                         for name, win in w.items()},
            "p99_ms": {name: (None if (q := win.quantile(0.99)) is None else round(q * 1000, 1))
                       for name, win in w.items()},
        }


def judge(report: Report, *, reached_zero_at: float | None, recovered_at: float | None, aborted: str = "") -> Report:
    """The verdict from the windows the runner measured (before, during, hold, after)."""
    w = report.windows
    region = report.region
    before, during, hold = w["before"], w["during"], w.get("hold")
    had_traffic = before.answered(region) > 0
    if aborted:
        report.check("no abort", False, aborted)
    if hold is None:  # aborted before the drain completed: nothing to say about the hold
        report.check("share reaches 0", None, "not reached: the drill was aborted")
        report.check("traffic moved to the failover regions", None, "not reached: the drill was aborted")
    else:
        _hold_checks(report, hold, reached_zero_at, had_traffic)
    rate = during.error_rate()
    report.check(
        "error rate", rate < report.max_error_rate,
        f"{rate:.2%} of {int(during.total)} requests failed (5xx) during the drain and hold; "
        f"limit {report.max_error_rate:.0%}",
    )
    if had_traffic:
        report.check("share comes back", recovered_at is not None,
                     f"{region} answered requests again {recovered_at:.1f}s after enable" if recovered_at is not None
                     else f"{region} answered no request after it was enabled again")
    failed = [c for c in report.checks if c["ok"] is False]
    report.verdict = FAILED if failed else PASSED
    report.reasons = [f"{c['check']}: {c['detail']}" for c in failed]
    return report


def _hold_checks(report: Report, hold: Window, reached_zero_at: float | None, had_traffic: bool) -> None:
    region, fo, before = report.region, report.failover, report.windows["before"]
    left = hold.answered(region)
    report.check(
        "share reaches 0", left == 0 and reached_zero_at is not None,
        f"{region} answered {int(left)} requests during the hold" if left else
        (f"no request reached {region} from +{reached_zero_at:.0f}s" if reached_zero_at is not None
         else f"{region} still answered requests when the drain window ended"),
    )
    if had_traffic:
        lost = before.rate([region])
        gained = hold.rate(fo) - before.rate(fo)
        report.check(
            "traffic moved to the failover regions", gained >= MOVED_ENOUGH * lost,
            f"{region} served {lost:.1f}/s before; its failover regions ({', '.join(fo)}) "
            f"took {gained:+.1f}/s during the hold",
        )
    else:
        report.check("traffic moved to the failover regions", True,
                     f"{region} had no traffic before the drill: nothing to move")


def render_text(report: Report) -> str:
    """The report for a person: timeline, shares, errors, p99, verdict."""
    data = report.to_json()
    lines = [f"failover drill of {report.region} (failover: {', '.join(report.failover) or '-'}), "
             f"drain over {report.over:g}s, hold {report.hold:g}s", "", "timeline:"]
    lines += [f"  +{e['t']:>6.1f}s  {e['event']}" for e in report.timeline]
    names = [n for n in ("before", "during", "hold", "after") if n in data["share"]]
    if names:
        lines += ["", "share of requests per region:", "  " + "region".ljust(18) + "".join(n.rjust(10) for n in names)]
        for r in report.regions:
            cells = []
            for n in names:
                v = data["share"][n][r]
                cells.append(("-" if v is None else f"{v:.1%}").rjust(10))
            lines.append("  " + r.ljust(18) + "".join(cells))
        lines += ["", "requests:"]
        for n in names:
            q = data["requests"][n]
            p99 = data["p99_ms"][n]
            lines.append(f"  {n:<7} {q['total']:>7} in {q['seconds']:>5.1f}s, {q['errors']} errors "
                         f"({q['error_rate']:.2%}), p99 {'-' if p99 is None else f'{p99:.1f} ms'}")
    if report.checks:
        lines += ["", "checks:"]
        mark = {True: "ok", False: "FAIL", None: "skip"}
        lines += [f"  [{mark[c['ok']]}] {c['check']}: {c['detail']}" for c in report.checks]
    lines += ["", f"verdict: {report.verdict.upper()}"]
    lines += [f"  {r}" for r in report.reasons if report.verdict != PASSED]
    return "\n".join(lines)
