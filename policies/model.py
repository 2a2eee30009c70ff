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
