"""One simulated region: an aiohttp server with its endpoints, faults and counters."""
from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import random
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from .faults import Faults, validate_faults
from .streams import EVENTS_PATH, WS_PATH, server_sent_events, websocket_echo

log = logging.getLogger("edge_router.simulator")

HEALTH_PATH = "/api/v1/health"
CHUNK = 64 * 1024
# Byte i of every /large body is i % 256; CHUNK is a multiple of 256 so chunks line up.
_PATTERN = bytes(range(256)) * (CHUNK // 256)
_REQUEST_IDS_KEPT = 1000
SHUTDOWN_TIMEOUT = 1.0


@dataclass(frozen=True)
class RegionSpec:
    id: str
    port: int = 0
    latency: float = 0.0  # seconds added before every answer


# The seed's four regions with plausible, different round-trip times.
DEFAULT_SPECS: tuple[RegionSpec, ...] = (
    RegionSpec("us-east-1", latency=0.020),
    RegionSpec("us-west-2", latency=0.060),
    RegionSpec("eu-west-1", latency=0.080),
    RegionSpec("ap-southeast-1", latency=0.180),
)


class RegionStats:
    def __init__(self) -> None:
        self.requests = 0
        self.by_path: collections.Counter[str] = collections.Counter()
        self.by_method: collections.Counter[str] = collections.Counter()
        self.request_ids: collections.deque[str] = collections.deque(maxlen=_REQUEST_IDS_KEPT)
        self.payments = 0

    def count(self, request: web.Request) -> None:
        self.requests += 1
        self.by_path[request.path] += 1
        self.by_method[request.method] += 1
        request_id = request.headers.get("X-Request-Id")
        if request_id is not None:
            self.request_ids.append(request_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_method": dict(self.by_method),
            "request_ids": list(self.request_ids),
            "payments": self.payments,
        }


def json_answer(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


async def _consume(request: web.Request) -> tuple[int, str]:
    """Size and sha256 of the request body, read chunk by chunk, never held whole."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


def bind(host: str, port: int) -> socket.socket:
    family, type_, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    try:
        # Coming back "up" rebinds the port it just closed.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Region:
    """One simulated region: its server, faults and counters."""

    def __init__(self, spec: RegionSpec, host: str, ssl_context: ssl.SSLContext | None):
        self.id = spec.id
        self.port = spec.port
        self.latency = spec.latency
        self.host = host
        self.faults = Faults()
        self.stats = RegionStats()
        self._ssl = ssl_context
        self._rng = random.Random(self.id)
        self._hang_released = asyncio.Event()
        self._lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None

    @property
    def up(self) -> bool:
        return self._site is not None

    def view(self, stats: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "port": self.port,
            "latency": self.latency,
            "up": self.up,
            "faults": asdict(self.faults),
        }
        if stats:
            out["stats"] = self.stats.to_dict()
        return out

    async def start(self) -> None:
        # handler_cancellation: a hung handler ends when its client goes away.
        self._runner = web.AppRunner(
            self._make_app(),
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await self._runner.setup()
        await self._listen()

    async def stop(self) -> None:
        self._hang_released.set()
        await self._close_listener()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def update_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        changes = validate_faults(changes)
        async with self._lock:
            if "hang" in changes:
                if changes["hang"] and not self.faults.hang:
                    self._hang_released = asyncio.Event()
                elif not changes["hang"]:
                    self._hang_released.set()
            if "error_rate" in changes:
                # Same sequence of hits for the same setting, run after run.
                self._rng = random.Random(f"{self.id}:{changes['error_rate']}")
            for key, value in changes.items():
                if key != "down":
                    setattr(self.faults, key, value)
            if "down" in changes:
                if changes["down"] and self.up:
                    await self._close_listener()
                elif not changes["down"] and not self.up:
                    await self._listen()
                self.faults.down = changes["down"]
        if changes:
            log.info("region %s faults now %s", self.id, asdict(self.faults))
        return self.view(stats=False)  # the fault answer: no traffic counters (see /stats)

    async def reset_faults(self) -> dict[str, Any]:
        return await self.update_faults(asdict(Faults()))

    def reset_stats(self) -> dict[str, Any]:
        self.stats = RegionStats()
        return self.stats.to_dict()

    async def _listen(self) -> None:
        assert self._runner is not None
        sock = bind(self.host, self.port)
        site = web.SockSite(self._runner, sock, ssl_context=self._ssl)
        try:
            await site.start()
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._site = site

    async def _close_listener(self) -> None:
        if self._site is not None:
            await self._site.stop()  # closes the listening socket: new connections are refused
            self._site = None
        server = self._runner.server if self._runner is not None else None
        for handler in server.connections if server is not None else ():
            if handler.transport is not None:
                handler.transport.abort()

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults_middleware()])
        app.on_response_prepare.append(self._tag_response)
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_route("*", "/api/v1/echo", self._echo)
        app.router.add_post("/api/v1/payments", self._payments)
        app.router.add_get("/api/v1/large", self._large, allow_head=False)
        app.router.add_put("/api/v1/upload", self._upload)
        app.router.add_post("/api/v1/upload", self._upload)
        app.router.add_route("*", "/api/v1/status/{code}", self._status)
        app.router.add_get(WS_PATH, self._websocket, allow_head=False)
        app.router.add_get(EVENTS_PATH, self._events, allow_head=False)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _tag_response(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Sim-Region"] = self.id

    def _faults_middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def middleware(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            self.stats.count(request)
            if self.faults.hang:
                await self._hang_released.wait()
            delay = self.latency + self.faults.extra_latency
            if delay > 0:
                await asyncio.sleep(delay)
            if request.path == HEALTH_PATH:
                return await handler(request)
            if self.faults.drop_after_body:
                await _consume(request)
                assert request.transport is not None
                request.transport.abort()
                # Never answer: the aborted connection cancels this handler.
                await asyncio.get_running_loop().create_future()
            if self.faults.error_rate > 0 and self._rng.random() < self.faults.error_rate:
                return json_answer(500, {"error": "injected failure", "region": self.id})
            return await handler(request)

        return middleware

    async def _health(self, request: web.Request) -> web.Response:
        if self.faults.health_fail:
            return json_answer(503, {"status": "failing", "region": self.id})
        return json_answer(200, {"status": "ok", "region": self.id})

    async def _echo(self, request: web.Request) -> web.Response:
        size, sha256 = await _consume(request)
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return json_answer(200, {
            "region": self.id,
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": request.query_string,
            "headers": headers,
            "header_list": [[name, value] for name, value in request.headers.items()],
            "remote": request.remote,
            "scheme": request.scheme,
            "version": f"{request.version.major}.{request.version.minor}",
            "body_bytes": size,
            "body_sha256": sha256,
        })

    async def _payments(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            return json_answer(400, {"error": "invalid JSON", "detail": str(exc), "region": self.id})
        if not isinstance(body, dict):
            return json_answer(400, {"error": "invalid JSON", "detail": "expected an object",
                               "region": self.id})
        self.stats.payments += 1
        return json_answer(201, {
            "region": self.id,
            "payment_id": f"pay_{uuid.uuid4().hex}",
            "amount": body.get("amount"),
            "currency": body.get("currency"),
            "status": "created",
            "request_id": request.headers.get("X-Request-Id"),
        })

    async def _large(self, request: web.Request) -> web.StreamResponse:
        try:
            total = int(request.query.get("bytes", str(1 << 20)))
        except ValueError:
            total = -1
        if total < 0:
            return json_answer(400, {"error": "bytes must be a non-negative integer", "region": self.id})
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if request.query.get("sized", "").lower() in ("1", "true", "yes"):
            response.content_length = total
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        remaining = total
        while remaining > 0:
            size = min(CHUNK, remaining)
            await response.write(_PATTERN if size == CHUNK else _PATTERN[:size])
            remaining -= size
        await response.write_eof()
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        size, sha256 = await _consume(request)
        return json_answer(200, {"region": self.id, "bytes": size, "sha256": sha256})

    async def _status(self, request: web.Request) -> web.Response:
        code_text = request.match_info["code"]
        if not code_text.isdigit() or not 200 <= int(code_text) <= 599:
            return json_answer(400, {"error": "status must be 200..599", "region": self.id})
        code = int(code_text)
        await _consume(request)
        if code in (204, 304):
            return web.Response(status=code)
        return json_answer(code, {"region": self.id, "status": code})

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        return await websocket_echo(request, self.id)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        return await server_sent_events(request, self.id)

    async def _not_found(self, request: web.Request) -> web.Response:
        return json_answer(404, {"error": "not found", "path": request.path, "region": self.id})


