"""Active health and latency probing, one pair of loops per region.

Health: GET the region's health URL; rise/fall hysteresis lives in
HealthState; the cadence speeds up while a region changes state or is down
(HAProxy's fastinter/downinter), jittered so probes never synchronise. The
first probes go out at startup. Latency: a timed GET every latency_interval
feeds the region's EWMA (live request timings feed it too); the store asks for
one at once when a live request was suspiciously slow, so that a slowdown is
confirmed (or not) within one round trip instead of at the next request.
"""
from __future__ import annotations

import asyncio
import logging
import random
import ssl

import aiohttp
from yarl import URL

from .config import Config
from .pool import client_ssl_context
from .state import RegionRuntime, RegionStore

log = logging.getLogger("edge_router.prober")

STOP_ROUNDS = 5  # cancel, wait up to STOP_WAIT for the probe tasks to end, again
STOP_WAIT = 1.0


def probe_result(ok: bool, why: str) -> str:
    """The `result` label of edge_router_probes_total for probe_once's verdict."""
    if ok:
        return "ok"
    if why.startswith("HTTP "):
        return "failure"
    if why.startswith("timeout"):
        return "timeout"
    return "network"


def describe_probe_error(exc: BaseException, url: str) -> str:
    """A failed probe in words, e.g. "connect refused to health-eu-west-1:443"
    (aiohttp's own messages carry reprs such as the SSLContext object)."""
    u = URL(url)
    where = f"{u.host}:{u.port}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed for {u.host}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        return f"TLS certificate of {where} did not verify: {getattr(cert, 'verify_message', None) or cert}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake with {where} failed: {getattr(exc.os_error, 'reason', None) or exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"connect refused to {where}"
        return f"cannot connect to {where}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{where} closed the connection without an answer"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error with {where}: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return f"connection to {where} failed: {exc.strerror or exc}"
    return f"probe of {url} failed: {exc or type(exc).__name__}"


class Prober:
    def __init__(self, config: Config, store: RegionStore, rng: random.Random | None = None) -> None:
        self.config = config
        self.store = store
        self.rng = rng or random.Random()
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[str, ssl.SSLContext] = {}
        self._measure_now: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True, resolver=aiohttp.AsyncResolver()),
            timeout=aiohttp.ClientTimeout(total=self.config.probe.timeout),
            headers={"User-Agent": "edge-router-prober/1"},
        )
        for rt in self.store.regions.values():
            rc = rt.config
            if rc.health.startswith("https://"):
                self._ssl[rt.id] = client_ssl_context(rc.tls_ca, rc.tls_cert, rc.tls_key)
            self._tasks.append(asyncio.create_task(self._health_loop(rt), name=f"probe-{rt.id}"))
            self._measure_now[rt.id] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._latency_loop(rt), name=f"latency-{rt.id}"))
        self.store.latency_check = self.measure_now

    async def stop(self) -> None:
        self.store.latency_check = None
        pending = set(self._tasks)
        for _ in range(STOP_ROUNDS):  # bounded: a reload or shutdown never hangs on a probe
            for t in pending:
                t.cancel()
            if not pending:
                break
            _, pending = await asyncio.wait(pending, timeout=STOP_WAIT)
        if pending:
            log.error("prober: %d probe tasks did not stop; left behind", len(pending))
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe_once(self, rt: RegionRuntime) -> tuple[bool, float | None, str]:
        """(ok, seconds, why): ok means a 2xx from the health URL in time."""
        # Not loop.time(): uvloop's is cached per iteration, in whole milliseconds.
        clock = self.store.clock
        t0 = clock.now()
        try:
            async with self._session.get(
                rt.config.health, ssl=self._ssl.get(rt.id, True), allow_redirects=False
            ) as resp:
                await resp.read()
                elapsed = clock.now() - t0
                if 200 <= resp.status < 300:
                    return True, elapsed, ""
                return False, elapsed, f"HTTP {resp.status}"
        except asyncio.TimeoutError:
            return False, None, f"timeout after {self.config.probe.timeout:g}s"
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            return False, None, describe_probe_error(exc, rt.config.health)

    async def _health_loop(self, rt: RegionRuntime) -> None:
        probe = self.config.probe
        while True:
            ok, _elapsed, why = await self.probe_once(rt)
            rt.metrics.probe_results[probe_result(ok, why)].inc()
            before = rt.health.healthy
            self.store.record_probe(rt, ok, None)
            if not ok and before is not False:
                log.info("probe %s failed: %s", rt.id, why)
            await asyncio.sleep(rt.health.next_delay(probe, self.rng.random()))

    def measure_now(self, rt: RegionRuntime) -> None:
        """Wake the region's latency loop (coalesced: one probe however many ask)."""
        event = self._measure_now.get(rt.id)
        if event is not None:
            event.set()

    async def _latency_loop(self, rt: RegionRuntime) -> None:
        probe = self.config.probe
        wake = self._measure_now[rt.id]
        while True:
            confirming = wake.is_set()
            wake.clear()
            ok, elapsed, _ = await self.probe_once(rt)
            if ok and elapsed is not None:
                self.store.record_latency(rt, elapsed, confirming)
            jitter = 1.0 + probe.jitter * (2.0 * self.rng.random() - 1.0)
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel
            # that lands as the event is set, and stop() then waits forever.
            try:
                async with asyncio.timeout(probe.latency_interval * jitter):
                    await wake.wait()
            except TimeoutError:
                pass
