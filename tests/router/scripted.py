"""Scripted regions on a fake event loop, for driving whole requests through the
router's data plane without sockets (tests/router/test_exchange.py).

The loop is uvicorn's MockLoop idea on a real asyncio loop: its clock stands
still until the test moves it, so a timer (read timeout, connect timeout, the
retry budget's wait) fires exactly when the test says, never by luck. Opening a
connection (`loop.create_connection`, what the pool calls) plays the region's
script instead of touching the network: the router's own code runs unchanged
from the client's bytes to the region's and back.
"""
from __future__ import annotations

import asyncio
import tomllib
from dataclasses import dataclass, field

import httptools

from bench.harness import router_config
from router.config import parse_config
from router.listener import ClientConnection
from router.server import Router
from wire_rig import MemTransport  # tests/router is on sys.path (conftest.py)

# What a region does with one connection attempt:
REFUSE = "refuse"  # the connection is refused: nothing was sent
BLACKHOLE = "blackhole"  # the connection never opens (SYN lost): connect timeout
RESET = "reset"  # takes the request, then resets before any answer
OK = "200"  # answers 200
BUSY = "503"  # answers its own 503 (a small JSON body); "500", "502" and "504" likewise
SILENT = "silent"  # takes the request, never answers: read timeout
SLOW = "slow"  # answers 200, SLOW_DELAY seconds after the request (loop time)
CUT = "cut"  # answers 200 with 5 of 20 body bytes, then closes
ERRORS = {"500": b"Internal Server Error", "502": b"Bad Gateway", BUSY: b"Service Unavailable",
          "504": b"Gateway Timeout"}
SLOW_DELAY = 3.0


def answer(region: str, play: str) -> bytes:
    if play == OK:
        body = f"ok from {region}".encode()
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    if play in ERRORS:
        body = f'{{"busy":"{region}"}}'.encode()
        return b"HTTP/1.1 %s %s\r\nContent-Length: %d\r\n\r\n%s" % (
            play.encode(), ERRORS[play], len(body), body)
    if play == CUT:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nhello"
    raise ValueError(play)


class RegionWire(MemTransport):
    """The region's end of one connection: parses what the router sends and,
    once a whole request is in, plays the region's answer."""

    def __init__(self, region: "ScriptedRegion", protocol: asyncio.Protocol, loop: "ScriptedLoop") -> None:
        super().__init__(("127.0.0.1", region.port))
        self.region = region
        self.protocol = protocol
        self.loop = loop
        self.parser = httptools.HttpRequestParser(self)
        self.lost = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.parser.feed_data(bytes(data))

    def on_headers_complete(self) -> None:
        self.region.requests.append(self.parser.get_method().decode())

    def on_message_complete(self) -> None:
        self.loop.call_soon(self.play, self.region.next_play())

    def play(self, play: str) -> None:
        if self.lost:
            return
        if play == RESET:
            self.drop(ConnectionResetError("reset by the region"))
        elif play in (OK, CUT) or play in ERRORS:
            self.protocol.data_received(answer(self.region.id, play))
            if play == CUT:
                self.drop(None)
        elif play == SLOW:
            self.loop.call_later(SLOW_DELAY, self.play, OK)
        # SILENT: nothing, ever

    def drop(self, exc: Exception | None) -> None:
        """The connection ends (a real transport tells its protocol soon after)."""
        if not self.lost:
            self.lost = True
            self.closed = True
            self.loop.call_soon(self.protocol.connection_lost, exc)

    def close(self) -> None:
        super().close()
        self.drop(None)

    def abort(self) -> None:
        super().abort()
        self.drop(None)


@dataclass
class ScriptedRegion:
    """Plays its script, one entry per attempt (the last one repeats): an attempt is
    a connection refused or never opened, or a whole request received."""
    id: str
    port: int
    script: tuple[str, ...]
    tries: int = 0  # attempts so far
    requests: list[str] = field(default_factory=list)  # methods of the requests it received
    wires: list[RegionWire] = field(default_factory=list)

    def next_play(self) -> str:
        play = self.script[min(self.tries, len(self.script) - 1)]
        self.tries += 1
        return play


class ScriptedLoop(asyncio.SelectorEventLoop):
    """A real event loop whose time the test moves and whose outgoing
    connections reach scripted regions (by port)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.regions: dict[int, ScriptedRegion] = {}

    def time(self) -> float:
        return self.now

    async def create_connection(self, protocol_factory, host=None, port=None, **kw):
        region = self.regions[port]
        play = region.script[min(region.tries, len(region.script) - 1)]
        if play == REFUSE:
            region.tries += 1
            raise ConnectionRefusedError(111, "Connection refused")
        if play == BLACKHOLE:
            region.tries += 1
            await self.create_future()  # until the caller's connect timeout cancels it
        protocol = protocol_factory()
        wire = RegionWire(region, protocol, self)
        region.wires.append(wire)
        protocol.connection_made(wire)
        return wire, protocol

    def turn(self, turns: int = 8) -> None:
        """Run what is ready now; timers fire only when advance() reaches them."""
        for _ in range(turns):
            self.run_until_complete(asyncio.sleep(0))

    def advance(self, seconds: float, step: float = 0.1) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            self.turn()


class DataPlane:
    """The router's data plane as server.Router builds it (Router.build_proxy),
    in front of scripted regions, on a ScriptedLoop."""

    def __init__(self, scripts: dict[str, tuple[str, ...]], **limits) -> None:
        self.loop = ScriptedLoop()
        ports = {rid: 9001 + i for i, rid in enumerate(scripts)}
        self.regions = {rid: ScriptedRegion(rid, ports[rid], tuple(script)) for rid, script in scripts.items()}
        self.loop.regions = {r.port: r for r in self.regions.values()}
        text = router_config(ports, tables={"limits": limits})
        self.router = Router(parse_config(tomllib.loads(text)), None)
        self.proxy = self.loop.run_until_complete(self._build())

    async def _build(self):
        await self.router.decisions.start()
        return self.router.build_proxy()

    def request(self, method: str, body: bytes = b"", path: str = "/api/v1/pay") -> MemTransport:
        """A client connection sending one request; its transport holds what came back."""
        client = ClientConnection(self.proxy)
        wire = MemTransport()
        client.connection_made(wire)
        head = f"{method} {path} HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: {len(body)}\r\n\r\n"
        client.data_received(head.encode() + body)
        self.loop.turn()
        return wire

    def metric(self, name: str) -> list[tuple[dict[str, str], float]]:
        from prometheus_client.parser import text_string_to_metric_families

        text = self.router.metrics.render().decode()
        return [(s.labels, s.value) for fam in text_string_to_metric_families(text)
                for s in fam.samples if s.name == name and s.value]

    def close(self) -> None:
        for rt in self.router.store.regions.values():
            rt.pool.close()
        self.loop.turn()
        self.loop.close()


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body
