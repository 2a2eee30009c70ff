"""Long-lived answers of a simulated region: a WebSocket echo and server-sent events."""
from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import WSMsgType, web

from .faults import parse_duration

WS_PATH = "/api/v1/ws"
EVENTS_PATH = "/api/v1/events"
DEFAULT_EVENTS = 10
DEFAULT_INTERVAL = 1.0
MAX_EVENTS = 100_000
MAX_INTERVAL = 3600.0


def sse_event(seq: int, data: dict) -> bytes:
    """One server-sent event (WHATWG HTML, "Server-sent events"): id, type, one data line."""
    return b"id: %d\nevent: tick\ndata: %s\n\n" % (seq, orjson.dumps(data))


def events_params(query: dict[str, str]) -> tuple[int, float]:
    """(count, interval) from ?count=N&interval=250ms; ValueError naming the bad one."""
    try:
        count = int(query.get("count", DEFAULT_EVENTS))
    except ValueError:
        count = -1
    if not 0 <= count <= MAX_EVENTS:
        raise ValueError(f"count must be an integer from 0 to {MAX_EVENTS}")
    try:
        interval = parse_duration(query.get("interval", DEFAULT_INTERVAL))
    except ValueError as exc:
        raise ValueError(f"interval: {exc}") from None
    if interval > MAX_INTERVAL:
        raise ValueError(f"interval must be at most {MAX_INTERVAL:.0f}s")
    return count, interval


async def server_sent_events(request: web.Request, region_id: str) -> web.StreamResponse:
    """`count` events, `interval` apart, each written to the socket as soon as it is made."""
    try:
        count, interval = events_params(dict(request.query))
    except ValueError as exc:
        return web.json_response({"error": str(exc), "region": region_id}, status=400)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
    })
    response.enable_chunked_encoding()
    await response.prepare(request)
    for seq in range(1, count + 1):
        if seq > 1:
            await asyncio.sleep(interval)
        # aiohttp hands each write to the transport at once: nothing waits for more.
        await response.write(sse_event(seq, {
            "region": region_id, "seq": seq, "of": count, "time": time.time(),
        }))
    await response.write_eof()
    return response


async def websocket_echo(request: web.Request, region_id: str) -> web.StreamResponse:
    """Echoes text frames as text and binary as binary until the client closes.
    With ?greet=1 the first message is {"region": id}, for a person at a terminal."""
    # No message size limit: tests push large frames through the router.
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    if request.query.get("greet", "").lower() in ("1", "true", "yes"):
        await ws.send_str(orjson.dumps({"region": region_id}).decode())
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws
