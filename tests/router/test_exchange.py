"""Whole requests through the real listener, proxy, exchange, pool and upstream
code, in front of scripted regions (tests/router/scripted.py), as a table:

    (method, body, what each region does) -> (status and bytes to the client,
                                              attempts per region, reason)

The data plane is built as server.Router builds it; the only stand-ins are the
sockets (in-memory transports) and the event loop's clock, which the test moves
(so timeouts are covered without sleeping). The rules, from SPEC "Retries":
a request that never reached a region goes to the next candidate, whatever its
method; a sent request goes again only when idempotent, with its body still
held, within the retry budget; a POST or PATCH that reached a region is never
sent a second time (Envoy's retry_on semantics: for them only "not sent" is
retryable); the last region's own 502/503/504 is relayed when no candidate is left.
"""
from __future__ import annotations

import json

import pytest

from scripted import BLACKHOLE, BUSY, CUT, OK, REFUSE, RESET, SILENT, SLOW, SLOW_DELAY, DataPlane, parse_response

# The walk without GeoIP: the default region, then its failover list.
ORDER = ("us-east-1", "us-west-2", "eu-west-1")
READ_TIMEOUT, CONNECT_TIMEOUT = 5.0, 2.0
SMALL = b'{"amount": "10.00"}'
BIG = b"x" * 70_000  # over limits.retry_body_bytes (64 KiB): not held, so never replayable

# What a row expects to see: the status, who answered (X-Edge-Region), the body (a
# region's, or the router's JSON "error"), each region's attempts, and the reason
# counted in edge_router_failovers_total (a failover happened) or "".
Row = tuple[str, bytes, tuple[str, str, str], int, str, str, tuple[int, int, int], str]

ROWS: list[tuple[str, Row]] = [
    # -- not sent: the next candidate, for any method ---------------------------------------------
    ("GET, first region refuses", ("GET", b"", (REFUSE, OK, OK), 200, "us-west-2", "ok from us-west-2", (1, 1, 0), "refused")),
    ("POST, first region refuses", ("POST", SMALL, (REFUSE, OK, OK), 200, "us-west-2", "ok from us-west-2", (1, 1, 0), "refused")),
    ("POST, two regions refuse", ("POST", SMALL, (REFUSE, REFUSE, OK), 200, "eu-west-1", "ok from eu-west-1", (1, 1, 1), "refused")),
    ("POST, every region refuses", ("POST", SMALL, (REFUSE, REFUSE, REFUSE), 503, "none", "error:no_region", (1, 1, 1), "")),
    # -- sent, then the connection broke before any answer ------------------------------------------
    ("GET, reset before the head", ("GET", b"", (RESET, OK, OK), 200, "us-west-2", "ok from us-west-2", (1, 1, 0), "upstream_failed")),
    ("PUT held body, reset", ("PUT", SMALL, (RESET, OK, OK), 200, "us-west-2", "ok from us-west-2", (1, 1, 0), "upstream_failed")),
    ("POST, reset: never sent twice", ("POST", SMALL, (RESET, OK, OK), 502, "us-east-1", "error:upstream_failed", (1, 0, 0), "")),
    ("PATCH, reset: never sent twice", ("PATCH", SMALL, (RESET, OK, OK), 502, "us-east-1", "error:upstream_failed", (1, 0, 0), "")),
    ("PUT body too big to hold, reset", ("PUT", BIG, (RESET, OK, OK), 502, "us-east-1", "error:upstream_failed", (1, 0, 0), "")),
    ("GET, reset everywhere", ("GET", b"", (RESET, RESET, RESET), 502, "eu-west-1", "error:upstream_failed", (1, 1, 1), "")),
    # -- the region answers 503 -----------------------------------------------------------------------
    ("GET, 503 retried", ("GET", b"", (BUSY, OK, OK), 200, "us-west-2", "ok from us-west-2", (1, 1, 0), "upstream_error")),
    ("POST, 503 relayed, not retried", ("POST", SMALL, (BUSY, OK, OK), 503, "us-east-1", '{"busy":"us-east-1"}', (1, 0, 0), "")),
    ("GET, 503 everywhere: the last one's", ("GET", b"", (BUSY, BUSY, BUSY), 503, "eu-west-1", '{"busy":"eu-west-1"}', (1, 1, 1), "upstream_error")),
    # us-west-2's 503 is dropped because eu-west-1 looks alive; eu-west-1 then refuses:
    # the router answers that 503 itself, naming the region whose answer it was.
    ("GET, 503 then a refusal", ("GET", b"", (REFUSE, BUSY, REFUSE), 503, "us-west-2", "error:upstream_error", (1, 1, 1), "")),
    ("DELETE, 503 retried", ("DELETE", b"", (BUSY, OK, OK), 200, "us-west-2", "ok from us-west-2", (1, 1, 0), "upstream_error")),
    ("GET, 502 retried", ("GET", b"", ("502", OK, OK), 200, "us-west-2", "ok from us-west-2", (1, 1, 0), "upstream_error")),
    ("GET, 504 retried", ("GET", b"", ("504", OK, OK), 200, "us-west-2", "ok from us-west-2", (1, 1, 0), "upstream_error")),
    ("GET, 500 relayed: not a retry status", ("GET", b"", ("500", OK, OK), 500, "us-east-1", '{"busy":"us-east-1"}', (1, 0, 0), "")),
    ("PATCH, 502 relayed", ("PATCH", SMALL, ("502", OK, OK), 502, "us-east-1", '{"busy":"us-east-1"}', (1, 0, 0), "")),
    # -- the answer broke off after its head went to the client: nothing to retry --------------
    ("GET, closed mid-body", ("GET", b"", (CUT, OK, OK), 200, "us-east-1", "hello", (1, 0, 0), "")),
]


@pytest.fixture
def run_row():
    """(method, body, one play per region in ORDER, limits) -> the data plane and the
    client's transport after the request went in; closed when the test ends."""
    made: list[DataPlane] = []

    def run(method, body, plays, **limits):
        dp = DataPlane(dict(zip(ORDER, (tuple([p]) for p in plays))), read_timeout=f"{READ_TIMEOUT:g}s",
                       connect_timeout=f"{CONNECT_TIMEOUT:g}s", **limits)
        made.append(dp)
        return dp, dp.request(method, body)

    yield run
    for dp in made:
        dp.close()


def outcome(dp: DataPlane, wire) -> tuple[int, str, str, tuple[int, ...], str]:
    status, headers, body = parse_response(bytes(wire.out))
    if headers.get("content-type", "").startswith("application/json") and b'"error"' in body:
        shown = "error:" + json.loads(body)["error"]
    else:
        shown = body.decode()
    failovers = dp.metric("edge_router_failovers_total")
    reason = failovers[0][0]["reason"] if failovers else ""
    return status, headers.get("x-edge-region", ""), shown, tuple(dp.regions[r].tries for r in ORDER), reason


KNOWN: dict[str, str] = {}  # rows the data plane gets wrong today: strict, so a fix shows up here


@pytest.mark.parametrize("row", [
    pytest.param(r, id=name, marks=[pytest.mark.xfail(strict=True, reason=KNOWN[name])] if name in KNOWN else [])
    for name, r in ROWS])
def test_request_outcome(row, run_row):
    method, body, plays, *expected = row
    dp, wire = run_row(method, body, plays)
    assert outcome(dp, wire) == tuple(expected)
    # Whatever happened, no region saw a POST/PATCH twice.
    if method in ("POST", "PATCH"):
        assert sum(r.requests.count(method) for r in dp.regions.values()) <= 1
    assert dp.metric("edge_router_requests_in_flight") == []  # every attempt ended


def test_closed_mid_body_cuts_the_client_connection(run_row):
    dp, wire = run_row("GET", b"", (CUT, OK, OK))
    assert wire.aborted  # a short body must not look complete
    assert bytes(wire.out).endswith(b"\r\n\r\nhello")


# -- timers: the loop's clock moves only when the test says -----------------------------------------

def test_get_retried_after_the_read_timeout(run_row):
    dp, wire = run_row("GET", b"", (SILENT, OK, OK))
    dp.loop.advance(READ_TIMEOUT - 0.5)
    assert wire.out == b"" and dp.regions["us-west-2"].tries == 0  # still waiting
    assert dp.metric("edge_router_requests_in_flight") == [({"region": "us-east-1"}, 1.0)]
    dp.loop.advance(1.0)
    assert outcome(dp, wire) == (200, "us-west-2", "ok from us-west-2", (1, 1, 0), "upstream_timeout")


def test_a_slow_answer_within_the_read_timeout_is_waited_for(run_row):
    dp, wire = run_row("POST", SMALL, (SLOW, OK, OK))
    dp.loop.advance(SLOW_DELAY - 0.5)
    assert wire.out == b""
    dp.loop.advance(1.0)
    assert outcome(dp, wire) == (200, "us-east-1", "ok from us-east-1", (1, 0, 0), "")


def test_post_times_out_once_and_is_not_sent_again(run_row):
    dp, wire = run_row("POST", SMALL, (SILENT, OK, OK))
    dp.loop.advance(READ_TIMEOUT + 1)
    assert outcome(dp, wire) == (504, "us-east-1", "error:upstream_timeout", (1, 0, 0), "")


def test_connect_timeout_goes_to_the_next_region_even_for_a_post(run_row):
    dp, wire = run_row("POST", SMALL, (BLACKHOLE, OK, OK))
    dp.loop.advance(CONNECT_TIMEOUT - 0.5)
    assert wire.out == b""
    dp.loop.advance(1.0)
    assert outcome(dp, wire) == (200, "us-west-2", "ok from us-west-2", (1, 1, 0), "connect-timeout")


# -- the retry budget ------------------------------------------------------------------------------

NO_BUDGET = {"retry_budget_ratio": 0.0, "retry_budget_min": 0}


def test_budget_exhausted_503_is_relayed_not_retried(run_row):
    dp, wire = run_row("GET", b"", (BUSY, OK, OK), **NO_BUDGET)
    assert outcome(dp, wire) == (503, "us-east-1", '{"busy":"us-east-1"}', (1, 0, 0), "")


def test_budget_exhausted_reset_waits_for_a_slot_then_gives_up(run_row):
    dp, wire = run_row("GET", b"", (RESET, OK, OK), **NO_BUDGET)
    assert wire.out == b""  # queued for a retry slot, bounded by connect_timeout
    dp.loop.advance(CONNECT_TIMEOUT + 0.5)
    assert outcome(dp, wire) == (502, "us-east-1", "error:upstream_failed", (1, 0, 0), "")
    assert dp.metric("edge_router_retry_budget_exhausted_total")


def test_budget_not_needed_for_a_request_never_sent(run_row):
    dp, wire = run_row("GET", b"", (REFUSE, OK, OK), **NO_BUDGET)
    assert outcome(dp, wire) == (200, "us-west-2", "ok from us-west-2", (1, 1, 0), "refused")


def test_max_attempts_bounds_the_sent_attempts(run_row):
    dp, wire = run_row("GET", b"", (RESET, RESET, OK), max_attempts=2)
    assert outcome(dp, wire)[:4] == (502, "us-west-2", "error:upstream_failed", (1, 1, 0))


def test_a_clean_answer_leaves_the_connection_for_the_next_request(run_row):
    dp, first = run_row("GET", b"", (OK, OK, OK))
    second = dp.request("POST", SMALL)
    assert parse_response(bytes(first.out))[0] == parse_response(bytes(second.out))[0] == 200
    home = dp.regions["us-east-1"]
    assert home.requests == ["GET", "POST"] and len(home.wires) == 1  # one connection, kept alive


def test_a_full_pool_waits_pool_wait_then_takes_the_next_region(run_row):
    """Busy is not broken: after limits.pool_wait the request goes on (not sent,
    so even a POST)."""
    dp, first = run_row("GET", b"", (SILENT, OK, OK), pool_size=1, pool_wait="1s")
    second = dp.request("POST", SMALL)  # the only us-east-1 connection is busy with the first
    dp.loop.advance(0.5)
    assert second.out == b""
    dp.loop.advance(1.0)
    status, headers, body = parse_response(bytes(second.out))
    assert (status, headers["x-edge-region"], body) == (200, "us-west-2", b"ok from us-west-2")
    assert dp.regions["us-east-1"].requests == ["GET"] and first.out == b""
    assert dp.metric("edge_router_failovers_total") == [
        ({"from_region": "us-east-1", "to_region": "us-west-2", "reason": "pool"}, 1.0)]

