"""Decisions shared by every replica through Redis (redis-py's asyncio client).

Layout, under the configured key prefix:
  <prefix>decisions   the versioned document (JSON, router/store/model.py)
  <prefix>decisions   the pub/sub channel on which every commit is published

A commit is an optimistic transaction (WATCH the key, read, apply, MULTI:
SET + PUBLISH, EXEC; retried when another replica committed in between), so
Redis orders all mutations, each commit raises the version by one, and a
guard rail (409) is checked against the latest document. Replicas take a
document only when it is newer (router/store/model.Decisions.newer_than):
everyone converges on the same one. Change notification is the channel; a
version check every FALLBACK_CHECK seconds only catches what a subscriber
could have missed while it reconnected.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from ..config import StateConfig
from .memory import Change
from .model import Decisions, committed, decode, encode

log = logging.getLogger("edge_router.store")

FALLBACK_CHECK = 2.0  # seconds between version checks (the missed-message net)
RECONNECT_DELAY = (0.1, 0.2, 0.5)  # then 0.5 s between attempts while Redis is away
TIMEOUT = 1.0  # per command and per connect: a hung Redis is a down Redis, quickly


class StoreUnavailable(Exception):
    """The store cannot be reached; the message names the cause."""


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


class RedisDecisionStore:
    name = "redis"
    shared = True

    def __init__(self, cfg: StateConfig, url: str, strategy: str, replica: str,
                 wall: Callable[[], float] = time.time) -> None:
        self.key = cfg.key_prefix + "decisions"
        self.channel = cfg.key_prefix + "decisions"
        self.replica = replica
        self._wall = wall
        # What this replica knows; until Redis answers, the config's strategy.
        self._d = Decisions(strategy)
        # Set by close(): the watcher stops on it even if redis-py swallowed the
        # task's cancellation (it can, inside get_message's own timeout).
        self._closing = False
        tls = {}
        if url.startswith("rediss://"):
            tls = {"ssl_ca_certs": cfg.tls_ca, "ssl_certfile": cfg.tls_cert, "ssl_keyfile": cfg.tls_key}
            tls = {k: v for k, v in tls.items() if v}
        # No retries inside the client: a failure surfaces at once, the watcher
        # reconnects and catches up, and a mutation answers 503 quickly.
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 0), health_check_interval=10, client_name="edge-router:" + re.sub(r"[^A-Za-z0-9._:-]", "_", replica), **tls,
        )

    def current(self) -> Decisions:
        return self._d

    def _take(self, d: Decisions) -> bool:
        if d.newer_than(self._d):
            self._d = d
            return True
        return False

    async def load(self) -> Decisions:
        """The stored document. A Redis that has none (first start, or it lost its
        data) or an older one of the same lineage (a failover lost the last
        writes) gets this replica's last-known decisions back, so Redis losing
        data forgets nothing while one replica remembers."""
        try:
            raw = await self.client.get(self.key)
            if raw is None:
                await self.client.set(self.key, encode(self._d), nx=True)
                raw = await self.client.get(self.key)
            stored = None
            if raw is not None:
                try:
                    stored = decode(raw)
                except ValueError as exc:
                    log.error("redis key %s holds no decisions document (%s); keeping what this replica knows",
                              self.key, exc)
            if stored is not None and stored.epoch == self._d.epoch and stored.version < self._d.version:
                await self._put_back(raw)
            elif stored is not None:
                self._take(stored)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {describe(exc)}") from None
        return self._d

    async def _put_back(self, seen: bytes) -> None:
        """Write our newer document over the older one we saw (unless someone
        changed it meanwhile), and tell everyone."""
        log.warning("redis holds decisions version older than ours (%d): putting ours back", self._d.version)
        data = encode(self._d)
        async with self.client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.key)
                if await pipe.get(self.key) != seen:
                    return  # changed meanwhile: the next check reads it
                pipe.multi()
                pipe.set(self.key, data)
                pipe.publish(self.channel, data)
                await pipe.execute()
            except WatchError:
                pass

    async def commit(self, change: Change) -> Decisions:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(self.key)
                        raw = await pipe.get(self.key)
                        base = self._d if raw is None else decode(raw)
                        new = committed(change(base), self.replica, self._wall())  # may raise Conflict
                        data = encode(new)
                        pipe.multi()
                        pipe.set(self.key, data)
                        pipe.publish(self.channel, data)
                        await pipe.execute()
                        break
                    except WatchError:
                        continue  # another replica committed first: apply ours on top of theirs
        except (RedisError, OSError) as exc:
            await self._drop_connections()
            raise StoreUnavailable(f"redis: {describe(exc)}") from None
        self._take(new)
        return self._d

    async def watch(self, take: Callable[[Decisions], None], status: Callable[[bool, str], None]) -> None:
        """Forever: subscribe, catch up, apply what is published; on any failure
        say so, keep the last decisions (fail static) and reconnect."""
        attempt = 0
        while not self._closing:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                # Subscribed first, then read: nothing committed in between is missed.
                before = self._d
                await self.load()
                status(True, "")
                attempt = 0
                if self._d is not before:
                    take(self._d)
                last_check = time.monotonic()
                while not self._closing:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=FALLBACK_CHECK / 2)
                    if msg is not None and msg.get("type") == "message":
                        try:
                            if self._take(decode(msg["data"])):
                                take(self._d)
                        except ValueError as exc:
                            log.error("ignoring a bad message on %s: %s", self.channel, exc)
                    if time.monotonic() - last_check >= FALLBACK_CHECK:
                        last_check = time.monotonic()
                        before = self._d
                        await self.load()
                        if self._d is not before:
                            log.warning("decisions version %d came by the version check, not pub/sub",
                                        self._d.version)
                            take(self._d)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, StoreUnavailable) as exc:
                if self._closing:
                    return
                cause = str(exc) if isinstance(exc, StoreUnavailable) else f"redis: {describe(exc)}"
                status(False, cause)
                await self._drop_connections()
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is dropped anyway
                    pass
            await asyncio.sleep(RECONNECT_DELAY[min(attempt, len(RECONNECT_DELAY) - 1)])
            attempt += 1

    async def _drop_connections(self) -> None:
        """After a failure every pooled connection is suspect (a restarted Redis
        closed them all): the next command opens a fresh one instead of finding
        the dead ones one failure at a time."""
        try:
            await self.client.connection_pool.disconnect()
        except Exception:  # noqa: BLE001 - closing dead sockets may fail; they are dropped anyway
            pass

    async def close(self) -> None:
        self._closing = True
        await self._drop_connections()
        await self.client.aclose()
