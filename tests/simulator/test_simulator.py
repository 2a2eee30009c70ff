import asyncio
import contextlib
import hashlib
import json
import os
import signal
import ssl
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import trustme

from router.simulator import (
    CHUNK,
    RegionSpec,
    Simulator,
    parse_duration,
    parse_region,
    validate_faults,
)

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = aiohttp.ClientTimeout(total=10)


def run(coro, timeout=30):
    """Every test's event loop work, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def simulator(*specs, ssl_context=None):
    sim = Simulator()
    await sim.start(list(specs or [RegionSpec("us-east-1"), RegionSpec("eu-west-1")]),
                    ssl_context=ssl_context)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            yield sim, session
    finally:
        await sim.stop()


def url(sim, region, path):
    return f"http://127.0.0.1:{sim.ports[region]}{path}"


def control(sim, path):
    return f"http://127.0.0.1:{sim.control_port}{path}"


def _pattern(n):
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def test_parse_helpers():
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("2s") == 2.0
    assert parse_duration("1.5m") == 90.0
    assert parse_duration(0.1) == 0.1
    for bad in ("-1s", "fast", True, "10h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_region("us-east-1:8101:20ms") == RegionSpec("us-east-1", 8101, 0.02)
    assert parse_region("eu-west-1") == RegionSpec("eu-west-1", 0, 0.0)
    assert validate_faults({"extra_latency": "250ms", "down": False}) == {
        "extra_latency": 0.25, "down": False}
    for bad in ({"error_rate": 2}, {"hang": "yes"}, {"explode": True}, []):
        with pytest.raises(ValueError):
            validate_faults(bad)


def test_endpoints_and_stats():
    async def main():
        async with simulator() as (sim, s):
            assert set(sim.ports) == {"us-east-1", "eu-west-1"}
            assert all(port > 0 for port in sim.ports.values())

            async with s.get(url(sim, "eu-west-1", "/api/v1/health")) as r:
                assert r.status == 200
                assert r.headers["X-Sim-Region"] == "eu-west-1"
                assert await r.json() == {"status": "ok", "region": "eu-west-1"}

            async def body():  # streamed, chunked request body
                for _ in range(4):
                    yield b"a" * 100_000

            async with s.post(url(sim, "us-east-1", "/api/v1/echo?x=1&y=two"), data=body(),
                              headers={"X-Request-Id": "req-1", "X-Custom": "v"}) as r:
                echo = await r.json()
            assert echo["region"] == "us-east-1"
            assert echo["method"] == "POST"
            assert echo["path"] == "/api/v1/echo"
            assert echo["query"] == "x=1&y=two"
            assert echo["body_bytes"] == 400_000
            assert echo["body_sha256"] == hashlib.sha256(b"a" * 400_000).hexdigest()
            assert echo["headers"]["X-Custom"] == "v"
            assert echo["headers"]["Transfer-Encoding"] == "chunked"

            async with s.delete(url(sim, "us-east-1", "/api/v1/echo")) as r:
                assert (await r.json())["method"] == "DELETE"

            async with s.post(url(sim, "us-east-1", "/api/v1/payments"),
                              json={"amount": 12.5, "currency": "EUR"},
                              headers={"X-Request-Id": "req-2"}) as r:
                assert r.status == 201
                payment = await r.json()
            assert payment["region"] == "us-east-1"
            assert payment["amount"] == 12.5
            assert payment["payment_id"]
            async with s.post(url(sim, "us-east-1", "/api/v1/payments"), data=b"{nope") as r:
                assert r.status == 400
                assert r.headers["X-Sim-Region"] == "us-east-1"

            async with s.put(url(sim, "us-east-1", "/api/v1/upload"), data=b"z" * 70_000) as r:
                assert await r.json() == {"region": "us-east-1", "bytes": 70_000,
                                          "sha256": hashlib.sha256(b"z" * 70_000).hexdigest()}

            async with s.get(url(sim, "us-east-1", "/api/v1/status/503")) as r:
                assert r.status == 503
                assert await r.json() == {"region": "us-east-1", "status": 503}
            async with s.get(url(sim, "us-east-1", "/api/v1/status/204")) as r:
                assert r.status == 204
                assert await r.read() == b""
            async with s.get(url(sim, "us-east-1", "/no/such/thing")) as r:
                assert r.status == 404
                assert (await r.json())["region"] == "us-east-1"
                assert r.headers["X-Sim-Region"] == "us-east-1"

            stats = sim.stats("us-east-1")
            assert stats["requests"] == 8
            assert stats["by_method"] == {"POST": 3, "DELETE": 1, "PUT": 1, "GET": 3}
            assert stats["by_path"]["/api/v1/payments"] == 2
            assert stats["request_ids"] == ["req-1", "req-2"]
            assert stats["payments"] == 1
            async with s.get(control(sim, "/regions/us-east-1/stats")) as r:
                assert await r.json() == stats
            async with s.post(control(sim, "/regions/us-east-1/stats/reset")) as r:
                assert (await r.json())["requests"] == 0
            assert sim.stats("us-east-1")["requests"] == 0

    run(main())


@pytest.mark.parametrize("sized", [False, True])
def test_large_streams_n_bytes(sized):
    n = 3 * CHUNK + 1234

    async def main():
        async with simulator() as (sim, s):
            query = f"?bytes={n}" + ("&sized=1" if sized else "")
            async with s.get(url(sim, "us-east-1", "/api/v1/large" + query)) as r:
                assert r.status == 200
                if sized:
                    assert r.headers["Content-Length"] == str(n)
                else:
                    assert r.headers["Transfer-Encoding"] == "chunked"
                    assert "Content-Length" not in r.headers
                data = bytearray()
                async for chunk in r.content.iter_chunked(CHUNK):
                    data += chunk
            assert bytes(data) == _pattern(n)
            async with s.get(url(sim, "us-east-1", "/api/v1/large?bytes=-5")) as r:
                assert r.status == 400

    run(main())


def test_down_refuses_then_recovers_on_same_port():
    async def main():
        async with simulator() as (sim, s):
            port = sim.ports["eu-west-1"]
            # A request hanging on an open connection is cut when the region goes down.
            await sim.set_fault("eu-west-1", hang=True)
            pending = asyncio.create_task(s.get(url(sim, "eu-west-1", "/api/v1/echo")))
            await asyncio.sleep(0.2)
            assert not pending.done()

            async with s.post(control(sim, "/regions/eu-west-1/fault"), json={"down": True}) as r:
                view = await r.json()
            assert r.status == 200
            assert view["up"] is False and view["faults"]["down"] is True
            # The answer a person reads after the demo's "kill a region" line: the region and
            # its faults, not its traffic counters (up to 1000 request ids; /stats has them).
            assert set(view) == {"id", "port", "latency", "up", "faults"}, sorted(view)
            with pytest.raises(aiohttp.ClientError):
                await asyncio.wait_for(pending, 5)

            with pytest.raises(aiohttp.ClientConnectorError):
                async with s.get(url(sim, "eu-west-1", "/api/v1/health")):
                    pass
            reader, writer = None, None
            with pytest.raises(ConnectionRefusedError):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # The other region is unaffected.
            async with s.get(url(sim, "us-east-1", "/api/v1/health")) as r:
                assert r.status == 200

            async with s.post(control(sim, "/regions/eu-west-1/reset")) as r:
                view = await r.json()
            assert view["up"] is True and view["port"] == port
            assert view["faults"]["hang"] is False
            assert sim.ports["eu-west-1"] == port
            async with s.get(url(sim, "eu-west-1", "/api/v1/health")) as r:
                assert r.status == 200
                assert r.headers["X-Sim-Region"] == "eu-west-1"

    run(main())


def test_error_rate_hits_api_not_health():
    async def main():
        async with simulator() as (sim, s):
            async with s.post(control(sim, "/regions/us-east-1/fault"),
                              json={"error_rate": 1.0}) as r:
                assert (await r.json())["faults"]["error_rate"] == 1.0
            for _ in range(5):
                async with s.get(url(sim, "us-east-1", "/api/v1/echo")) as r:
                    assert r.status == 500
                    assert r.headers["X-Sim-Region"] == "us-east-1"
                async with s.get(url(sim, "us-east-1", "/api/v1/health")) as r:
                    assert r.status == 200

            await sim.set_fault("us-east-1", error_rate=0.5)
            codes = []
            for _ in range(40):
                async with s.get(url(sim, "us-east-1", "/api/v1/echo")) as r:
                    codes.append(r.status)
            assert set(codes) == {200, 500}
            # Seeded: the same setting gives the same sequence again.
            await sim.set_fault("us-east-1", error_rate=0.5)
            again = []
            for _ in range(40):
                async with s.get(url(sim, "us-east-1", "/api/v1/echo")) as r:
                    again.append(r.status)
            assert again == codes

            await sim.set_fault("us-east-1", error_rate=0)
            async with s.get(url(sim, "us-east-1", "/api/v1/echo")) as r:
                assert r.status == 200

    run(main())


def test_health_fail():
    async def main():
        async with simulator() as (sim, s):
            await sim.set_fault("us-east-1", health_fail=True)
            async with s.get(url(sim, "us-east-1", "/api/v1/health")) as r:
                assert r.status == 503
                assert (await r.json())["region"] == "us-east-1"
            async with s.get(url(sim, "us-east-1", "/api/v1/echo")) as r:
                assert r.status == 200

    run(main())


def test_drop_after_body_closes_connection():
    async def main():
        async with simulator() as (sim, s):
            await sim.set_fault("us-east-1", drop_after_body=True)
            with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
                async with s.post(url(sim, "us-east-1", "/api/v1/payments"),
                                  json={"amount": 1}) as r:
                    await r.read()
            stats = sim.stats("us-east-1")
            assert stats["requests"] == 1
            assert stats["payments"] == 0  # dropped before the handler ran
            async with s.get(url(sim, "us-east-1", "/api/v1/health")) as r:
                assert r.status == 200
            await sim.reset("us-east-1")
            async with s.post(url(sim, "us-east-1", "/api/v1/payments"), json={"amount": 1}) as r:
                assert r.status == 201

    run(main())


def test_latency_and_extra_latency():
    async def main():
        async with simulator(RegionSpec("slow", latency=0.15), RegionSpec("fast")) as (sim, s):
            async def timed(region):
                start = time.monotonic()
                async with s.get(url(sim, region, "/api/v1/health")) as r:
                    assert r.status == 200
                return time.monotonic() - start

            assert await timed("slow") >= 0.15
            assert await timed("fast") < 0.15
            async with s.post(control(sim, "/regions/fast/fault"),
                              json={"extra_latency": "300ms"}) as r:
                assert (await r.json())["faults"]["extra_latency"] == pytest.approx(0.3)
            assert await timed("fast") >= 0.3
            await sim.set_fault("fast", extra_latency=0)
            assert await timed("fast") < 0.15

    run(main())


def test_hang_until_cleared():
    async def main():
        async with simulator() as (sim, s):
            await sim.set_fault("us-east-1", hang=True)
            with pytest.raises(asyncio.TimeoutError):
                async with s.get(url(sim, "us-east-1", "/api/v1/health"),
                                 timeout=aiohttp.ClientTimeout(total=0.3)):
                    pass

            async def fetch():
                async with s.get(url(sim, "us-east-1", "/api/v1/echo")) as r:
                    return r.status

            pending = asyncio.create_task(fetch())
            await asyncio.sleep(0.2)
            assert not pending.done()
            await sim.set_fault("us-east-1", hang=False)
            assert await asyncio.wait_for(pending, 5) == 200

    run(main())


def test_control_validation_and_state():
    async def main():
        async with simulator() as (sim, s):
            async with s.post(control(sim, "/regions/us-east-1/fault"),
                              json={"explode": True}) as r:
                assert r.status == 400
                assert "explode" in (await r.json())["error"]
            async with s.post(control(sim, "/regions/us-east-1/fault"),
                              json={"error_rate": 1.5}) as r:
                assert r.status == 400
            async with s.post(control(sim, "/regions/us-east-1/fault"), data=b"{") as r:
                assert r.status == 400
            async with s.post(control(sim, "/regions/mars-1/fault"), json={"down": True}) as r:
                assert r.status == 404
            async with s.post(control(sim, "/regions/us-east-1/fault"),
                              json={"health_fail": True, "extra_latency": 0.05}) as r:
                assert r.status == 200
            async with s.get(control(sim, "/regions")) as r:
                state = (await r.json())["regions"]
            assert set(state) == {"us-east-1", "eu-west-1"}
            east = state["us-east-1"]
            assert east["port"] == sim.ports["us-east-1"]
            assert east["faults"] == {"down": False, "error_rate": 0.0, "extra_latency": 0.05,
                                      "hang": False, "health_fail": True,
                                      "drop_after_body": False}
            assert set(east["stats"]) == {"requests", "by_path", "by_method", "request_ids",
                                          "payments"}
            assert state["eu-west-1"]["faults"]["health_fail"] is False

    run(main())


def test_tls_regions_plain_control():
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main():
        async with simulator(RegionSpec("eu-west-1"), ssl_context=server_ctx) as (sim, s):
            port = sim.ports["eu-west-1"]
            async with s.get(f"https://127.0.0.1:{port}/api/v1/health", ssl=client_ctx) as r:
                assert r.status == 200
                assert r.headers["X-Sim-Region"] == "eu-west-1"
            async with s.get(control(sim, "/regions")) as r:
                assert r.status == 200
            await sim.set_fault("eu-west-1", down=True)
            await sim.set_fault("eu-west-1", down=False)
            async with s.get(f"https://127.0.0.1:{port}/api/v1/health", ssl=client_ctx) as r:
                assert r.status == 200

    run(main())


def test_cli_ready_line_and_sigterm(tmp_path):
    ready_file = tmp_path / "ready.json"

    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.simulator",
            "--region", "us-east-1:0:10ms", "--region", "ap-southeast-1:0:20ms",
            "--control", "0", "--ready-file", str(ready_file),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, (await proc.stderr.read()).decode()
            info = json.loads(line)
            assert set(info) == {"control", "regions"}
            assert set(info["regions"]) == {"us-east-1", "ap-southeast-1"}
            assert json.loads(ready_file.read_text()) == info
            async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
                port = info["regions"]["ap-southeast-1"]
                async with s.get(f"http://127.0.0.1:{port}/api/v1/health") as r:
                    assert r.status == 200
                    assert r.headers["X-Sim-Region"] == "ap-southeast-1"
                async with s.get(f"http://127.0.0.1:{info['control']}/regions") as r:
                    state = await r.json()
                assert state["regions"]["us-east-1"]["latency"] == pytest.approx(0.01)
                assert state["regions"]["ap-southeast-1"]["stats"]["requests"] == 1
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    run(main(), timeout=40)


def test_websocket_echoes_text_and_binary():
    async def main():
        async with simulator() as (sim, s):
            async with s.ws_connect(url(sim, "eu-west-1", "/api/v1/ws")) as ws:
                await ws.send_str("hello ü")
                msg = await ws.receive(timeout=10)
                assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "hello ü")
                blob = _pattern(300_000)
                await ws.send_bytes(blob)
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.BINARY and msg.data == blob
            assert ws.closed and ws.close_code == 1000
            async with s.ws_connect(url(sim, "us-east-1", "/api/v1/ws?greet=1")) as ws:
                assert json.loads((await ws.receive(timeout=10)).data) == {"region": "us-east-1"}
                await ws.send_bytes(b"\x00\x01")
                assert (await ws.receive(timeout=10)).data == b"\x00\x01"
            assert sim.stats("us-east-1")["by_path"]["/api/v1/ws"] == 1
            # A plain GET is not an upgrade: aiohttp answers 400.
            async with s.get(url(sim, "eu-west-1", "/api/v1/ws")) as r:
                assert r.status == 400
                assert r.headers["X-Sim-Region"] == "eu-west-1"

    run(main())


def test_websocket_101_names_region_and_big_frame():
    async def main():
        async with simulator() as (sim, s):
            # The handshake by hand: the 101 itself names the region.
            reader, writer = await asyncio.open_connection("127.0.0.1", sim.ports["us-east-1"])
            writer.write(b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
            writer.close()
            assert head.startswith("HTTP/1.1 101")
            assert "X-Sim-Region: us-east-1" in head
            assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455 1.3
            async with s.ws_connect(url(sim, "us-east-1", "/api/v1/ws"), max_msg_size=0) as ws:
                blob = _pattern(6 * 1024 * 1024)  # more than aiohttp's default 4 MiB message limit
                await ws.send_bytes(blob)
                msg = await ws.receive(timeout=20)
                assert msg.type == aiohttp.WSMsgType.BINARY and msg.data == blob

    run(main())


def test_server_sent_events_arrive_one_by_one():
    async def main():
        async with simulator() as (sim, s):
            async with s.get(url(sim, "eu-west-1", "/api/v1/events?count=3&interval=700ms")) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/event-stream"
                assert r.headers["X-Sim-Region"] == "eu-west-1"
                events, arrived, buf = [], [], b""
                while True:
                    chunk = await asyncio.wait_for(r.content.readany(), 10)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n\n" in buf:
                        raw, buf = buf.split(b"\n\n", 1)
                        arrived.append(time.monotonic())
                        fields = dict(line.split(": ", 1) for line in raw.decode().splitlines())
                        events.append(fields)
            assert [e["id"] for e in events] == ["1", "2", "3"]
            assert all(e["event"] == "tick" for e in events)
            data = [json.loads(e["data"]) for e in events]
            assert [d["region"] for d in data] == ["eu-west-1"] * 3
            assert [(d["seq"], d["of"]) for d in data] == [(1, 3), (2, 3), (3, 3)]
            # Each event left when it was made (1.4 s from first to last): a buffered
            # answer would arrive all at once. Generous for a loaded machine.
            assert arrived[-1] - arrived[0] >= 0.9, arrived

    run(main())


@pytest.mark.parametrize("query, field", [
    ("count=-1", "count"), ("count=x", "count"), ("count=100001", "count"),
    ("interval=fast", "interval"), ("interval=2h", "interval"),
])
def test_server_sent_events_bad_query(query, field):
    async def main():
        async with simulator() as (sim, s):
            async with s.get(url(sim, "us-east-1", f"/api/v1/events?{query}")) as r:
                assert r.status == 400
                assert (await r.json())["error"].startswith(field)

    run(main())
