"""The decisions one replica routes by: the store's shared document plus this
replica's local overrides (an emergency disable sent while the store is down).

The region store reads `current()`; the admin API changes decisions through
`mutate()`; the backend's watcher reports documents committed elsewhere and
whether the store can be reached.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Callable

from .file import FileDecisionStore
from .memory import MemoryDecisionStore
from .model import Conflict, Decisions, Mutation, apply, guard
from .redis import RedisDecisionStore, StoreUnavailable

log = logging.getLogger("edge_router.store")

Backend = MemoryDecisionStore | FileDecisionStore | RedisDecisionStore

STARTUP_WAIT = 3.0  # a replica waits this long for the store before it starts serving unready

# What /admin/state reports as shared by every replica vs this replica's own view.
SHARED_FIELDS = ("strategy", "regions[].disabled", "regions[].draining", "regions[].weight",
                 "regions[].effective_weight")
LOCAL_FIELDS = ("regions[].healthy", "regions[].breaker", "regions[].latency_ms", "regions[].error_rate",
                "regions[].in_flight", "regions[].connections", "decisions.local_overrides", "panic")


class DecisionBook:
    def __init__(self, backend: Backend, regions: Callable[[], tuple[str, ...]], replica: str,
                 wall: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.wall = wall
        self.regions = regions  # this replica's configured region ids (they change on reload)
        self.replica = replica
        self.local_disabled: frozenset[str] = frozenset()
        self.up = True
        self.cause = ""
        self.loaded = not backend.shared  # a shared store must be read before we are ready
        self.on_change: list[Callable[[], None]] = []  # republish the region store
        self.on_status: list[Callable[[bool], None]] = []  # the state_store_up gauge
        self._watcher: asyncio.Task | None = None
        self.applied_at: float | None = None  # when this replica took the current version (wall clock)
        self._applied: Decisions | None = None  # the document applied_at is for

    def current(self) -> Decisions:
        d = self.backend.current()
        if self.local_disabled - d.disabled:
            return replace(d, disabled=d.disabled | self.local_disabled)
        return d

    @property
    def shared(self) -> Decisions:
        return self.backend.current()

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Read the stored decisions (bounded wait), then follow the store."""
        if self.backend.shared:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STARTUP_WAIT
            while True:
                try:
                    await self.backend.load()
                    self._status(True, "")
                    break
                except StoreUnavailable as exc:
                    self._status(False, str(exc))
                    if loop.time() >= deadline:
                        log.error("decision store unreachable at startup (%s): not ready until it answers",
                                  exc)
                        break
                    await asyncio.sleep(0.2)
        self._changed()
        self._watcher = asyncio.create_task(self.backend.watch(self._taken, self._status), name="decisions")

    async def close(self) -> None:
        """Bounded: shutdown must never wait on the store."""
        if self._watcher is not None:
            self._watcher.cancel()
            done, _ = await asyncio.wait({self._watcher}, timeout=1.0)
            if not done:
                # redis-py can swallow a cancellation (inside get_message's own
                # timeout): closing the backend stops the watcher's loop and ends
                # its reads.
                await self.backend.close()
                self._watcher.cancel()
                done, _ = await asyncio.wait({self._watcher}, timeout=3.0)
                if not done:
                    log.warning("decision store watcher did not stop within 4 s")
                return
        await self.backend.close()

    def _taken(self, d: Decisions) -> None:
        log.info("decisions version %d from %s: strategy %s, disabled %s, draining %s", d.version, d.by or "?",
                 d.strategy, sorted(d.disabled) or "-", sorted(d.drains) or "-")
        self._changed()

    def _status(self, up: bool, cause: str) -> None:
        if up and not self.loaded:
            self.loaded = True
        if up != self.up or cause != self.cause:
            if up and not self.up:
                log.warning("decision store %s is reachable again", self.backend.name)
            elif not up:
                log.error("decision store %s unreachable: %s; serving the last known decisions (version %d)",
                          self.backend.name, cause, self.shared.version)
            self.up, self.cause = up, cause
            for cb in self.on_status:
                cb(up)

    def _changed(self) -> None:
        if self._applied is not self.shared:
            self._applied = self.shared
            self.applied_at = self.wall()
        for cb in self.on_change:
            cb()

    # -- mutations -------------------------------------------------------------------
    async def mutate(self, m: Mutation, *, force: bool = False, local: bool = False) -> Decisions:
        """Commit a mutation. Raises Conflict (409) and StoreUnavailable (503)."""
        regions = self.regions()
        if m.action == "drain" and m.started is None:
            m = replace(m, started=self.wall())  # one start time, shipped to every replica
        if local:
            return self._local(m, regions, force)
        cleared = m.action == "enable" and m.region in self.local_disabled
        if cleared:  # an explicit enable clears this replica's override too
            self.local_disabled = self.local_disabled - {m.region}

        def change(d: Decisions) -> Decisions:
            new = apply(d, m)
            if not force and m.action in ("disable", "drain"):
                guard(new, regions, self.local_disabled)
            return new

        try:
            await self.backend.commit(change)
        except StoreUnavailable as exc:
            self._status(False, str(exc))
            if cleared:  # the local part is done; the shared one can wait for the store
                self._changed()
                return self.current()
            raise
        except OSError as exc:  # the file backend could not write
            raise StoreUnavailable(f"state file {getattr(self.backend, 'path', '?')}: {exc.strerror or exc}") from None
        if self.backend.shared:
            self._status(True, "")
        self._changed()
        return self.current()

    def _local(self, m: Mutation, regions: tuple[str, ...], force: bool) -> Decisions:
        if m.action == "disable":
            after = self.local_disabled | {m.region}
            if not force:
                guard(self.shared, regions, after)
            self.local_disabled = after
        elif m.action == "enable":
            self.local_disabled = self.local_disabled - {m.region}
        else:
            raise ValueError("only disable and enable take scope 'local'")
        self._changed()
        return self.current()

    # -- reads -----------------------------------------------------------------------
    def describe(self) -> dict:
        """The `decisions` section of /admin/state and the store part of /readyz."""
        d = self.shared
        return {
            "backend": self.backend.name,
            "store_up": self.up,
            "cause": self.cause or None,
            "loaded": self.loaded,
            "version": d.version,
            "epoch": d.epoch or None,
            "changed_by": d.by or None,
            "changed_at": d.at or None,
            "applied_at": self.applied_at,
            "replica": self.replica,
            "local_overrides": {"disabled": sorted(self.local_disabled)},
            "shared_fields": list(SHARED_FIELDS) if self.backend.shared else [],
            "local_fields": list(LOCAL_FIELDS),
        }


__all__ = ["Conflict", "DecisionBook", "StoreUnavailable"]
