"""What a policy sees: request facts and a frozen snapshot of the regions.

Standard library only. The data plane builds these; policies only read them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

# Breaker states, as SPEC names them.
CLOSED = "closed"
HALF_OPEN = "half-open"
OPEN = "open"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What is known about one request when it is ranked."""

    country: str | None = None  # ISO 3166-1 alpha-2, upper case; None = unknown
    client_ip: str | None = None
    method: str = "GET"
    path: str = "/"
    seq: int = 0  # the request's sequence number: spreading policies pick by it


@dataclass(frozen=True, slots=True)
class RegionView:
    """One region as the snapshot froze it."""

    id: str
    failover: tuple[str, ...] = ()
    weight: float = 1.0
    effective_weight: float = 1.0  # weight after drains (0 when disabled)
    healthy: bool | None = None  # prober verdict; None before the first probe
    breaker: str = CLOSED
    latency_ms: float | None = None  # smoothed (EWMA); None = not measured yet
    error_rate: float = 0.0  # recent share of failed requests, 0..1
    disabled: bool = False
    draining: bool = False
    in_flight: int = 0
    role: str = "standby"
    degraded: bool = False  # live error rate or p95 latency over the [degrade] thresholds


def usable(r: RegionView) -> bool:
    """Could take traffic now, as far as the snapshot knows. The one definition
    every policy uses (the data plane's own check is skip_reason)."""
    return r.healthy is not False and r.breaker != OPEN and not r.disabled and r.effective_weight > 0


def tier(r: RegionView) -> int:
    """0 usable, 1 usable but degraded, 2 not usable: every strategy ranks a
    lower tier first, so a degraded region serves only when it is all that is left."""
    if not usable(r):
        return 2
    return 1 if r.degraded else 0


def demote_degraded(order: tuple[str, ...], snapshot: "RegionSnapshot") -> tuple[str, ...]:
    """`order` with its degraded regions moved to the end, both parts in order."""
    degraded = snapshot.degraded
    if not degraded or degraded.isdisjoint(order):
        return order
    return tuple(r for r in order if r not in degraded) + tuple(r for r in order if r in degraded)


def _freeze(m: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True, slots=True)
class RegionSnapshot:
    """Versioned, immutable view of every region, in config order."""

    regions: tuple[RegionView, ...]
    default_region: str
    country_home: Mapping[str, str] = field(default_factory=dict)  # "GB" -> "eu-west-1"
    version: int = 0
    now: float = 0.0  # monotonic time at publication (for policies with dwell times)

    def __post_init__(self) -> None:
        object.__setattr__(self, "country_home", _freeze(self.country_home))

    def get(self, region_id: str) -> RegionView | None:
        for r in self.regions:
            if r.id == region_id:
                return r
        return None

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.regions)

    @property
    def degraded(self) -> frozenset[str]:
        return frozenset(r.id for r in self.regions if r.degraded)
