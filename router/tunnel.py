"""WebSocket tunnels: after a region's 101, bytes both ways until either side closes.

The router does not parse frames (RFC 6455 is the two ends' business); it
relays bytes with flow control on both legs (a leg whose peer's write
buffer is full stops reading), closes both legs after `tunnel_idle_timeout`
without a byte either way, and lets operators end a region's tunnels after
a grace (disable) or at shutdown. A tunnel owns its region connection: it
never came from a pool and never returns to one.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

log = logging.getLogger("edge_router.tunnel")

# Why a tunnel ended: the `outcome` label of edge_router_tunnels_total.
CLIENT_CLOSED, REGION_CLOSED, IDLE, DISABLED, SHUTDOWN = (
    "client_closed", "region_closed", "idle_timeout", "region_disabled", "shutdown",
)
OUTCOMES = (CLIENT_CLOSED, REGION_CLOSED, IDLE, DISABLED, SHUTDOWN)
# The write buffer above which a leg stops reading from its peer (both legs).
HIGH_WATER = 256 * 1024


def idle_deadline(last_io: float, idle_timeout: float) -> float:
    """When a tunnel whose last byte moved at last_io is idle for good."""
    return last_io + idle_timeout


class _Leg(asyncio.Protocol):
    """One side of a tunnel: what it reads goes to the other side's transport."""

    __slots__ = ("tunnel", "transport", "peer", "name", "eof", "bytes_in")

    def __init__(self, tunnel: "Tunnel", transport: asyncio.Transport, name: str) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.peer: _Leg | None = None
        self.name = name  # "client" or "region"
        self.eof = False
        self.bytes_in = 0

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.tunnel.last_io = self.tunnel.loop.time()
        peer = self.peer.transport
        if not peer.is_closing():
            peer.write(data)

    def eof_received(self) -> bool:
        # Half-close: pass the FIN on and keep reading the other direction.
        self.eof = True
        peer = self.peer
        if not peer.transport.is_closing() and peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer.eof:
            self.tunnel.close(CLIENT_CLOSED if self.name == "client" else REGION_CLOSED)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close(CLIENT_CLOSED if self.name == "client" else REGION_CLOSED)

    # The peer's transport calls these on *this* leg's protocol when its own
    # buffer fills: so pause_writing on the client leg means the client is slow
    # to read, and the region must stop being read.
    def pause_writing(self) -> None:
        peer = self.peer.transport
        if not peer.is_closing():
            peer.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer.transport
        if not peer.is_closing():
            peer.resume_reading()


class Tunnel:
    """A client and a region joined after a 101 Switching Protocols."""

    __slots__ = ("loop", "region", "client", "upstream", "idle_timeout", "last_io", "timer",
                 "outcome", "registry", "started", "on_end")

    def __init__(self, loop: asyncio.AbstractEventLoop, region: str,
                 client_transport: asyncio.Transport, region_transport: asyncio.Transport,
                 idle_timeout: float, registry: "TunnelRegistry",
                 on_end: Callable[["Tunnel"], None] | None = None) -> None:
        self.loop = loop
        self.region = region
        self.idle_timeout = idle_timeout
        self.registry = registry
        self.on_end = on_end  # the owner's bookkeeping (the client connection it was)
        self.outcome = ""
        self.started = self.last_io = loop.time()
        self.client = _Leg(self, client_transport, "client")
        self.upstream = _Leg(self, region_transport, "region")
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.timer: asyncio.TimerHandle | None = None

    def start(self, from_client: bytes = b"", from_region: bytes = b"") -> None:
        """Take both transports over; relay what each side sent ahead of the switch."""
        for leg in (self.client, self.upstream):
            t = leg.transport
            t.set_protocol(leg)
            t.set_write_buffer_limits(high=HIGH_WATER)
            t.resume_reading()
        self.registry.opened(self)
        if from_client:
            self.client.data_received(from_client)
        if from_region:
            self.upstream.data_received(from_region)
        self.timer = self.loop.call_at(idle_deadline(self.last_io, self.idle_timeout), self._check_idle)

    def _check_idle(self) -> None:
        self.timer = None
        if self.outcome:
            return
        deadline = idle_deadline(self.last_io, self.idle_timeout)
        if self.loop.time() >= deadline:
            self.close(IDLE)
        else:
            self.timer = self.loop.call_at(deadline, self._check_idle)

    def close(self, outcome: str) -> None:
        """End both legs (each flushes what it was given); exactly once."""
        if self.outcome:
            return
        self.outcome = outcome
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for leg in (self.client, self.upstream):
            if not leg.transport.is_closing():
                leg.transport.close()
        self.registry.closed(self)
        if self.on_end is not None:
            self.on_end(self)


class TunnelRegistry:
    """Open tunnels by region: the limit, the counts, and closing them on demand."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_tunnels: int,
                 on_change: Callable[[str, int], None] | None = None,
                 on_closed: Callable[[Tunnel], None] | None = None) -> None:
        self.loop = loop
        self.max_tunnels = max_tunnels
        self.by_region: dict[str, set[Tunnel]] = {}
        self.count = 0
        self.on_change = on_change  # (region, active) after every change
        self.on_closed = on_closed  # a tunnel ended: its outcome and byte counts are final
        self._grace: dict[str, asyncio.TimerHandle] = {}

    def full(self) -> bool:
        return self.count >= self.max_tunnels

    def active(self, region: str) -> int:
        return len(self.by_region.get(region, ()))

    def opened(self, tunnel: Tunnel) -> None:
        self.by_region.setdefault(tunnel.region, set()).add(tunnel)
        self.count += 1
        if self.on_change is not None:
            self.on_change(tunnel.region, self.active(tunnel.region))

    def closed(self, tunnel: Tunnel) -> None:
        live = self.by_region.get(tunnel.region)
        if live is None or tunnel not in live:
            return
        live.discard(tunnel)
        self.count -= 1
        if self.on_change is not None:
            self.on_change(tunnel.region, len(live))
        if self.on_closed is not None:
            self.on_closed(tunnel)

    def close_region_after(self, region: str, grace: float) -> None:
        """A disabled region: its tunnels live `grace` seconds more, then close."""
        if region in self._grace or not self.by_region.get(region):
            return
        self._grace[region] = self.loop.call_later(grace, self._end_grace, region)

    def cancel_grace(self, region: str) -> None:
        """The region was enabled again before the grace ran out: keep its tunnels."""
        handle = self._grace.pop(region, None)
        if handle is not None:
            handle.cancel()

    def _end_grace(self, region: str) -> None:
        self._grace.pop(region, None)
        live = list(self.by_region.get(region, ()))
        if live:
            log.info("closing %d tunnel(s) to disabled region %s after the grace", len(live), region)
        for t in live:
            t.close(DISABLED)

    def close_all(self, outcome: str = SHUTDOWN) -> None:
        for handle in self._grace.values():
            handle.cancel()
        self._grace.clear()
        for live in list(self.by_region.values()):
            for t in list(live):
                t.close(outcome)
