"""`serve --workers N`: N router processes behind one supervisor.

Each worker is a whole router (data plane, prober, breakers, region store) whose
listener joins the others on the same port with SO_REUSEPORT, so the kernel
spreads connections across them. The supervisor owns the public admin
listener: it checks the operator's token, writes the one audit line, applies
every mutation to all workers (through their admin APIs, on private loopback
ports, with an internal token), and answers reads with the workers' views
merged (router/aggregate.py).

A worker that dies is replaced, as nginx's master does. The supervisor opens
the listening sockets, one per worker slot in one SO_REUSEPORT group (so the
kernel spreads connections), and keeps them: a worker inherits its slot's
socket, and so does its replacement; connections that queued on it meanwhile
wait instead of being reset, while the other workers keep serving. The
replacement gets the operator's decisions replayed. More than CRASH_LIMIT deaths within CRASH_WINDOW seconds is a
crash loop: the whole process stops with exit 1 and the orchestrator decides.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import select
import signal
import socket
from dataclasses import replace

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from .admin import MUTATIONS, _error, _json, audit, authorize, build_app
from .aggregate import merge_metrics, merge_states
from .config import Address, Config
from .logs import fatal, set_process_name, setup_logging
from .metrics import CONTENT_TYPE

log = logging.getLogger("edge_router.workers")

CRASH_LIMIT = 5  # deaths ...
CRASH_WINDOW = 60.0  # ... within this many seconds: stop everything
READY_WITHIN = 30.0  # a worker that has not reported its admin port by then is killed


class CrashLoop:
    """Counts worker deaths on an injected clock: True once there were more
    than `limit` within `window` seconds."""

    __slots__ = ("limit", "window", "deaths")

    def __init__(self, limit: int = CRASH_LIMIT, window: float = CRASH_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.deaths: list[float] = []

    def record(self, now: float) -> bool:
        self.deaths = [t for t in self.deaths if now - t < self.window] + [now]
        return len(self.deaths) > self.limit


def exit_description(status: int) -> str:
    """A wait status as an operator reads it: "exit 3", "killed by SIGKILL"."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def _listeners(host: str, port: int, n: int) -> list[socket.socket]:
    """n listening sockets on one port, in one SO_REUSEPORT group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            port = s.getsockname()[1]  # port 0: the first one fixes it for the others
            s.listen(4096)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker if the supervisor dies, even by SIGKILL, so that
    no orphan keeps serving the port with decisions nobody can change."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(config: Config, internal_token: str, report_fd: int, sock: socket.socket) -> int:
    """In the child: run one router on the inherited listening socket; report
    its private admin port on the pipe."""
    from .server import Router, install_uvloop, open_geo, serve_until_signalled

    _die_with_parent()

    install_uvloop()

    def ready(router) -> None:
        os.write(report_fd, b"%d\n" % router.admin_port)
        os.close(report_fd)

    router = Router(config, open_geo(config), worker=True, admin_token=internal_token)
    router.listen_sock = sock
    asyncio.run(serve_until_signalled(router, on_ready=ready))
    return 0


def _spawn(worker_cfg: Config, internal: str, sock: socket.socket, close_fds: list[int],
           slot: int = 0) -> tuple[int, int]:
    """Fork one worker; (its pid, the read end of the pipe it reports its
    admin port on). Safe from inside the supervisor's running loop: the child
    drops the parent's loop, signal wake-up and sockets before it starts."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        set_process_name(f"worker {slot}")  # in every log line it writes
        try:
            signal.set_wakeup_fd(-1)  # else a signal here would wake the supervisor's loop
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            asyncio.events._set_running_loop(None)  # forked from a running loop: not ours
            os.close(r)
            for fd in close_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            code = _worker(worker_cfg, internal, w, sock)
        except BaseException:  # noqa: BLE001 - whatever happens, never return into the parent's code
            logging.getLogger("edge_router.workers").exception("worker failed")
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def run_workers(config: Config, n: int) -> int:
    """Fork n workers, then supervise them until SIGTERM/SIGINT. The exit code."""
    socks = _listeners(config.listen.address.host, config.listen.address.port, n)
    port = socks[0].getsockname()[1]
    worker_cfg = replace(
        config,
        listen=replace(config.listen, address=Address(config.listen.address.host, port)),
        admin=replace(config.admin, address=Address("127.0.0.1", 0)),
    )
    internal = secrets.token_hex(16)

    def spawn(slot: int, close_fds: list[int]) -> tuple[int, int]:
        others = [s.fileno() for i, s in enumerate(socks) if i != slot]
        return _spawn(worker_cfg, internal, socks[slot], others + close_fds, slot)

    children = [spawn(i, []) for i in range(n)]
    ports = []
    for pid, r in children:
        ready, _, _ = select.select([r], [], [], 30)
        line = os.read(r, 64) if ready else b""
        os.close(r)
        if not line.strip():
            log.error("worker %d did not start", pid)
            _terminate([p for p, _ in children])
            for s in socks:
                s.close()
            return 1
        ports.append(int(line))
    from .server import install_uvloop

    install_uvloop()
    sup = Supervisor(config, port, [p for p, _ in children], ports, internal)
    sup.respawn = spawn  # the sockets stay open here: replacements inherit them
    try:
        return asyncio.run(sup.run())
    finally:
        for s in socks:
            s.close()


def _terminate(pids: list[int], sig: signal.Signals = signal.SIGTERM) -> None:
    for pid in pids:
        if pid <= 0:
            continue
        try:
            os.kill(pid, sig)
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
        self.failed = False  # workers died in a crash loop
        self.crashes = CrashLoop()
        self.respawn = None  # (slot, fds the child must close) -> (pid, report pipe); set by run_workers
        self._listen_fds: list[int] = []
        # The operator's last decision per region (and the strategy): replayed
        # to a replacement worker so that it serves as the others do.
        self.decisions: dict[str, tuple[str, str, bytes]] = {}
        self.decisions_version = 0
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
        self._listen_fds = [s.fileno() for s in site._server.sockets]  # type: ignore[union-attr]
        if not self.token:
            log.warning("no admin token in $%s: admin mutations are refused (403)", self.config.admin.token_env)
        log.info(
            "edge-router listening on %s:%d (admin %s:%d), strategy %s, %d regions, %d workers",
            self.config.listen.address.host, self.port, a.host, admin_port, self.config.strategy,
            len(self.config.regions), len(self.pids),
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
        """A worker that dies is replaced; a crash loop stops everything."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.2)
            for i, pid in enumerate(self.pids):
                done, status = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
                self.urls[i] = None  # no admin calls to the dead one
                if self.crashes.record(loop.time()):
                    log.error("worker %d exited (%s): more than %d worker deaths within %gs, "
                              "a crash loop: stopping", pid, exit_description(status),
                              CRASH_LIMIT, CRASH_WINDOW)
                    self.pids[i] = 0
                    self.failed = True
                    stop.set()
                    return
                new, report = self.respawn(i, self._listen_fds)
                self.pids[i] = new
                log.error("worker %d exited (%s): replaced by worker %d", pid, exit_description(status), new)
                loop.create_task(self._join(i, new, report))

    async def _join(self, i: int, pid: int, report: int) -> None:
        """Wait for a replacement's admin port, replay decisions, then use it."""
        loop = asyncio.get_running_loop()
        got: asyncio.Future = loop.create_future()

        def readable() -> None:
            if not got.done():
                got.set_result(os.read(report, 64))

        loop.add_reader(report, readable)
        try:
            line = await asyncio.wait_for(got, READY_WITHIN)
        except asyncio.TimeoutError:
            line = b""
        finally:
            loop.remove_reader(report)
            os.close(report)
        if not line.strip():
            if self.pids[i] == pid:
                log.error("worker %d did not start within %gs: killing it", pid, READY_WITHIN)
                _terminate([pid], signal.SIGKILL)
            return  # the watcher sees it die (and counts the death)
        url = f"http://127.0.0.1:{int(line)}"
        headers = {"Authorization": f"Bearer {self.internal}", "Content-Type": "application/json"}
        replayed = -1
        while replayed != self.decisions_version:  # until no mutation came in meanwhile
            replayed = self.decisions_version
            for method, path, body in list(self.decisions.values()):
                try:
                    async with self.session.request(method, URL(url + path, encoded=True), data=body,
                                                    headers=headers) as resp:
                        await resp.read()
                except aiohttp.ClientError as exc:
                    log.error("worker %d: replaying %s %s failed: %s", pid, method, path, exc)
        if self.pids[i] == pid:
            self.urls[i] = url
            log.info("worker %d ready (admin %s)", pid, url)

    async def _stop_workers(self) -> int:
        _terminate(self.pids)
        deadline = asyncio.get_running_loop().time() + self.config.limits.drain_timeout + 10
        code = 1 if self.failed else 0
        for pid in self.pids:
            if pid <= 0:
                continue
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
        async with self.session.get(URL(url + path, encoded=True)) as resp:
            return resp.status, await resp.read()

    @property
    def live(self) -> list[str]:
        """Admin URLs of the workers serving now (a replacement joins once ready)."""
        return [u for u in self.urls if u]

    async def _all(self, path: str) -> list[bytes]:
        results = await asyncio.gather(*(self._get(u, path) for u in self.live), return_exceptions=True)
        # A worker that just died (its replacement not yet noticed) is left out.
        return [r[1] for r in results if not isinstance(r, BaseException)]

    async def state(self, request: web.Request) -> web.Response:
        return _json(merge_states([orjson.loads(b) for b in await self._all("/admin/state")]))

    async def metrics(self, request: web.Request) -> web.Response:
        texts = [b.decode() for b in await self._all("/metrics")]
        return web.Response(body=merge_metrics(texts).encode(), headers={"Content-Type": CONTENT_TYPE})

    async def route(self, request: web.Request) -> web.Response:
        status, body = await self._get(self.live[0], request.raw_path)
        return web.Response(body=body, status=status, content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "alive", "workers": len(self.live)})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.stopping:
            return _json({"status": "not ready"}, 503)
        statuses = await asyncio.gather(*(self._get(u, "/readyz") for u in self.live), return_exceptions=True)
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
            for i, url in enumerate(self.live):
                try:
                    # The path as the operator sent it, still encoded: decoded,
                    # "x%2F..%2Fus-west-2" would become another region's path.
                    async with self.session.request(request.method, URL(url + request.raw_path, encoded=True),
                                                    data=body, headers=headers) as resp:
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
                key = request.match_info.get("id", "strategy")
                self.decisions.pop(key, None)  # re-inserted last: replayed in order
                self.decisions[key] = (request.method, request.raw_path, body)
                self.decisions_version += 1
            return web.Response(body=first, status=status, content_type="application/json")

        return handler


def serve_workers(config: Config) -> int:
    setup_logging(config.log.level, fmt=config.log.format)
    set_process_name("supervisor")
    try:
        return run_workers(config, config.workers)
    except OSError as exc:
        fatal(f"cannot start: {exc}")
        return 1
