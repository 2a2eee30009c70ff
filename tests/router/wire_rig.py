"""Wire-test rigs: the real listener, proxy, exchange, pool and upstream code
on an event loop whose clock the test moves, with in-memory transports."""
from __future__ import annotations

import asyncio
from dataclasses import replace

from router.clock import FakeClock
from router.config import LimitsConfig, default_config
from router.store import MemoryDecisionStore
from router.listener import ClientConnection
from router.metrics import Metrics
from router.pool import Endpoint, UpstreamPool
from router.proxy import Proxy
from router.resolver import Resolver
from router.state import RegionStore
from router.upstream import UpstreamConnection


class MemTransport:
    """Enough of asyncio.Transport: keeps what is written, records closes."""

    def __init__(self, peer=("203.0.113.9", 5555)):
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.paused = False
        self.peer = peer
        self.buffered = 0  # what get_write_buffer_size reports

    def write(self, data):
        assert not self.closed, "write after close"
        self.out += data

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = self.aborted = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_write_buffer_size(self):
        return self.buffered

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


class Rig:
    """The router's data plane without sockets; time moves only when told."""

    REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")  # the walk order without GeoIP

    def __init__(self, **limits):
        self.loop = asyncio.new_event_loop()
        self.now = 1000.0
        self.loop.time = lambda: self.now  # the loop's timers run on the test's clock
        self.clock = FakeClock(self.now)
        self.limits = LimitsConfig(**limits)
        self.loop.run_until_complete(self._build())

    async def _build(self):
        base = default_config()
        regions = tuple(replace(r, api="http://127.0.0.1:9", health="http://127.0.0.1:9/h") for r in base.regions)
        config = replace(base, regions=regions, geo=replace(base.geo, database=None), limits=self.limits)
        self.metrics = Metrics(tuple(r.id for r in regions))
        self.store = RegionStore(config, MemoryDecisionStore(config.strategy), self.metrics, self.clock)
        lim = self.limits
        for rt in self.store.regions.values():
            rt.pool = UpstreamPool(
                rt.id, Endpoint.parse(rt.config.api), resolver=Resolver(self.loop), ssl_context=None,
                size=lim.pool_size, wait=lim.pool_wait, connect_timeout=lim.connect_timeout,
                read_timeout=lim.read_timeout, idle_timeout=lim.pool_idle,
            )
        self.proxy = Proxy(config=config, store=self.store, geo=None, metrics=self.metrics, clock=self.clock)

    def region(self, rid: str):
        return self.store.regions[rid]

    def upstream(self, rid: str, idle: bool = True) -> tuple[UpstreamConnection, MemTransport]:
        """A connection to a region, in its pool (idle, or busy holding a slot)."""
        rt = self.region(rid)
        conn = UpstreamConnection(self.loop, rid, self.limits.read_timeout)
        t = MemTransport(("127.0.0.1", 9))
        conn.connection_made(t)
        conn.pool = rt.pool
        rt.pool._open += 1
        if idle:
            rt.pool.release(conn)
        return conn, t

    def client(self, peer=("203.0.113.9", 5555)) -> tuple[ClientConnection, MemTransport]:
        conn = ClientConnection(self.proxy)
        t = MemTransport(peer)
        conn.connection_made(t)
        return conn, t

    def run(self, turns: int = 5) -> None:
        for _ in range(turns):
            self.loop.run_until_complete(asyncio.sleep(0))

    def advance(self, seconds: float) -> None:
        """Move both clocks, by steps, letting due timers and tasks run."""
        steps = max(1, int(seconds / 0.5))
        for _ in range(steps):
            self.now += seconds / steps
            self.clock.t = self.now
            self.run()

    def failures(self, rid: str) -> float:
        return self.region(rid).breaker.error_rate(self.clock.now())

    def close(self):
        for rt in self.store.regions.values():
            rt.pool.close()
        self.run()
        self.loop.close()


def pool_with_one_connection(wait: float = 1.0):
    """A one-slot pool (in a running loop) and the connection that holds its slot."""
    loop = asyncio.get_running_loop()
    pool = UpstreamPool("r", Endpoint.parse("http://127.0.0.1:9"), resolver=Resolver(loop), ssl_context=None,
                        size=1, wait=wait, connect_timeout=1.0, read_timeout=5.0, idle_timeout=60.0)
    conn = UpstreamConnection(loop, "r", 5.0)
    conn.connection_made(MemTransport())
    conn.pool = pool
    pool._open = 1
    return pool, conn
