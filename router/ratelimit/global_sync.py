"""Global mode: every replica's buckets kept in step through the Redis of [state].

The hot path never waits on Redis. Each replica decides locally, on its own
buckets, and counts what it admitted per key. Every `sync_interval` one Lua
script call pushes those counts: Redis adds them to the key's shared tat (the
GCRA state, on Redis's clock, whatever the replicas' clocks say) and answers
how far ahead of now the shared tat is; the replica moves its own tat there.
Over-admission is added unconditionally, so it is paid back by everyone
waiting longer: the debt is never forgotten.

Error bound. With N replicas, sync interval d (plus one Redis round trip),
over any window W the requests allowed for one key are at most

    rate*W + burst + (N-1) * (burst + rate*d)

The last term is what the other replicas can admit before their counts reach
Redis: at most one interval's refill each, plus a whole burst each for a key
they had not seen yet (their buckets start full). Keys that are busy
everywhere see only (N-1)*rate*d.

Redis unreachable: each rule falls back to this replica's share, rate/N and
burst/N (N = replicas seen alive in Redis, or [rate_limit] replicas before
the first contact), logged once and shown in /admin/state; counts are not
queued meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..config import RateLimitConfig, StateConfig
from ..store import URL_ENV
from .rules import HEADER, Rule, key_hash

log = logging.getLogger("edge_router.ratelimit")

CHUNK = 5000  # keys per script call: Redis is single-threaded, keep each call short
ALIVE_FOR = 5.0  # a replica not heard from for this long no longer counts in N

# KEYS[1]: the replicas' sorted set; KEYS[2..]: one bucket each.
# ARGV: replica id, ALIVE_FOR in us, then (interval in us, count) per bucket.
# Answers: the number of live replicas, then each bucket's tat - now in us.
SYNC_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local out = {redis.call('ZCARD', KEYS[1])}
for i = 2, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local n = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tat = tat + n * interval
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
  out[i] = math.floor(tat - now)
end
return out
"""


def redis_client(state: StateConfig, url: str, timeout: float) -> aioredis.Redis:
    """redis-py's asyncio client for [state], failing fast (no retries: the next sync is the retry)."""
    kw: dict = {}
    if url.startswith("rediss://"):
        kw = {"ssl_ca_certs": state.tls_ca, "ssl_certfile": state.tls_cert, "ssl_keyfile": state.tls_key}
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0, **kw,
    )


class GlobalSync:
    def __init__(self, limiter, config: RateLimitConfig, state: StateConfig) -> None:
        self.limiter = limiter
        self.interval = config.sync_interval
        self.timeout = max(0.5, min(2.0, 2 * config.sync_interval))
        self.state = state
        # the decision store's rule: the URL (and its password) may come from the environment
        self.url = os.environ.get(URL_ENV) or state.url
        self.prefix = state.key_prefix + "ratelimit:"
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.replicas = config.replicas  # N: until Redis tells us
        self.up: bool | None = None  # None: no answer yet
        self.error = ""
        self.since = time.time()
        self.syncs = 0
        self.failures = 0
        self.rules: tuple[Rule, ...] = ()
        self.client: aioredis.Redis | None = None
        self.script = None
        self._task: asyncio.Task | None = None

    def adopt(self, rules: tuple[Rule, ...]) -> None:
        """The limiter's (new) rules: count for them, or share them out while Redis is away."""
        self.rules = rules
        for rule in rules:
            self._mode(rule)

    def _mode(self, rule: Rule) -> None:
        if self.up is False:
            rule.pending = None
            rule.set_share(self.replicas)
        else:
            if rule.pending is None:
                rule.pending = {}
            rule.set_share(1)

    async def start(self) -> None:
        self.client = redis_client(self.state, self.url, self.timeout)
        self.script = self.client.register_script(SYNC_LUA)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ratelimit-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.client is not None:
            try:  # leave the fleet at once, so that the others' share (N) is right
                if self.up:
                    await asyncio.wait_for(self.client.zrem(self.prefix + "replicas", self.replica), self.timeout)
                await self.client.aclose()
            except (RedisError, OSError, asyncio.TimeoutError):
                pass
            self.client = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync_once()
            except Exception:  # the link must survive any one bad round
                log.exception("rate limit: sync failed")

    def redis_key(self, rule: Rule, key: str) -> str:
        return f"{self.prefix}{rule.name}:{key_hash(key) if rule.kind == HEADER else key}"

    async def sync_once(self) -> None:
        """Push what was admitted since the last round; pull the shared state back."""
        batch: list[tuple[Rule, str, int]] = []
        for rule in self.rules:
            pending = rule.pending
            if pending:
                rule.pending = {}  # the hot path counts into a fresh dict from here on
                batch.extend((rule, key, n) for key, n in pending.items())
        try:
            for start in range(0, max(1, len(batch)), CHUNK):
                part = batch[start:start + CHUNK]
                args: list = [self.replica, int(ALIVE_FOR * 1e6)]
                for rule, _, n in part:
                    args += (int(rule.base.interval * 1e6), n)
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow stop()'s cancel.
                async with asyncio.timeout(self.timeout):
                    answer = await self.script(
                        keys=[self.prefix + "replicas", *(self.redis_key(r, k) for r, k, _ in part)], args=args)
                self._apply(part, answer)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._down(exc)
            return
        self.syncs += 1
        if self.up is not True:
            self._up()

    def _apply(self, part: list[tuple[Rule, str, int]], answer: list) -> None:
        self.replicas = max(1, int(answer[0]))
        now = self.limiter.now()
        for (rule, key, _), ahead in zip(part, answer[1:]):
            pending = rule.pending
            # The shared tat, plus what this replica admitted while the call was out.
            tat = now + int(ahead) / 1e6 + (pending.get(key, 0) if pending else 0) * rule.base.interval
            mine = rule.table.tats.get(key)
            if mine is None or mine < tat:
                rule.table.put(key, tat, now)

    def _down(self, exc: BaseException) -> None:
        self.failures += 1
        self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.up is not False:
            self.up = False
            self.since = time.time()
            log.warning(
                "rate limit: Redis %s unreachable (%s): falling back to local limits, this replica"
                " allows 1/%d of each rule's rate", self.where(), self.error, self.replicas,
            )
            for rule in self.rules:
                self._mode(rule)

    def _up(self) -> None:
        was = self.up
        self.up = True
        self.error = ""
        self.since = time.time()
        for rule in self.rules:
            self._mode(rule)
        if was is False:
            log.warning("rate limit: Redis %s is back: global limits across %d replicas", self.where(), self.replicas)
        else:
            log.info("rate limit: global limits through Redis %s, %d replicas", self.where(), self.replicas)

    def where(self) -> str:
        """host:port/db of the URL, never its password."""
        u = urlsplit(self.url)
        return f"{u.hostname}:{u.port or 6379}{u.path or ''}"

    def state_json(self) -> dict:
        return {
            "redis": self.where(),
            "up": self.up,
            "mode": "local fallback (rate / replicas)" if self.up is False else "global",
            "error": self.error or None,
            "since": round(self.since, 3),
            "replicas": self.replicas,
            "sync_interval_ms": round(self.interval * 1000),
            "syncs": self.syncs,
            "failures": self.failures,
        }
