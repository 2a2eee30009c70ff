"""The drill's verdict (router/ops/drill.py): metrics text in, checks and report out."""
from __future__ import annotations

import math

import pytest

from router.ops.drill import FAILED, PASSED, Counts, Report, Window, judge, parse_counts, render_text

REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]


def metrics_text(requests: dict[tuple[str, str], int], buckets: dict[str, int] | None = None) -> str:
    lines = ["# TYPE edge_router_requests_total counter"]
    for (region, code), n in requests.items():
        lines.append(f'edge_router_requests_total{{code="{code}",region="{region}",strategy="geographic"}} {n}')
    if buckets:
        lines.append("# TYPE edge_router_request_duration_seconds histogram")
        for region in ("us-east-1", "eu-west-1"):  # summed over regions
            for le, n in buckets.items():
                lines.append(f'edge_router_request_duration_seconds_bucket{{le="{le}",region="{region}"}} {n}')
    return "\n".join(lines) + "\n"


def counts(t: float, **per_region: tuple[int, int]) -> Counts:
    """region=(answered, of which 5xx)"""
    return Counts(t, {r.replace("_", "-"): float(a) for r, (a, e) in per_region.items()},
                  {r.replace("_", "-"): float(e) for r, (a, e) in per_region.items()}, ())


def test_parse_counts_sums_codes_and_strategies():
    c = parse_counts(metrics_text({("us-east-1", "2xx"): 90, ("us-east-1", "5xx"): 10, ("none", "5xx"): 3},
                                  {"0.01": 5, "0.1": 8, "+Inf": 10}), t=3.0)
    assert c.requests == {"us-east-1": 100.0, "none": 3.0}
    assert c.errors == {"us-east-1": 10.0, "none": 3.0}
    assert c.buckets == ((0.01, 10.0), (0.1, 16.0), (math.inf, 20.0))


def test_window_rates_shares_errors():
    w = Window.between(counts(0, us_east_1=(100, 0), eu_west_1=(50, 0)),
                       counts(10, us_east_1=(160, 3), eu_west_1=(90, 0), us_west_2=(0, 0)))
    assert w.total == 100 and w.rate(["us-east-1"]) == 6.0
    assert w.shares(REGIONS) == {"us-east-1": 0.6, "us-west-2": 0.0, "eu-west-1": 0.4}
    assert w.error_rate() == 0.03
    assert Window.between(counts(0), counts(1)).shares(REGIONS)["us-east-1"] is None


def test_quantile_like_histogram_quantile():
    w = Window(10, {}, {}, ((0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (math.inf, 100.0)))
    assert w.quantile(0.5) == 0.01
    assert w.quantile(0.99) == pytest.approx(0.1 + 0.9 * 0.9)
    assert Window(10, {}, {}, ((0.1, 0.0), (math.inf, 0.0))).quantile(0.99) is None
    assert Window(10, {}, {}, ((0.1, 0.0), (math.inf, 5.0))).quantile(0.99) == 0.1  # all above the top bound


def report(before, during, hold, after) -> Report:
    r = Report("us-east-1", ["us-west-2", "eu-west-1"], REGIONS, over=30, hold=60, max_error_rate=0.05)
    r.windows = {"before": before, "during": during, "hold": hold, "after": after}
    return r


def w(seconds: float, **per_region) -> Window:
    return Window.between(counts(0), counts(seconds, **per_region))


GOOD = dict(
    before=w(10, us_east_1=(600, 0), eu_west_1=(400, 0)),
    during=w(90, us_east_1=(900, 0), us_west_2=(4000, 10), eu_west_1=(4100, 0)),
    hold=w(60, us_west_2=(3500, 5), eu_west_1=(2500, 0)),
    after=w(10, us_east_1=(590, 0), eu_west_1=(410, 0)),
)


def test_a_good_drill_passes():
    r = judge(report(**GOOD), reached_zero_at=31.0, recovered_at=1.2)
    assert r.verdict == PASSED and r.exit_code == 0 and r.reasons == []
    assert [c["check"] for c in r.checks] == [
        "share reaches 0", "traffic moved to the failover regions", "error rate", "share comes back"]
    data = r.to_json()
    assert data["share"]["hold"]["us-east-1"] == 0 and data["requests"]["during"]["errors"] == 10
    text = render_text(r)
    assert "verdict: PASSED" in text and "us-east-1" in text and "[ok] error rate" in text


@pytest.mark.parametrize("change, failed_check", [
    ({"hold": w(60, us_east_1=(3, 0), us_west_2=(3500, 0), eu_west_1=(2500, 0))}, "share reaches 0"),
    ({"during": w(90, us_east_1=(900, 0), us_west_2=(4000, 900), eu_west_1=(4100, 0))}, "error rate"),
    # the region's 60/s went nowhere near its failover regions (they gained nothing)
    ({"hold": w(60, eu_west_1=(2400, 0), us_west_2=(0, 0))}, "traffic moved to the failover regions"),
])
def test_a_bad_drill_fails_naming_the_check(change, failed_check):
    r = judge(report(**{**GOOD, **change}), reached_zero_at=31.0, recovered_at=1.0)
    assert r.verdict == FAILED and r.exit_code == 1
    assert [c["check"] for c in r.checks if not c["ok"]] == [failed_check]
    assert r.reasons[0].startswith(failed_check)


def test_no_recovery_and_abort_fail():
    r = judge(report(**GOOD), reached_zero_at=31.0, recovered_at=None, aborted="aborted at +5s: errors")
    assert r.verdict == FAILED
    assert {c["check"] for c in r.checks if not c["ok"]} == {"no abort", "share comes back"}


def test_aborted_before_the_hold_skips_the_hold_checks():
    windows = {k: v for k, v in GOOD.items() if k != "hold"}
    windows["during"] = w(3, us_east_1=(100, 0), us_west_2=(40, 30))
    r = report(**GOOD)
    r.windows = windows
    judge(r, reached_zero_at=None, recovered_at=1.0, aborted="aborted at +3s: 21% failed")
    assert r.verdict == FAILED
    assert [(c["check"], c["ok"]) for c in r.checks] == [
        ("no abort", False), ("share reaches 0", None), ("traffic moved to the failover regions", None),
        ("error rate", False), ("share comes back", True)]
    text = render_text(r)
    assert "[skip] share reaches 0" in text and "hold" not in text.split("share of requests per region:")[1].split("\n")[1]
    assert "hold" not in r.to_json()["share"]


def test_a_region_without_traffic_has_nothing_to_move():
    quiet = dict(GOOD, before=w(10, eu_west_1=(400, 0)), hold=w(60, eu_west_1=(2400, 0)))
    r = judge(report(**quiet), reached_zero_at=30.0, recovered_at=None)
    assert r.verdict == PASSED
    assert "nothing to move" in r.checks[1]["detail"] and len(r.checks) == 3


def test_could_not_run():
    r = Report("x", [], [], 1, 1, 0.05).cannot_run("unknown region 'x'")
    assert r.exit_code == 2 and "verdict: COULD NOT RUN" in render_text(r)
