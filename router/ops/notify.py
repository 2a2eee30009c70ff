"""Notifications: webhooks told of health changes, breakers, failovers, operator actions.

`Notifier.emit(kind, region=..., **fields)` is the one call the rest of the router
makes; it never blocks and never raises on the request path. Pure parts (the
coalescer, failover episodes, the message body) take `now`; the async shell
delivers in the background with retries, backoff and a bounded queue per webhook.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

import aiohttp

from ..config import NotifyConfig

log = logging.getLogger("edge_router.notify")

# event kind -> (event group a [[notify]] entry subscribes to, message text)
EVENT_KINDS: dict[str, tuple[str, str]] = {
    "region_unhealthy": ("health", "region {region} is UNHEALTHY: the prober's checks fail"),
    "region_healthy": ("health", "region {region} is healthy again"),
    "breaker_open": ("breaker", "circuit breaker of {region} OPENED: its requests fail"),
    "breaker_closed": ("breaker", "circuit breaker of {region} closed: requests succeed again"),
    "region_degraded": ("degraded", "region {region} is DEGRADED"),
    "region_recovered": ("degraded", "region {region} recovered from degradation"),
    "panic_started": ("panic", "PANIC: every region looks down to the prober; its verdicts are ignored"),
    "panic_ended": ("panic", "panic over: prober verdicts are used again"),
    "breaker_panic": ("panic", "BREAKER PANIC: every candidate's breaker is open; sending to {region} anyway"),
    "failover_started": ("failover", "failover from {region} started: requests go to {to_region} ({reason})"),
    "failover_ended": ("failover", "failover from {region} ended after {duration_s}s: {total} requests moved"),
    "strategy_changed": ("operator", "operator {who} switched the strategy from {previous} to {strategy}"),
    "region_drained": ("operator", "operator {who} is draining {region} over {over}"),
    "region_disabled": ("operator", "operator {who} DISABLED {region}"),
    "region_enabled": ("operator", "operator {who} enabled {region}"),
    "region_weight_changed": ("operator", "operator {who} set the weight of {region} to {weight}"),
    "rate_limit_lifted": ("operator", "operator {who} lifted rate limit {rule} for {key} for {lifted_for_seconds} s"),
    "config_reloaded": ("reload", "configuration reloaded (changed: {changed})"),
    "config_reload_failed": ("reload", "configuration reload FAILED ({first_problem}); the old one stays in force"),
}
OUTCOMES = ("sent", "retried", "failed", "dropped", "coalesced")
FAILOVER_QUIET = 10.0  # an episode ends after this long without a failover from its region
QUEUE_SIZE = 256
ATTEMPTS = 4  # first try + 3 retries
BACKOFF = 0.5  # doubles per retry, capped
BACKOFF_MAX = 8.0
SEND_TIMEOUT = 5.0
OVERFLOW_LOG_EVERY = 10.0  # seconds between "queue full" log lines of one webhook


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    region: str | None
    fields: Mapping[str, object]
    at: float  # monotonic: coalescing
    wall: float  # time.time(): the message's timestamp
    coalesced: int = 0  # events of the same key held back since the last message


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def message(ev: Event, host: str = "") -> dict:
    """The JSON body: `text` for a Slack-compatible webhook, then structured fields."""
    text = "edge-router: " + EVENT_KINDS[ev.kind][1].format_map(_Blank(ev.fields, region=ev.region or "-"))
    if ev.fields.get("detail"):
        text += f" ({ev.fields['detail']})"
    if ev.coalesced:
        text += f" [{ev.coalesced} more like it since the last message]"
    body: dict = {
        "text": text,
        "event": ev.kind,
        "group": EVENT_KINDS[ev.kind][0],
        "region": ev.region,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ev.wall)),
        "host": host,
    }
    if ev.coalesced:
        body["coalesced"] = ev.coalesced
    body.update({k: v for k, v in ev.fields.items() if k not in body})
    return body


class Coalescer:
    """At most one message per (region, kind) per `min_interval`. What comes in
    between is held; when the interval ends the latest held event goes out
    (with the count), so the last message always tells the current state."""

    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self.last_sent: dict[tuple[str | None, str], float] = {}
        self.held: dict[tuple[str | None, str], Event] = {}

    def offer(self, ev: Event, now: float) -> Event | None:
        """The event to send now, or None if it is held."""
        key = (ev.region, ev.kind)
        last = self.last_sent.get(key)
        if last is not None and now - last < self.min_interval:
            prev = self.held.get(key)
            self.held[key] = Event(ev.kind, ev.region, ev.fields, ev.at, ev.wall,
                                   (prev.coalesced if prev else 0) + 1)
            return None
        self.last_sent[key] = now
        prev = self.held.pop(key, None)  # not let out yet (no tick since): this one supersedes it
        if prev is not None:
            return Event(ev.kind, ev.region, ev.fields, ev.at, ev.wall, prev.coalesced)
        return ev

    def due(self, now: float) -> list[Event]:
        """Held events whose key's interval has ended, oldest first."""
        out = [ev for key, ev in self.held.items() if now - self.last_sent[key] >= self.min_interval]
        for ev in out:
            del self.held[(ev.region, ev.kind)]
            self.last_sent[(ev.region, ev.kind)] = now
        return sorted(out, key=lambda e: e.at)


@dataclass(slots=True)
class _Episode:
    started: float
    last: float
    counts: Counter = field(default_factory=Counter)  # (to_region, reason) -> requests


class FailoverEpisodes:
    """Failovers counted per request, told as episodes: one message when requests
    first move away from a region, one when none has moved for `quiet` seconds."""

    def __init__(self, quiet: float = FAILOVER_QUIET) -> None:
        self.quiet = quiet
        self.open: dict[str, _Episode] = {}

    def record(self, src: str, dst: str, reason: str, now: float) -> dict | None:
        """Fields of a failover_started event when this starts an episode."""
        ep = self.open.get(src)
        started = ep is None
        if ep is None:
            ep = self.open[src] = _Episode(now, now)
        ep.last = now
        ep.counts[(dst, reason)] += 1
        return {"from_region": src, "to_region": dst, "reason": reason} if started else None

    def due(self, now: float) -> list[tuple[str, dict]]:
        """(region, failover_ended fields) for episodes quiet long enough."""
        out = []
        for src, ep in list(self.open.items()):
            if now - ep.last >= self.quiet:
                del self.open[src]
                (dst, reason), _ = ep.counts.most_common(1)[0]
                out.append((src, {
                    "from_region": src, "to_region": dst, "reason": reason,
                    "total": sum(ep.counts.values()),
                    "duration_s": round(ep.last - ep.started, 1),
                    "counts": [{"to_region": d, "reason": r, "requests": n} for (d, r), n in ep.counts.most_common()],
                }))
        return out


class _Target:
    """One [[notify]] webhook: its filter, coalescer and queue."""

    def __init__(self, cfg: NotifyConfig, token: str | None, queue_size: int) -> None:
        self.cfg = cfg
        self.token = token
        self.groups = frozenset(cfg.events)
        self.coalescer = Coalescer(cfg.min_interval)
        self.queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self.task: asyncio.Task | None = None
        self.dropped = 0  # since the last overflow log line
        self.dropped_logged_at: float | None = None


class Notifier:
    """Every webhook of the config, fed by emit(); delivery runs in background tasks."""

    def __init__(
        self,
        targets: tuple[NotifyConfig, ...],
        *,
        count: Callable[[str], None] = lambda outcome: None,
        now: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        env: Mapping[str, str] = os.environ,
        queue_size: int = QUEUE_SIZE,
        backoff: float = BACKOFF,
    ) -> None:
        self.targets = [_Target(t, env.get(t.token_env) if t.token_env else None, queue_size) for t in targets]
        self.count = count
        self.now = now
        self.wall = wall
        self.backoff = backoff
        self.episodes = FailoverEpisodes()
        self.host = socket.gethostname()
        self._session: aiohttp.ClientSession | None = None
        self._ticker: asyncio.Task | None = None
        for t in self.targets:
            if t.cfg.token_env and not t.token:
                log.warning("notify %s: $%s is not set; sending without a token", t.cfg.url, t.cfg.token_env)

    # -- what the rest of the router calls ------------------------------------------
    def emit(self, kind: str, region: str | None = None, **fields: object) -> None:
        """Queue an event for every webhook that wants it. Never blocks."""
        group = EVENT_KINDS[kind][0]  # KeyError: an event kind nobody declared
        if not self.targets:
            return
        ev = Event(kind, region, fields, self.now(), self.wall())
        for t in self.targets:
            if group not in t.groups:
                continue
            out = t.coalescer.offer(ev, ev.at)
            if out is None:
                self.count("coalesced")
            else:
                self._enqueue(t, out)

    def failover(self, src: str, dst: str, reason: str) -> None:
        """A request moved from src to dst (counted where the failover metric is)."""
        if not self.targets:
            return
        started = self.episodes.record(src, dst, reason, self.now())
        if started is not None:
            self.emit("failover_started", src, **started)

    def _enqueue(self, t: _Target, ev: Event) -> None:
        try:
            t.queue.put_nowait(ev)
        except asyncio.QueueFull:
            self.count("dropped")
            t.dropped += 1
            now = self.now()
            # Logged, but not a line per message while a webhook stays down.
            if t.dropped_logged_at is None or now - t.dropped_logged_at >= OVERFLOW_LOG_EVERY:
                log.warning("notify %s: queue full (%d messages): dropped %d, the last %s %s",
                            t.cfg.url, t.queue.maxsize, t.dropped, ev.kind, ev.region or "")
                t.dropped, t.dropped_logged_at = 0, now

    def tick(self) -> None:
        """Once a second: end quiet failover episodes, let held events out."""
        now = self.now()
        for src, fields in self.episodes.due(now):
            self.emit("failover_ended", src, **fields)
        for t in self.targets:
            for ev in t.coalescer.due(now):
                self._enqueue(t, ev)

    # -- delivery ------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.targets:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT))
        for t in self.targets:
            t.task = asyncio.create_task(self._sender(t), name=f"notify {t.cfg.url}")
        self._ticker = asyncio.create_task(self._tick_loop(), name="notify tick")

    async def stop(self, flush: float = 2.0) -> None:
        """Give queued messages a moment to go out, then stop."""
        if self._session is None:
            return
        self.tick()
        deadline = asyncio.get_running_loop().time() + flush
        while any(not t.queue.empty() for t in self.targets) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        tasks = [t.task for t in self.targets if t.task] + ([self._ticker] if self._ticker else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._session.close()
        self._session = None

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the ticker must survive a bad tick
                log.exception("notify tick failed")

    async def _sender(self, t: _Target) -> None:
        headers = {"Content-Type": "application/json"}
        if t.token:
            headers["Authorization"] = f"Bearer {t.token}"
        while True:
            ev = await t.queue.get()
            await self._deliver(t, message(ev, self.host), headers)

    async def _deliver(self, t: _Target, body: dict, headers: dict) -> None:
        assert self._session is not None
        for attempt in range(ATTEMPTS):
            if attempt:
                self.count("retried")
                delay = min(BACKOFF_MAX, self.backoff * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random()))
            try:
                async with self._session.post(t.cfg.url, json=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status < 300:
                        self.count("sent")
                        return
                    problem = f"HTTP {resp.status}"
                    # A refusal that retrying cannot fix (bad token, bad URL): stop now.
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        break
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
        self.count("failed")
        log.warning("notify %s: gave up on %s (%s): %s", t.cfg.url, body["event"], body.get("region"), problem)
