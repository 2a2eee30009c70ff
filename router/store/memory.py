"""Decisions held by this process only: today's behaviour, and the base of the file backend."""
from __future__ import annotations

import time
from typing import Callable

from .model import Decisions, Mutation, apply, committed

Change = Callable[[Decisions], Decisions]


class MemoryDecisionStore:
    """One process's decisions. Commits are synchronous; the async face is
    the backend interface that the Redis store also provides."""

    name = "memory"
    shared = False  # other processes do not see these decisions

    def __init__(self, strategy: str, replica: str = "", wall: Callable[[], float] = time.time) -> None:
        self._d = Decisions(strategy)
        self.replica = replica
        self._wall = wall

    def current(self) -> Decisions:
        return self._d

    def commit_now(self, change: Change) -> Decisions:
        """Apply `change` (which may raise Conflict) and keep the next version."""
        self._d = committed(change(self._d), self.replica, self._wall())
        return self._d

    # -- the backend interface (router/store/book.py) --------------------------------
    async def load(self) -> Decisions:
        return self._d

    async def commit(self, change: Change) -> Decisions:
        return self.commit_now(change)

    async def watch(self, take: Callable[[Decisions], None], status: Callable[[bool, str], None]) -> None:
        """Nobody else changes these decisions: nothing to watch."""
        status(True, "")

    async def close(self) -> None:
        pass

    # -- synchronous mutators, for a RegionStore driven directly (tests, benchmarks) ---
    def set_strategy(self, name: str) -> Decisions:
        return self.commit_now(lambda d: apply(d, Mutation("strategy", strategy=name)))

    def drain(self, region: str, started: float, over: float) -> Decisions:
        return self.commit_now(lambda d: apply(d, Mutation("drain", region, started=started, over=over)))

    def disable(self, region: str) -> Decisions:
        return self.commit_now(lambda d: apply(d, Mutation("disable", region)))

    def enable(self, region: str) -> Decisions:
        return self.commit_now(lambda d: apply(d, Mutation("enable", region)))
