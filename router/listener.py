"""The client side: one asyncio.Protocol per connection, llhttp parsing,
request limits, keep-alive and pipelining, flow control.

Malformed requests are answered here with a 4xx and never reach a region.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

import httptools

from .body import RequestBody
from .http1 import (
    CONTINUE_100,
    HOP_BY_HOP,
    connection_tokens,
    error_response,
)

if TYPE_CHECKING:
    from .exchange import Exchange
    from .proxy import Proxy

log = logging.getLogger("edge_router.listener")


# Request headers the listener handles itself rather than forwarding as they are.
_HOST, _XFF, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _XFPROTO, _REQUEST_ID, _UPGRADE, _DROP = range(10)
_SPECIAL = {
    b"host": _HOST, b"x-forwarded-for": _XFF, b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING, b"connection": _CONNECTION, b"expect": _EXPECT,
    b"x-forwarded-proto": _XFPROTO, b"x-request-id": _REQUEST_ID, b"upgrade": _UPGRADE,
    b"x-forwarded-host": _DROP,
    **{h: _DROP for h in HOP_BY_HOP if h not in (b"connection", b"transfer-encoding", b"upgrade")},
}


class Rejected(Exception):
    """A request refused before it reached any region."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


class Request:
    __slots__ = (
        "method", "url", "version", "headers", "keep_alive", "host", "xff", "xfproto",
        "request_id", "content_length", "chunked", "expect", "conn_tokens", "body",
        "complete", "started", "head_size", "upgrade",
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
        self.head_size = 0
        self.upgrade = False


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "proxy", "loop", "transport", "parser", "peer", "tls", "req", "queue", "exchange",
        "closed", "_reading_paused", "_write_paused", "_timer", "_deadline",
        "_deadline_kind", "_reject", "_max_head",
    )

    def __init__(self, proxy: "Proxy", tls: bool = False) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.req: Request | None = None  # the request being parsed
        self.queue: collections.deque[Request] = collections.deque()  # parsed, waiting
        self.exchange: "Exchange | None" = None  # the request being answered
        self.closed = False
        self._reading_paused = False
        self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._deadline_kind = ""
        self._reject: Rejected | None = None
        self._max_head = proxy.limits.max_header_bytes

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=256 * 1024)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.proxy.connections.add(self)
        self._set_deadline("idle", self.proxy.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.exchange is not None:
            self.exchange.client_gone()
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade is hop-by-hop and not forwarded: the request went on as a
            # plain one (req.upgrade), and the connection closes after its
            # answer; the bytes of the would-be protocol are not read.
            self.pause_reading()
        except httptools.HttpParserCallbackError as exc:
            rej = self._reject or _as_rejection(exc.__context__)
            self._refuse(rej)
        except httptools.HttpParserError as exc:
            self._refuse(Rejected(400, "bad_request", f"malformed HTTP request: {exc}"))

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.exchange is not None:
            self.exchange.client_pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
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
        self._set_deadline("header", self.proxy.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        req = self.req
        req.url += url
        req.head_size += len(url)
        if req.head_size > self._max_head:
            self._reject = Rejected(414, "uri_too_long", "request target exceeds the header size limit")
            raise self._reject

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp has already refused names that are not tokens and values with
        # control characters (RFC 9110 5.1, 5.5): only our own rules remain.
        req = self.req
        req.head_size += len(name) + len(value) + 4
        if req.head_size > self._max_head:
            self._reject = Rejected(431, "headers_too_large", f"request head exceeds {self._max_head} bytes")
            raise self._reject
        kind = _SPECIAL.get(name.lower())
        if kind is None:
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
            req.chunked = True
        elif kind == _CONNECTION:
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
        # _DROP: hop-by-hop, or X-Forwarded-Host (the router sets its own)

    def on_headers_complete(self) -> None:
        req = self.req
        p = self.parser
        req.method = p.get_method().decode("ascii")
        req.version = p.get_http_version()
        req.keep_alive = p.should_keep_alive() and not req.upgrade
        if req.version not in ("1.1", "1.0"):
            self._reject = Rejected(505, "http_version_not_supported", f"HTTP/{req.version} is not spoken here")
            raise self._reject
        if req.chunked and req.content_length is not None:
            # Request smuggling (RFC 9112 6.1): refuse, never guess.
            self._reject = Rejected(400, "bad_request", "both Content-Length and Transfer-Encoding")
            raise self._reject
        if req.host is None and req.version == "1.1":
            self._reject = Rejected(400, "bad_request", "missing Host header")
            raise self._reject
        if req.method == "CONNECT":
            self._reject = Rejected(405, "method_not_allowed", "CONNECT is not supported")
            raise self._reject
        limit = self.proxy.limits.max_body_bytes
        if req.content_length is not None and req.content_length > limit:
            self._reject = Rejected(413, "body_too_large", f"request body exceeds {limit} bytes")
            raise self._reject
        req.body = RequestBody(
            self, req.chunked, req.content_length, self.proxy.limits.retry_body_bytes
        )
        self._set_deadline("", 0)
        if req.expect and not req.body.empty:
            # We will read the body, so say so now; the region is not asked
            # (Expect is handled hop by hop).
            self.transport.write(CONTINUE_100)
        if not req.body.empty:
            self._dispatch(req)  # the body streams to the region as it comes

    def on_body(self, data: bytes) -> None:
        body = self.req.body
        if body.size + len(data) > self.proxy.limits.max_body_bytes:
            self._reject = Rejected(
                413, "body_too_large", f"request body exceeds {self.proxy.limits.max_body_bytes} bytes"
            )
            raise self._reject
        body.feed(data)

    def on_message_complete(self) -> None:
        req = self.req
        req.complete = True
        req.body.finish()
        self.req = None
        if req.body.empty:
            self._dispatch(req)  # whole: it can be answered at once, even by the router

    def _dispatch(self, req: Request) -> None:
        if self.exchange is None and not self.queue:
            self._start(req)
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
            self.resume_reading()

    def request_done(self, req: Request, close: bool) -> None:
        """Called by the proxy when a response has been written completely."""
        self.exchange = None
        if close or not req.keep_alive or not req.complete or self.closed:
            self.close()
            return
        if self.queue:
            # Not from inside the callback that finished the last one.
            self.loop.call_soon(self._start_queued)
        else:
            self.resume_reading()
            self._set_deadline("idle", self.proxy.limits.idle_timeout)

    def _refuse(self, rej: Rejected) -> None:
        """Answer a bad request ourselves and close: the stream cannot be trusted."""
        self._reject = None
        if self.exchange is not None:
            # A request is being answered: it decides (413 if nothing was sent yet).
            self.exchange.reject(rej)
            return
        self.proxy.count_rejection(rej.status)
        if not self.closed:
            self.transport.write(
                error_response(rej.status, rej.error, rej.detail, close=True)
            )
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.transport.close()

    # -- one timer per connection ---------------------------------------------------
    def _set_deadline(self, kind: str, seconds: float) -> None:
        self._deadline_kind = kind
        if not kind:
            return
        self._deadline = self.loop.time() + seconds
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed or not self._deadline_kind:
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        if self._deadline_kind == "header" and self.exchange is None:
            self.transport.write(
                error_response(408, "request_timeout", "request head not received in time", close=True)
            )
        self.close()


def _as_rejection(exc: BaseException | None) -> Rejected:
    if isinstance(exc, Rejected):
        return exc
    return Rejected(400, "bad_request", f"malformed HTTP request: {exc}")
