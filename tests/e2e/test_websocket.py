"""WebSocket tunnels and server-sent events through `router serve` to the simulator,
with aiohttp's WebSocket client: the region named in the 101, frames both ways,
a large transfer with flat memory, closing from either side, the idle timeout,
a disabled region's grace, h2c still refused, SSE events one by one."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from harness import make_config, metric_value, raw, wait_until

pytestmark = pytest.mark.timeout(120)

GB = {"X-Forwarded-For": "81.2.69.142"}  # -> eu-west-1, failover us-east-1
WS = "/api/v1/ws"


@pytest.fixture(scope="module")
def sim():
    from harness import start_sim

    s = start_sim()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _clean(clean_sim):
    """Every test starts and ends with the module's regions fault-free."""


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def count(rp, name: str, **labels) -> float:
    return metric_value(rp, name, **labels) or 0.0


def test_echo_text_and_binary_through_the_region_of_the_client(sim, router_factory):
    rp = router_factory(make_config(sim.ports))

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"http://127.0.0.1:{rp.port}{WS}", headers=GB) as ws:
                assert ws._response.status == 101
                assert ws._response.headers["X-Edge-Region"] == "eu-west-1"
                assert ws._response.headers["X-Request-Id"]
                await ws.send_str("hello")
                assert (await ws.receive()).data == "hello"
                await ws.send_bytes(b"\x00\x01\xff" * 1000)
                assert (await ws.receive()).data == b"\x00\x01\xff" * 1000
                assert count(rp, "edge_router_tunnels_active", region="eu-west-1") == 1
            # closed by the client: the tunnel ends and is counted
        wait_until(lambda: count(rp, "edge_router_tunnels_active", region="eu-west-1") == 0, 10, what="tunnel end")
        assert count(rp, "edge_router_tunnels_total", region="eu-west-1", outcome="client_closed") + \
            count(rp, "edge_router_tunnels_total", region="eu-west-1", outcome="region_closed") == 1
        assert count(rp, "edge_router_tunnel_bytes_total", region="eu-west-1", direction="to_region") > 3000
        assert sim.stats("eu-west-1")["by_path"].get(WS) == 1
    run(main())


def test_fifty_mib_through_a_tunnel_with_flat_router_memory(sim, router_factory):
    rp = router_factory(make_config(sim.ports))

    async def main():
        chunk = bytes(range(256)) * 4096  # 1 MiB
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"http://127.0.0.1:{rp.port}{WS}", headers=GB, max_msg_size=0) as ws:
                await ws.send_bytes(chunk)
                assert len((await ws.receive()).data) == len(chunk)  # warm
                before = rss_kib(rp.proc.pid)
                got = 0
                for _ in range(50):
                    await ws.send_bytes(chunk)
                    msg = await ws.receive()
                    assert msg.data == chunk
                    got += len(msg.data)
                after = rss_kib(rp.proc.pid)
        assert got == 50 * len(chunk)
        # Relayed with flow control, never held: memory grows by far less than what passed.
        assert after - before < 20 * 1024, (before, after)
    run(main())


def test_region_closing_ends_the_tunnel_and_the_client_sees_it(sim, router_factory):
    rp = router_factory(make_config(sim.ports, limits={"tunnel_drain_timeout": "0s"}))

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"http://127.0.0.1:{rp.port}{WS}", headers=GB) as ws:
                await ws.send_str("x")
                assert (await ws.receive()).data == "x"
                # The region goes away under the tunnel: the simulator's region is
                # disabled in the router with no grace, so the router closes both legs.
                assert rp.admin_req("POST", "/admin/regions/eu-west-1/disable").status == 200
                msg = await ws.receive(timeout=10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        wait_until(lambda: count(rp, "edge_router_tunnels_total", region="eu-west-1",
                                  outcome="region_disabled") == 1, 10, what="counted")
    run(main())


def test_idle_tunnel_is_closed(sim, router_factory):
    rp = router_factory(make_config(sim.ports, limits={"tunnel_idle_timeout": "1s"}))

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"http://127.0.0.1:{rp.port}{WS}", headers=GB, autoping=False,
                                    heartbeat=None) as ws:
                t0 = time.monotonic()
                msg = await ws.receive(timeout=15)
                took = time.monotonic() - t0
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert 0.8 < took < 10, took
        wait_until(lambda: count(rp, "edge_router_tunnels_total", region="eu-west-1",
                                  outcome="idle_timeout") == 1, 10, what="counted")
    run(main())


def test_disabled_region_new_tunnels_fail_over_old_ones_live_until_the_grace_ends(sim, router_factory):
    rp = router_factory(make_config(sim.ports, limits={"tunnel_drain_timeout": "3s"}))

    async def main():
        async with aiohttp.ClientSession() as s:
            old = await s.ws_connect(f"http://127.0.0.1:{rp.port}{WS}", headers=GB)
            assert old._response.headers["X-Edge-Region"] == "eu-west-1"
            assert rp.admin_req("POST", "/admin/regions/eu-west-1/disable").status == 200
            t_disable = time.monotonic()
            new = await s.ws_connect(f"http://127.0.0.1:{rp.port}{WS}", headers=GB)
            assert new._response.headers["X-Edge-Region"] == "us-east-1"  # eu-west-1's failover
            await old.send_str("still here")  # within the grace: the old tunnel lives
            assert (await old.receive()).data == "still here"
            msg = await old.receive(timeout=15)  # then it is closed
            took = time.monotonic() - t_disable
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert 2.0 < took < 12, took
            await new.send_str("new one")  # the failover region's tunnel is untouched
            assert (await new.receive()).data == "new one"
            await new.close()
            await old.close()
    run(main())


def test_h2c_and_other_upgrades_are_stripped_not_tunnelled(sim, router_factory):
    rp = router_factory(make_config(sim.ports))
    answer = raw(rp.port, b"GET /api/v1/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                          b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"upgrade" not in body.lower() and b"http2-settings" not in body.lower(), body
    # A websocket token with POST is no handshake either: answered as a plain request.
    answer = raw(rp.port, b"POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                          b"Upgrade: websocket\r\nContent-Length: 0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_server_sent_events_arrive_one_by_one(sim, router_factory):
    rp = router_factory(make_config(sim.ports, limits={"read_timeout": "1s"}))

    async def main():
        async with aiohttp.ClientSession() as s:
            # 5 events 600 ms apart: 2.4 s in all, longer than read_timeout (1 s); each gap shorter.
            url = f"http://127.0.0.1:{rp.port}/api/v1/events?count=5&interval=600ms"
            async with s.get(url, headers=GB) as resp:
                assert resp.status == 200 and resp.headers["X-Edge-Region"] == "eu-west-1"
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                arrivals, buf = [], b""
                async for data in resp.content.iter_any():
                    buf += data
                    while b"\n\n" in buf:
                        event, buf = buf.split(b"\n\n", 1)
                        arrivals.append((time.monotonic(), event))
        assert len(arrivals) == 5
        assert all(b'"region":"eu-west-1"' in e for _, e in arrivals)
        gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:])]
        assert all(g > 0.4 for g in gaps), gaps  # not buffered into a burst
    run(main())


def test_max_tunnels_refuses_with_503(sim, router_factory):
    rp = router_factory(make_config(sim.ports, limits={"max_tunnels": 1}))

    async def main():
        async with aiohttp.ClientSession() as s:
            first = await s.ws_connect(f"http://127.0.0.1:{rp.port}{WS}", headers=GB)
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await s.ws_connect(f"http://127.0.0.1:{rp.port}{WS}", headers=GB)
            assert exc.value.status == 503
            await first.close()
    run(main())
