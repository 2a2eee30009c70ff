"""Bytes in, bytes out: the client-side protocol and the wire helpers, no sockets."""
from __future__ import annotations

import asyncio
import ipaddress

import pytest

from router.body import PENDING_HIGH, RequestBody
from router.client_ip import TrustedProxies, client_address, parse_ip
from router.clock import FakeClock
from router.config import LimitsConfig
from router.http1 import encode_chunk, error_response, status_class
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


class Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b


class Source:
    def __init__(self):
        self.paused = False

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False


def test_body_held_for_replay_while_small():
    body = RequestBody(Source(), chunked=False, expected=6, hold_limit=100)
    body.feed(b"abc")
    s1 = Sink()
    body.attach(s1)
    body.feed(b"def")
    body.finish()
    assert bytes(s1.data) == b"abcdef" and body.replayable
    body.detach()
    s2 = Sink()
    body.attach(s2)  # a retry to another region gets the whole body again
    assert bytes(s2.data) == b"abcdef"


def test_body_streams_and_stops_holding_when_large():
    src = Source()
    body = RequestBody(src, chunked=True, expected=None, hold_limit=4)
    s = Sink()
    body.attach(s)
    body.feed(b"abc")
    body.feed(b"defgh")
    body.finish()
    assert not body.replayable
    assert bytes(s.data) == encode_chunk(b"abc") + encode_chunk(b"defgh") + b"0\r\n\r\n"
    assert body.chunks == []  # nothing kept once it is too big to replay


def test_body_pauses_client_when_no_region_takes_it():
    src = Source()
    body = RequestBody(src, chunked=False, expected=10 * PENDING_HIGH, hold_limit=0)
    body.feed(b"x" * (PENDING_HIGH + 1))
    assert src.paused
    body.attach(Sink())
    assert not src.paused


def test_client_ip_rules():
    trusted = TrustedProxies([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")])
    assert client_address("203.0.113.5", b"1.2.3.4", trusted) == "203.0.113.5"  # untrusted peer
    assert client_address("10.0.0.1", b"1.2.3.4", trusted) == "1.2.3.4"
    assert client_address("10.0.0.1", b"9.9.9.9, 1.2.3.4, 10.0.0.7", trusted) == "1.2.3.4"
    assert client_address("::1", b"2001:db8::1", trusted) == "2001:db8::1"
    assert client_address("::ffff:10.0.0.1", b"1.2.3.4", trusted) == "1.2.3.4"
    assert client_address("::ffff:203.0.113.5", None, trusted) == "203.0.113.5"
    assert client_address("10.0.0.1", b"garbage, 1.2.3.4", trusted) == "1.2.3.4"
    assert client_address("10.0.0.1", b"1.2.3.4, garbage", trusted) == "10.0.0.1"
    assert client_address("10.0.0.1", b"10.0.0.2, 10.0.0.3", trusted) == "10.0.0.2"
    assert parse_ip("[2001:db8::1]:443") == ipaddress.ip_address("2001:db8::1")
    assert parse_ip("203.0.113.7:5000") == ipaddress.ip_address("203.0.113.7")
    assert parse_ip("nope") is None


def test_wire_helpers():
    assert status_class(204) == "2xx" and status_class(503) == "5xx"
    resp = error_response(503, "no_region", "all down", region="none", request_id="r1", close=True)
    head, body = resp.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"X-Edge-Region: none" in head and b"X-Request-Id: r1" in head and b"Connection: close" in head
    assert b"Content-Length: %d" % len(body) in head
    assert body == b'{"error":"no_region","detail":"all down"}'


def pool_with_one_connection(wait: float = 1.0):
    """A one-slot pool (in a running loop) and the connection that holds its slot."""
    from router.pool import Endpoint, UpstreamPool
    from router.resolver import Resolver
    from router.upstream import UpstreamConnection

    loop = asyncio.get_running_loop()
    pool = UpstreamPool("r", Endpoint.parse("http://127.0.0.1:9"), resolver=Resolver(loop), ssl_context=None,
                        size=1, wait=wait, connect_timeout=1.0, read_timeout=5.0, idle_timeout=60.0)
    conn = UpstreamConnection(loop, "r", 5.0)
    conn.connection_made(FakeTransport())
    conn.pool = pool
    pool._open = 1
    return pool, conn


def test_pool_hands_on_a_connection_given_to_a_cancelled_waiter():
    async def main():
        pool, busy = pool_with_one_connection(wait=5.0)  # the only slot is taken by `busy`
        first = asyncio.ensure_future(pool.acquire())
        second = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        pool.release(busy)  # handed to the first waiter ...
        first.cancel()  # ... which is cancelled before it runs
        await asyncio.sleep(0)
        if first.cancelled():  # the connection must have gone on to the second waiter
            got = await asyncio.wait_for(second, 1.0)
        else:  # (Python 3.11's wait_for lets a done result win over the cancel)
            got = first.result()
            second.cancel()
        assert got is busy and pool.open_connections == 1
        pool.close()

    asyncio.run(main())


def test_discarded_answer_is_read_to_its_end_and_the_connection_kept():
    class Sink:
        def __init__(self):
            self.heads = []

        def upstream_head(self, head):
            self.heads.append(head)
            conn.discard()  # what the proxy does with a 503 it retries elsewhere

        def upstream_failed(self, exc):
            raise AssertionError(exc)

    async def main():
        nonlocal conn
        pool, conn = pool_with_one_connection()
        sink = Sink()
        conn.begin(False, sink)
        conn.data_received(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 10\r\n\r\n01234")
        assert sink.heads[0].status == 503 and pool.idle_connections == 0  # body still coming
        conn.data_received(b"56789")
        assert pool.idle_connections == 1 and not conn.closed  # read to its end, back in the pool
        assert pool.take_idle() is conn
        pool.close()

    conn = None
    asyncio.run(main())


def test_region_keep_alive_timeout_bounds_reuse():
    class Sink:
        def upstream_head(self, head):
            if conn.relay()[1]:  # complete in the same read: the caller ends it
                conn.finish()

        def upstream_body(self, data):
            pass

        def upstream_flush(self):
            pass

        def upstream_complete(self):
            conn.finish()

    async def main():
        nonlocal conn
        pool, conn = pool_with_one_connection()
        conn.begin(False, Sink())
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5, max=100\r\n\r\nok")
        assert conn.idle_limit == 4.0 and pool.idle_connections == 1
        conn.idle_since -= 4.5  # idle past what the region promised (less a second)
        assert pool.take_idle() is None and conn.closed
        pool.close()

    conn = None
    asyncio.run(main())
