"""Property: mutated request heads, fed in random pieces through the real
listener, proxy, exchange and upstream code. Whatever the bytes: no exception
escapes, the held head stays within the limit, and the client gets exactly the
answers to its own requests, in order, possibly ended by one 4xx/5xx the router
made itself."""
from __future__ import annotations

import logging

import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wire_rig import Rig

LIMIT = 512
NAMES = [b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade",
         b"X-Forwarded-For", b"X-Request-Id", b"X-App", b"Keep-Alive", b"TE"]
VALUES = [b"api", b"", b"5", b"0", b"-1", b"99999999999", b"chunked", b"gzip, chunked", b"identity",
          b"close", b"keep-alive", b"100-continue", b"websocket", b"1.2.3.4", b"a b", b"x" * 300]
BYTES = st.sampled_from([b"\r", b"\n", b"\x00", b" ", b":", b"\t", b"/", b"a", b"0", b"\x7f", b"\xff", b"@"])


@st.composite
def request(draw, i: int) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"OPTIONS", b"DELETE", b"CONNECT", b"G(T"]))
    target = draw(st.sampled_from([b"/r%d" % i, b"*", b"http://api:80/r%d" % i, b"/r%d?q=" % i + b"z" * 200]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]))
    headers = draw(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=6))
    if draw(st.booleans()):
        headers.insert(0, (b"Host", b"api"))
    head = b"%s %s %s\r\n" % (method, target, version) + b"".join(b"%s: %s\r\n" % h for h in headers) + b"\r\n"
    body = draw(st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz"]))
    return head + body


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(b"".join(draw(request(i)) for i in range(draw(st.integers(1, 3)))))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        b = draw(BYTES)
        if op == "insert" or at == len(data):
            data[at:at] = b
        elif op == "delete":
            del data[at]
        else:
            data[at:at + 1] = b
    return bytes(data)


class Region:
    """Reads what the router forwards (llhttp) and answers each request with
    its own target as the body."""

    def __init__(self, up, transport):
        self.up, self.t = up, transport
        self.parser = httptools.HttpRequestParser(self)
        self.urls: list[bytes] = []
        self.url = b""
        self.pending: list[bytes] = []

    def on_url(self, url):
        self.url += url

    def on_message_complete(self):
        self.urls.append(self.url)
        self.pending.append(self.url)
        self.url = b""

    def serve(self):
        data = self.t.take()
        if data:
            self.parser.feed_data(data)
        while self.pending and not self.up.closed:
            url = self.pending.pop(0)
            self.up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(url), url))


class Answers:
    def __init__(self):
        self.list: list[tuple[int, bytes, bytes]] = []
        self.headers: list[bytes] = []
        self.body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name, value):
        self.headers.append(name.lower() + b": " + value)

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        self.list.append((self.parser.get_status_code(), b"\n".join(self.headers), self.body))
        self.headers, self.body = [], b""


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=mutated(), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_mutated_heads_get_their_own_answers_or_a_router_error(stream, cuts):
    errors = Errors()
    logging.getLogger("edge_router").addHandler(errors)
    rig = Rig(max_header_bytes=LIMIT, pool_size=1, max_body_bytes=100)
    try:
        up, ut = rig.upstream("us-east-1")
        region = Region(up, ut)
        conn, t = rig.client()
        pos, i = 0, 0
        while pos < len(stream) and not t.closed:
            n = cuts[i % len(cuts)]
            i += 1
            conn.data_received(stream[pos:pos + n])
            pos += n
            assert sum(map(len, conn._head_parts)) <= LIMIT  # held raw, never beyond the limit
            assert len(conn.queue) <= 32 and len(conn._unread) <= 40  # waiting: within one read
            region.serve()
            rig.run()
            region.serve()
        rig.advance(11.0)  # past header_timeout: nothing is left hanging
        region.serve()
        answers = Answers()
        try:
            answers.parser.feed_data(bytes(t.out))
        except httptools.HttpParserUpgrade:
            pass
        finals = [a for a in answers.list if a[0] >= 200]
        relayed = [a for a in finals if a[0] == 200]
        # Every answer from the region is the one to its own request, in order.
        assert [a[2] for a in relayed] == region.urls[:len(relayed)]
        for status, headers, body in finals[len(relayed):]:
            # Past the region's answers: one error the router made itself, then closed.
            assert status >= 400 and b'"error"' in body, (status, body)
        assert len(finals) - len(relayed) <= 1
        assert [a[0] for a in finals[:len(relayed)]] == [200] * len(relayed)
        assert not errors.records, errors.records[0].getMessage()
    finally:
        logging.getLogger("edge_router").removeHandler(errors)
        rig.close()


class Errors(logging.Handler):
    """Errors logged by the router (an internal error caught is still a bug)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)
