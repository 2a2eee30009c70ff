"""The policy interface: prepare once per snapshot, rank per request."""
from __future__ import annotations

from typing import Protocol

from .model import RegionSnapshot, RequestFacts


class Ranker(Protocol):
    """A policy prepared for one snapshot. `rank` must be cheap: a lookup."""

    def rank(self, facts: RequestFacts) -> tuple[str, ...]: ...


class Policy(Protocol):
    """A routing strategy. Pure: no I/O, no clock (time comes in the snapshot).

    `prepare` is called each time a new snapshot is published, with the
    previously prepared ranker (or None) so that stateful policies (round-robin
    position, least-latency leader) carry their state across snapshots.
    The returned tuple is the candidate order, preferred first, no duplicates;
    the data plane filters it (disabled, unhealthy, breaker open, residency,
    drains) and walks it, so the tail is the failover path.
    """

    name: str

    def prepare(self, snapshot: RegionSnapshot, previous: Ranker | None) -> Ranker: ...
