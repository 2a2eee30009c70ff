"""The composition root: the only module that wires the pieces together."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
from typing import Callable

from aiohttp import web

from geodata.reader import GeoReader

from . import BUILD
from .admin import AdminAPI
from .clock import Clock
from .config import Config, ConfigError
from .listener import ClientConnection
from .logs import AccessLog
from .metrics import Metrics
from .ops.notify import Notifier
from .pool import Endpoint, UpstreamPool, client_ssl_context
from .prober import Prober
from .proxy import Proxy
from .ratelimit import RateLimiter
from .resolver import Resolver
from .reload import plan_reload, summary
from .state import RegionRuntime, RegionStore
from .store import open_book
from .tunnel import OUTCOMES as TUNNEL_OUTCOMES

log = logging.getLogger("edge_router.server")

TICK = 0.5  # republish cadence: drains progress, half-open comes due, dwell times pass


def open_geo(config: Config) -> GeoReader | None:
    return GeoReader(config.geo.database) if config.geo.database else None


class Router:
    """One process's router. As a worker of `serve --workers N` it binds its
    listener with SO_REUSEPORT beside its siblings, and its admin API (on a
    private loopback port, with an internal token, no audit) is driven by the
    supervisor (router/workers.py)."""

    def __init__(self, config: Config, geo: GeoReader | None, *, worker: bool = False,
                 admin_token: str | None = None, reload_source: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.worker = worker
        # A worker does not probe: the supervisor probes once for the whole process
        # tree and hands the verdicts to every worker (router/workers.py).
        self.probing = not worker
        self.admin_token = admin_token if worker else os.environ.get(config.admin.token_env)
        self.geo = geo
        self.clock = Clock()
        self.metrics = Metrics(tuple(r.id for r in config.regions))
        # edge_router_tunnels_total{region,outcome} at 0 from the start, like every series
        # whose labels the config fixes. (Belongs in Metrics.__init__ beside tunnel_bytes;
        # kept here while router/metrics.py is being reworked.)
        for rid in self.metrics.regions:
            for outcome in TUNNEL_OUTCOMES:
                self.metrics.tunnels.labels(rid, outcome)
        # Operator decisions come from the [state] store; verdicts stay local.
        self.decisions = open_book(config, lambda: tuple(self.store.regions))
        self.store = RegionStore(config, self.decisions, self.metrics, self.clock)
        self.decisions.on_change.append(self.store.publish)
        self.decisions.on_status.append(lambda up: self.metrics.state_store_up.set(1 if up else 0))
        self.store.listeners.append(lambda snap: self.metrics.set_operator_state(snap.regions))
        self.metrics.set_operator_state(self.store.snapshot.regions)
        self.store.notifier = Notifier(
            config.notify, count=lambda outcome: self.metrics.notifications.labels(outcome).inc(), now=self.clock.now,
        )
        self.prober = Prober(config, self.store)
        # Config reload (SIGHUP, POST /admin/reload): re-reads and validates the file.
        self.reload_source = reload_source
        # Subsystems that hold config of their own (rate-limit rules, notifications)
        # append a callable here; each is called with the new Config after a
        # successful reload, after regions, limits and probes were swapped.
        self.reload_hooks: list[Callable[[Config], None]] = []
        self._reloading = asyncio.Lock()
        self._resolver: Resolver | None = None
        self._api: AdminAPI | None = None
        self.rate_limiter = RateLimiter(config.rate_limit, self.clock.now, state=config.state,
                                        metric=self.metrics.rate_limited)
        self.reload_hooks.append(self.apply_rate_limit)
        self._server: asyncio.AbstractServer | None = None
        # --workers: the listening socket this worker inherits from the supervisor
        self.listen_sock: socket.socket | None = None
        self._admin_runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None
        self.proxy: Proxy | None = None
        self.access_log: AccessLog | None = None
        self.geo_errors_seen = 0
        self.listen_port = 0
        self.admin_port = 0
        self.shutting_down = False

    def ready(self) -> bool:
        return not self.shutting_down and self.decisions.loaded and self.store.any_available

    async def start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        # The decisions in the store before anything else: /readyz waits for them.
        await self.decisions.start()
        proxy = self.build_proxy()
        self.store.listeners.append(self._tunnel_grace)
        server_ssl = None
        if cfg.listen.tls_cert:
            server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ssl.load_cert_chain(cfg.listen.tls_cert, cfg.listen.tls_key)
            server_ssl.set_alpn_protocols(["http/1.1"])
        tls = server_ssl is not None
        if self.listen_sock is not None:
            self._server = await loop.create_server(
                lambda: ClientConnection(proxy, tls), sock=self.listen_sock, ssl=server_ssl, backlog=4096,
            )
        else:
            self._server = await loop.create_server(
                lambda: ClientConnection(proxy, tls),
                cfg.listen.address.host, cfg.listen.address.port,
                ssl=server_ssl, backlog=4096, reuse_address=True,
                reuse_port=self.worker,
            )
        self.listen_port = self._server.sockets[0].getsockname()[1]
        token = self.admin_token
        api = AdminAPI(
            self.store, token=token, token_env=cfg.admin.token_env, geo=self.geo,
            metrics_render=self._render_metrics, ready=self.ready, max_in_flight=cfg.breaker.max_in_flight,
            decisions=self.decisions, reload=self.reload if self.reload_source is not None else None,
            audit=not self.worker, rate_limiter=self.rate_limiter,
        )
        self._api = api
        app = api.app()
        if self.worker:
            from .workers import add_verdict_route

            add_verdict_route(app, self)
        self._admin_runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._admin_runner.setup()
        site = web.TCPSite(self._admin_runner, cfg.admin.address.host, cfg.admin.address.port, reuse_address=True)
        await site.start()
        self.admin_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if not token and not self.worker:
            log.warning("no admin token in $%s: admin mutations are refused (403)", cfg.admin.token_env)
        await self.store.notifier.start()
        if self.probing:
            await self.prober.start()
        await self.rate_limiter.start()
        self._ticker = asyncio.create_task(self._tick_loop(), name="tick")
        if self.worker:
            log.info("worker %d serving %s:%d (private admin port %d)", os.getpid(),
                     cfg.listen.address.host, self.listen_port, self.admin_port)
        else:
            log.info(
                "edge-router listening on %s:%d (admin %s:%d), strategy %s, %d regions, %s build",
                cfg.listen.address.host, self.listen_port, cfg.admin.address.host, self.admin_port,
                self.store.strategy, len(self.store.regions), BUILD,
            )

    def build_proxy(self) -> Proxy:
        """The data plane without its sockets: a pool per region and the Proxy every
        client connection shares. start() serves it; tests feed it bytes
        (tests/router/test_exchange.py)."""
        self._resolver = Resolver(asyncio.get_running_loop())
        for rt in self.store.regions.values():
            self._attach_pool(rt)
        self.access_log = AccessLog() if self.config.log.access_log else None
        self.proxy = Proxy(
            config=self.config, store=self.store, geo=self.geo, metrics=self.metrics, clock=self.clock,
            access_log=self.access_log, rate_limiter=self.rate_limiter if self.rate_limiter.rules else None,
        )
        return self.proxy

    def _tunnel_grace(self, snap) -> None:
        """A disabled region gets no new tunnels; its open ones live
        limits.tunnel_drain_timeout more, unless it is enabled again first."""
        tunnels = self.proxy.tunnels
        for v in snap.regions:
            if v.disabled:
                tunnels.close_region_after(v.id, self.config.limits.tunnel_drain_timeout)
            else:
                tunnels.cancel_grace(v.id)

    def _attach_pool(self, rt: RegionRuntime) -> None:
        """A new pool for the region; the old one (a reload) drains: its idle
        connections close now, the busy ones when their exchange ends."""
        rc, lim = rt.config, self.config.limits
        ep = Endpoint.parse(rc.api)
        ctx = client_ssl_context(rc.tls_ca, rc.tls_cert, rc.tls_key) if ep.scheme == "https" else None
        old, rt.pool = rt.pool, UpstreamPool(
            rt.id, ep, resolver=self._resolver, ssl_context=ctx, size=lim.pool_size, wait=lim.pool_wait,
            connect_timeout=lim.connect_timeout, read_timeout=lim.read_timeout, idle_timeout=lim.pool_idle,
            max_head_bytes=lim.max_response_header_bytes,
        )
        if old is not None:
            old.close()

    async def reload(self) -> dict:
        """Read and validate the config again. A bad one keeps the running config
        and reports every problem with its key path; a good one is swapped in
        without dropping a connection or a request in flight."""
        async with self._reloading:
            try:
                loaded = self.reload_source()
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("config reload refused, running config kept: %s", problem)
                self.metrics.config_reload_success.set(0)
                self.store.notifier.emit("config_reload_failed", problems=len(exc.problems),
                                         first_problem=exc.problems[0] if exc.problems else "")
                return {"ok": False, "problems": exc.problems}
            plan = plan_reload(self.config, loaded)
            old_limits = self.config.limits
            before = dict(self.store.regions)
            retired = self.store.reconfigure(plan.config)
            self.config = plan.config
            for rt in self.store.regions.values():
                if rt.pool is None or old_limits != plan.config.limits:
                    self._attach_pool(rt)
            for rt in retired:
                if rt.pool is not None:
                    rt.pool.close()
            if self.proxy is not None:
                self.proxy.apply_config(plan.config)
            if self._api is not None:
                self._api.max_in_flight = plan.config.breaker.max_in_flight
            await self.prober.stop()
            self.prober = Prober(plan.config, self.store)
            if self.probing:
                await self.prober.start()
            problems = []
            for hook in self.reload_hooks:
                try:
                    hook(plan.config)
                except Exception as exc:  # one subsystem's failure must not undo the others
                    log.exception("reload hook %r failed", hook)
                    problems.append(f"{getattr(hook, '__qualname__', hook)}: {exc}")
            self.metrics.config_reload_success.set(0 if problems else 1)
            result = summary(
                plan,
                regions_new=[r for r in self.store.regions if r not in before],
                regions_fresh=[r for r, rt in self.store.regions.items() if r in before and before[r] is not rt],
                regions_gone=[r for r in before if r not in self.store.regions],
            )
            if problems:
                result.update(ok=False, problems=problems)
            self.store.notifier.emit("config_reloaded", changed=", ".join(plan.changed) or "nothing")
            log.warning("config reloaded: changed %s%s", ", ".join(plan.changed) or "nothing",
                        f"; needs a restart: {', '.join(plan.needs_restart)}" if plan.needs_restart else "")
            return result

    def apply_rate_limit(self, config: Config) -> None:
        """Config reload: the new [rate_limit] rules (and [state]'s Redis) take effect at once."""
        self.rate_limiter.reconfigure(config.rate_limit, config.state)
        if self.proxy is not None:  # no rules: the hot path skips the limiter altogether
            self.proxy.rate_limiter = self.rate_limiter if self.rate_limiter.rules else None

    def _render_metrics(self) -> bytes:
        if self.geo is not None:
            # The reader counts its own errors; mirror them into the counter.
            new = self.geo.errors - self.geo_errors_seen
            if new > 0:
                self.metrics.geo_errors.inc(new)
                self.geo_errors_seen = self.geo.errors
        return self.metrics.render()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.store.tick()
                if self.access_log is not None:
                    self.access_log.flush()
            except Exception:  # the ticker must survive any one bad tick
                log.exception("tick failed")

    async def shutdown(self) -> None:
        """SIGTERM: not ready first, stop accepting, let in-flight requests
        finish within the drain timeout, then close everything."""
        if self.shutting_down:
            return
        self.shutting_down = True
        proxy = self.proxy
        log.info("shutting down: readiness off, draining %d in-flight requests", proxy.active if proxy else 0)
        if proxy is not None:
            proxy.shutting_down = True
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.limits.drain_timeout
        if proxy is not None:
            # Idle keep-alive connections: close now. Busy ones close after their response.
            for c in list(proxy.connections):
                if c.exchange is None:
                    c.close()
            # WebSocket tunnels get the same grace as requests, then are closed.
            while (proxy.active > 0 or proxy.tunnels.count) and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if proxy.active:
                log.warning("drain timeout: %d requests still in flight are cut", proxy.active)
            if proxy.tunnels.count:
                log.warning("drain timeout: %d WebSocket tunnels are closed", proxy.tunnels.count)
                proxy.tunnels.close_all()
            for c in list(proxy.connections):
                c.transport.abort()
        if self._ticker is not None:
            self._ticker.cancel()
        await self.prober.stop()
        await self.decisions.close()
        await self.rate_limiter.stop()
        await self.store.notifier.stop()
        for rt in self.store.regions.values():
            if rt.pool is not None:
                rt.pool.close()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        if self.geo is not None:
            self.geo.close()
        if self.access_log is not None:
            self.access_log.flush()
        log.info("stopped")


async def serve_until_signalled(router: Router, on_ready=None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP reloads the config (nginx, HAProxy and Envoy users send it by habit).
    reloads: set[asyncio.Task] = set()

    def on_hup() -> None:
        if router.reload_source is None:
            log.warning("SIGHUP: this router runs the built-in default config; nothing to reload")
            return
        task = loop.create_task(router.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await router.start()
    if on_ready is not None:
        on_ready(router)
    await stop.wait()
    await router.shutdown()


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
