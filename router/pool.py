"""Per-region pool of keep-alive upstream connections, bounded.

Under load a request waits briefly for a connection to come free instead of
opening one more: reconnect storms cost more throughput than short waits.
"""
from __future__ import annotations

import asyncio
import collections
import ssl
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from .errors import NotSent
from .resolver import Resolver
from .upstream import UpstreamConnection


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a region's API lives, parsed once from its URL."""

    scheme: str
    host: str
    port: int
    base_path: str  # prefix for every forwarded path ("" for none)
    host_header: bytes  # Host sent to the region
    # What every request head to it holds, encoded once: the path prefix, and
    # the request line's end with the Host line.
    path_prefix: bytes
    host_line: bytes

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        u = urlsplit(url)
        scheme = u.scheme.lower()
        if scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if scheme == "https" else 80
        port = u.port or default
        host = u.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        base_path = u.path.rstrip("/")
        host_bytes = host_header.encode("idna")
        return cls(scheme, host, port, base_path, host_bytes, base_path.encode(),
                   b" HTTP/1.1\r\nHost: " + host_bytes + b"\r\n")


def client_ssl_context(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """Verifying TLS context for a region: system CAs or its own CA, optional mTLS."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class UpstreamPool:
    __slots__ = (
        "region", "endpoint", "_loop", "_resolver", "_ssl", "_size", "_wait",
        "_connect_timeout", "_read_timeout", "_idle_timeout", "_idle", "_waiters",
        "_open", "_sweeper", "_closed", "connects", "_max_head", "_stalled", "_reclaimer", "opener",
    )

    def __init__(
        self,
        region: str,
        endpoint: Endpoint,
        *,
        resolver: Resolver,
        ssl_context: ssl.SSLContext | None,
        size: int,
        wait: float,
        connect_timeout: float,
        read_timeout: float,
        idle_timeout: float,
        max_head_bytes: int = 65536,
        opener: Callable[[], Awaitable[UpstreamConnection]] | None = None,
    ) -> None:
        self.region = region
        self.endpoint = endpoint
        self._loop = asyncio.get_running_loop()
        self._resolver = resolver
        self._ssl = ssl_context if endpoint.scheme == "https" else None
        self._size = size
        self._wait = wait
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle_timeout = idle_timeout
        self._max_head = max_head_bytes
        self._idle: collections.deque[UpstreamConnection] = collections.deque()
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._open = 0  # connections open or being opened
        # Busy connections whose client stopped reading, oldest first (-> when).
        self._stalled: dict[UpstreamConnection, float] = {}
        self._reclaimer: asyncio.TimerHandle | None = None
        self._closed = False
        self.connects = 0
        # Opens a connection instead of a socket to the endpoint (in-memory tests).
        self.opener = opener
        self._sweeper = self._loop.call_later(idle_timeout / 2, self._sweep)

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def take_idle(self) -> UpstreamConnection | None:
        """A live idle connection, at once, or None (then `acquire` waits or opens)."""
        idle = self._idle
        if not idle:
            return None
        now = self._loop.time()
        while idle:
            conn = idle.pop()  # LIFO: the warmest connection, the coldest time out
            if not conn.idle_clean() or now - conn.idle_since > self._idle_limit(conn):
                conn.close()
                continue
            return conn
        return None

    def _idle_limit(self, conn: UpstreamConnection) -> float:
        limit = conn.idle_limit
        return self._idle_timeout if limit is None else min(limit, self._idle_timeout)

    async def acquire(self) -> UpstreamConnection:
        while True:
            if self._closed:
                raise NotSent("closed", "router is shutting down")
            conn = self.take_idle()
            if conn is not None:
                return conn
            if self._open < self._size:
                return await self._connect()
            got = await self._wait_turn()
            if got is None:  # a slot came free: open a connection in it
                return await self._connect()
            if got.idle_clean():
                return got
            # Handed over, but bytes came (or it closed) since: never use it.
            got.close()

    async def _wait_turn(self) -> UpstreamConnection | None:
        """A released connection, or None for a freed slot; NotSent after `wait`."""
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._arm_reclaim()
        # asyncio.timeout, not wait_for, here and below: on 3.11 wait_for swallows a
        # cancel that lands as the result comes, and an abandoned request went on.
        try:
            async with asyncio.timeout(self._wait):
                got = await waiter
        except TimeoutError:
            raise NotSent(
                "pool", f"all {self._size} connections to {self.region} busy for {self._wait:g}s"
            ) from None
        except BaseException:
            # Cancelled just as a connection (or a slot) was handed to us: pass it on.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()
                if handed is None:
                    self._slot_freed()
                else:
                    self.release(handed)
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
        return got

    async def _connect(self) -> UpstreamConnection:
        self._open += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                conn = await self._open_connection()
        except TimeoutError:
            self._slot_freed()
            raise NotSent(
                "connect-timeout", f"{self.region}: no connection within {self._connect_timeout:g}s"
            ) from None
        except BaseException:
            self._slot_freed()
            raise
        conn.pool = self
        self.connects += 1
        return conn

    async def _open_connection(self) -> UpstreamConnection:
        if self.opener is not None:
            return await self.opener()
        ep = self.endpoint
        addrs = await self._resolver.resolve(ep.host, ep.port)
        last: Exception | None = None
        for family, addr in addrs:
            try:
                _, conn = await self._loop.create_connection(
                    lambda: UpstreamConnection(self._loop, self.region, self._read_timeout, self._max_head),
                    addr,
                    ep.port,
                    family=family,
                    ssl=self._ssl,
                    server_hostname=ep.host if self._ssl else None,
                    ssl_handshake_timeout=self._connect_timeout if self._ssl else None,
                )
                return conn
            except ssl.SSLCertVerificationError as exc:
                # Never downgrade: a certificate that does not verify is a failed connection.
                raise NotSent("tls", f"{self.region}: certificate not trusted: {exc.verify_message}") from None
            except ssl.SSLError as exc:
                raise NotSent("tls", f"{self.region}: TLS handshake failed: {exc.reason or exc}") from None
            except ConnectionRefusedError as exc:
                last = exc
                reason = "refused"
            except OSError as exc:
                last = exc
                reason = "connect"
        raise NotSent(reason, f"{self.region} {ep.host}:{ep.port}: {last}")

    async def connect_unpooled(self) -> UpstreamConnection:
        """A new connection of its own (a WebSocket tunnel): outside the pool's
        size, never handed to anyone else, closed when its user is done."""
        if self._closed:
            raise NotSent("closed", "router is shutting down")
        try:
            async with asyncio.timeout(self._connect_timeout):
                conn = await self._open_connection()
        except TimeoutError:
            raise NotSent(
                "connect-timeout", f"{self.region}: no connection within {self._connect_timeout:g}s"
            ) from None
        conn.upgrade_requested = True
        self.connects += 1
        return conn

    # -- a client that stops reading costs its own connection, not others' turn ---------
    # A connection held by a client that has not read for half of `wait` is
    # taken back (closed, its client cut) when a request is waiting for one:
    # without this, clients that never read hold every pooled connection until
    # limits.send_timeout while the others queue (nginx frees the upstream by
    # spooling the answer to disk; this frees it by ending the stalled answer).
    def stalled(self, conn: UpstreamConnection) -> None:
        self._stalled[conn] = self._loop.time()
        if self._waiters:
            self._arm_reclaim()

    def unstalled(self, conn: UpstreamConnection) -> None:
        if self._stalled:  # rarely: no dict operation per request
            self._stalled.pop(conn, None)

    def _arm_reclaim(self) -> None:
        if self._reclaimer is None and self._stalled and not self._closed:
            oldest = next(iter(self._stalled.values()))
            self._reclaimer = self._loop.call_at(oldest + self._wait / 2, self._reclaim)

    def _reclaim(self) -> None:
        self._reclaimer = None
        now = self._loop.time()
        waiting = sum(1 for w in self._waiters if not w.done())
        while waiting and self._stalled:
            conn, since = next(iter(self._stalled.items()))
            if now - since < self._wait / 2:
                break
            del self._stalled[conn]
            conn.reclaim()  # closed: forget() hands its slot to a waiter
            waiting -= 1
        if waiting:
            self._arm_reclaim()

    def release(self, conn: UpstreamConnection) -> None:
        """A finished, reusable connection: to a waiter first, else idle."""
        if self._stalled:  # rarely: no dict operation per request
            self._stalled.pop(conn, None)
        if self._closed:
            conn.pool = None
            conn.close()
            self._slot_freed()
            return
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(conn)
                return
        conn.idle_since = self._loop.time()
        self._idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection closed: its slot is free for a new one."""
        if conn.pool is not self:
            return
        conn.pool = None
        if self._stalled:  # rarely: no dict operation per request
            self._stalled.pop(conn, None)
        try:
            self._idle.remove(conn)
        except ValueError:
            pass
        self._slot_freed()

    def _slot_freed(self) -> None:
        self._open -= 1
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _sweep(self) -> None:
        now = self._loop.time()
        for conn in list(self._idle):
            if now - conn.idle_since > self._idle_limit(conn):
                conn.close()
        if not self._closed:
            self._sweeper = self._loop.call_later(self._idle_timeout / 2, self._sweep)

    def close(self) -> None:
        self._closed = True
        self._sweeper.cancel()
        if self._reclaimer is not None:
            self._reclaimer.cancel()
            self._reclaimer = None
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()
        for w in self._waiters:
            if not w.done():
                w.set_exception(NotSent("closed", "router is shutting down"))
