"""Tunnel relay on socket pairs (no network): both directions, half-close,
idle timeout, flow control, the registry's grace and shutdown."""
from __future__ import annotations

import asyncio
import socket

from router.tunnel import DISABLED, IDLE, SHUTDOWN, Tunnel, TunnelRegistry, idle_deadline


class _Hold(asyncio.Protocol):
    """The protocol a transport has before the tunnel takes it over."""


async def _pair(loop):
    """(router-side transport, far end socket) joined by a socket pair."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    transport, _ = await loop.create_connection(_Hold, sock=a)
    return transport, b


async def _recv(loop, sock, n, timeout=5.0):
    out = b""
    async with asyncio.timeout(timeout):
        while len(out) < n:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            out += chunk
    return out


async def _setup(idle=30.0, closed=None):
    loop = asyncio.get_running_loop()
    ct, client = await _pair(loop)
    rt, region = await _pair(loop)
    reg = TunnelRegistry(loop, max_tunnels=2, on_closed=closed)
    t = Tunnel(loop, "eu-west-1", ct, rt, idle, reg)
    return loop, t, reg, client, region


def test_idle_deadline_counts_from_the_last_byte():
    assert idle_deadline(100.0, 5.0) == 105.0


def test_bytes_flow_both_ways_including_what_came_before_the_switch():
    async def main():
        loop, t, reg, client, region = await _setup()
        t.start(from_client=b"early-c", from_region=b"early-r")
        assert reg.active("eu-west-1") == 1
        assert await _recv(loop, region, 7) == b"early-c"
        assert await _recv(loop, client, 7) == b"early-r"
        await loop.sock_sendall(client, b"ping")
        assert await _recv(loop, region, 4) == b"ping"
        await loop.sock_sendall(region, b"pong")
        assert await _recv(loop, client, 4) == b"pong"
        assert (t.client.bytes_in, t.upstream.bytes_in) == (11, 11)
        t.close(SHUTDOWN)
        assert reg.count == 0
        client.close(); region.close()
    asyncio.run(main())


def test_a_side_closing_ends_the_tunnel_after_the_other_direction_finishes():
    async def main():
        ended = []
        loop, t, reg, client, region = await _setup(closed=ended.append)
        t.start()
        client.shutdown(socket.SHUT_WR)  # client done sending
        assert await _recv(loop, region, 1) == b""  # FIN passed on to the region
        await loop.sock_sendall(region, b"last words")
        assert await _recv(loop, client, 10) == b"last words"  # other direction still open
        region.close()
        async with asyncio.timeout(5):
            while not ended:
                await asyncio.sleep(0.01)
        assert ended[0].outcome in ("client_closed", "region_closed")
        assert reg.count == 0
        client.close()
    asyncio.run(main())


def test_idle_tunnel_is_closed_and_traffic_postpones_it():
    async def main():
        loop, t, reg, client, region = await _setup(idle=0.3)
        t.start()
        for _ in range(3):  # traffic every 0.15 s keeps it open past 0.3 s
            await asyncio.sleep(0.15)
            await loop.sock_sendall(client, b"x")
            assert await _recv(loop, region, 1) == b"x"
        assert not t.outcome
        async with asyncio.timeout(5):
            while not t.outcome:
                await asyncio.sleep(0.02)
        assert t.outcome == IDLE
        assert await _recv(loop, client, 1) == b""  # both legs closed
        assert await _recv(loop, region, 1) == b""
        client.close(); region.close()
    asyncio.run(main())


def test_a_client_that_does_not_read_stops_the_region_leg():
    async def main():
        loop, t, reg, client, region = await _setup()
        t.start()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = 0
        chunk = b"z" * 65536
        # The region keeps sending; the client never reads. The router must stop
        # reading the region once the client's buffer passes the high-water mark,
        # so the region's own send buffer fills and its sends stop succeeding.
        region.setblocking(False)
        async with asyncio.timeout(10):
            while True:
                try:
                    sent += region.send(chunk)
                except BlockingIOError:
                    await asyncio.sleep(0.05)
                    try:
                        sent += region.send(chunk)
                    except BlockingIOError:
                        break
                await asyncio.sleep(0)
        buffered = t.client.transport.get_write_buffer_size()
        assert buffered < 4 * 1024 * 1024, buffered  # bounded, not everything the region sent
        got = await _recv(loop, client, sent, timeout=10)  # now read: everything arrives
        assert len(got) == sent
        t.close(SHUTDOWN)
        client.close(); region.close()
    asyncio.run(main())


def test_registry_limit_grace_and_shutdown():
    async def main():
        loop, t, reg, client, region = await _setup()
        t.start()
        ct2, c2 = await _pair(loop)
        rt2, r2 = await _pair(loop)
        t2 = Tunnel(loop, "us-east-1", ct2, rt2, 30.0, reg)
        t2.start()
        assert reg.full()
        reg.close_region_after("eu-west-1", 0.1)
        reg.close_region_after("eu-west-1", 0.1)  # a second disable changes nothing
        async with asyncio.timeout(5):
            while not t.outcome:
                await asyncio.sleep(0.02)
        assert t.outcome == DISABLED and not t2.outcome
        reg.close_region_after("us-east-1", 0.05)
        reg.cancel_grace("us-east-1")  # enabled again in time
        await asyncio.sleep(0.15)
        assert not t2.outcome
        reg.close_all()
        assert t2.outcome == SHUTDOWN and reg.count == 0 and not reg.full()
        for s in (client, region, c2, r2):
            s.close()
    asyncio.run(main())
