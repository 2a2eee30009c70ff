"""Operator decisions: strategy, drains, disables, behind one small interface.

The in-memory store is what one process needs; a shared implementation
(Redis, a file) only has to provide the same five methods.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Drain:
    started: float  # wall-clock time (time.time()): meaningful across processes
    over: float  # seconds until the region's share reaches zero


@dataclass(frozen=True, slots=True)
class Decisions:
    strategy: str
    disabled: frozenset[str] = frozenset()
    drains: dict[str, Drain] = field(default_factory=dict)


class DecisionStore(Protocol):
    def current(self) -> Decisions: ...
    def set_strategy(self, name: str) -> Decisions: ...
    def drain(self, region: str, started: float, over: float) -> Decisions: ...
    def disable(self, region: str) -> Decisions: ...
    def enable(self, region: str) -> Decisions: ...


class MemoryDecisionStore:
    """Decisions held by this process only."""

    def __init__(self, strategy: str) -> None:
        self._d = Decisions(strategy)

    def current(self) -> Decisions:
        return self._d

    def set_strategy(self, name: str) -> Decisions:
        self._d = Decisions(name, self._d.disabled, self._d.drains)
        return self._d

    def drain(self, region: str, started: float, over: float) -> Decisions:
        drains = dict(self._d.drains)
        drains[region] = Drain(started, over)
        self._d = Decisions(self._d.strategy, self._d.disabled, drains)
        return self._d

    def disable(self, region: str) -> Decisions:
        self._d = Decisions(self._d.strategy, self._d.disabled | {region}, self._d.drains)
        return self._d

    def enable(self, region: str) -> Decisions:
        """Back into rotation: clears both a disable and a drain."""
        drains = {k: v for k, v in self._d.drains.items() if k != region}
        self._d = Decisions(self._d.strategy, self._d.disabled - {region}, drains)
        return self._d


def drain_factor(drain: Drain | None, now_wall: float) -> float:
    """Share of a region's weight left: 1 -> 0 linearly over the drain."""
    if drain is None:
        return 1.0
    if drain.over <= 0:
        return 0.0
    left = 1.0 - (now_wall - drain.started) / drain.over
    return min(1.0, max(0.0, left))
