"""The floor: the least a Python HTTP forwarder can cost on this machine.

asyncio Protocols + httptools on uvloop, one upstream connection per client
connection, GET without bodies, Content-Length responses only; no GeoIP, no
routing, no header rules, no retries, no metrics. Not a proxy anyone should
run: a reference row for bench/throughput.py, so that edge-router's cost is
read against what the language and the event loop cost by themselves.

    python -m bench.floor LISTEN_PORT UPSTREAM_PORT
"""
from __future__ import annotations

import asyncio
import signal
import sys

import httptools
import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: "_Client") -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.buf: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf.append(data)  # relayed as received: no header rewriting at all
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        data, self.buf = b"".join(self.buf), []
        if not self.client.transport.is_closing():
            self.client.transport.write(data)

    def connection_lost(self, exc) -> None:
        self.client.transport.close()


class _Client(asyncio.Protocol):
    upstream_port = 0

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.upstream = await loop.create_connection(lambda: _Upstream(self), "127.0.0.1", self.upstream_port)
        for head in self.pending:
            self.upstream.transport.write(head)
        self.pending = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        head = b"GET %s HTTP/1.1\r\nHost: upstream\r\n\r\n" % self.url
        if self.upstream is None or self.upstream.transport is None:
            self.pending.append(head)
        else:
            self.upstream.transport.write(head)

    def connection_lost(self, exc) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def _main(listen: int, upstream: int) -> None:
    _Client.upstream_port = upstream
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(_Client, "127.0.0.1", listen, backlog=4096)
    print(f"floor forwarder on 127.0.0.1:{listen} -> 127.0.0.1:{upstream}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(_main(int(sys.argv[1]), int(sys.argv[2])))
