"""The data plane in memory, for wire tests: the real listener, proxy,
exchange, pool and upstream code, with memory transports for the sockets. The
test plays the region on every connection a pool opens."""
from __future__ import annotations

import asyncio
import ipaddress
import tomllib
from dataclasses import replace

from router.clock import FakeClock
from router.config import parse_config
from router.store import MemoryDecisionStore
from router.listener import ClientConnection
from router.metrics import Metrics
from router.pool import Endpoint, UpstreamPool
from router.proxy import Proxy
from router.resolver import Resolver
from router.state import RegionStore
from router.upstream import UpstreamConnection
from wire_rig import MemTransport  # tests/router is on sys.path (conftest.py)

MAX_HEAD = 4096


def config(regions=("r1",), breaker: str = "", limits: str = ""):
    text = f'default_region = "{regions[0]}"\nstrategy = "geographic"\n[geo]\ndatabase = ""\n'
    text += f"[limits]\nmax_response_header_bytes = {MAX_HEAD}\npool_size = 1\npool_wait = \"50ms\"\n{limits}\n"
    text += f"[breaker]\n{breaker}\n"
    for rid in regions:
        others = ", ".join(f'"{o}"' for o in regions if o != rid)
        text += (f'[[regions]]\nid = "{rid}"\napi = "http://127.0.0.1:9"\n'
                 f'health = "http://127.0.0.1:9/h"\nfailover = [{others}]\n')
    return parse_config(tomllib.loads(text))


class Stack:
    """The data plane in memory. Every connection a pool opens is recorded;
    the test plays the region on it."""

    def __init__(self, cfg):
        self.loop = asyncio.get_running_loop()
        self.clock = FakeClock()
        self.metrics = Metrics(tuple(r.id for r in cfg.regions))
        self.store = RegionStore(cfg, MemoryDecisionStore(cfg.strategy), self.metrics, self.clock)
        self.opened: list[tuple[str, UpstreamConnection, MemTransport]] = []
        lim = cfg.limits
        for rt in self.store.regions.values():
            rt.health.healthy = True
            # The real pool; only opening a socket is played by the test.
            pool = UpstreamPool(rt.id, Endpoint.parse(rt.config.api), resolver=Resolver(self.loop),
                                ssl_context=None, size=lim.pool_size, wait=lim.pool_wait,
                                connect_timeout=1.0, read_timeout=lim.read_timeout, idle_timeout=60.0,
                                max_head_bytes=lim.max_response_header_bytes, opener=self._opener(rt.id, lim))
            rt.pool = pool
        self.store.publish()
        self.proxy = Proxy(config=replace(cfg, geo=replace(cfg.geo, trusted_proxies=(
            ipaddress.ip_network("127.0.0.0/8"),))), store=self.store, geo=None,
            metrics=self.metrics, clock=self.clock)

    def _opener(self, rid, lim):
        async def open_connection():
            conn = UpstreamConnection(self.loop, rid, lim.read_timeout, lim.max_response_header_bytes)
            wire = MemTransport(("127.0.0.1", 9))
            conn.connection_made(wire)
            self.opened.append((rid, conn, wire))
            return conn
        return open_connection

    async def settle(self):
        for _ in range(10):
            await asyncio.sleep(0)

    async def request(self, head: bytes) -> tuple[ClientConnection, MemTransport]:
        client = ClientConnection(self.proxy)
        wire = MemTransport()
        client.connection_made(wire)
        client.data_received(head)
        await self.settle()
        return client, wire

    def last(self, rid="r1"):
        return [o for o in self.opened if o[0] == rid][-1]
