"""The client side: one asyncio.Protocol per connection, llhttp parsing,
request limits, keep-alive and pipelining, flow control, client timeouts.

Malformed requests are answered here with a 4xx and never reach a region.

A request head is held as raw bytes until its end (CRLF CRLF) has arrived and
only then parsed, in one piece: its size is counted before any parsing, the
cost per byte is linear (no re-accumulation of partial fields), and memory is
bounded by limits.max_header_bytes plus one read.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any, Final, Protocol

import httptools

from .body import PENDING_HIGH, RequestBody
from .errors import Rejected
from .http1 import (
    CONTINUE_100,
    HOP_BY_HOP,
    KEEP_ALIVE_ONLY,
    ORDINARY,
    absolute_authority,
    connection_tokens,
    error_response,
    exact_case_table,
    header_kind,
    refusal,
    request_version,
    valid_host,
)

if TYPE_CHECKING:
    from .config import LimitsConfig

log = logging.getLogger("edge_router.listener")


# Request headers the listener handles itself rather than forwarding as they are.
# Final: constants to mypyc, not a module-dict lookup per header.
_HOST: Final = 0
_XFF: Final = 1
_CONTENT_LENGTH: Final = 2
_TRANSFER_ENCODING: Final = 3
_CONNECTION: Final = 4
_EXPECT: Final = 5
_XFPROTO: Final = 6
_REQUEST_ID: Final = 7
_UPGRADE: Final = 8
_DROP: Final = 9
_SPECIAL: Final[dict[bytes, int]] = {
    b"host": _HOST, b"x-forwarded-for": _XFF, b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING, b"connection": _CONNECTION, b"expect": _EXPECT,
    b"x-forwarded-proto": _XFPROTO, b"x-request-id": _REQUEST_ID, b"upgrade": _UPGRADE,
    b"x-forwarded-host": _DROP,
    **{h: _DROP for h in HOP_BY_HOP if h not in (b"connection", b"transfer-encoding", b"upgrade")},
}
_EXACT: Final = exact_case_table(_SPECIAL, (
    b"user-agent", b"accept", b"accept-encoding", b"accept-language", b"content-type", b"authorization",
    b"cookie", b"cache-control", b"origin", b"referer", b"if-none-match", b"if-modified-since", b"x-api-key",
))

# Parsed requests waiting behind the one being answered (more wait as raw bytes).
MAX_PIPELINED = 32

# Over limits.max_connections: refused at once, before any byte is read.
TOO_MANY_CONNECTIONS = error_response(
    503, "overloaded", "too many client connections", close=True, extra_headers=((b"Retry-After", b"1"),)
)


class Dispatcher(Protocol):
    """What the client side needs of what is shared (proxy.Proxy)."""

    loop: asyncio.AbstractEventLoop
    clock: Any
    limits: "LimitsConfig"
    connections: set
    max_connections: int

    def refuse_connection(self) -> None: ...
    def count_rejection(self, status: int) -> None: ...
    def handle(self, client: "ClientConnection", req: "Request") -> object: ...


class Answer(Protocol):
    """The request being answered, as the client side sees it (exchange.Exchange)."""

    req: "Request"

    def client_gone(self) -> None: ...
    def client_pause_writing(self) -> None: ...
    def client_resume_writing(self) -> None: ...
    def reject(self, rej: Rejected) -> None: ...


class Request:
    __slots__ = (
        "method", "url", "version", "headers", "keep_alive", "host", "xff", "xfproto",
        "request_id", "content_length", "chunked", "expect", "conn_tokens", "body",
        "complete", "started", "te", "upgrade", "dispatched", "websocket",
    )

    def __init__(self, started: float) -> None:
        self.method = "GET"
        self.url = b""
        self.version = "1.1"
        self.headers: list[bytes] = []  # forwarded header lines, "Name: value\r\n"
        self.keep_alive = True
        self.host: bytes | None = None
        self.xff: bytes | None = None
        self.xfproto: bytes | None = None
        self.request_id: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.expect = False
        self.conn_tokens: set[bytes] | None = None
        self.body: RequestBody | None = None
        self.complete = False
        self.started = started
        self.te: bytes | None = None  # Transfer-Encoding, every field joined
        self.upgrade = False
        self.websocket = False  # an RFC 6455 opening handshake: tunnelled after a 101
        self.dispatched = False  # handed to the proxy (or queued behind an answer)


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "proxy", "loop", "transport", "parser", "peer", "tls", "req", "queue", "exchange",
        "closed", "_reading_paused", "_write_paused", "_timer", "_deadline",
        "_deadline_kind", "_reject", "_timer_at", "_max_head", "_in_head", "_head_bytes", "_head_parts", "_tail",
        "_refused", "_upgrade_tail", "_hold_first", "_unread", "_raw_head",
    )

    def __init__(self, proxy: Dispatcher, tls: bool = False) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.req: Request | None = None  # the request being parsed
        self.queue: collections.deque[Request] = collections.deque()  # parsed, waiting
        self.exchange: Answer | None = None  # the request being answered
        self.closed = False
        self._reading_paused = False
        self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._timer_at = 0.0  # when _timer fires
        self._deadline_kind = ""
        self._reject: Rejected | None = None
        self._max_head = proxy.limits.max_header_bytes
        # A small body is read whole before a region is chosen (nginx's request
        # buffering, bounded): a client stalling it holds no region connection.
        self._hold_first = min(proxy.limits.retry_body_bytes, PENDING_HIGH)
        self._in_head = True  # before a message's headers are complete: bytes are held raw
        self._head_bytes = 0  # raw bytes of the current head so far
        self._head_parts: list[bytes] = []  # an unfinished head, joined once when its end comes
        self._tail = b""  # its last two bytes, for an end split across reads
        self._refused: Rejected | None = None  # a pipelined request refused, answered in its turn
        self._unread = b""  # bytes after a queued request, parsed when its turn comes
        self._upgrade_tail: bytes | None = None  # after an upgrade head: the bytes that followed it
        self._raw_head = b""  # the head being parsed, whole (empty when it came inside a body's read)

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        proxy = self.proxy
        if len(proxy.connections) >= proxy.max_connections:
            # Descriptors beyond this belong to region pools and probes.
            self.closed = True
            proxy.refuse_connection()
            transport.write(TOO_MANY_CONNECTIONS)  # type: ignore[attr-defined]
            transport.close()
            return
        transport.set_write_buffer_limits(high=256 * 1024)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        proxy.connections.add(self)
        self._set_deadline("idle", proxy.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.exchange is not None:
            self.exchange.client_gone()
        self.queue.clear()
        self._head_parts = []
        self._unread = b""

    def data_received(self, data: bytes) -> None:
        if self.closed or self._refused is not None:
            return
        if self._unread:  # a read that raced our pause: after what is already waiting
            self._unread += data
            return
        if self._deadline_kind == "body":
            self._deadline = self.loop.time() + self.proxy.limits.body_timeout
        pos, size = 0, len(data)
        while pos < size:
            if self._in_head:
                if self._tail:
                    end = self._head_end(data, pos)
                else:
                    end = data.find(b"\n\r\n", pos)
                    end = end + 3 if end >= 0 else -1
                if end < 0:
                    self._hold_head(data if pos == 0 else data[pos:])
                    return
                if not self._head_bytes:
                    self._head_began()
                self._head_bytes += end - pos
                head = data if pos == 0 and end == size else data[pos:end]
                if self._head_parts:
                    self._head_parts.append(head)
                    head = b"".join(self._head_parts)
                    self._head_parts = []
                self._tail = b""
                if self._head_bytes > self._max_head:
                    self._refuse(self._too_large(head))
                    return
                piece: bytes | memoryview = head
                self._raw_head = head
                pos = end
            else:
                # A body. With a Content-Length, only up to its end: whatever
                # follows is the next head, and is counted as one.
                req = self.req
                assert req is not None
                stop = size
                if req.content_length is not None:
                    stop = min(size, pos + req.content_length - req.body.size)
                piece = data if pos == 0 and stop == size else memoryview(data)[pos:stop]
                pos = stop
            if not self._feed(piece):
                if self._upgrade_tail is not None:
                    self._upgrade_tail = data[pos:]  # a tunnel may want them
                return
            if self._in_head and self.req is not None:
                # A chunked body ended and the next head began in the same read.
                self._tail = bytes(data[-2:])
            if self.queue and pos < size:
                # Pipelined requests wait their turn as raw bytes, not as parsed
                # requests: what one read holds cannot become thousands of them.
                self._unread = data[pos:]
                return

    def _head_end(self, data: bytes, pos: int) -> int:
        """Index just past the end of the head in data[pos:], or -1, when the
        last read ended with `_tail` (the end may straddle the two)."""
        tail = self._tail
        i = (tail + data[pos:pos + 2]).find(b"\n\r\n")
        if i >= 0:
            return pos + i + 3 - len(tail)
        i = data.find(b"\n\r\n", pos)
        return i + 3 if i >= 0 else -1

    def _hold_head(self, piece: bytes) -> None:
        if not self._head_bytes:
            self._head_began()
        self._head_bytes += len(piece)
        self._head_parts.append(piece)
        if self._head_bytes > self._max_head:
            self._refuse(self._too_large(b"".join(self._head_parts)))
            return
        self._tail = piece[-2:] if len(piece) > 1 else (self._tail + piece)[-2:]

    def _too_large(self, head: bytes) -> Rejected:
        self._head_parts = []
        line_end = head.find(b"\n")
        if line_end < 0 or line_end >= self._max_head:
            return Rejected(414, "uri_too_long", "request line exceeds the header size limit")
        return Rejected(431, "headers_too_large", f"request head exceeds {self._max_head} bytes")

    def _head_began(self) -> None:
        """The first byte of a head: header_timeout runs from here (unless an
        answer is still being sent: then from its end)."""
        if self.exchange is None:
            self._set_deadline("header", self.proxy.limits.header_timeout)

    def _feed(self, data) -> bool:
        """Parse; False when reading stops here (refused, or upgraded)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade is hop-by-hop and not forwarded: the request went on as a
            # plain one (req.upgrade), and the connection closes after its
            # answer; the bytes of the would-be protocol are not read -- unless
            # a websocket tunnel opens (hand_over).
            self.pause_reading()
            self._upgrade_tail = b""
            return False
        except httptools.HttpParserCallbackError as exc:
            rej = self._reject or _as_rejection(exc.__context__)
            self._refuse(rej)
            return False
        except httptools.HttpParserError as exc:
            self._refuse(Rejected(400, "bad_request", f"malformed HTTP request: {exc}"))
            return False
        return not self.closed

    def pause_writing(self) -> None:
        self._write_paused = True
        self._set_deadline("send", self.proxy.limits.send_timeout)
        if self.exchange is not None:
            self.exchange.client_pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.req is not None and not self._in_head:
            self._set_deadline("body", self.proxy.limits.body_timeout)
        elif self.exchange is not None:
            self._set_deadline("", 0)
        elif self._in_head and (self._head_bytes or self.req is not None):
            self._set_deadline("header", self.proxy.limits.header_timeout)
        else:
            self._set_deadline("idle", self.proxy.limits.idle_timeout)
        if self.exchange is not None:
            self.exchange.client_resume_writing()

    def pause_reading(self) -> None:
        if not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    # -- parser callbacks ----------------------------------------------------------
    def on_message_begin(self) -> None:
        self.req = Request(self.proxy.clock.now())
        if not self._head_bytes:  # began inside a read that ended a chunked body
            self._head_began()

    def on_url(self, url: bytes) -> None:
        self.req.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp has already refused names that are not tokens and values with
        # control characters (RFC 9110 5.1, 5.5): only our own rules remain.
        req = self.req
        assert req is not None
        kind = header_kind(_EXACT, _SPECIAL, name)
        if kind == ORDINARY:
            req.headers.append(b"%s: %s\r\n" % (name, value))
        elif kind == _HOST:
            if req.host is not None:
                self._reject = Rejected(400, "bad_header", "more than one Host header")
                raise self._reject
            req.host = value  # the region gets its own Host; this one goes in X-Forwarded-Host
        elif kind == _XFF:
            req.xff = value if req.xff is None else req.xff + b", " + value
        elif kind == _CONTENT_LENGTH:
            if not value.isdigit():
                self._reject = Rejected(400, "bad_header", "invalid Content-Length")
                raise self._reject
            n = int(value)
            if req.content_length is not None and req.content_length != n:
                self._reject = Rejected(400, "bad_header", "conflicting Content-Length headers")
                raise self._reject
            req.content_length = n  # re-added by the proxy from the parsed value
        elif kind == _TRANSFER_ENCODING:
            req.te = value if req.te is None else req.te + b"," + value
        elif kind == _CONNECTION:
            if value not in KEEP_ALIVE_ONLY:  # keep-alive is the default: nothing to record
                req.conn_tokens = connection_tokens(value) | (req.conn_tokens or set())
        elif kind == _EXPECT:
            if value.strip().lower() == b"100-continue":
                req.expect = True
            else:
                req.headers.append(b"%s: %s\r\n" % (name, value))
        elif kind == _XFPROTO:
            req.xfproto = value
        elif kind == _REQUEST_ID:
            req.request_id = value
        elif kind == _UPGRADE:
            req.upgrade = True
            if b"websocket" in (t.strip().lower() for t in value.split(b",")):
                req.websocket = True  # confirmed (GET, HTTP/1.1, Connection: upgrade) with the whole head
        # _DROP: hop-by-hop, or X-Forwarded-Host (the router sets its own)

    def on_headers_complete(self) -> None:
        req = self.req
        assert req is not None
        p = self.parser
        self._in_head = False
        self._head_bytes = 0
        req.method = p.get_method().decode("ascii")
        req.version = request_version(self._raw_head, req.method, req.url) or p.get_http_version()
        self._raw_head = b""
        req.keep_alive = p.should_keep_alive() and not req.upgrade
        self._check_head(req)
        if req.websocket:
            # Only websocket is tunnelled (RFC 6455 4.1); h2c and other tokens
            # are stripped and the request goes on as a plain one.
            req.websocket = (req.method == "GET" and req.version == "1.1"
                             and b"upgrade" in (req.conn_tokens or ()))
        req.body = RequestBody(
            self, req.chunked, req.content_length, self.proxy.limits.retry_body_bytes
        )
        if req.body.empty:
            self._set_deadline("", 0)
        else:
            self._set_deadline("body", self.proxy.limits.body_timeout)
        if req.expect and not req.body.empty:
            # We will read the body, so say so now; the region is not asked
            # (Expect is handled hop by hop).
            self.transport.write(CONTINUE_100)

    def _check_head(self, req: Request) -> None:
        """The rules of RFC 9110/9112 llhttp leaves to us; raises Rejected."""
        if req.version not in ("1.1", "1.0"):
            self._fail(505, "http_version_not_supported", f"HTTP/{req.version} is not spoken here")
        if req.te is not None:
            if req.version == "1.0":
                self._fail(400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request")  # RFC 9112 6.1
            codings = [c.strip().lower() for c in req.te.split(b",")]
            if codings[-1] != b"chunked":
                self._fail(400, "bad_request", "chunked is not the final transfer coding")  # RFC 9112 6.3
            if len(codings) > 1:
                self._fail(501, "not_implemented", "transfer codings other than chunked are not supported")
            req.chunked = True
            if req.content_length is not None:
                # Request smuggling (RFC 9112 6.1): refuse, never guess.
                self._fail(400, "bad_request", "both Content-Length and Transfer-Encoding")
        if req.method == "CONNECT":
            self._fail(405, "method_not_allowed", "CONNECT is not supported")
        url = req.url
        if url[:1] != b"/":
            if url == b"*":
                if req.method != "OPTIONS":
                    self._fail(400, "bad_request", "the target * is only for OPTIONS")
            else:
                # absolute-form: its authority is the host (RFC 9112 3.2.2)
                authority = absolute_authority(url)
                if authority is None:
                    self._fail(400, "bad_request", "invalid request target")
                req.host = authority
        if req.host is None:
            if req.version == "1.1":
                self._fail(400, "bad_request", "missing Host header")
        elif not valid_host(req.host):
            self._fail(400, "bad_header", "invalid Host")
        limit = self.proxy.limits.max_body_bytes
        if req.content_length is not None and req.content_length > limit:
            self._fail(413, "body_too_large", f"request body exceeds {limit} bytes")

    def _fail(self, status: int, error: str, detail: str) -> None:
        self._reject = Rejected(status, error, detail)
        raise self._reject

    def on_body(self, data: bytes) -> None:
        body = self.req.body
        if body.size + len(data) > self.proxy.limits.max_body_bytes:
            self._fail(413, "body_too_large", f"request body exceeds {self.proxy.limits.max_body_bytes} bytes")
        body.feed(data)
        req = self.req
        assert req is not None
        if not req.dispatched and body.size > self._hold_first:
            self._dispatch(req)  # too big to wait for: the rest streams to the region as it comes

    def on_message_complete(self) -> None:
        req = self.req
        assert req is not None
        req.complete = True
        req.body.finish()
        self.req = None
        self._in_head = True
        if self._deadline_kind == "body":
            self._set_deadline("", 0)
        if not req.dispatched:
            self._dispatch(req)  # whole: it can be answered at once, even by the router

    def _dispatch(self, req: Request) -> None:
        req.dispatched = True
        if self.exchange is None and not self.queue:
            self._start(req)
        elif len(self.queue) >= MAX_PIPELINED:
            # Only reachable inside one read (after a chunked body): a backstop.
            self._fail(503, "pipeline_too_deep", f"more than {MAX_PIPELINED} pipelined requests waiting")
        else:
            self.queue.append(req)  # pipelined: answered in order
            self.pause_reading()

    # -- request scheduling -------------------------------------------------------
    def _start(self, req: Request) -> None:
        self.proxy.handle(self, req)

    def _start_queued(self) -> None:
        if self.closed or self.exchange is not None or not self.queue:
            return
        self._start(self.queue.popleft())
        if not self.queue:
            unread, self._unread = self._unread, b""
            if unread:
                self.data_received(unread)
            if not self.queue:
                self.resume_reading()

    def hand_over(self) -> tuple[asyncio.Transport, bytes]:
        """A tunnel takes this connection: no more HTTP here. Returns the
        transport and what the client sent after its upgrade head."""
        self.closed = True  # to this protocol object; the transport lives on
        self.exchange = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tail, self._upgrade_tail = self._upgrade_tail or b"", None
        transport = self.transport
        assert transport is not None
        return transport, tail

    def request_done(self, req: Request, close: bool) -> None:
        """Called by the proxy when a response has been written completely."""
        self.exchange = None
        if close or not req.keep_alive or not req.complete or self.closed:
            self.close()
            return
        if self.queue:
            # Not from inside the callback that finished the last one.
            self.loop.call_soon(self._start_queued)
            return
        if self._refused is not None:
            self._refuse(self._refused)
            return
        self.resume_reading()
        if self._in_head and (self._head_bytes or self.req is not None):
            # The next head began while we answered: its time runs from now.
            self._set_deadline("header", self.proxy.limits.header_timeout)
        else:
            self._set_deadline("idle", self.proxy.limits.idle_timeout)

    def _refuse(self, rej: Rejected) -> None:
        """Answer a bad request ourselves and close: the stream cannot be trusted."""
        self._reject = None
        ex = self.exchange
        if ex is not None:
            if self.req is ex.req:
                # The request being answered broke a rule in its body: it
                # decides (413 if nothing was sent yet).
                ex.reject(rej)
            else:
                # A later pipelined request: refused in its turn, after the
                # answers before it; nothing more is read.
                self._refused = rej
                self.pause_reading()
            return
        self.proxy.count_rejection(rej.status)
        if not self.closed:
            self.transport.write(refusal(rej.status, rej.error, rej.detail))
        self.close()

    def cut(self) -> None:
        """Abort at once, unsent bytes dropped (a client that does not read)."""
        self.closed = True
        self.transport.abort()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            transport = self.transport
            if transport.get_write_buffer_size():
                # close() waits for the buffer to drain: bounded, for a client that never reads.
                self.loop.call_later(self.proxy.limits.send_timeout, transport.abort)
            transport.close()

    # -- one timer per connection ---------------------------------------------------
    # idle: between requests; header: from a head's first byte; body: since the
    # last body bytes; send: since the client stopped taking our bytes; "": none
    # (a region is being waited for: its read_timeout applies).
    def _set_deadline(self, kind: str, seconds: float) -> None:
        if self._write_paused and kind != "send":
            return  # the client not reading comes first; resume_writing sets the next
        self._deadline_kind = kind
        if not kind:
            return
        self._deadline = deadline = self.loop.time() + seconds
        timer = self._timer
        if timer is not None:
            if self._timer_at <= deadline:
                return  # it fires first and re-arms for the rest
            timer.cancel()
        self._timer = self.loop.call_at(deadline, self._on_timer)
        self._timer_at = deadline  # kept here: asking the timer handle is a call per request

    def _on_timer(self) -> None:
        self._timer = None
        kind = self._deadline_kind
        if self.closed or not kind:
            return
        now = self.loop.time()
        if now < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            self._timer_at = self._deadline
            return
        if kind == "body":
            if self._reading_paused:
                # We stopped reading (the region is slow): not the client's doing.
                self._set_deadline("body", self.proxy.limits.body_timeout)
                return
            self._refuse(Rejected(408, "request_timeout", "request body not received in time"))
        elif kind == "send":
            # The client does not read its answer: cut it; the region
            # connection is freed (connection_lost -> exchange.client_gone).
            self.cut()
        elif kind == "header" and self.exchange is None:
            self._refuse(Rejected(408, "request_timeout", "request head not received in time"))
        else:
            self.close()


def _as_rejection(exc: BaseException | None) -> Rejected:
    if isinstance(exc, Rejected):
        return exc
    return Rejected(400, "bad_request", f"malformed HTTP request: {exc}")
