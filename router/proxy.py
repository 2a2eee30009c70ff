"""What every request shares: the region store, GeoIP, metrics, limits, the
retry budget and its queue. Each request itself is an Exchange (exchange.py).
"""
from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
import resource
from typing import TYPE_CHECKING, Any, Callable

from .client_ip import TrustedProxies, identify_client
from .exchange import Exchange
from .retry import RetryBudget
from .tunnel import TunnelRegistry

if TYPE_CHECKING:
    from .listener import ClientConnection, Request
    from .metrics import Metrics
    from .state import RegionStore

log = logging.getLogger("edge_router.proxy")

# Clients remembered (address and country), and the longest X-Forwarded-For
# kept as part of a key: the cache stays within a few tens of MiB whatever
# clients send.
IDENTIFY_CACHE = 65536
IDENTIFY_CACHE_XFF = 128

# Descriptors kept for everything that is not a client: the admin API and its
# scrapes, probes, DNS, logs, the listening sockets.
FD_RESERVE = 64


def default_max_connections(config, nofile: int | None = None) -> int:
    """Client connections the descriptor limit allows once every region pool
    (and a probe per region) has its descriptors: at the limit the prober and
    the pools must still be able to connect."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile == resource.RLIM_INFINITY:
            nofile = 1 << 20
    regions = len(config.regions)
    return max(16, nofile - regions * (config.limits.pool_size + 2) - FD_RESERVE)


class Proxy:
    """Shared by every client connection: the store, GeoIP, metrics, limits."""

    def __init__(self, *, config, store: "RegionStore", geo, metrics: "Metrics", clock,
                 access_log: Callable | None = None,
                 rate_limiter=None):
        self.loop = asyncio.get_running_loop()
        self.store = store
        self._geo = geo
        self.metrics = metrics
        self.clock = clock
        self.now: Callable[[], float] = clock.now  # called several times per request: bound once
        self.access_log = access_log
        self.rate_limiter = rate_limiter  # router/ratelimit, None without rules
        self.budget = RetryBudget.from_limits(config.limits)
        self.tunnels = TunnelRegistry(self.loop, 0, on_change=metrics.tunnel_opened_or_closed,
                                      on_closed=metrics.tunnel_ended)
        self.scheme = b"https" if config.listen.tls_cert else b"http"
        self.apply_config(config)
        self.connections: set["ClientConnection"] = set()
        self.active = 0
        self.shutting_down = False
        self.random = random.random
        self._retry_waiters: collections.deque[asyncio.Future] = collections.deque()

    def apply_config(self, config) -> None:
        """Limits, trusted proxies and the retry budget's ratio, for the requests
        that start from now on (also on a config reload)."""
        self.limits = config.limits
        self.country_header = config.geo.country_header  # polish (issue 15): X-Edge-Country
        self.trusted = TrustedProxies(config.geo.trusted_proxies)
        self._new_identify()
        # The budget keeps counting the requests in flight; only its ratios change.
        self.budget.ratio = config.limits.retry_budget_ratio
        self.budget.min_retries = config.limits.retry_budget_min
        self.max_in_flight = config.breaker.max_in_flight
        fd_room = default_max_connections(config)
        self.max_connections = config.limits.max_connections or fd_room
        if self.max_connections > fd_room:
            log.warning(
                "limits.max_connections = %d leaves too few file descriptors for region pools and probes "
                "(RLIMIT_NOFILE allows about %d client connections)", self.max_connections, fd_room,
            )
        # WebSocket tunnels hold their client connection for minutes: a share of them.
        self.tunnels.max_tunnels = config.limits.max_tunnels if config.limits.max_tunnels is not None \
            else self.max_connections // 2

    @property
    def geo(self) -> Any:
        return self._geo

    @geo.setter
    def geo(self, geo: Any) -> None:
        """Another GeoIP database: the countries worked out so far are forgotten."""
        self._geo = geo
        self._new_identify()

    def _new_identify(self) -> None:
        # The same clients come back (and behind a load balancer, the same
        # peers): their address and country are worked out once, in a bounded
        # LRU made anew with each config and GeoIP database.
        self._identified = functools.lru_cache(maxsize=IDENTIFY_CACHE)(
            functools.partial(identify_client, trusted=self.trusted, geo=self._geo)
        )

    def identify(self, peer: str, xff: bytes | None) -> tuple[str, str | None]:
        """(client address, country) of a request from `peer` with this X-Forwarded-For."""
        if xff is not None and len(xff) > IDENTIFY_CACHE_XFF:
            # Any client may send a long chain, new every time: worked out, never kept.
            return identify_client(peer, xff, self.trusted, self._geo)
        return self._identified(peer, xff)

    def try_retry_now(self) -> bool:
        """A retry slot at once, if nobody queues before us."""
        return not self._retry_waiters and self.budget.try_acquire_retry()

    async def acquire_retry(self) -> bool:
        """A retry slot, within the budget. When a region dies with many requests
        in flight, the retries queue for slots (bounded by retry_wait) instead
        of failing: the budget caps concurrent retries, not the number answered."""
        if self.try_retry_now():
            return True
        waiter = self.loop.create_future()
        self._retry_waiters.append(waiter)
        try:
            async with asyncio.timeout(self.limits.connect_timeout):  # not wait_for: see pool._wait_turn
                await waiter
            return True
        except TimeoutError:
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

    def refuse_connection(self) -> None:
        self.metrics.connections_refused.inc()

    def count_rejection(self, status: int) -> None:
        self.metrics.count_request("none", status, self.store.strategy)

    def handle(self, client: "ClientConnection", req: "Request") -> "Exchange":
        ex = Exchange(self, client, req)
        client.exchange = ex
        self.active += 1
        self.budget.request_started()
        ex.start()
        return ex
