"""Bytes in, bytes out: the client-side protocol (router/listener.py) refuses bad
heads before any region, parses good ones, queues pipelined requests and
answers Expect: 100-continue. No sockets."""
from __future__ import annotations

import asyncio

import pytest

from router.clock import FakeClock
from router.config import LimitsConfig
from router.listener import ClientConnection
from wire_rig import MemTransport


# The wire rig's in-memory transport (tests/router/wire_rig.py).
FakeTransport = MemTransport


class FakeProxy:
    """Just what the listener needs; `handle` records instead of forwarding."""

    def __init__(self, loop, **limits):
        self.loop = loop
        self.clock = FakeClock()
        self.limits = LimitsConfig(**limits)
        self.connections = set()
        self.handled = []
        self.rejections = []
        self.max_connections = self.limits.max_connections or 1000
        self.refused = 0

    def refuse_connection(self):
        self.refused += 1

    def count_rejection(self, status):
        self.rejections.append(status)

    def handle(self, client, req):
        self.handled.append(req)


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def feed(loop, data: bytes, **limits):
    proxy = FakeProxy(loop, **limits)
    conn = ClientConnection(proxy)
    t = FakeTransport()
    conn.connection_made(t)
    conn.data_received(data)
    loop.run_until_complete(asyncio.sleep(0))
    return proxy, conn, t


@pytest.mark.parametrize(
    "data,status",
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX(A): v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),  # obs-fold
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 300 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n", 413),
    ],
)
def test_refused_before_any_region(loop, data, status):
    proxy, conn, t = feed(loop, data, max_header_bytes=256, max_body_bytes=100)
    assert bytes(t.out).startswith(b"HTTP/1.1 %d " % status), bytes(t.out)
    assert b'"error"' in t.out and t.closed
    assert proxy.handled == [] and proxy.rejections == [status]


def test_parses_head_and_strips_hop_by_hop(loop):
    proxy, conn, t = feed(
        loop,
        b"GET /a?b=1 HTTP/1.1\r\nHost: api\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
        b"Keep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Request-Id: r1\r\nX-App: v\r\n\r\n",
    )
    [req] = proxy.handled
    assert req.method == "GET" and req.url == b"/a?b=1" and req.host == b"api"
    assert req.xff == b"1.2.3.4" and req.request_id == b"r1"
    assert b"X-App: v\r\n" in req.headers
    names = {h.split(b":")[0].lower() for h in req.headers}
    assert not names & {b"connection", b"keep-alive", b"te", b"host"}
    assert b"x-hop" in req.conn_tokens  # dropped when the upstream head is built
    assert req.body.done and req.complete


def test_pipelined_requests_are_queued_in_order(loop):
    proxy = FakeProxy(loop)
    conn = ClientConnection(proxy)
    t = FakeTransport()
    conn.connection_made(t)
    conn.exchange = object()  # a response is in progress
    conn.data_received(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [r.url for r in conn.queue] == [b"/1"]  # the next one waits as bytes
    assert conn._unread == b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    assert t.paused  # no more reading until the queue drains


def test_expect_continue_answered_by_router(loop):
    proxy, conn, t = feed(loop, b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert bytes(t.out) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert proxy.handled == []  # a small body is read whole first
    conn.data_received(b"hello")
    [req] = proxy.handled
    assert req.body.done and all(not h.lower().startswith(b"expect:") for h in req.headers)
