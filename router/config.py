"""One config object: TOML in, validated once, frozen dataclasses out.

Durations are float seconds. What changes at runtime (strategy, drains,
disables) lives in the region store, not here.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ListenConfig:
    address: Address = Address("0.0.0.0", 8080)
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True, slots=True)
class AdminConfig:
    address: Address = Address("127.0.0.1", 9901)
    token_env: str = "EDGE_ROUTER_ADMIN_TOKEN"


@dataclass(frozen=True, slots=True)
class GeoConfig:
    database: str | None = "/usr/share/GeoIP/GeoLite2-Country.mmdb"
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # region id -> ISO 3166-1 alpha-2 codes (upper case), as written in [geo.countries]
    countries: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    interval: float = 30.0
    timeout: float = 5.0
    fall: int = 3
    rise: int = 2
    latency_interval: float = 60.0
    # HAProxy fastinter / downinter: cadence while a region changes state / is down
    fast_interval: float = 2.0
    down_interval: float = 5.0
    jitter: float = 0.1  # +-10 % of each interval
    path_check_body: bool = False


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    consecutive_failures: int = 5
    open_for: float = 30.0
    max_open_for: float = 300.0  # cap for the doubling
    failure_ratio: float = 0.5  # opens when this share of the window failed ...
    window: float = 10.0  # ... over this rolling window (seconds) ...
    min_requests: int = 20  # ... with at least this many requests in it
    half_open_requests: int = 3  # trial requests let through while half-open
    max_in_flight: int = 1000  # per region; overflow goes to the next region


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """[limits]: the data plane's timeouts and sizes."""

    connect_timeout: float = 2.0
    read_timeout: float = 30.0  # upstream silence while a response is awaited/read
    idle_timeout: float = 60.0  # client keep-alive idle
    header_timeout: float = 10.0  # client must send a whole head within this
    max_header_bytes: int = 16384  # larger head -> 431
    max_body_bytes: int = 1 << 40  # larger declared/streamed body -> 413
    retry_body_bytes: int = 65536  # request bodies up to this are held for retries
    pool_size: int = 128  # max upstream connections per region
    pool_wait: float = 1.0  # how long a request waits for a free pooled connection
    pool_idle: float = 30.0  # idle upstream connection is closed after this
    retry_budget_ratio: float = 0.2  # Envoy: retries <= 20 % of active requests ...
    retry_budget_min: int = 3  # ... but at least 3
    max_attempts: int = 3  # regions tried for one request (sent attempts)
    drain_timeout: float = 20.0  # SIGTERM: in-flight requests finish within this


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    access_log: bool = False  # JSON line per request on stdout


@dataclass(frozen=True, slots=True)
class RegionConfig:
    id: str
    api: str
    health: str
    provider: str = "aws"
    role: str = "standby"  # primary | standby
    failover: tuple[str, ...] = ()
    weight: float = 1.0
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True, slots=True)
class ResidencyRule:
    countries: frozenset[str]
    regions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Config:
    default_region: str
    strategy: str
    regions: tuple[RegionConfig, ...]
    listen: ListenConfig = ListenConfig()
    admin: AdminConfig = AdminConfig()
    geo: GeoConfig = GeoConfig()
    probe: ProbeConfig = ProbeConfig()
    breaker: BreakerConfig = BreakerConfig()
    limits: LimitsConfig = LimitsConfig()
    log: LogConfig = LogConfig()
    residency: tuple[ResidencyRule, ...] = ()
    workers: int = 1

    @property
    def country_home(self) -> Mapping[str, str]:
        """Country code -> home region, derived from [geo.countries]."""
        return MappingProxyType(
            {c: rid for rid, codes in self.geo.countries.items() for c in codes}
        )

    def region(self, region_id: str) -> RegionConfig | None:
        for r in self.regions:
            if r.id == region_id:
                return r
        return None
