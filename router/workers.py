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
replacement gets the operator's decisions replayed (with a file or Redis
store it reads them from the store, like any replica). More than CRASH_LIMIT
deaths within CRASH_WINDOW seconds is a crash loop: the whole process stops
with exit 1 and the orchestrator decides.

The supervisor probes the regions once per interval for the whole process tree
and hands every result to the workers (verdict_fanout); with `[state] backend =
"redis"` a mutation goes to one worker, which commits it, and the others take it
from Redis; SIGHUP and POST /admin/reload are validated here, then every worker
reloads.
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
from prometheus_client import generate_latest
from yarl import URL

from . import BUILD
from .admin import MUTATIONS, OPERATOR_HEADER, _error, _json, audit, authorize, build_app
from .aggregate import merge_metrics, merge_states
from .clock import Clock
from .config import Address, Config, ConfigError
from .logs import fatal, set_process_name, setup_logging
from .metrics import CONTENT_TYPE, Metrics
from .prober import Prober
from .reload import plan_reload
from .state import RegionStore
from .store import MemoryDecisionStore

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


# -- one prober per process tree -------------------------------------------------------
VERDICTS_PATH = "/internal/verdicts"


def verdict_fanout(config: Config, send) -> RegionStore:
    """The supervisor's own region store: its prober's results drive the
    supervisor's probe cadence (rise/fall, fast and down intervals) and are
    handed, as raw results, to every worker, whose own HealthState reaches the
    same verdict. So N workers cost one probe per interval, not N."""
    store = RegionStore(config, MemoryDecisionStore(config.strategy), Metrics(tuple(r.id for r in config.regions)),
                        Clock())
    store.probe_results = send
    return store


def add_verdict_route(app: web.Application, router) -> None:
    """In a worker: the supervisor's probe results, applied as if probed here."""

    async def verdicts(request: web.Request) -> web.Response:
        denied, _ = authorize(request, router.admin_token, "internal")
        if denied:
            return denied
        store = router.store
        for v in orjson.loads(await request.read()):
            rt = store.regions.get(v["region"])
            if rt is None:
                continue  # a region this worker does not know (mid-reload)
            if "ok" in v:
                store.record_probe(rt, v["ok"], None)
            else:
                store.record_latency(rt, v["latency"], v.get("confirming", False))
        return _json({"ok": True})

    app.router.add_post(VERDICTS_PATH, verdicts)


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


def _worker_reload(reload_source, config: Config):
    """A worker reloads the file as the supervisor does, keeping its own
    addresses (the shared port, its private admin port): the supervisor
    reports what needs a restart."""
    if reload_source is None:
        return None

    def load() -> Config:
        return replace(reload_source(), listen=config.listen, admin=config.admin, workers=config.workers)

    return load


def _worker(config: Config, internal_token: str, report_fd: int, sock: socket.socket, reload_source=None) -> int:
    """In the child: run one router on the inherited listening socket; report
    its private admin port on the pipe."""
    from .server import Router, install_uvloop, open_geo, serve_until_signalled

    _die_with_parent()

    install_uvloop()

    def ready(router) -> None:
        os.write(report_fd, b"%d\n" % router.admin_port)
        os.close(report_fd)

    router = Router(config, open_geo(config), worker=True, admin_token=internal_token,
                    reload_source=_worker_reload(reload_source, config))
    router.listen_sock = sock
    asyncio.run(serve_until_signalled(router, on_ready=ready))
    return 0


def _spawn(worker_cfg: Config, internal: str, sock: socket.socket, close_fds: list[int],
           slot: int = 0, reload_source=None) -> tuple[int, int]:
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
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            asyncio.events._set_running_loop(None)  # forked from a running loop: not ours
            os.close(r)
            for fd in close_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            code = _worker(worker_cfg, internal, w, sock, reload_source)
        except BaseException:  # noqa: BLE001 - whatever happens, never return into the parent's code
            logging.getLogger("edge_router.workers").exception("worker failed")
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def run_workers(config: Config, n: int, reload_source=None) -> int:
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
        # One worker (slot 0, and its replacements) sends the webhooks, not N copies of each message.
        cfg = worker_cfg if slot == 0 else replace(worker_cfg, notify=())
        return _spawn(cfg, internal, socks[slot], others + close_fds, slot, reload_source)

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
    sup.reload_source = reload_source
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
        self.reload_source = None  # set by run_workers when serving a config file
        # With Redis every worker follows the store like any replica: a decision
        # goes to one worker, which commits it; the others take it from Redis.
        self.shared_store = config.state.backend == "redis"
        # With a file or Redis a replacement worker reads the decisions from the
        # store: only this tree's local overrides are replayed to it.
        self.stored = config.state.backend != "memory"
        self._verdicts: list[dict] = []
        self._flush: asyncio.Task | None = None
        self.prober: Prober | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task] = set()

        def on_hup() -> None:
            task = loop.create_task(self._reload_all())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        await self._start_prober(self.config)
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
            "edge-router listening on %s:%d (admin %s:%d), strategy %s, %d regions, %d workers, %s build",
            self.config.listen.address.host, self.port, a.host, admin_port, self.config.strategy,
            len(self.config.regions), len(self.pids), BUILD,
        )
        watch = asyncio.create_task(self._watch(stop))
        await stop.wait()
        self.stopping = True  # /readyz answers 503 from now on
        watch.cancel()
        if self.prober is not None:
            await self.prober.stop()
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
                    # (a replacement still starting dies of the SIGTERM itself: fine)
                    if os.waitstatus_to_exitcode(status) not in (0, -signal.SIGTERM):
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
        if self.prober is not None:  # the probes are counted here, once for the tree
            texts.append(generate_latest(self.prober.store.metrics.registry.restricted_registry(
                ["edge_router_probes_total"])).decode())
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
        answers = [orjson.loads(s[1]) for s in statuses if not isinstance(s, BaseException)]
        detail = {"decisions": answers[0].get("decisions")} if answers else {}
        if any(not isinstance(s, BaseException) and s[0] == 200 for s in statuses):
            return _json({"status": "ready", **detail})
        return _json({"status": "not ready", **detail}, 503)

    # -- config reload -----------------------------------------------------------------
    async def reload(self, request: web.Request) -> web.Response:
        denied, who = authorize(request, self.token, self.config.admin.token_env)
        if denied:
            return denied
        if self.reload_source is None:
            return _error(409, "no_config_file", "this router runs the built-in default config: nothing to reload")
        result = await self._reload_all()
        audit(request, who, "reload", {"ok": result["ok"]})
        if not result["ok"]:
            return _json({"error": "invalid_config", "detail": "the running config is kept",
                          "problems": result["problems"]}, 400)
        return _json(result)

    async def _reload_all(self) -> dict:
        """Validate here (problems reported once), then every worker reloads."""
        if self.reload_source is None:
            log.warning("SIGHUP: this router runs the built-in default config; nothing to reload")
            return {"ok": False, "problems": ["no config file"]}
        try:
            loaded = self.reload_source()
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config reload refused, running config kept: %s", problem)
            # The workers check the same file and keep their config too (and set the metric).
            await self._post_all("/admin/reload")
            return {"ok": False, "problems": exc.problems}
        plan = plan_reload(self.config, loaded)
        answers = await self._post_all("/admin/reload")
        results = [orjson.loads(body) if status < 500 else {"ok": False, "problems": [body.decode()]}
                   for status, body in answers]
        bad = [r for r in results if not r.get("ok", False)]
        if bad or not results:
            return {"ok": False, "problems": sorted({p for r in bad for p in r.get("problems", ["?"])})
                    or ["no worker answered"]}
        self.config = plan.config
        await self._start_prober(plan.config)
        merged = dict(results[0])
        merged["needs_restart"] = list(plan.needs_restart)
        merged["workers"] = len(results)
        return merged

    # -- probes, once for the tree -----------------------------------------------------
    async def _start_prober(self, config: Config) -> None:
        if self.prober is not None:
            await self.prober.stop()
        self.prober = Prober(config, verdict_fanout(config, self._queue_verdict))
        await self.prober.start()

    def _queue_verdict(self, verdict: dict) -> None:
        """Results of one event-loop turn go to the workers in one POST each."""
        self._verdicts.append(verdict)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._send_verdicts())

    async def _send_verdicts(self) -> None:
        await asyncio.sleep(0)
        while self._verdicts:  # what arrived during a delivery goes in the next one
            batch, self._verdicts = self._verdicts, []
            for url, (status, body) in zip(self.live, await self._post_all(VERDICTS_PATH, orjson.dumps(batch))):
                if status != 200:
                    log.warning("probe results not delivered to worker %s: %s", url, body[:200])

    async def _post_all(self, path: str, body: bytes = b"") -> list[tuple[int, bytes]]:
        headers = {"Authorization": f"Bearer {self.internal}", "Content-Type": "application/json"}

        async def post(url: str) -> tuple[int, bytes]:
            try:
                async with self.session.post(URL(url + path, encoded=True), data=body, headers=headers) as resp:
                    return resp.status, await resp.read()
            except aiohttp.ClientError as exc:
                return 502, f"worker {url}: {exc}".encode()

        return list(await asyncio.gather(*(post(u) for u in self.live)))

    async def _converge(self, version: int, timeout: float = 2.0) -> None:
        """Wait (bounded) until every worker applied the store's version: the
        answer then means "in force in this whole process tree"."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = list(self.live[1:])
        while pending and loop.time() < deadline:
            states = await asyncio.gather(*(self._get(u, "/admin/state") for u in pending), return_exceptions=True)
            pending = [u for u, st in zip(pending, states)
                       if isinstance(st, BaseException) or orjson.loads(st[1])["decisions"]["version"] < version]
            if pending:
                await asyncio.sleep(0.01)

    def _mutation(self, action: str):
        async def handler(request: web.Request) -> web.Response:
            denied, who = authorize(request, self.token, self.config.admin.token_env)
            if denied:
                return denied
            body = await request.read()
            headers = {"Authorization": f"Bearer {self.internal}", "Content-Type": "application/json",
                       OPERATOR_HEADER: who}  # the operator, for the workers' notifications
            try:
                parsed = orjson.loads(body) if body.strip() else {}
            except orjson.JSONDecodeError:
                parsed = None  # worker 0 answers the 400
            local = isinstance(parsed, dict) and parsed.get("scope") == "local"
            # The first worker validates (the same 400/404 answers as one process);
            # only then do the others follow -- unless the store carries it to them.
            live = self.live
            # A lift is each process's own limiter state: every worker hears it.
            targets = live[:1] if self.shared_store and not local and action != "ratelimit_lift" else live
            answers = []
            for i, url in enumerate(targets):
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
                if len(targets) < len(live):
                    await self._converge(orjson.loads(first).get("version", 0))
                key = request.match_info.get("id", "strategy")
                if action == "enable" and not local and self.shared_store and key in self.decisions:
                    # Worker 0's enable cleared its own local override; the other
                    # workers hold theirs (a local disable reached every worker)
                    # until an enable reaches them too: a local one, no new commit.
                    for i, url in enumerate(live[1:], 1):
                        try:
                            async with self.session.post(URL(url + request.raw_path, encoded=True),
                                                         data=b'{"scope": "local"}', headers=headers) as resp:
                                await resp.read()
                        except aiohttp.ClientError as exc:
                            return _error(502, "worker_unreachable", f"worker {i}: {exc}")
                args = parsed if isinstance(parsed, dict) else {}
                if action == "ratelimit_lift":  # the worker's answer: an API key hashed, not in clear
                    args = orjson.loads(first)
                if "id" in request.match_info:
                    args = {"region": request.match_info["id"], **args}
                audit(request, who, action, args)
                if action == "ratelimit_lift":  # replayed to a replaced worker under its own key
                    key = f"lift:{args.get('rule')}:{args.get('key')}"
                if local or not self.stored:
                    self.decisions.pop(key, None)  # re-inserted last: replayed in order
                    self.decisions[key] = (request.method, request.raw_path, body)
                    self.decisions_version += 1
                elif action == "enable":  # the shared enable cleared this tree's local override too
                    self.decisions.pop(key, None)
            return web.Response(body=first, status=status, content_type="application/json")

        return handler


def serve_workers(config: Config, reload_source=None) -> int:
    setup_logging(config.log.level, fmt=config.log.format)
    set_process_name("supervisor")
    try:
        return run_workers(config, config.workers, reload_source)
    except OSError as exc:
        fatal(f"cannot start: {exc}")
        return 1
