"""Region simulator: stand-ins for the regional API deployments.

One process runs any number of simulated regions, each an aiohttp server on its
own port, plus one control server for the whole process (so a region that is
"down", its listening socket really closed, can still be brought back).

Region endpoints (every answer carries `X-Sim-Region: <id>` and comes after the
region's latency plus any injected extra latency):

    GET  /api/v1/health             200 {"status": "ok", "region"}; 503 under health_fail
    *    /api/v1/echo               the request as received: method, path, query,
                                    headers, body size and sha256
    POST /api/v1/payments           JSON object -> 201 {"region", "payment_id", "amount", ...}
    GET  /api/v1/large?bytes=N      N bytes streamed in 64 KiB chunks, byte i is i % 256;
                                    chunked, or Content-Length with &sized=1
    PUT|POST /api/v1/upload         {"region", "bytes", "sha256"} of the streamed body
    *    /api/v1/status/{code}      that status, small JSON body (none for 204/304)
    anything else                   404 JSON

Faults (control server, or the Simulator methods):

    down             listening socket closed and open connections aborted; up again
                     on the same port
    error_rate       that share of requests (never health) answers 500; seeded per
                     region, 1.0 is exact
    extra_latency    added to the region's latency ("250ms" or seconds)
    hang             requests (health too) are accepted and never answered, until the
                     fault is cleared or the client goes away
    health_fail      health answers 503
    drop_after_body  requests (never health) have their body read, then the TCP
                     connection is aborted without an answer

Control server (JSON):

    GET  /regions                   {"regions": {id: region view}}
    GET  /regions/{id}              region view: id, port, latency, up, faults, stats
    POST /regions/{id}/fault        partial update of faults, answers the region view
    POST /regions/{id}/reset        clears every fault
    GET  /regions/{id}/stats        {"requests", "by_path", "by_method", "request_ids", "payments"}
    POST /regions/{id}/stats/reset

CLI:

    python -m bench.regions --region us-east-1:8101:20ms --region eu-west-1:8102:80ms \\
        --control 8100 [--host 127.0.0.1] [--tls-cert F --tls-key F [--tls-client-ca F]]
        [--ready-file PATH]

prints {"control": port, "regions": {id: port}} as one JSON line once listening
(port 0 picks a free one) and stops cleanly on SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import logging
import math
import os
import random
import re
import signal
import socket
import ssl
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiohttp import web

log = logging.getLogger("edge_router.bench.regions")

HEALTH_PATH = "/api/v1/health"
CHUNK = 64 * 1024
# Byte i of every /large body is i % 256; CHUNK is a multiple of 256 so chunks line up.
_PATTERN = bytes(range(256)) * (CHUNK // 256)
_REQUEST_IDS_KEPT = 1000
_SHUTDOWN_TIMEOUT = 1.0


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


@dataclass
class Faults:
    down: bool = False
    error_rate: float = 0.0
    extra_latency: float = 0.0
    hang: bool = False
    health_fail: bool = False
    drop_after_body: bool = False


_FAULT_FIELDS = {f.name: f.type for f in fields(Faults)}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m)?\s*$")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds from "250ms", "1.5s", "2m", "100us", or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 250ms, 2s, or seconds)")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {value!r}")
    return seconds


def validate_faults(changes: dict[str, Any]) -> dict[str, Any]:
    """Checked, normalised fault changes; ValueError naming the first bad field."""
    if not isinstance(changes, dict):
        raise ValueError("body must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in _FAULT_FIELDS:
            raise ValueError(f"unknown fault {key!r}; known: {', '.join(_FAULT_FIELDS)}")
        if key == "error_rate":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError("error_rate must be a number from 0 to 1")
            out[key] = float(value)
        elif key == "extra_latency":
            try:
                out[key] = parse_duration(value)
            except ValueError as exc:
                raise ValueError(f"extra_latency: {exc}") from None
        elif not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        else:
            out[key] = value
    return out


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


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


async def _consume(request: web.Request) -> tuple[int, str]:
    """Size and sha256 of the request body, read chunk by chunk, never held whole."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


def _bind(host: str, port: int) -> socket.socket:
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

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "port": self.port,
            "latency": self.latency,
            "up": self.up,
            "faults": asdict(self.faults),
            "stats": self.stats.to_dict(),
        }

    async def start(self) -> None:
        # handler_cancellation: a hung handler ends when its client goes away.
        self._runner = web.AppRunner(
            self._make_app(),
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
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
        return self.view()

    async def reset_faults(self) -> dict[str, Any]:
        return await self.update_faults(asdict(Faults()))

    def reset_stats(self) -> dict[str, Any]:
        self.stats = RegionStats()
        return self.stats.to_dict()

    async def _listen(self) -> None:
        assert self._runner is not None
        sock = _bind(self.host, self.port)
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
                return _json(500, {"error": "injected failure", "region": self.id})
            return await handler(request)

        return middleware

    async def _health(self, request: web.Request) -> web.Response:
        if self.faults.health_fail:
            return _json(503, {"status": "failing", "region": self.id})
        return _json(200, {"status": "ok", "region": self.id})

    async def _echo(self, request: web.Request) -> web.Response:
        size, sha256 = await _consume(request)
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return _json(200, {
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
            return _json(400, {"error": "invalid JSON", "detail": str(exc), "region": self.id})
        if not isinstance(body, dict):
            return _json(400, {"error": "invalid JSON", "detail": "expected an object",
                               "region": self.id})
        self.stats.payments += 1
        return _json(201, {
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
            return _json(400, {"error": "bytes must be a non-negative integer", "region": self.id})
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
        return _json(200, {"region": self.id, "bytes": size, "sha256": sha256})

    async def _status(self, request: web.Request) -> web.Response:
        code_text = request.match_info["code"]
        if not code_text.isdigit() or not 200 <= int(code_text) <= 599:
            return _json(400, {"error": "status must be 200..599", "region": self.id})
        code = int(code_text)
        await _consume(request)
        if code in (204, 304):
            return web.Response(status=code)
        return _json(code, {"region": self.id, "status": code})

    async def _not_found(self, request: web.Request) -> web.Response:
        return _json(404, {"error": "not found", "path": request.path, "region": self.id})


class Simulator:
    """Regions plus one control server, all in the running event loop."""

    def __init__(self) -> None:
        self.regions: dict[str, Region] = {}
        self.control_port: int | None = None
        self.host = "127.0.0.1"
        self._control: web.AppRunner | None = None

    @property
    def ports(self) -> dict[str, int]:
        return {rid: region.port for rid, region in self.regions.items()}

    def ready_info(self) -> dict[str, Any]:
        return {"control": self.control_port, "regions": self.ports}

    async def start(
        self,
        specs: list[RegionSpec],
        control_port: int = 0,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        ids = [spec.id for spec in specs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate region ids in {ids}")
        self.host = host
        try:
            for spec in specs:
                region = Region(spec, host, ssl_context)
                self.regions[spec.id] = region
                await region.start()
            self._control = web.AppRunner(
                self._make_control_app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
            )
            await self._control.setup()
            sock = _bind(host, control_port)
            await web.SockSite(self._control, sock).start()
            self.control_port = sock.getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._control is not None:
            await self._control.cleanup()
            self._control = None
        for region in self.regions.values():
            await region.stop()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def region(self, region_id: str) -> Region:
        try:
            return self.regions[region_id]
        except KeyError:
            raise KeyError(f"unknown region {region_id!r}") from None

    async def set_fault(self, region_id: str, **changes: Any) -> dict[str, Any]:
        """Partial fault update, e.g. set_fault("eu-west-1", down=True, extra_latency="200ms")."""
        return await self.region(region_id).update_faults(changes)

    async def reset(self, region_id: str) -> dict[str, Any]:
        return await self.region(region_id).reset_faults()

    def stats(self, region_id: str) -> dict[str, Any]:
        return self.region(region_id).stats.to_dict()

    def reset_stats(self, region_id: str) -> dict[str, Any]:
        return self.region(region_id).reset_stats()

    def state(self) -> dict[str, Any]:
        return {"regions": {rid: region.view() for rid, region in self.regions.items()}}

    def _make_control_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/regions", self._ctl_state)
        app.router.add_get("/regions/{id}", self._ctl_region)
        app.router.add_post("/regions/{id}/fault", self._ctl_fault)
        app.router.add_post("/regions/{id}/reset", self._ctl_reset)
        app.router.add_get("/regions/{id}/stats", self._ctl_stats)
        app.router.add_post("/regions/{id}/stats/reset", self._ctl_stats_reset)
        return app

    def _ctl_lookup(self, request: web.Request) -> Region:
        region = self.regions.get(request.match_info["id"])
        if region is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"unknown region {request.match_info['id']!r}",
                                 "regions": list(self.regions)}),
                content_type="application/json",
            )
        return region

    async def _ctl_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _ctl_region(self, request: web.Request) -> web.Response:
        return web.json_response(self._ctl_lookup(request).view())

    async def _ctl_fault(self, request: web.Request) -> web.Response:
        region = self._ctl_lookup(request)
        try:
            changes = json.loads(await request.read() or b"null")
            return web.json_response(await region.update_faults(changes))
        except ValueError as exc:  # bad JSON or a bad field
            return _json(400, {"error": str(exc)})
        except OSError as exc:  # the port was taken while the region was down
            return _json(409, {"error": f"cannot reopen port {region.port}: {exc}"})

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        region = self._ctl_lookup(request)
        try:
            return web.json_response(await region.reset_faults())
        except OSError as exc:
            return _json(409, {"error": f"cannot reopen port {region.port}: {exc}"})

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._ctl_lookup(request).stats.to_dict())

    async def _ctl_stats_reset(self, request: web.Request) -> web.Response:
        return web.json_response(self._ctl_lookup(request).reset_stats())


def parse_region(text: str) -> RegionSpec:
    """RegionSpec from "id[:port[:latency]]", e.g. "us-east-1:8101:20ms"."""
    parts = text.split(":")
    if not parts[0] or len(parts) > 3:
        raise argparse.ArgumentTypeError(f"expected ID[:PORT[:LATENCY]], got {text!r}")
    try:
        port = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        latency = parse_duration(parts[2]) if len(parts) > 2 else 0.0
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port out of range")
    return RegionSpec(parts[0], port, latency)


def _write_atomically(path: str, text: str) -> None:
    # A poller must never read a half-written file.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


async def _serve(args: argparse.Namespace, ssl_context: ssl.SSLContext | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim = Simulator()
    try:
        await sim.start(args.region or list(DEFAULT_SPECS), args.control, args.host, ssl_context)
    except (OSError, ValueError) as exc:
        print(f"bench.regions: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        line = json.dumps(sim.ready_info())
        if args.ready_file:
            _write_atomically(args.ready_file, line + "\n")
        print(line, flush=True)
        await stop.wait()
    finally:
        await sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.regions", description="Run simulated regions and a control server."
    )
    parser.add_argument(
        "--region", action="append", type=parse_region, metavar="ID[:PORT[:LATENCY]]",
        help="a region to simulate, e.g. us-east-1:8101:20ms (repeatable; port 0 = any free); "
             "default: the seed's four regions on free ports",
    )
    parser.add_argument("--control", type=int, default=0, metavar="PORT",
                        help="control server port (default: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve the regions over HTTPS")
    parser.add_argument("--tls-key", metavar="FILE", help="private key for --tls-cert")
    parser.add_argument("--tls-client-ca", metavar="FILE",
                        help="require client certificates signed by this CA (mutual TLS)")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="also write the ready JSON line to this file")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ssl_context = None
    if args.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            ssl_context.verify_mode = ssl.CERT_REQUIRED
            ssl_context.load_verify_locations(args.tls_client_ca)
    return asyncio.run(_serve(args, ssl_context))


if __name__ == "__main__":
    sys.exit(main())
