"""The request lifecycle, in named phases (after Pingora's ProxyHttp):

identify client -> rank regions -> walk candidates: connect (not sent: next
region) -> forward -> relay response; a sent request goes to another region
only when idempotent, its body held, and the retry budget allows -> fail to
proxy (JSON 502/503/504) -> log.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import random
from typing import TYPE_CHECKING, Callable

from policies.model import RequestFacts

from .client_ip import client_address
from .errors import NotSent, Sent
from .http1 import LAST_CHUNK, encode_chunk, error_response, status_line
from .retry import IDEMPOTENT, RETRY_STATUSES, RetryBudget
from .state import skip_reason

if TYPE_CHECKING:
    from .listener import ClientConnection, Rejected, Request
    from .state import RegionRuntime, RegionStore
    from .upstream import ResponseHead, UpstreamConnection

log = logging.getLogger("edge_router.proxy")

_REQUEST_ID_OK = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
_SKIP_FROM_REGION = frozenset((b"x-edge-region", b"x-request-id"))


class Proxy:
    """Shared by every client connection: the store, GeoIP, metrics, limits."""

    def __init__(self, *, config, store: "RegionStore", geo, metrics, clock, access_log: Callable | None = None):
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.limits = config.limits
        self.store = store
        self.geo = geo
        self.metrics = metrics
        self.clock = clock
        self.access_log = access_log
        from .client_ip import TrustedProxies

        self.trusted = TrustedProxies(config.geo.trusted_proxies)
        # The same clients come back (and behind a load balancer, the same
        # peers): parsing their addresses once is enough.
        self.client_of = functools.lru_cache(maxsize=65536)(
            functools.partial(client_address, trusted=self.trusted)
        )
        self.budget = RetryBudget.from_limits(config.limits)
        self.max_in_flight = config.breaker.max_in_flight
        self.scheme = b"https" if config.listen.tls_cert else b"http"
        self.connections: set["ClientConnection"] = set()
        self.active = 0
        self.shutting_down = False
        self.random = random.random
        self._retry_waiters: collections.deque[asyncio.Future] = collections.deque()

    async def acquire_retry(self) -> bool:
        """A retry slot, within the budget. When a region dies with many requests
        in flight, the retries queue for slots (bounded by retry_wait) instead
        of failing: the budget caps concurrent retries, not the number answered."""
        budget = self.budget
        if not self._retry_waiters and budget.try_acquire_retry():
            return True
        waiter = self.loop.create_future()
        self._retry_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.limits.connect_timeout)
            return True
        except asyncio.TimeoutError:
            return False
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release_retry()  # granted as we were cancelled: pass it on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            try:
                self._retry_waiters.remove(waiter)
            except ValueError:
                pass

    def release_retry(self) -> None:
        """A retry ended: its slot goes to the next waiter, else back to the budget."""
        while self._retry_waiters:
            w = self._retry_waiters.popleft()
            if not w.done():
                w.set_result(True)  # the slot passes on: active_retries unchanged
                return
        self.budget.retry_finished()

    def count_rejection(self, status: int) -> None:
        self.metrics.count_request("none", status, self.store.strategy)

    async def handle(self, client: "ClientConnection", req: "Request") -> None:
        ex = Exchange(self, client, req)
        client.exchange = ex
        self.active += 1
        self.budget.request_started()
        try:
            await ex.run()
        except asyncio.CancelledError:
            ex.close_after = True
        except Exception:  # a bug must cost one request, not the process
            log.exception("internal error while proxying %s %r", req.method, req.url[:200])
            if not ex.head_sent:
                ex.send_error(502, "internal", "the router failed while handling this request")
            ex.close_after = True
        finally:
            ex.release_retry()
            self.active -= 1
            self.budget.request_finished()
            ex.finish_log()
            client.request_done(req, ex.close_after or self.shutting_down)


class Exchange:
    """One request from the client's head to the last byte of the answer."""

    __slots__ = (
        "proxy", "client", "req", "conn", "rt", "done", "out_chunked", "head_sent",
        "close_after", "status", "region", "request_id", "country", "client_ip",
        "attempts", "upstream_time", "rejected", "retry_held", "skipped",
    )

    def __init__(self, proxy: Proxy, client: "ClientConnection", req: "Request") -> None:
        self.proxy = proxy
        self.client = client
        self.req = req
        self.conn: "UpstreamConnection | None" = None
        self.rt: "RegionRuntime | None" = None
        self.done: asyncio.Future | None = None
        self.out_chunked = False
        self.head_sent = False
        self.close_after = False
        self.status = 0
        self.region = "none"
        self.country: str | None = None
        self.client_ip = ""
        self.attempts = 0
        self.upstream_time = 0.0
        self.rejected: "Rejected | None" = None
        self.retry_held = False
        self.skipped: list[tuple[str, str]] | None = None
        rid = req.request_id
        if rid and len(rid) <= 200 and all(c in _REQUEST_ID_OK for c in rid):
            self.request_id = rid
        else:
            self.request_id = os.urandom(16).hex().encode()

    # -- phases ------------------------------------------------------------------------
    async def run(self) -> None:
        proxy = self.proxy
        store = proxy.store
        req = self.req
        # 1. identify the client
        self.client_ip = ip = proxy.client_of(self.client.peer, req.xff)
        country = self.country = proxy.geo.lookup(ip) if proxy.geo is not None else None
        allowed = store.residency.get(country) if country else None
        # 2. rank; residency narrows the candidates under every strategy
        order = store.ranker.rank(RequestFacts(country, ip, req.method, ""))
        if allowed is not None:
            order = tuple(r for r in order if r in allowed) + tuple(
                r for r in store.regions if r in allowed and r not in order
            )
        # 3. walk the candidates
        now = proxy.clock.now()
        regions = store.regions
        draw = -1.0  # below every admit share until a drain needs a real draw
        first_reason = ""
        failed: tuple[int, str, str] | None = None  # a sent attempt's failure, answered if nobody answers
        limits = proxy.limits
        idempotent = req.method in IDEMPOTENT
        head = self.common_head()
        for rid in order:
            rt = regions.get(rid)
            if rt is None:
                continue
            if rt.admit < 1.0 and draw < 0:
                draw = proxy.random()  # one draw per request, for every drained region
            reason = skip_reason(rt, draw, now, proxy.max_in_flight)
            if reason:
                self.skip(rid, reason)
                first_reason = first_reason or reason
                continue
            if self.attempts >= limits.max_attempts:
                rt.breaker.on_cancel(now)
                break
            outcome = await self.attempt(rt, head)
            now = proxy.clock.now()
            if outcome is None:  # answered
                if rid != order[0]:
                    self.count_failover(order[0], rid, first_reason or "unknown")
                return
            error, sent, retryable = outcome
            first_reason = first_reason or error[1]
            if not sent:  # never reached the region: next candidate, no budget needed
                self.skip(rid, error[2])
                continue
            failed = error
            # Sent: another region only for an idempotent request whose body we hold,
            # and only within the retry budget (no retry storms).
            if not (retryable and idempotent and req.body.replayable):
                break
            if not self.retry_held:
                if not await proxy.acquire_retry():
                    proxy.metrics.retry_budget_exhausted.inc()
                    break
                self.retry_held = True
            proxy.metrics.retries.labels(failed[1]).inc()
        self.release_retry()
        # 4. fail to proxy
        if failed is not None:
            self.send_error(*failed)
        elif allowed is not None:
            self.region = "none"
            proxy.metrics.residency_refusals.labels(country).inc()
            self.send_error(
                503, "residency",
                f"no region allowed for clients in {country} is available "
                f"(allowed: {', '.join(sorted(allowed))}; {self.no_region_detail()})",
            )
        else:
            self.region = "none"
            self.send_error(503, "no_region", self.no_region_detail())

    async def attempt(self, rt: "RegionRuntime", common: bytes):
        """Forward to one region. None when the client got its answer, else
        ((status, error, detail), sent, retryable)."""
        proxy = self.proxy
        req = self.req
        clock = proxy.clock
        self.attempts += 1
        self.rt = rt
        self.region = rt.id
        rt.in_flight += 1
        conn = None
        try:
            try:
                conn = await rt.pool.acquire()
            except NotSent as exc:
                if exc.reason == "pool":  # busy, not broken: no verdict on the region
                    rt.breaker.on_cancel(clock.now())
                else:
                    proxy.store.breaker_changed(rt, rt.breaker.on_failure(clock.now()))
                return (502, exc.reason, exc.detail or exc.reason), False, True
            self.conn = conn
            ep = rt.pool.endpoint
            t_sent = clock.now()
            conn.begin(
                b"%s %s%s HTTP/1.1\r\nHost: %s\r\n%s"
                % (req.method.encode(), ep.base_path.encode(), self.target(), ep.host_header, common),
                req.method == "HEAD",
                self,
            )
            req.body.attach(conn)
            try:
                head = await conn.response_head()
            except Sent as exc:
                req.body.detach()
                conn.close()
                self.conn = None
                proxy.store.breaker_changed(rt, rt.breaker.on_failure(clock.now()))
                if exc.timed_out:
                    return (504, "upstream_timeout", f"{rt.id}: {exc.detail}"), True, True
                return (502, "upstream_failed", f"{rt.id}: {exc.detail or exc.reason}"), True, True
            self.upstream_time = clock.now() - t_sent
            rt.metrics.upstream_latency.observe(self.upstream_time)
            proxy.store.record_latency(rt, self.upstream_time)
            status = head.status
            if status in RETRY_STATUSES and self.may_retry_after(status):
                req.body.detach()
                conn.close()
                self.conn = None
                proxy.store.breaker_changed(rt, rt.breaker.on_failure(clock.now()))
                return (status, "upstream_error", f"{rt.id} answered {status}"), True, True
            # Relay: from here on the answer is the client's, whatever happens.
            self.relay_head(head, rt.id)
            ok = await self.done if self.done is not None else True
            now = clock.now()
            if status >= 500 or not ok:
                proxy.store.breaker_changed(rt, rt.breaker.on_failure(now))
            else:
                proxy.store.breaker_changed(rt, rt.breaker.on_success(now))
            if not ok:
                self.close_after = True
            if not req.complete or not req.body.done:
                # The region answered before the whole body came: the client
                # stream is out of step, and so is the region connection.
                self.close_after = True
                conn.close()
            else:
                conn.finish()
            self.conn = None
            return None
        except asyncio.CancelledError:
            rt.breaker.on_cancel(clock.now())
            raise
        finally:
            rt.in_flight -= 1
            if self.conn is not None:  # cancelled mid-exchange
                self.conn.close()
                self.conn = None

    def may_retry_after(self, status: int) -> bool:
        """Worth answering 5xx with another region rather than relaying it?"""
        req = self.req
        return (
            req.method in IDEMPOTENT
            and req.body.replayable
            and self.attempts < self.proxy.limits.max_attempts
        )

    def release_retry(self) -> None:
        if self.retry_held:
            self.retry_held = False
            self.proxy.release_retry()

    # -- building heads ------------------------------------------------------------------
    def target(self) -> bytes:
        url = self.req.url
        if url[:1] == b"/" or url == b"*":
            return url
        # absolute-form (RFC 9112 3.2.2): keep only path and query
        i = url.find(b"://")
        if i >= 0:
            j = url.find(b"/", i + 3)
            return url[j:] if j >= 0 else b"/"
        return b"/" + url

    def common_head(self) -> bytes:
        """The request head without its first two lines; same for every region."""
        req = self.req
        proxy = self.proxy
        tokens = req.conn_tokens
        parts = []
        for k, v in req.headers:
            if tokens and k.lower() in tokens:
                continue
            parts.append(b"%s: %s\r\n" % (k, v))
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
        for k, v in head.headers:
            if k.lower() in _SKIP_FROM_REGION:
                continue
            parts.append(b"%s: %s\r\n" % (k, v))
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
        parts.append(b"X-Edge-Region: %s\r\nX-Request-Id: %s\r\n\r\n" % (region.encode(), self.request_id))
        self.head_sent = True
        self.done = self.proxy.loop.create_future()
        early, complete, failed = self.conn.relay()
        # Head and whatever body already arrived leave in one write.
        if early:
            parts.extend(encode_chunk(c) for c in early) if self.out_chunked else parts.extend(early)
        if complete and self.out_chunked:
            parts.append(LAST_CHUNK)
        self.client.transport.write(b"".join(parts))
        if complete:
            self.done.set_result(True)
        elif failed is not None:
            self.upstream_failed(failed)

    # -- ResponseSink (called by the upstream connection) --------------------------------
    def upstream_body(self, data: bytes) -> None:
        self.client.transport.write(encode_chunk(data) if self.out_chunked else data)

    def upstream_complete(self) -> None:
        if self.out_chunked:
            self.client.transport.write(LAST_CHUNK)
        if self.done is not None and not self.done.done():
            self.done.set_result(True)

    def upstream_failed(self, exc: BaseException) -> None:
        # The head is out; the only honest signal left is to cut the connection.
        log.warning("region %s failed mid-response: %s", self.region, exc)
        if self.done is not None and not self.done.done():
            self.done.set_result(False)
        self.close_after = True
        self.client.transport.abort()

    def upstream_pause_writing(self) -> None:
        self.client.pause_reading()

    def upstream_resume_writing(self) -> None:
        self.client.resume_reading()

    # -- from the client connection --------------------------------------------------------
    def client_pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def client_resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    def client_gone(self) -> None:
        task = self.client.task
        if task is not None and not task.done():
            task.cancel()

    def reject(self, rej: "Rejected") -> None:
        """The client's body broke a limit or the stream went bad mid-request."""
        self.rejected = rej
        if self.conn is not None and not self.head_sent:
            self.conn.close()
        if not self.head_sent:
            self.send_error(rej.status, rej.error, rej.detail)
        self.close_after = True
        if self.done is not None and not self.done.done():
            self.done.set_result(False)
        self.client_gone()

    # -- answers made by the router ---------------------------------------------------------
    def send_error(self, status: int, error: str, detail: str) -> None:
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
            )
        )

    def skip(self, rid: str, reason: str) -> None:
        if self.skipped is None:
            self.skipped = []
        self.skipped.append((rid, reason))

    def no_region_detail(self) -> str:
        if not self.skipped:
            return "no candidate region for this request"
        return "no region available: " + ", ".join(f"{r} {why}" for r, why in self.skipped)

    def count_failover(self, src: str, dst: str, reason: str) -> None:
        self.proxy.metrics.failovers.labels(src, dst, reason).inc()

    def finish_log(self) -> None:
        proxy = self.proxy
        status = self.status or 499
        region = self.region if self.head_sent and self.rt is not None and self.status else "none"
        proxy.metrics.count_request(region, status, proxy.store.strategy)
        duration = proxy.clock.now() - self.req.started
        if self.rt is not None:
            self.rt.metrics.request_duration.observe(duration)
        if proxy.access_log is not None:
            proxy.access_log(self, duration)
