"""The header-name tables and the request-line fast path (router/http1.py),
byte in, answer out; and the request ids (router/exchange.py)."""
from __future__ import annotations

import re

import pytest

from router import listener, upstream
from router.exchange import RequestIds
from router.http1 import ORDINARY, exact_case_table, header_kind, request_version


@pytest.mark.parametrize("module", [listener, upstream])
def test_every_exact_name_has_the_kind_of_its_lower_case(module):
    for name, kind in module._EXACT.items():
        assert kind == module._SPECIAL.get(name.lower(), ORDINARY), name


@pytest.mark.parametrize("name,kind", [
    (b"Host", listener._HOST), (b"host", listener._HOST), (b"HOST", listener._HOST), (b"hOsT", listener._HOST),
    (b"X-Forwarded-For", listener._XFF), (b"x-FORWARDED-for", listener._XFF),
    (b"Content-Length", listener._CONTENT_LENGTH), (b"CONTENT-LENGTH", listener._CONTENT_LENGTH),
    (b"Transfer-Encoding", listener._TRANSFER_ENCODING), (b"TRANSFER-encoding", listener._TRANSFER_ENCODING),
    (b"X-Request-ID", listener._REQUEST_ID), (b"Proxy-Connection", listener._DROP), (b"TE", listener._DROP),
    (b"User-Agent", ORDINARY), (b"USER-AGENT", ORDINARY), (b"X-Custom", ORDINARY), (b"Hosts", ORDINARY),
])
def test_request_header_kinds_in_any_case(name, kind):
    assert header_kind(listener._EXACT, listener._SPECIAL, name) == kind


@pytest.mark.parametrize("name,kind", [
    (b"Content-Length", upstream._LENGTH), (b"content-LENGTH", upstream._LENGTH),
    (b"Transfer-Encoding", upstream._CHUNKED), (b"Connection", upstream._CONNECTION),
    (b"KEEP-ALIVE", upstream._KEEP_ALIVE), (b"X-Edge-Region", upstream._DROP), (b"x-request-id", upstream._DROP),
    (b"Server", ORDINARY), (b"SERVER", ORDINARY), (b"Content-Lengths", ORDINARY),
])
def test_response_header_kinds_in_any_case(name, kind):
    assert header_kind(upstream._EXACT, upstream._SPECIAL, name) == kind


def test_exact_case_table_spellings():
    table = exact_case_table({b"x-forwarded-for": 1}, (b"user-agent",))
    assert table == {b"x-forwarded-for": 1, b"X-Forwarded-For": 1, b"user-agent": ORDINARY, b"User-Agent": ORDINARY}


@pytest.mark.parametrize("head,method,target,version", [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET", b"/", "1.1"),
    (b"POST /x?y HTTP/1.1\r\n\r\n", "POST", b"/x?y", "1.1"),
    (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", "GET", b"/", None),  # the parser says
    (b"GET / HTTP/1.1\nHost: a\n\n", "GET", b"/", None),  # bare LF: the parser says
    (b"\r\nGET / HTTP/1.1\r\n\r\n", "GET", b"/", None),  # a leading empty line: the parser says
    (b"\r\n\r\nGET /ab HTTP/1.0\r\nX: HTTP/1.1\r\n\r\n", "GET", b"/ab", None),
    (b"GET / HTTP/2.0\r\n\r\n", "GET", b"/", None),
    (b"", "GET", b"/", None),  # the head came inside a body's read: the parser says
])
def test_request_version_fast_path(head, method, target, version):
    assert request_version(head, method, target) == version


@pytest.mark.parametrize("bounds", [(), (1.0,), (0.001, 0.0025, 0.005, 0.01, 1.0, 10.0)])
@pytest.mark.parametrize("value", [0.0, 0.001, 0.002, 0.0025, 0.5, 1.0, 9.9, 10.0, 11.0, -1.0])
def test_bucket_of_is_bisect_left(bounds, value):
    from bisect import bisect_left

    from router.metrics import bucket_of

    assert bucket_of(bounds, value) == bisect_left(bounds, value)


def test_request_ids_are_32_hex_digits_and_unique():
    ids = RequestIds()
    seen = [ids.next() for _ in range(1000)]  # several batches
    assert all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in seen)
    assert len(set(seen)) == len(seen)


@pytest.mark.parametrize("target,sent", [
    (b"/api/v1?x=1", b"/api/v1?x=1"),
    (b"*", b"*"),
    (b"http://api.example.com/v1/x?y=2", b"/v1/x?y=2"),
    (b"https://api.example.com", b"/"),
    (b"HTTP://api.example.com:8080/p", b"/p"),
])
def test_origin_form(target, sent):
    from router.http1 import origin_form

    assert origin_form(target) == sent


@pytest.mark.parametrize("rid,ok", [
    (b"abc-123_x.y:z", True), (b"a" * 200, True), (b"a" * 201, False), (b"", False),
    (b"abc def", False), (b"abc\r\nX-Evil: 1", False), (b"caf\xc3\xa9", False), (b"a/b", False),
])
def test_valid_request_id(rid, ok):
    from router.http1 import valid_request_id

    assert valid_request_id(rid) is ok
