"""The policy interface: prepare once per snapshot, rank per request.

A policy is a class in `policies.REGISTRY`. It declares:

- `name`: the strategy name (config, CLI, admin API);
- `Settings`: a frozen dataclass of its tuning, or None. The config reads it from
  the table named after the strategy (`least-latency` -> `[least_latency]`);
  durations are fields with `metadata={"unit": "duration"}` (seconds), a lower
  bound is `metadata={"min": x}`;
- `shares_by_weight`: True when `prepare` spreads traffic by `effective_weight`,
  which already carries drains and slow start. The data plane then admits every
  pick; for the other policies it thins the region's picks by that factor itself.

Adding a strategy: one module here with a Policy subclass, one line in REGISTRY.
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol

from .model import RegionSnapshot, RequestFacts


class Ranker(Protocol):
    """A policy prepared for one snapshot. `rank` must be cheap (a lookup) and
    pure: the same facts give the same order; nothing moves on when it is called."""

    def rank(self, facts: RequestFacts) -> tuple[str, ...]: ...

    def explain(self, facts: RequestFacts) -> dict[str, Any]: ...


class Prepared:
    """Base for rankers: nothing to add to an explanation by default.

    `by_country`: True when `rank` depends on `facts.country` alone; the data
    plane then asks once per country and snapshot and keeps the order."""

    __slots__ = ()
    by_country: ClassVar[bool] = False

    def explain(self, facts: RequestFacts) -> dict[str, Any]:
        return {}


class Policy:
    """A routing strategy. Pure: no I/O, no clock (time comes in the snapshot).

    `prepare` is called each time a new snapshot is published, with the
    previously prepared ranker (or None) so that stateful policies (the
    least-latency leader) carry their state across snapshots. The returned
    order is preferred first, no duplicates; the data plane filters it
    (disabled, unhealthy, breaker open, residency, drains) and walks it, so the
    tail is the failover path.
    """

    name: ClassVar[str]
    Settings: ClassVar[type | None] = None
    shares_by_weight: ClassVar[bool] = False

    def __init__(self, settings: Any = None) -> None:
        if settings is None and self.Settings is not None:
            settings = self.Settings()
        self.settings = settings

    def prepare(self, snapshot: RegionSnapshot, previous: Ranker | None) -> Ranker:
        raise NotImplementedError


def settings_table(name: str) -> str:
    """The config table holding a strategy's settings."""
    return name.replace("-", "_")
