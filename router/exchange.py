"""One request's life, in named phases (after Pingora's ProxyHttp):

identify client -> rank regions -> walk candidates: connect (not sent: next
region) -> forward -> relay response; a sent request goes to another region
only when idempotent, its body held, and the retry budget allows -> fail to
proxy (JSON 502/503/504) -> log.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import TYPE_CHECKING, Final

from .errors import NotSent, Rejected, Sent
from .http1 import LAST_CHUNK, encode_chunk, error_response, origin_form, status_line, valid_request_id
from .logs import log_route, routing_log, skipped_text
from .retry import RETRY, RETRY_STATUSES, retry_decision
from .candidates import panic_pick, passed_over, skip_reason
from .tunnel import Tunnel

if TYPE_CHECKING:
    from .listener import ClientConnection, Request
    from .proxy import Proxy
    from .state import RegionRuntime
    from .upstream import ResponseHead, UpstreamConnection

log = logging.getLogger("edge_router.exchange")



class RequestIds:
    """Request ids, 32 hex digits. They must be unique, not secret: a PRNG
    seeded from the OS once is enough (no getrandom() per request), and its
    bytes are drawn and hex-encoded for 128 ids at a time."""

    __slots__ = ("_random", "_batch", "_pos")

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))
        self._batch = b""
        self._pos = 0

    def next(self) -> bytes:
        pos = self._pos
        if pos >= len(self._batch):
            self._batch = self._random.randbytes(2048).hex().encode()
            pos = 0
        self._pos = pos + 32
        return self._batch[pos:pos + 32]


_request_ids: Final = RequestIds()

# On the router's own 503s (no region, overload, residency): worth trying again soon.
RETRY_AFTER = ((b"Retry-After", b"1"),)



class Exchange:
    """One request from the client's head to the last byte of the answer."""

    __slots__ = (
        "proxy", "client", "req", "conn", "rt", "out_chunked", "head_sent",
        "close_after", "status", "region", "request_id", "country", "client_ip",
        "attempts", "upstream_time", "retry_held", "skipped",
        "order", "pos", "allowed", "common", "draw", "first_reason", "failed", "failed_region",
        "t_sent", "task", "finished", "in_attempt", "out", "rl_headers",
    )

    def __init__(self, proxy: Proxy, client: "ClientConnection", req: "Request") -> None:
        self.proxy = proxy
        self.client = client
        self.req = req
        self.conn: "UpstreamConnection | None" = None
        self.rt: "RegionRuntime | None" = None
        self.out_chunked = False
        self.head_sent = False
        self.close_after = False
        self.status = 0
        self.region = "none"
        self.country: str | None = None
        self.client_ip = ""
        self.attempts = 0
        self.upstream_time = 0.0
        self.retry_held = False
        self.skipped: list[tuple[str, str]] | None = None
        self.order: tuple[str, ...] = ()
        self.pos = 0
        self.allowed: frozenset[str] | None = None
        self.common = b""
        self.draw = -1.0  # below every admit share until a drain needs a real draw
        self.first_reason = ""
        self.failed: tuple[int, str, str] | None = None  # a sent attempt's failure
        self.failed_region = ""  # ... and the region it came from
        self.t_sent = 0.0
        self.task: asyncio.Task | None = None  # only while waiting (connect, pool, retry slot)
        self.finished = False
        self.in_attempt = False
        self.out: list[bytes] = []  # bytes for the client, written once per region read
        self.rl_headers = b""  # rate limit: remaining-quota header lines for the answer
        rid = req.request_id
        self.request_id = rid if rid is not None and valid_request_id(rid) else _request_ids.next()

    # -- phases ------------------------------------------------------------------------
    # The common path runs in callbacks, without a task: a pooled connection is
    # taken at once and the answer is relayed from the region's parser callbacks.
    # A task is started only to wait: for a new connection, a free pooled one, or
    # a retry slot.
    def start(self) -> None:
        """1. identify the client, 2. rank, 3. walk the candidates."""
        try:
            proxy = self.proxy
            store = proxy.store
            req = self.req
            ip, country = proxy.identify(self.client.peer, req.xff)
            self.client_ip = ip
            self.country = country
            # -- rate limit (router/ratelimit): once, before any region is chosen --
            if proxy.rate_limiter is not None:
                verdict = proxy.rate_limiter.check(req.method, req.url, req.headers, ip, country)
                if verdict.__class__ is not bytes:
                    self.send_error(429, "rate_limited", verdict.detail, verdict.headers)
                    self.finish()
                    return
                self.rl_headers = verdict
            # -- end rate limit --
            if req.websocket and proxy.tunnels.full():
                self.send_error(503, "too_many_tunnels",
                                f"{proxy.tunnels.max_tunnels} WebSocket tunnels are open (limits.max_tunnels)")
                self.finish()
                return
            candidates = store.candidates  # ranked, narrowed to residency (router/candidates.py)
            self.allowed = candidates.allowed(country)
            self.order = candidates.order(country, ip, req.method, store.next_seq())
            self.common = self.common_head()
            self.walk()
        except Exception:
            self.internal_error()

    def walk(self) -> None:
        """Go to the next usable candidate; answer ourselves when none is left."""
        proxy = self.proxy
        regions = proxy.store.regions
        now = proxy.now()
        order = self.order
        while self.pos < len(order):
            rid = order[self.pos]
            self.pos += 1
            rt = regions.get(rid)
            if rt is None:
                continue
            if rt.admit < 1.0 and self.draw < 0:
                self.draw = proxy.random()  # one draw per request, for every drained region
            reason = passed_over(rt, self.draw, proxy.max_in_flight)
            if not reason and not rt.breaker.allow(now):  # a True in half-open takes its trial slot
                reason = "breaker_open"
            if reason:
                self.skip(rid, reason)
                self.first_reason = self.first_reason or reason
                continue
            if self.attempts >= proxy.limits.max_attempts:
                rt.breaker.on_cancel(now)
                break
            self.attempt(rt)
            return
        # hostile-region: breaker panic (router/state.py panic_pick)
        panic = panic_pick(self.skipped, self.attempts)
        if panic is not None:
            self.attempt(proxy.store.breaker_panic(panic))
            return
        self.fail_to_proxy()

    def attempt(self, rt: "RegionRuntime") -> None:
        """Send to this region: a pooled connection at once, else wait for one."""
        self.attempts += 1
        self.rt = rt
        self.region = rt.id
        self.in_attempt = True
        rt.in_flight += 1
        # A WebSocket tunnel gets a connection of its own, never a pooled one.
        conn = None if self.req.websocket else rt.pool.take_idle()
        if conn is not None:
            self.send(conn)
        else:
            self.wait_for(self.connect_and_send(rt))

    async def connect_and_send(self, rt: "RegionRuntime") -> None:
        try:
            conn = await (rt.pool.connect_unpooled() if self.req.websocket else rt.pool.acquire())
        except NotSent as exc:
            now = self.proxy.now()
            if exc.reason == "pool":  # busy, not broken: no verdict on the region
                rt.breaker.on_cancel(now)
            else:
                self.proxy.store.breaker_changed(rt, rt.breaker.on_failure(now))
            self.end_attempt()
            self.attempts -= 1  # max_attempts counts sent attempts only
            # Never reached the region: the next candidate, no retry budget needed.
            self.first_reason = self.first_reason or exc.reason
            self.skip(rt.id, exc.detail or exc.reason)
            self.walk()
            return
        if self.finished:  # the client left while we waited
            conn.finish()
            return
        self.send(conn)

    def send(self, conn: "UpstreamConnection") -> None:
        """Forward: the request head in one write, then the body as it comes."""
        rt = self.rt
        assert rt is not None
        req = self.req
        self.conn = conn
        ep = rt.pool.endpoint
        self.t_sent = self.proxy.now()
        conn.begin(req.method == "HEAD", self)
        req.body.attach(  # the head and any body already here: one write
            conn,
            b"".join((req.method.encode(), b" ", ep.path_prefix, origin_form(req.url), ep.host_line, self.common)),
        )

    # -- ResponseSink (called by the upstream connection) --------------------------------
    def upstream_head(self, head: "ResponseHead") -> None:
        try:
            proxy = self.proxy
            rt = self.rt
            assert rt is not None
            self.upstream_time = proxy.now() - self.t_sent
            rt.metrics.upstream_latency.observe(self.upstream_time)
            proxy.store.record_outcome(rt, self.upstream_time, head.status)  # latency, degrade
            status = head.status
            if status == 101:  # only ever seen by a WebSocket upgrade (upgrade_requested)
                self.switch_protocols(head)
                return
            if status in RETRY_STATUSES and self.may_retry_after(status) and self.retry_slot():
                req = self.req
                if req.body.done and (head.no_body or (head.length is not None and head.length <= 65536)):
                    # A small answer after a whole request: drain it, keep the connection.
                    self.conn.discard()
                    self.conn = None
                self.drop_region((status, "upstream_error", f"{rt.id} answered {status}"))
                return
            # Relay: from here on the answer is the client's, whatever happens.
            self.relay_head(head, rt.id)
        except Exception:
            self.internal_error()

    def switch_protocols(self, head: "ResponseHead") -> None:
        """The region accepted a WebSocket upgrade: relay its 101, then a tunnel
        carries bytes both ways. Nothing is retried from here on."""
        proxy = self.proxy
        rt = self.rt
        assert rt is not None
        client = self.client
        self.status = 101
        self.head_sent = True
        client_transport, from_client = client.hand_over()
        client_transport.write(b"%s%sConnection: Upgrade\r\nUpgrade: websocket\r\n"
                               b"X-Edge-Region: %s\r\nX-Request-Id: %s\r\n\r\n"
                               % (status_line(101), b"".join(head.headers), rt.id.encode(), self.request_id))
        region_transport, from_region = self.conn.detach()
        self.conn = None
        proxy.store.breaker_changed(rt, rt.breaker.on_success(proxy.now()))
        self.end_attempt()
        if rt.id != self.order[0]:
            self.count_failover(self.order[0], rt.id, self.first_reason or "unknown")
        Tunnel(proxy.loop, rt.id, client_transport, region_transport, proxy.limits.tunnel_idle_timeout,
               proxy.tunnels, on_end=lambda t: proxy.connections.discard(client)).start(from_client, from_region)
        self.finish()

    def upstream_interim(self, status: int, headers: list[bytes]) -> None:
        """A 1xx (103 Early Hints, 102) before the final answer: forwarded to an
        HTTP/1.1 client (RFC 9110 15.2); HTTP/1.0 has no 1xx. 100 Continue is
        the router's own business (answered when the client asked)."""
        if self.req.version == "1.1" and not self.head_sent and status not in (100, 101):
            self.out.append(b"%s%s\r\n" % (status_line(status), b"".join(headers)))

    def upstream_body(self, data: bytes) -> None:
        self.out.append(encode_chunk(data) if self.out_chunked else data)

    def upstream_complete(self) -> None:
        if self.out_chunked:
            self.out.append(LAST_CHUNK)
        self.complete(True)

    def upstream_flush(self) -> None:
        """After each read from the region: what it gave the client, in one write."""
        out = self.out
        if out:
            self.out = []
            transport = self.client.transport
            if not transport.is_closing():
                transport.write(out[0] if len(out) == 1 else b"".join(out))

    def upstream_failed(self, exc: BaseException) -> None:
        if isinstance(exc, Sent) and exc.timed_out and not self.req.body.done:
            # The region waits for a body the client does not send: the client's
            # stall, never held against the region nor retried.
            self.reject(Rejected(408, "request_timeout", "request body not received in time"))
            return
        if not self.head_sent:
            rt = self.rt
            assert rt is not None
            self.proxy.store.record_outcome(rt, self.proxy.now() - self.t_sent, 0)  # degrade
            if isinstance(exc, Sent) and exc.timed_out:
                self.drop_region((504, "upstream_timeout", f"{rt.id}: {exc.detail}"))
            else:
                detail = exc.detail or exc.reason if isinstance(exc, Sent) else str(exc)
                # hostile-region: a region head over limits.max_response_header_bytes
                error = "upstream_head_too_large" if getattr(exc, "reason", "") == "head-too-large" else "upstream_failed"
                self.drop_region((502, error, f"{rt.id}: {detail}"))
            return
        # The head is out; the only honest signal left is to cut the connection.
        log.warning("region %s failed mid-response: %s", self.region, exc)
        self.close_after = True
        self.out = []
        self.client.transport.abort()
        self.complete(False)

    def upstream_pause_writing(self) -> None:
        self.client.pause_reading()

    def upstream_resume_writing(self) -> None:
        self.client.resume_reading()

    def upstream_reclaimed(self) -> None:
        """The pool took our region connection back for a waiting request: our
        client stopped reading. Cut as limits.send_timeout would, sooner."""
        self.conn = None  # closed by the pool; abandon() has nothing left to close
        self.proxy.metrics.stalled_clients_cut.labels(self.region).inc()
        self.client.cut()

    # -- outcomes ------------------------------------------------------------------------
    def drop_region(self, error: tuple[int, str, str]) -> None:
        """A sent attempt failed before any answer went to the client."""
        rt = self.rt
        assert rt is not None
        proxy = self.proxy
        self.req.body.detach()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        proxy.store.breaker_changed(rt, rt.breaker.on_failure(proxy.now()))
        self.end_attempt()
        self.failed = error
        self.failed_region = rt.id
        self.first_reason = self.first_reason or error[1]
        # Sent: another region only for an idempotent request whose body we hold,
        # and only within the retry budget (no retry storms).
        req = self.req
        timed_out = error[1] == "upstream_timeout"
        if retry_decision(req.method, True, req.body.replayable, error[0], timed_out) != RETRY:
            self.fail_to_proxy()
        elif self.retry_held or proxy.try_retry_now():
            self.retry_held = True
            proxy.metrics.retries.labels(error[1]).inc()
            self.walk()
        else:
            self.wait_for(self.wait_retry_then_walk(error))

    async def wait_retry_then_walk(self, error: tuple[int, str, str]) -> None:
        proxy = self.proxy
        if not await proxy.acquire_retry():
            proxy.metrics.retry_budget_exhausted.inc()
            self.fail_to_proxy()
            return
        self.retry_held = True
        if self.finished:
            self.release_retry()
            return
        proxy.metrics.retries.labels(error[1]).inc()
        self.walk()

    def complete(self, ok: bool) -> None:
        """The answer was relayed (ok) or broke off mid-body (not ok)."""
        self.upstream_flush()
        proxy = self.proxy
        rt = self.rt
        assert rt is not None
        req = self.req
        conn = self.conn
        self.conn = None
        now = proxy.now()
        if not ok or rt.breaker.is_failure(self.status):  # hostile-region: 500 is not the region's fault
            proxy.store.breaker_changed(rt, rt.breaker.on_failure(now))
        else:
            proxy.store.breaker_changed(rt, rt.breaker.on_success(now, self.status >= 500))
        if not ok:
            self.close_after = True
        if conn is not None:
            if not req.complete or not req.body.done:
                # The region answered before the whole body came: the client
                # stream is out of step, and so is the region connection.
                self.close_after = True
                conn.close()
            else:
                conn.finish()
        self.end_attempt()
        if ok and rt.id != self.order[0]:
            self.count_failover(self.order[0], rt.id, self.first_reason or "unknown")
        self.finish()

    def fail_to_proxy(self) -> None:
        """4. No region answered: the router answers itself, in JSON."""
        self.release_retry()
        if self.failed is not None:
            # Answered with a sent attempt's failure: named after the region it
            # came from, not a later candidate that could not even be reached.
            self.region = self.failed_region
            self.send_error(*self.failed)
        elif self.allowed is not None:
            self.region = "none"
            self.proxy.metrics.residency_refusals.labels(self.country).inc()
            self.send_error(
                503, "residency",
                f"no region allowed for clients in {self.country} is available "
                f"(allowed: {', '.join(sorted(self.allowed))}; {self.no_region_detail()})",
            )
        else:
            self.region = "none"
            self.send_error(503, "no_region", self.no_region_detail())
        self.finish()

    def end_attempt(self) -> None:
        if self.in_attempt:
            self.in_attempt = False
            self.rt.in_flight -= 1

    def finish(self) -> None:
        """5. log, and hand the connection back to the client side. Exactly once."""
        if self.finished:
            return
        self.finished = True
        proxy = self.proxy
        self.release_retry()
        proxy.active -= 1
        proxy.budget.request_finished()
        self.finish_log()
        self.client.request_done(self.req, self.close_after or proxy.shutting_down)

    def internal_error(self) -> None:
        """A bug must cost one request, not the process."""
        log.exception("internal error while proxying %s %r", self.req.method, self.req.url[:200])
        self.abandon()
        self.send_error(502, "internal", "the router failed while handling this request")
        self.close_after = True
        self.finish()

    def abandon(self) -> None:
        """Stop whatever is under way: waiting task, region connection, attempt."""
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.in_attempt:
            self.rt.breaker.on_cancel(self.proxy.now())
            self.end_attempt()

    def wait_for(self, coro) -> None:
        self.task = self.proxy.loop.create_task(self._guarded(coro))

    async def _guarded(self, coro) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            pass  # abandoned: whoever cancelled has finished the exchange
        except Exception:
            self.internal_error()

    def may_retry_after(self, status: int) -> bool:
        """Worth answering a 502/503/504 with another region rather than relaying it?
        Only if another candidate can take it: else the last answer wins, and
        the client gets the region's own (its Retry-After, its body), as nginx."""
        req = self.req
        return (
            self.attempts < self.proxy.limits.max_attempts
            and retry_decision(req.method, True, req.body.replayable, status, False) == RETRY
            and self.another_candidate()
        )

    def another_candidate(self) -> bool:
        """Is a region left in the walk that would be tried now? (No side effect
        beyond the request's one drain draw.)"""
        proxy = self.proxy
        regions = proxy.store.regions
        now = proxy.now()
        for rid in self.order[self.pos:]:
            rt = regions.get(rid)
            if rt is None:
                continue
            if rt.admit < 1.0 and self.draw < 0:
                self.draw = proxy.random()
            if not skip_reason(rt, self.draw, now, proxy.max_in_flight):
                return True
        return False

    def retry_slot(self) -> bool:
        """A retry slot now, within the budget; none: the region's answer is relayed."""
        if not self.retry_held and self.proxy.try_retry_now():
            self.retry_held = True
        return self.retry_held

    def release_retry(self) -> None:
        if self.retry_held:
            self.retry_held = False
            self.proxy.release_retry()

    # -- building heads ------------------------------------------------------------------
    def common_head(self) -> bytes:
        """The request head without its first two lines; same for every region."""
        req = self.req
        proxy = self.proxy
        tokens = req.conn_tokens
        if tokens:  # headers the Connection header names are hop-by-hop too
            parts = [h for h in req.headers if h.split(b":", 1)[0].lower() not in tokens]
        else:
            parts = req.headers[:]
        peer = self.client.peer
        if peer.startswith("::ffff:"):
            peer = peer[7:]
        # A trusted proxy's chain is kept; anyone else's is replaced (spoofing).
        if req.xff and proxy.trusted and proxy.trusted.is_trusted(self.client.peer):
            parts.append(b"X-Forwarded-For: %s, %s\r\n" % (req.xff, peer.encode()))
            proto = req.xfproto or proxy.scheme
        else:
            parts.append(b"X-Forwarded-For: %s\r\n" % peer.encode())
            proto = proxy.scheme
        parts.append(b"X-Forwarded-Proto: %s\r\n" % proto)
        if req.host is not None:
            parts.append(b"X-Forwarded-Host: %s\r\n" % req.host)
        parts.append(b"X-Request-Id: %s\r\n" % self.request_id)
        if req.websocket:  # the one upgrade that is forwarded (and then tunnelled)
            parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
        body = req.body
        if body.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif req.content_length is not None:
            parts.append(b"Content-Length: %d\r\n" % req.content_length)
        parts.append(b"\r\n")
        return b"".join(parts)

    def relay_head(self, head: "ResponseHead", region: str) -> None:
        req = self.req
        self.status = head.status
        parts = [status_line(head.status)]
        parts += head.headers
        close = not req.keep_alive or self.proxy.shutting_down or req.upgrade
        if not head.no_body and head.length is None:
            if req.version == "1.1":
                parts.append(b"Transfer-Encoding: chunked\r\n")
                self.out_chunked = True
            else:
                close = True  # HTTP/1.0: the end of the body is the end of the connection
        if close:
            parts.append(b"Connection: close\r\n")
            self.close_after = True
        elif req.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        # -- polish (issue 15): X-Edge-Country behind [geo] country_header, off by default
        if self.proxy.country_header:
            parts.append(b"X-Edge-Country: %s\r\n" % (self.country or "XX").encode())
        # -- end polish
        if self.rl_headers:
            parts.append(self.rl_headers)  # rate limit: remaining quota
        parts.append(b"X-Edge-Region: %s\r\nX-Request-Id: %s\r\n\r\n" % (region.encode(), self.request_id))
        self.head_sent = True
        early, complete, failed = self.conn.relay()
        # Head and whatever body already arrived leave in one write.
        if early:
            parts.extend(encode_chunk(c) for c in early) if self.out_chunked else parts.extend(early)
        if complete and self.out_chunked:
            parts.append(LAST_CHUNK)
        # Written with the body that follows in the same read (upstream_flush),
        # after any interim answer of the same read.
        if self.out:
            parts[:0] = self.out
        self.out = parts
        if complete:
            self.complete(True)
        elif failed is not None:
            self.upstream_failed(failed)

    # -- from the client connection --------------------------------------------------------
    def client_pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def client_resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    def client_gone(self) -> None:
        if not self.finished:
            self.abandon()
            self.close_after = True
            self.finish()

    def reject(self, rej: "Rejected") -> None:
        """The client's body broke a limit or the stream went bad mid-request."""
        if self.finished:
            return
        self.abandon()
        if not self.head_sent:
            self.send_error(rej.status, rej.error, rej.detail)
        self.close_after = True
        self.finish()

    # -- answers made by the router ---------------------------------------------------------
    def send_error(self, status: int, error: str, detail: str, extra_headers: tuple = ()) -> None:
        if self.head_sent or self.client.closed:
            return
        self.status = status
        self.head_sent = True
        # A request body we did not read leaves the stream out of step: close.
        if not self.req.complete:
            self.close_after = True
        self.client.transport.write(
            error_response(
                status, error, detail,
                region=self.region, request_id=self.request_id.decode("latin-1"),
                close=self.close_after or self.proxy.shutting_down or not self.req.keep_alive,
                extra_headers=RETRY_AFTER if status == 503 else extra_headers,
            )
        )

    def skip(self, rid: str, reason: str) -> None:
        if self.skipped is None:
            self.skipped = []
        self.skipped.append((rid, reason))

    def no_region_detail(self) -> str:
        if not self.skipped:
            return "no candidate region for this request"
        return "no region available: " + skipped_text(self.skipped)

    def count_failover(self, src: str, dst: str, reason: str) -> None:
        self.proxy.metrics.failovers.labels(src, dst, reason).inc()
        self.proxy.store.notifier.failover(src, dst, reason)

    def finish_log(self) -> None:
        proxy = self.proxy
        status = self.status or 499
        region = self.region if self.head_sent and self.rt is not None and self.status else "none"
        proxy.metrics.count_request(region, status, proxy.store.strategy)
        duration = proxy.now() - self.req.started
        if region != "none":
            self.rt.metrics.request_duration.observe(duration)
        else:  # polish (issue 15): the router's own answers have a duration too
            proxy.metrics.none_duration.observe(duration)
        if proxy.access_log is not None:
            proxy.access_log(self, duration)
        if routing_log.isEnabledFor(logging.DEBUG):  # polish (issue 15): the routing decision
            log_route(self, region, status)
