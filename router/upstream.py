"""One keep-alive HTTP/1.1 connection to a region: callbacks and bytes.

The proxy writes the request head and body through it; the response head,
then (once the proxy chose to relay it) the body, completion or failure are
reported to the exchange's sink after each read from the region, with flow
control both ways. No task, no future: the request path is callbacks.

Reuse only what is provably clean (HAProxy's http-reuse safe, httpcore's
connection states): a connection goes back to the pool only when its answer
was complete by its framing, no byte followed it (in the same read, or while
idle: checked again at checkout), the request was written to the socket in
full, and the answer's head stayed within `max_head` bytes. Anything else is
closed: a client must never receive bytes meant for another request.
"""
from __future__ import annotations

import asyncio
import select
from typing import TYPE_CHECKING, Final, Protocol

import httptools

from .errors import Sent
from .http1 import HOP_BY_HOP, KEEP_ALIVE_ONLY, ORDINARY, exact_case_table, header_kind, no_body_status

if TYPE_CHECKING:
    from .pool import UpstreamPool


# Response headers the connection handles itself rather than relaying as they are.
# Final: constants to mypyc, not a module-dict lookup per header.
_LENGTH: Final = 0
_CHUNKED: Final = 1
_CONNECTION: Final = 2
_KEEP_ALIVE: Final = 3
_DROP: Final = 4
_SPECIAL: Final[dict[bytes, int]] = {
    b"content-length": _LENGTH, b"transfer-encoding": _CHUNKED, b"connection": _CONNECTION,
    b"keep-alive": _KEEP_ALIVE,
    b"x-edge-region": _DROP, b"x-request-id": _DROP,
    **{h: _DROP for h in HOP_BY_HOP if h not in (b"connection", b"transfer-encoding", b"keep-alive")},
}
_EXACT: Final = exact_case_table(_SPECIAL, (
    b"server", b"date", b"content-type", b"cache-control", b"etag", b"last-modified", b"vary", b"set-cookie",
    b"content-encoding", b"location", b"expires", b"x-content-type-options", b"strict-transport-security",
    b"access-control-allow-origin",
))
# Connection options that name no header.
_CONNECTION_OPTIONS: Final = frozenset((b"keep-alive", b"close"))
_NO_TOKENS: Final[frozenset[bytes]] = frozenset()


class _Stop(Exception):
    """Raised in a parser callback to stop parsing; the reason is in `_abort`."""


class ResponseSink(Protocol):
    def upstream_interim(self, status: int, headers: list[bytes]) -> None: ...
    def upstream_head(self, head: "ResponseHead") -> None: ...
    def upstream_body(self, data: bytes) -> None: ...
    def upstream_flush(self) -> None: ...
    def upstream_complete(self) -> None: ...
    def upstream_failed(self, exc: BaseException) -> None: ...
    def upstream_pause_writing(self) -> None: ...
    def upstream_resume_writing(self) -> None: ...
    def upstream_reclaimed(self) -> None: ...


class ResponseHead:
    __slots__ = ("status", "headers", "length", "chunked", "keep_alive", "no_body")

    def __init__(self, status: int, headers: list[bytes], length: int | None, chunked: bool,
                 keep_alive: bool, no_body: bool) -> None:
        self.status = status
        self.headers = headers  # end-to-end header lines, "Name: value\r\n"
        self.length = length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.no_body = no_body


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "loop", "transport", "parser", "region", "pool", "closed",
        "_head", "_headers", "_conn_tokens", "_length", "_chunked",
        "_sink", "_relaying", "_discarding", "_early", "_complete", "_failed", "_is_head", "_busy",
        "_read_timeout", "_last_io", "_timer",
        "idle_since", "idle_limit", "requests", "_reading_paused",
        "max_head", "_head_bytes", "_head_ready", "_complete_ready", "_dirty", "_abort", "_poll",
        "upgrade_requested", "_upgraded_tail",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, region: str, read_timeout: float,
                 max_head: int = 65536):
        self.loop = loop
        self.region = region
        self.pool: UpstreamPool | None = None  # set by the pool that owns it
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.requests = 0
        self.idle_since = 0.0
        # Seconds the region keeps this connection open while idle, when it says
        # so (Keep-Alive: timeout=N); reusing it later would race its close.
        self.idle_limit: float | None = None
        self._read_timeout = read_timeout
        self._last_io = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self.max_head = max_head  # bytes of response head (interim answers included)
        # Something other than the answer came on this connection: never reuse it.
        self._dirty = False
        self._poll: select.poll | None = None  # readability check at checkout
        self.upgrade_requested = False  # only a tunnelled upgrade may see 101
        self._upgraded_tail = b""  # after a 101: bytes that came with its head
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self._head: ResponseHead | None = None
        self._headers: list[bytes] = []
        self._conn_tokens: frozenset[bytes] = _NO_TOKENS  # shared until a Connection header comes
        self._length: int | None = None
        self._chunked = False
        self._sink: ResponseSink | None = None
        self._relaying = False
        self._discarding = False
        self._early: list[bytes] = []
        self._complete = False
        self._failed: BaseException | None = None
        self._is_head = False
        self._busy = False
        self._head_bytes = 0
        self._head_ready = False  # parsed in this read, told to the sink after it
        self._complete_ready = False  # likewise
        self._abort: BaseException | None = None  # why a callback stopped the parser

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=256 * 1024)  # type: ignore[attr-defined]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        self._last_io = self.loop.time()
        if not self._busy:
            # Bytes on an idle connection (a late answer, a body after HEAD): never reuse it.
            self.close()
            return
        if self._head is None:
            # The head is counted on raw bytes before the parser holds any of them.
            room = self.max_head - self._head_bytes
            self._head_bytes += len(data)
            if len(data) > room:
                error = self._parse(data[:room])
                # Asked through a method: mypyc keeps `self._head` narrowed to None
                # across the call above, which sets it.
                if error is None and not self._has_head():
                    error = Sent("head-too-large", f"response head over {self.max_head} bytes")
                if error is None:
                    error = self._parse(data[room:])
            else:
                error = self._parse(data)
        else:
            error = self._parse(data)
        self._after_read(error)

    def _has_head(self) -> bool:
        return self._head is not None

    def _parse(self, data: bytes) -> BaseException | None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            head = self._head
            if self.upgrade_requested and head is not None and head.status == 101 and self._abort is None:
                # Switched protocols: what follows the head is the tunnel's, not HTTP.
                self._upgraded_tail = data[exc.args[0]:] if exc.args else b""
                return None
            return self._abort or Sent("bad-response", f"invalid HTTP from region: {exc}")
        except httptools.HttpParserError as exc:
            return self._abort or Sent("bad-response", f"invalid HTTP from region: {exc}")
        return None

    def _after_read(self, error: BaseException | None) -> None:
        """Tell the sink what this read brought: the head (so that a broken
        answer in the same read is still a clean 502), the end, a failure."""
        if error is not None:
            if not self._complete:
                self._head_ready = False  # nothing of it reached the client: fail clean
                self._fail(error)
                self.close()
                return
            self._dirty = True  # garbage after a complete answer
        sink = self._sink
        if self._head_ready:
            self._head_ready = False
            head = self._head
            if sink is not None and head is not None:
                sink.upstream_head(head)  # relay() or discard() take the completion
        elif self._complete_ready:
            self._complete_ready = False
            if self._discarding:
                self.finish()
            elif self._relaying:
                sink.upstream_complete()
        sink = self._sink
        if sink is not None:
            sink.upstream_flush()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if self._busy and not self._complete:
            head = self._head
            if head is not None and head.length is None and not head.chunked and not head.no_body:
                # Close-delimited body: the end of the connection is the end of it.
                self.on_message_complete()
                self._after_read(None)
            else:
                self._fail(Sent("reset", "region closed the connection"))
        if self.pool is not None:
            self.pool.forget(self)

    def pause_writing(self) -> None:
        if self._sink is not None:
            self._sink.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self._sink is not None:
            self._sink.upstream_resume_writing()

    # -- parser callbacks ---------------------------------------------------
    # Once the answer is complete, anything the parser still finds in the same
    # read (a second answer, a body after HEAD, leftover bytes) makes the
    # connection dirty and reaches nobody.
    def on_message_begin(self) -> None:
        if self._complete:
            self._dirty = True

    def on_chunk_header(self) -> None:
        if self._complete:
            self._dirty = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._complete:
            return
        kind = header_kind(_EXACT, _SPECIAL, name)
        if kind == ORDINARY:
            self._headers.append(b"%s: %s\r\n" % (name, value))
        elif kind == _LENGTH:
            self._length = int(value)
            self._headers.append(b"%s: %s\r\n" % (name, value))  # passed on as is
        elif kind == _CHUNKED:
            self._chunked = value.strip().lower().endswith(b"chunked")
        elif kind == _CONNECTION:
            if value not in KEEP_ALIVE_ONLY:  # keep-alive is the default: nothing to record
                self._conn_tokens = self._conn_tokens | frozenset(t.strip().lower() for t in value.split(b","))
        elif kind == _KEEP_ALIVE:
            self._read_keep_alive(value)
        # _DROP: other hop-by-hop headers, and the two the router sets itself

    def _read_keep_alive(self, value: bytes) -> None:
        for param in value.split(b","):
            key, _, number = param.partition(b"=")
            if key.strip().lower() == b"timeout" and number.strip().isdigit():
                # a second early: the region's clock and ours are not the same
                self.idle_limit = max(0.0, int(number.strip()) - 1.0)

    def on_headers_complete(self) -> None:
        if self._complete:
            self._dirty = True
            return
        status = self.parser.get_status_code()
        if status < 100:  # llhttp takes any three digits: "000" is no status to relay
            self._abort = Sent("bad-response", f"invalid status code {status:03d} from region")
            raise _Stop
        if status == 101 and not self.upgrade_requested:
            self._abort = Sent("bad-response", "region switched protocols (101) unasked")
            raise _Stop
        if status < 200 and status != 101:
            # Interim response: 103, 102 go to the sink (it forwards them to
            # HTTP/1.1 clients); 100 Continue we did not ask for is dropped.
            if self._sink is not None:  # hostile-client: interim answers
                self._sink.upstream_interim(status, self._headers)
            self._headers = []
            self._conn_tokens = _NO_TOKENS
            self._length = None
            self._chunked = False
            return
        headers = self._headers
        named = self._conn_tokens - _CONNECTION_OPTIONS
        if named:  # headers the Connection header names are hop-by-hop too
            headers = [h for h in headers if h.split(b":", 1)[0].lower() not in named]
        no_body = self._is_head or no_body_status(status)
        head = ResponseHead(
            status,
            headers,
            None if no_body or self._chunked else self._length,
            self._chunked and not no_body,
            self.parser.should_keep_alive() and b"close" not in self._conn_tokens,
            no_body,
        )
        self._head = head
        self._head_ready = True
        if self._is_head:
            # llhttp cannot be told the request was HEAD; the body it would
            # wait for never comes. The exchange ends here (whatever this
            # parser still finds is dirt); a fresh parser reads the next response.
            self.parser = httptools.HttpResponseParser(self)
            self.on_message_complete()

    def on_body(self, data: bytes) -> None:
        if self._complete:
            self._dirty = True
        elif self._relaying:
            self._sink.upstream_body(data)
        elif not self._discarding:
            self._early.append(data)

    def on_message_complete(self) -> None:
        if self._head is None or self._complete:
            return  # end of an interim response, or the HEAD parser's idea of the end
        self._complete = True  # the read timer stays armed: it ignores idle connections
        self._complete_ready = True

    # -- used by the proxy --------------------------------------------------
    def begin(self, is_head: bool, sink: ResponseSink) -> None:
        """Start one exchange (the caller writes the request). `sink` hears
        about flow control and the response head now, the body once `relay`
        is called, and a failure whenever it happens; after each read it is
        asked to flush what it gathered for the client (one write)."""
        self._reset_exchange()
        self._sink = sink
        self._busy = True
        self._is_head = is_head
        self.requests += 1
        self._last_io = self.loop.time()
        self._arm_timer()

    def write(self, data: bytes) -> None:
        # hostile-client: while the body still goes out, no answer is awaited
        # yet: the read timeout counts from the last byte sent as well.
        self._last_io = self.loop.time()
        self.transport.write(data)

    def relay(self) -> tuple[list[bytes], bool, BaseException | None]:
        """From now on body bytes go to the sink as they come. Returns what
        was already read (chunks, complete?, failure) so that the caller can
        send it with the response head in one write."""
        self._relaying = True
        self._complete_ready = False
        early, self._early = self._early, []
        return early, self._complete, self._failed

    def pause_reading(self) -> None:
        """The client stopped taking the answer: so do we (and the pool may
        take this connection back for a waiting request, see UpstreamPool)."""
        if not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()
            if self.pool is not None:
                self.pool.stalled(self)

    def resume_reading(self) -> None:
        if self._reading_paused and not self.closed:
            self._reading_paused = False
            self._last_io = self.loop.time()
            self.transport.resume_reading()
            if self.pool is not None:
                self.pool.unstalled(self)

    def reclaim(self) -> None:
        """The pool takes this connection back from a client that stopped
        reading: closed (never reused mid-answer); the sink cuts its client."""
        sink = self._sink
        self.close()
        if sink is not None:
            sink.upstream_reclaimed()

    @property
    def reusable(self) -> bool:
        """The exchange ended cleanly: answer complete by its framing, nothing
        after it, and every request byte handed to the kernel."""
        head = self._head
        return (
            self._complete
            and not self._dirty
            and not self.closed
            and head is not None
            and head.keep_alive
            and self._failed is None
            and self.transport.get_write_buffer_size() == 0
        )

    def idle_clean(self) -> bool:
        """At checkout: still open, and no byte came while it sat in the pool
        (one poll(2), no read: data_received may not have run yet)."""
        if self.closed or self._dirty or self.transport.is_closing():
            return False
        return self._poll is None or not self._poll.poll(0)

    def discard(self) -> None:
        """An answer nobody will read (a 5xx we retry elsewhere): read what is
        left of it, drop it, and keep the connection rather than reconnect."""
        self._sink = None
        self._relaying = False
        self._early = []
        if self._complete:
            self._complete_ready = False
            self.finish()
        else:
            self._discarding = True

    def finish(self) -> None:
        """The exchange is over: back to the pool if reusable, else closed."""
        self._discarding = False
        self._complete_ready = False
        self._busy = False
        self._sink = None
        self._relaying = False
        if self._reading_paused:
            self.resume_reading()
        if self.pool is not None and self.reusable:
            self.pool.release(self)
        else:
            self.close()

    def detach(self) -> tuple[asyncio.Transport, bytes]:
        """After a 101: a tunnel takes the transport (and what came after the
        head). This object hears nothing more; no pool ever sees it again."""
        self._sink = None
        self._relaying = False
        self._busy = False
        self.closed = True  # to this protocol object; the transport lives on
        self._cancel_timer()
        if self.pool is not None:
            self.pool.forget(self)
        tail, self._upgraded_tail = self._upgraded_tail, b""
        transport = self.transport
        assert transport is not None
        return transport, tail

    def close(self) -> None:
        """Our decision: the sink is told nothing more."""
        self._sink = None
        self._relaying = False
        if not self.closed:
            self.closed = True
            self._cancel_timer()
            if self.transport is not None:
                self.transport.abort()
        if self.pool is not None:
            self.pool.forget(self)

    # -- failure and read timeout -------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self._failed is not None or self._complete:
            return
        self._failed = exc
        sink = self._sink
        if sink is not None:
            sink.upstream_failed(exc)

    def _arm_timer(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_at(self._last_io + self._read_timeout, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        # One timer per connection, re-armed lazily: cheaper than resetting a
        # timer on every chunk.
        self._timer = None
        if not self._busy or self._complete or self.closed:
            return
        if self._reading_paused:
            # The client is slow, not the region: do not blame the region.
            self._last_io = self.loop.time()
        deadline = self._last_io + self._read_timeout
        if self.loop.time() >= deadline:
            self._fail(Sent("timeout", f"no answer from region within {self._read_timeout:g}s"))
            self.close()
        else:
            self._timer = self.loop.call_at(deadline, self._on_timer)
