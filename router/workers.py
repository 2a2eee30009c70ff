"""`serve --workers N`: N router processes behind one supervisor.

Each worker is a whole router (data plane, prober, breakers, region store) whose
listener joins the others on the same port with SO_REUSEPORT, so the kernel
spreads connections across them. The supervisor owns the public admin
listener: it checks the operator's token, writes the one audit line, applies
every mutation to all workers (through their admin APIs, on private loopback
ports, with an internal token), and answers reads with the workers' views
merged (router/aggregate.py). A worker that dies takes the whole process
down (exit 1): the orchestrator restarts it with a clean, consistent state.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import select
import signal
import socket
import sys
from dataclasses import replace

import aiohttp
import orjson
from aiohttp import web

from . import BUILD
from .admin import MUTATIONS, _error, _json, audit, authorize, build_app
from .aggregate import merge_metrics, merge_states
from .config import Address, Config
from .logs import setup_logging
from .metrics import CONTENT_TYPE

log = logging.getLogger("edge_router.workers")


def _reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (not listen) with SO_REUSEPORT: fixes the port the workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    return s, s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker if the supervisor dies, even by SIGKILL, so that
    no orphan keeps serving the port with decisions nobody can change."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(config: Config, internal_token: str, report_fd: int) -> int:
    """In the child: run one router; report its private admin port on the pipe."""
    from .server import Router, install_uvloop, open_geo, serve_until_signalled

    _die_with_parent()

    install_uvloop()

    def ready(router) -> None:
        os.write(report_fd, b"%d\n" % router.admin_port)
        os.close(report_fd)

    asyncio.run(serve_until_signalled(Router(config, open_geo(config), worker=True,
                                             admin_token=internal_token), on_ready=ready))
    return 0


def run_workers(config: Config, n: int) -> int:
    """Fork n workers, then supervise them until SIGTERM/SIGINT. The exit code."""
    holder, port = _reserve_port(config.listen.address.host, config.listen.address.port)
    worker_cfg = replace(
        config,
        listen=replace(config.listen, address=Address(config.listen.address.host, port)),
        admin=replace(config.admin, address=Address("127.0.0.1", 0)),
    )
    internal = secrets.token_hex(16)
    children: list[tuple[int, int]] = []  # (pid, read end of its report pipe)
    for _ in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(r)
            holder.close()
            code = 1
            try:
                code = _worker(worker_cfg, internal, w)
            except BaseException:  # noqa: BLE001 - whatever happens, never return into the parent's code
                logging.getLogger("edge_router.workers").exception("worker failed")
            finally:
                os._exit(code)
        os.close(w)
        children.append((pid, r))
    ports = []
    for pid, r in children:
        ready, _, _ = select.select([r], [], [], 30)
        line = os.read(r, 64) if ready else b""
        os.close(r)
        if not line.strip():
            log.error("worker %d did not start", pid)
            _terminate([p for p, _ in children])
            return 1
        ports.append(int(line))
    holder.close()  # every worker is listening now
    from .server import install_uvloop

    install_uvloop()
    return asyncio.run(Supervisor(config, port, [p for p, _ in children], ports, internal).run())


def _terminate(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


class Supervisor:
    def __init__(self, config: Config, port: int, pids: list[int], admin_ports: list[int], internal: str) -> None:
        self.config = config
        self.port = port
        self.pids = pids
        self.urls = [f"http://127.0.0.1:{p}" for p in admin_ports]
        self.internal = internal
        self.token = os.environ.get(config.admin.token_env) or None
        self.stopping = False
        self.failed = False  # a worker died on its own
        for action in MUTATIONS:  # the same routes as one process (admin.ROUTES)
            setattr(self, action, self._mutation(action))
        self.session: aiohttp.ClientSession | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        a = self.config.admin.address
        site = web.TCPSite(runner, a.host, a.port, reuse_address=True)
        await site.start()
        admin_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if not self.token:
            log.warning("no admin token in $%s: admin mutations are refused (403)", self.config.admin.token_env)
        log.info(
            "edge-router listening on %s:%d (admin %s:%d), strategy %s, %d regions, %d workers, %s build",
            self.config.listen.address.host, self.port, a.host, admin_port, self.config.strategy,
            len(self.config.regions), len(self.pids), BUILD,
        )
        watch = asyncio.create_task(self._watch(stop))
        await stop.wait()
        self.stopping = True  # /readyz answers 503 from now on
        watch.cancel()
        log.info("shutting down %d workers", len(self.pids))
        code = await self._stop_workers()
        await runner.cleanup()
        await self.session.close()
        log.info("stopped")
        return code

    async def _watch(self, stop: asyncio.Event) -> None:
        """A worker that dies takes the process down: no half-capacity zombie."""
        while True:
            await asyncio.sleep(0.5)
            for pid in self.pids:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    log.error("worker %d exited (status %d): stopping", pid, status)
                    self.pids.remove(pid)
                    self.failed = True
                    stop.set()
                    return

    async def _stop_workers(self) -> int:
        _terminate(self.pids)
        deadline = asyncio.get_running_loop().time() + self.config.limits.drain_timeout + 10
        code = 1 if self.failed else 0
        for pid in self.pids:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if os.waitstatus_to_exitcode(status) != 0:
                        code = 1
                    break
                if asyncio.get_running_loop().time() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    code = 1
                    break
                await asyncio.sleep(0.05)
        return code

    # -- the public admin API ----------------------------------------------------------
    def app(self) -> web.Application:
        return build_app(self)

    async def _get(self, url: str, path: str) -> tuple[int, bytes]:
        async with self.session.get(url + path) as resp:
            return resp.status, await resp.read()

    async def _all(self, path: str) -> list[bytes]:
        results = await asyncio.gather(*(self._get(u, path) for u in self.urls))
        return [body for _, body in results]

    async def state(self, request: web.Request) -> web.Response:
        return _json(merge_states([orjson.loads(b) for b in await self._all("/admin/state")]))

    async def metrics(self, request: web.Request) -> web.Response:
        texts = [b.decode() for b in await self._all("/metrics")]
        return web.Response(body=merge_metrics(texts).encode(), headers={"Content-Type": CONTENT_TYPE})

    async def route(self, request: web.Request) -> web.Response:
        status, body = await self._get(self.urls[0], request.path_qs)
        return web.Response(body=body, status=status, content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "alive", "workers": len(self.pids)})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.stopping:
            return _json({"status": "not ready"}, 503)
        statuses = await asyncio.gather(*(self._get(u, "/readyz") for u in self.urls), return_exceptions=True)
        if any(not isinstance(s, BaseException) and s[0] == 200 for s in statuses):
            return _json({"status": "ready"})
        return _json({"status": "not ready"}, 503)

    def _mutation(self, action: str):
        async def handler(request: web.Request) -> web.Response:
            denied, who = authorize(request, self.token, self.config.admin.token_env)
            if denied:
                return denied
            body = await request.read()
            headers = {"Authorization": f"Bearer {self.internal}", "Content-Type": "application/json"}
            # The first worker validates (the same 400/404 answers as one process);
            # only then do the others follow.
            answers = []
            for i, url in enumerate(self.urls):
                try:
                    async with self.session.request(request.method, url + request.path, data=body,
                                                    headers=headers) as resp:
                        answers.append((resp.status, await resp.read()))
                except aiohttp.ClientError as exc:
                    return _error(502, "worker_unreachable", f"worker {i}: {exc}")
                if answers[0][0] >= 300:
                    break
            status, first = answers[0]
            if status < 300:
                failed = [i for i, (s, _) in enumerate(answers) if s >= 300]
                if failed:
                    return _error(502, "partial", f"workers {failed} refused what worker 0 accepted")
                args = orjson.loads(body) if body.strip() else {}
                if "id" in request.match_info:
                    args = {"region": request.match_info["id"], **(args if isinstance(args, dict) else {})}
                audit(request, who, action, args)
            return web.Response(body=first, status=status, content_type="application/json")

        return handler


def serve_workers(config: Config) -> int:
    setup_logging(config.log.level)
    try:
        return run_workers(config, config.workers)
    except OSError as exc:
        print(f"edge-router: cannot start: {exc}", file=sys.stderr)
        return 1
