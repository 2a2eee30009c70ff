"""Process log formats, timestamps, worker names, the breaker's reasons and probe errors in words."""
from __future__ import annotations

import io
import json
import logging
import re
import ssl
import tomllib
from types import SimpleNamespace

import aiohttp
import pytest

from router import logs
from router.breaker import CircuitBreaker
from router.config import BreakerConfig, ConfigError, parse_config
from router.prober import describe_probe_error

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def captured():
    """setup_logging into a buffer; the process name and the loggers as they were
    restored afterwards (other tests' caplog needs propagation to the root)."""
    buf = io.StringIO()
    names = ("edge_router", "edge_router.audit", "aiohttp", "asyncio")
    saved = {n: (lg.handlers[:], lg.level, lg.propagate) for n in names for lg in [logging.getLogger(n)]}

    def setup(fmt):
        logs.setup_logging("debug", stream=buf, fmt=fmt)
        return buf

    yield setup
    logs.set_process_name(None)
    # As they were: other tests read records through propagation (caplog).
    for n, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


def test_iso_time_is_utc_with_milliseconds():
    assert logs.iso_time(0.5) == "1970-01-01T00:00:00.500Z"
    assert logs.iso_time(1764442721.8535) == "2025-11-29T18:58:41.853Z"
    assert logs.iso_time(1764442722.0) == "2025-11-29T18:58:42.000Z"  # the cached second moves on


def test_text_lines(captured):
    buf = captured("text")
    logging.getLogger("edge_router.state").warning("region %s is now UNHEALTHY", "eu-west-1")
    logs.set_process_name("worker 1")
    logging.getLogger("edge_router.server").info("stopped")
    first, second = buf.getvalue().splitlines()
    assert re.fullmatch(ISO + r" WARNING edge_router\.state: region eu-west-1 is now UNHEALTHY", first)
    assert re.fullmatch(ISO + r" INFO edge_router\.server \[worker 1\]: stopped", second)


def test_a_malformed_request_to_the_admin_listener_is_info_not_an_error(captured):
    """aiohttp logs a request it cannot parse as ERROR with a traceback; it is the
    client's fault, so it is one INFO line saying what was wrong."""
    from aiohttp.http_exceptions import BadHttpMessage

    buf = captured("json")
    try:
        raise BadHttpMessage("Invalid character in Content-Length")
    except BadHttpMessage:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "127.0.0.1")
    try:
        raise ValueError("a handler bug")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "127.0.0.1")
    bad, bug = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert bad["level"] == "info" and "exception" not in bad
    assert bad["message"] == ("Error handling request from 127.0.0.1: 400, message:"
                              " Invalid character in Content-Length")
    assert bug["level"] == "error" and "ValueError: a handler bug" in bug["exception"]


def test_json_lines_every_one_an_object(captured):
    buf = captured("json")
    logging.getLogger("edge_router.prober").info("probe %s failed: %s", "eu-west-1", "connect refused")
    logs.set_process_name("worker 0")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("edge_router.exchange").exception("internal error")
    logging.getLogger("edge_router.audit").info('{"audit":true,"action":"disable","args":{"region":"a"}}')
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]  # every line parses
    assert len(lines) == 3
    probe, error, audit = lines
    assert re.fullmatch(ISO, probe["time"])
    assert probe == {"time": probe["time"], "level": "info", "logger": "edge_router.prober",
                     "message": "probe eu-west-1 failed: connect refused"}
    assert error["level"] == "error" and error["process"] == "worker 0" and error["pid"] > 0
    assert "ValueError: boom" in error["exception"]
    assert audit["audit"] is True and audit["action"] == "disable" and audit["level"] == "info"
    assert audit["logger"] == "edge_router.audit" and audit["process"] == "worker 0"


def test_text_format_keeps_audit_lines_json(captured):
    buf = captured("text")
    logging.getLogger("edge_router.audit").info('{"audit":true,"action":"enable"}')
    line = json.loads(buf.getvalue())
    assert set(line) == {"time", "audit", "action"} and re.fullmatch(ISO, line["time"])


def test_log_format_is_validated():
    base = 'default_region = "a"\n[[regions]]\nid = "a"\napi = "http://127.0.0.1:1"\nhealth = "http://127.0.0.1:1/h"\n'
    assert parse_config(tomllib.loads(base + '[log]\nformat = "json"\n')).log.format == "json"
    assert parse_config(tomllib.loads(base)).log.format == "text"
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(base + '[log]\nformat = "xml"\n'))
    assert any(p.startswith("log.format") for p in info.value.problems), info.value.problems


def test_breaker_says_why_it_opened_and_closed():
    cfg = BreakerConfig(consecutive_failures=3, open_for=10.0, max_open_for=40.0, failure_ratio=0.5,
                        window=10.0, min_requests=4, half_open_requests=1)
    b = CircuitBreaker(cfg)
    for t in (0.0, 0.1, 0.2):
        b.on_failure(t)
    assert b.state(0.3) == "open" and b.why == "3 consecutive failures"
    assert b.state(10.3) == "half-open" and "10s elapsed" in b.why
    b.allow(10.3)
    b.on_failure(10.4)
    assert b.why == "a half-open trial request failed" and b.open_for == 20.0
    b.state(30.5)
    b.allow(30.5)
    b.on_success(30.6)
    assert b.state(30.6) == "closed" and b.why == "1 trial requests succeeded"
    r = CircuitBreaker(cfg)
    for t, ok in ((40.0, False), (40.1, True), (40.2, False), (40.3, True), (40.4, False), (40.5, True),
                  (40.6, False)):
        (r.on_success if ok else r.on_failure)(t)
    assert r.state(40.7) == "open"
    assert r.why == "3 of 5 requests failed in the last 10s (60% >= 50%)"


def _key(host, port):
    return SimpleNamespace(host=host, port=port, ssl=True, is_ssl=True)


URL = "https://health-eu-west-1.finnexusai.com/api/v1/health"


@pytest.mark.parametrize("exc, words", [
    (aiohttp.ClientConnectorError(_key("health-eu-west-1.finnexusai.com", 443), ConnectionRefusedError(111, "Connection refused")),
     "connect refused to health-eu-west-1.finnexusai.com:443"),
    (aiohttp.ClientConnectorError(_key("h", 443), OSError(113, "No route to host")),
     "cannot connect to health-eu-west-1.finnexusai.com:443: No route to host"),
    (aiohttp.ClientConnectorDNSError(_key("h", 443), OSError(-2, "Name or service not known")),
     "DNS lookup failed for health-eu-west-1.finnexusai.com: Name or service not known"),
    (aiohttp.ServerDisconnectedError(),
     "health-eu-west-1.finnexusai.com:443 closed the connection without an answer"),
    (ConnectionResetError(104, "Connection reset by peer"),
     "connection to health-eu-west-1.finnexusai.com:443 failed: Connection reset by peer"),
])
def test_probe_errors_in_words(exc, words):
    assert describe_probe_error(exc, URL) == words


def test_probe_certificate_error_in_words():
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "self-signed certificate"
    exc = aiohttp.ClientConnectorCertificateError(_key("h", 443), cert)
    got = describe_probe_error(exc, URL)
    assert got == "TLS certificate of health-eu-west-1.finnexusai.com:443 did not verify: self-signed certificate"
    assert "SSLContext" not in got and "object at" not in got


def test_country_header_switch_is_a_checked_boolean():
    base = 'default_region = "a"\n[[regions]]\nid = "a"\napi = "http://127.0.0.1:1"\nhealth = "http://127.0.0.1:1/h"\n'
    assert parse_config(tomllib.loads(base)).geo.country_header is False
    assert parse_config(tomllib.loads(base + '[geo]\ncountry_header = true\n')).geo.country_header is True
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(base + '[geo]\ncountry_header = "yes"\n'))
    assert any(p.startswith("geo.country_header") for p in info.value.problems), info.value.problems


def test_library_warnings_share_the_format(captured):
    buf = captured("json")
    logging.getLogger("aiohttp.server").error("Error handling request")
    logging.getLogger("asyncio").warning("Task exception was never retrieved")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(x["logger"], x["level"]) for x in lines] == [("aiohttp.server", "error"), ("asyncio", "warning")]


def test_route_line_names_each_passed_over_region_once(caplog):
    """A connect failure's detail already starts with the region id: the DEBUG line
    does not say it twice."""
    ex = SimpleNamespace(
        req=SimpleNamespace(method="GET", url=b"/api/v1/ws"), request_id=b"abc", client_ip="81.2.69.142",
        country="GB", proxy=SimpleNamespace(store=SimpleNamespace(strategy="geographic")),
        order=["eu-west-1", "us-east-1", "us-west-2"], attempts=1,
        skipped=[("eu-west-1", "eu-west-1 127.0.0.1:40935: [Errno 111] Connection refused"),
                 ("ap-southeast-1", "ap-southeast-1: TLS handshake failed: EOF"), ("us-west-2", "disabled")],
    )
    with caplog.at_level(logging.DEBUG, logger="edge_router.routing"):
        logs.log_route(ex, "us-east-1", 101)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "edge_router.routing"]
    assert ("skipped=[eu-west-1 127.0.0.1:40935: [Errno 111] Connection refused, "
            "ap-southeast-1: TLS handshake failed: EOF, us-west-2 disabled]") in line, line
    assert line.endswith("-> us-east-1 status=101 attempts=1")
