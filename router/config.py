"""One config object: TOML in, validated once, frozen dataclasses out.

Durations are float seconds. What changes at runtime (strategy, drains,
disables) lives in the region store, not here.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from policies import NAMES as STRATEGIES
from policies import REGISTRY
from policies.base import settings_table
from policies.least_latency import LeastLatencySettings

from .configcheck import (  # the generic checker and units; re-exported for the package
    Address,
    ConfigError,
    IPNetwork,
    _address,
    _Bad,
    _boolean,
    _Checker,
    _choice,
    _country,
    _duration,
    _expect,
    _integer,
    _key,
    _network,
    _number,
    _percent,
    _region_id,
    _REGION_ID_RE,
    _statuses,
    _string,
    _string_list,
    _type_name,
    _url,
    format_duration,
    parse_address,
    parse_duration,
    parse_rate,
)


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
    country_header: bool = False  # answer with X-Edge-Country: the client's ISO code


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    interval: float = 30.0
    timeout: float = 5.0
    fall: int = 3
    rise: int = 2
    latency_interval: float = 60.0
    # HAProxy fastinter / downinter: cadence while a region changes state / is down.
    # None = `interval` (as in HAProxy); never longer than `interval`.
    fast_interval: float | None = None
    down_interval: float | None = None
    jitter: float = 0.1  # +-10 % of each interval
    # Flap damping: more than flap_limit verdict changes within flap_window hold
    # the region down for flap_hold after its next recovery.
    flap_limit: int = 4
    flap_window: float = 300.0
    flap_hold: float = 120.0

    def __post_init__(self) -> None:
        for name in ("fast_interval", "down_interval"):
            value = getattr(self, name)
            object.__setattr__(self, name, self.interval if value is None else min(value, self.interval))


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
    # Statuses beyond 502/503/504 that count as failures (default none: an
    # endpoint answering 500 is the application's error, not the region's).
    failure_statuses: frozenset[int] = frozenset()
    # Envoy max_ejection_percent: breakers never hold more than this share of regions open.
    max_ejected_percent: int = 50


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
    body_timeout: float = 30.0  # client silent this long mid-body -> 408 (nginx client_body_timeout)
    send_timeout: float = 60.0  # client not reading its answer this long -> cut (nginx send_timeout)
    max_connections: int | None = None  # client connections; None: sized from RLIMIT_NOFILE
    max_response_header_bytes: int = 65536  # larger region head -> 502 upstream_head_too_large
    tunnel_idle_timeout: float = 300.0  # a WebSocket tunnel with no byte either way is closed
    tunnel_drain_timeout: float = 60.0  # a disabled region's tunnels live this long, then close
    max_tunnels: int | None = None  # open WebSocket tunnels; None: half of max_connections


@dataclass(frozen=True, slots=True)
class DegradeConfig:
    """[degrade]: performance-based failover over live requests (seed: error
    rate > 5 %, latency > 2 s). A degraded region is ranked after the others."""

    error_rate: float = 0.05  # share of failed requests ...
    latency: float = 2.0  # ... or p95 upstream latency (seconds) above this ...
    window: float = 60.0  # ... over this rolling window ...
    min_requests: int = 20  # ... with at least this many requests in it


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    access_log: bool = False  # JSON line per request on stdout
    format: str = "text"  # process log on stderr: "text" lines or "json" objects


@dataclass(frozen=True, slots=True)
class StateConfig:
    """[state]: where operator decisions live (memory | file | redis)."""

    backend: str = "memory"  # memory | file | redis
    path: str | None = None  # file backend: the JSON file (written atomically)
    url: str | None = None  # redis backend: redis://host:port/db or rediss://...
    key_prefix: str = "edge-router:"
    tls_ca: str | None = None  # rediss: CA bundle to verify the server
    tls_cert: str | None = None  # rediss: client certificate
    tls_key: str | None = None


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
class RateLimitRule:
    """One [[rate_limit.rules]] table: a token bucket per value of `key`."""

    name: str
    key: str  # client_ip | country | header:NAME
    rate: float  # tokens per second
    burst: int  # bucket size
    rate_text: str = ""  # as written ("100/s"), for humans
    action: str = "reject"  # reject | log_only
    path_prefix: str | None = None
    methods: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """[rate_limit]: per-client limits, local to the process or global through Redis."""

    backend: str = "local"  # local | redis (the Redis of [state])
    rules: tuple[RateLimitRule, ...] = ()
    headers: bool = True  # RateLimit-Policy / RateLimit on allowed answers too
    max_keys: int = 100_000  # per rule: the key table's size limit (LRU)
    sync_interval: float = 0.2  # redis: how often counters are exchanged
    replicas: int = 1  # redis down before any contact: divide the rate by this


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
    state: StateConfig = StateConfig()
    degrade: DegradeConfig = DegradeConfig()
    slow_start: float = 30.0  # a region coming back ramps 10 % -> 100 % over this; 0 = off
    residency: tuple[ResidencyRule, ...] = ()
    workers: int = 1
    # strategy name -> its Settings, from the table named after it ([least_latency])
    strategies: Mapping[str, Any] = field(default_factory=dict)
    rate_limit: RateLimitConfig = RateLimitConfig()
    notify: tuple["NotifyConfig", ...] = ()

    @property
    def country_home(self) -> Mapping[str, str]:
        """Country code -> home region, derived from [geo.countries]."""
        return MappingProxyType(
            {c: rid for rid, codes in self.geo.countries.items() for c in codes}
        )

    def strategy_settings(self, name: str) -> Any:
        """The settings of a strategy (its defaults when the file has none; None
        for a strategy without settings)."""
        got = self.strategies.get(name)
        if got is None and REGISTRY[name].Settings is not None:
            got = REGISTRY[name].Settings()
        return got

    @property
    def least_latency(self) -> LeastLatencySettings:
        return self.strategy_settings("least-latency")

    def region(self, region_id: str) -> RegionConfig | None:
        for r in self.regions:
            if r.id == region_id:
                return r
        return None


# --------------------------------------------------------------------------- loader
ROLES = ("primary", "standby")
LOG_LEVELS = ("debug", "info", "warning", "error")


# ---- what each table may hold

_LISTEN = {"address": _address, "tls_cert": _string, "tls_key": _string}
_ADMIN = {"address": _address, "token_env": _string}
_GEO = {"database": str, "trusted_proxies": _string_list, "countries": dict,  # checked below
        "country_header": _boolean}
_PROBE = {
    "interval": _duration(), "timeout": _duration(), "fall": _integer(1), "rise": _integer(1),
    "latency_interval": _duration(), "fast_interval": _duration(),
    "down_interval": _duration(), "jitter": _number(high=0.5, allow_low=True),
    "flap_limit": _integer(0), "flap_window": _duration(),
    "flap_hold": _duration(allow_zero=True),
}
_BREAKER = {
    "consecutive_failures": _integer(1), "open_for": _duration(), "max_open_for": _duration(),
    "failure_ratio": _number(high=1.0), "window": _duration(), "min_requests": _integer(1),
    "half_open_requests": _integer(1), "max_in_flight": _integer(1),
    "failure_statuses": _statuses, "max_ejected_percent": _percent,
}
_LIMITS = {
    "connect_timeout": _duration(), "read_timeout": _duration(), "idle_timeout": _duration(),
    "header_timeout": _duration(), "max_header_bytes": _integer(1),
    "max_body_bytes": _integer(0), "retry_body_bytes": _integer(0), "pool_size": _integer(1),
    "pool_wait": _duration(allow_zero=True), "pool_idle": _duration(),
    "retry_budget_ratio": _number(allow_low=True), "retry_budget_min": _integer(0),
    "max_attempts": _integer(1), "drain_timeout": _duration(allow_zero=True),
    "body_timeout": _duration(), "send_timeout": _duration(), "max_connections": _integer(1),
    "max_response_header_bytes": _integer(1024),
    "tunnel_idle_timeout": _duration(), "tunnel_drain_timeout": _duration(allow_zero=True),
    "max_tunnels": _integer(0),
}
LOG_FORMATS = ("text", "json")
_LOG = {"level": _choice(LOG_LEVELS, "log level"), "access_log": _boolean,
        "format": _choice(LOG_FORMATS, "log format")}
_DEGRADE = {
    "error_rate": _number(high=1.0), "latency": _duration(), "window": _duration(),
    "min_requests": _integer(1),
}


def _settings_spec(settings: type) -> dict[str, Callable[[Any], Any]]:
    """A strategy's Settings dataclass -> the checks for its config table."""
    spec: dict[str, Callable[[Any], Any]] = {}
    for f in dataclasses.fields(settings):
        low = f.metadata.get("min", 0)
        if f.metadata.get("unit") == "duration":
            spec[f.name] = _duration(allow_zero=True)
        elif f.type in (bool, "bool"):
            spec[f.name] = _boolean
        elif f.type in (int, "int"):
            spec[f.name] = _integer(int(low))
        else:
            spec[f.name] = _number(low=low, allow_low=True)
    return spec


_STRATEGY_SETTINGS = {  # table -> (strategy name, Settings, checks)
    settings_table(name): (name, cls.Settings, _settings_spec(cls.Settings))
    for name, cls in REGISTRY.items() if cls.Settings is not None
}
STATE_BACKENDS = ("memory", "file", "redis")
_STATE = {
    "backend": _choice(STATE_BACKENDS, "state backend"), "path": _string, "url": _string,
    "key_prefix": _string, "tls_ca": _string, "tls_cert": _string, "tls_key": _string,
}
_REGION = {
    "id": _region_id, "api": _url, "health": _url, "provider": _string,
    "role": _choice(ROLES, "role"), "failover": _string_list, "weight": _number(),
    "tls_ca": _string, "tls_cert": _string, "tls_key": _string,
}
_RESIDENCY = {"countries": _string_list, "regions": _string_list}
_RATE_LIMIT = {
    "backend": _choice(("local", "redis"), "rate_limit backend"), "rules": list, "headers": _boolean,
    "max_keys": _integer(1), "sync_interval": _duration(), "replicas": _integer(1),
}
_RATE_LIMIT_RULE = {
    "name": _string, "key": _string, "match": dict, "rate": _string, "burst": _integer(1),
    "action": _choice(("reject", "log_only"), "action"),
}
_RATE_LIMIT_MATCH = {"path_prefix": _string, "methods": _string_list}
_TOP = {
    "default_region": _string, "strategy": _choice(STRATEGIES, "strategy"),
    "workers": _integer(1), "listen": dict, "admin": dict, "geo": dict, "probe": dict,
    "breaker": dict, "limits": dict, "log": dict, "regions": list, "residency": list,
    "degrade": dict, "slow_start": _duration(allow_zero=True), "state": dict, "rate_limit": dict, "notify": list,
    **{table: dict for table in _STRATEGY_SETTINGS},
}


def parse_config(data: dict, source: str = "<config>") -> Config:
    """Validate a parsed TOML document; raise one ConfigError listing every problem."""
    c = _Checker()
    top = c.table(data, "", _TOP)
    c.require(top, data, "", ("default_region",))

    listen = c.table(top.get("listen", {}), "listen", _LISTEN)
    c.pair(listen, "listen", "tls_cert", "tls_key")
    admin = c.table(top.get("admin", {}), "admin", _ADMIN)
    probe = c.table(top.get("probe", {}), "probe", _PROBE)
    interval = probe.get("interval", ProbeConfig().interval)
    for key in ("fast_interval", "down_interval"):
        if probe.get(key, 0.0) > interval:
            c.add(f"probe.{key}", f"must not be longer than probe.interval ({format_duration(interval)})")
    breaker = c.table(top.get("breaker", {}), "breaker", _BREAKER)
    if breaker.get("max_open_for", float("inf")) < breaker.get("open_for", BreakerConfig().open_for):
        c.add("breaker.max_open_for", "must not be shorter than breaker.open_for")
    limits = c.table(top.get("limits", {}), "limits", _LIMITS)
    log = c.table(top.get("log", {}), "log", _LOG)
    settings = {name: Settings(**c.table(top.get(table, {}), table, spec))
                for table, (name, Settings, spec) in _STRATEGY_SETTINGS.items()}
    degrade = c.table(top.get("degrade", {}), "degrade", _DEGRADE)
    state = c.table(top.get("state", {}), "state", _STATE)
    _check_state(c, state)

    raw_regions = top.get("regions", [])
    if isinstance(data, dict) and not data.get("regions"):
        c.add("regions", "at least one [[regions]] table is required")
    # Ids are collected before the regions are checked so that one broken region
    # does not cascade into "unknown region" errors everywhere else.
    # (A bad id is reported once, at its own key, and never echoed elsewhere.)
    known = {r["id"] for r in raw_regions
             if isinstance(r, dict) and isinstance(r.get("id"), str) and _REGION_ID_RE.fullmatch(r["id"])}
    regions = _regions(c, raw_regions, known)

    default = top.get("default_region")
    if default is not None and default not in known:
        c.add("default_region", f"unknown region {default!r} (defined: {_names(known)})")

    geo = _geo(c, top.get("geo", {}), known)
    residency = _residency(c, top.get("residency", []), known)
    rate_limit = _rate_limit(c, top.get("rate_limit", {}), state)
    notify = _notify(c, top.get("notify", []))

    if c.problems:
        raise ConfigError(c.problems, source)
    return Config(
        default_region=default,
        strategy=top.get("strategy", "geographic"),
        regions=regions,
        listen=ListenConfig(**listen),
        admin=AdminConfig(**admin),
        geo=geo,
        probe=ProbeConfig(**probe),
        breaker=BreakerConfig(**breaker),
        limits=LimitsConfig(**limits),
        strategies=MappingProxyType(settings),
        log=LogConfig(**log),
        state=StateConfig(**state),
        degrade=DegradeConfig(**degrade),
        slow_start=top.get("slow_start", Config.__dataclass_fields__["slow_start"].default),
        residency=residency,
        workers=top.get("workers", 1),
        rate_limit=rate_limit,
        notify=notify,
    )


def _check_state(c: _Checker, state: dict[str, Any]) -> None:
    backend = state.get("backend", StateConfig().backend)
    if backend == "file" and "path" not in state:
        c.add("state.path", "required when state.backend is \"file\"")
    if backend == "redis":
        url = state.get("url")
        if url is None:
            c.add("state.url", "required when state.backend is \"redis\"")
        elif not url.startswith(("redis://", "rediss://")):
            c.add("state.url", f"bad URL {url!r} (need redis://host:port/db or rediss://...)")
    c.pair(state, "state", "tls_cert", "tls_key")


def _names(ids: set[str]) -> str:
    return ", ".join(sorted(ids)) or "none"


def _region_ref(value: Any, known: set[str]) -> str:
    """A string naming a defined region (raises _Bad otherwise)."""
    rid = _string(value)
    if rid not in known:
        raise _Bad(f"unknown region {rid!r}")
    return rid


def _regions(c: _Checker, raw: list, known: set[str]) -> tuple[RegionConfig, ...]:
    out: list[RegionConfig] = []
    first_seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        path = f"regions[{i}]"
        got = c.table(entry, path, _REGION)
        c.pair(got, path, "tls_cert", "tls_key")
        complete = c.require(got, entry, path, ("id", "api", "health"))
        rid = got.get("id")
        if rid is not None:
            if rid in first_seen:
                c.add(f"{path}.id", f"duplicate region id {rid!r} (also regions[{first_seen[rid]}])")
            first_seen.setdefault(rid, i)
        failover: list[str] = []
        for j, ref in enumerate(got.get("failover", [])):
            where = f"{path}.failover[{j}]"
            try:
                ref = _region_ref(ref, known)
            except _Bad as exc:
                c.add(where, str(exc))
                continue
            if ref == rid:
                c.add(where, f"a region cannot fail over to itself ({ref!r})")
            elif ref in failover:
                c.add(where, f"{ref!r} is listed twice")
            else:
                failover.append(ref)
        got["failover"] = tuple(failover)
        if complete:
            out.append(RegionConfig(**got))
    return tuple(out)


def _geo(c: _Checker, raw: Any, known: set[str]) -> GeoConfig:
    got = c.table(raw, "geo", _GEO)
    # An empty database path means "no GeoIP": every client goes to default_region.
    database = got.get("database", GeoConfig().database) or None
    proxies = c.items(got.get("trusted_proxies", []), "geo.trusted_proxies", _network)
    countries: dict[str, tuple[str, ...]] = {}
    home: dict[str, str] = {}  # country -> first region that claimed it
    for rid, codes in got.get("countries", {}).items():
        path = _key("geo.countries", rid)
        if rid not in known:
            c.add(path, f"unknown region {rid!r} (defined: {_names(known)})")
        if not isinstance(codes, list):
            c.add(path, f"expected an array of country codes, got {_type_name(codes)}")
            continue
        mine: list[str] = []
        for j, code in enumerate(codes):
            try:
                code = _country(code)
            except _Bad as exc:
                c.add(f"{path}[{j}]", str(exc))
                continue
            if code in home:
                other = home[code]
                c.add(f"{path}[{j}]", f"{code!r} is listed twice for {rid!r}" if other == rid
                      else f"{code!r} is mapped to both {other!r} and {rid!r}")
                continue
            home[code] = rid
            mine.append(code)
        countries[rid] = tuple(mine)
    return GeoConfig(database=database, trusted_proxies=tuple(proxies),
                     countries=MappingProxyType(countries),
                     country_header=got.get("country_header", False))


def _residency(c: _Checker, raw: list, known: set[str]) -> tuple[ResidencyRule, ...]:
    rules: list[ResidencyRule] = []
    ruled: dict[str, int] = {}  # country -> index of the rule that already pins it
    for i, entry in enumerate(raw):
        path = f"residency[{i}]"
        got = c.table(entry, path, _RESIDENCY)
        c.require(got, entry, path, ("countries", "regions"))
        countries = c.items(got.get("countries", []), f"{path}.countries", _country)
        regions = c.items(got.get("regions", []),  f"{path}.regions",
                          lambda v: _region_ref(v, known))
        for key in ("countries", "regions"):
            if key in got and not got[key]:
                c.add(f"{path}.{key}", "must not be empty")
        for code in countries:
            if code in ruled and ruled[code] != i:
                c.add(f"{path}.countries", f"{code!r} already has a rule (residency[{ruled[code]}])")
            ruled.setdefault(code, i)
        rules.append(ResidencyRule(frozenset(countries), tuple(dict.fromkeys(regions))))
    return tuple(rules)


# Request headers the listener consumes itself: a rule cannot key on them.
_UNKEYABLE_HEADERS = frozenset((
    "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "content-length",
    "transfer-encoding", "connection", "expect", "upgrade", "keep-alive", "proxy-connection", "te", "trailer",
))
_RULE_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,63}")
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a header name
def _rate_limit(c: _Checker, raw: Any, state: dict[str, Any]) -> RateLimitConfig:
    got = c.table(raw, "rate_limit", _RATE_LIMIT)
    if got.get("backend") == "redis" and "url" not in state:
        c.add("rate_limit.backend", "'redis' uses the Redis of [state]: set state.url (redis://...)")
    rules: list[RateLimitRule] = []
    names: dict[str, int] = {}
    for i, entry in enumerate(got.pop("rules", [])):
        path = f"rate_limit.rules[{i}]"
        rule = c.table(entry, path, _RATE_LIMIT_RULE)
        complete = c.require(rule, entry, path, ("key", "rate"))
        key = rule.get("key")
        if key is not None and key not in ("client_ip", "country"):
            header = key[7:] if key.startswith("header:") else None
            if header is None or not _TOKEN_RE.fullmatch(header):
                c.add(f"{path}.key", f"unknown key {key!r} (use 'client_ip', 'country' or 'header:NAME')")
                complete = False
            elif header.lower() in _UNKEYABLE_HEADERS:
                c.add(f"{path}.key", f"{header!r} is handled by the router itself; key on another header")
                complete = False
        if "rate" in rule:
            try:
                rule["rate_text"], rule["rate"] = rule["rate"], parse_rate(rule["rate"])
            except ValueError as exc:
                c.add(f"{path}.rate", str(exc))
                complete = False
        name = rule.setdefault("name", key if isinstance(key, str) else f"rule{i}")
        if not _RULE_NAME_RE.fullmatch(name):
            c.add(f"{path}.name", f"bad rule name {name!r} (letters, digits, '_', '.', ':', '-'; at most 63)")
            complete = False
        elif name in names:
            c.add(f"{path}.name", f"duplicate rule name {name!r} (also rate_limit.rules[{names[name]}];"
                  " give each rule its own name)")
            complete = False
        names.setdefault(name, i)
        match = c.table(rule.pop("match", {}), f"{path}.match", _RATE_LIMIT_MATCH)
        prefix = match.get("path_prefix")
        if prefix is not None and not prefix.startswith("/"):
            c.add(f"{path}.match.path_prefix", f"must start with '/', got {prefix!r}")
        methods = c.items(match.get("methods", []), f"{path}.match.methods", _method)
        if "methods" in match and not match["methods"]:
            c.add(f"{path}.match.methods", "must not be empty (leave it out to match every method)")
        if complete:
            rule.setdefault("burst", max(1, round(rule["rate"] + 0.4999)))  # a second's worth
            rules.append(RateLimitRule(**rule, path_prefix=prefix, methods=frozenset(methods) or None))
    return RateLimitConfig(**got, rules=tuple(rules))


def _method(value: Any) -> str:
    _expect(value, str, "a string")
    if not _TOKEN_RE.fullmatch(value) or value != value.upper():
        raise _Bad(f"bad method {value!r} (use upper case, e.g. 'POST')")
    return value


def load_config(path: str) -> Config:
    """Read and validate a TOML config file; every failure is a ConfigError."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such file"], source) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read ({exc.strerror})"], source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text (byte {exc.start})"], source) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)"
        raise ConfigError([f"{source}: TOML syntax error: {exc}"], source) from None
    return parse_config(data, source)


def default_config() -> Config:
    """The built-in seed configuration (router.defaults.SEED_TOML)."""
    from router.defaults import SEED_TOML

    return parse_config(tomllib.loads(SEED_TOML), "<built-in default>")


def with_overrides(config: Config, *, listen: str | Address | None = None,
                   admin: str | Address | None = None, strategy: str | None = None,
                   geoip_db: str | None = None, workers: int | None = None,
                   log_level: str | None = None) -> Config:
    """Apply `serve` command-line flags; problems name the flag (e.g. "--strategy")."""
    c = _Checker()

    def checked(flag: str, check: Callable[[Any], Any], value: Any) -> Any:
        try:
            return value if isinstance(value, Address) else check(value)
        except _Bad as exc:
            c.add(flag, str(exc))
            return None

    if listen is not None and (addr := checked("--listen", _address, listen)):
        config = dataclasses.replace(config, listen=dataclasses.replace(config.listen, address=addr))
    if admin is not None and (addr := checked("--admin", _address, admin)):
        config = dataclasses.replace(config, admin=dataclasses.replace(config.admin, address=addr))
    if strategy is not None and checked("--strategy", _TOP["strategy"], strategy):
        config = dataclasses.replace(config, strategy=strategy)
    if geoip_db is not None:
        config = dataclasses.replace(config, geo=dataclasses.replace(config.geo, database=geoip_db or None))
    if workers is not None and checked("--workers", _TOP["workers"], workers):
        config = dataclasses.replace(config, workers=workers)
    if log_level is not None and checked("--log-level", _LOG["level"], log_level):
        config = dataclasses.replace(config, log=dataclasses.replace(config.log, level=log_level))
    if c.problems:
        raise ConfigError(c.problems, "<command line>")
    return config


def _redact(url: str | None) -> str:
    """A Redis URL without its password."""
    parts = urlsplit(url or "")
    if parts.password is None:
        return url or ""
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def summarize(config: Config) -> str:
    """Human summary printed by `edge-router check-config`."""
    p, b = config.probe, config.breaker
    tls = "TLS" if config.listen.tls_cert else "plain HTTP"
    flapping = (f"flapping: more than {p.flap_limit} changes in {format_duration(p.flap_window)}"
                f" -> held {format_duration(p.flap_hold)}" if p.flap_limit else "no flap damping")
    lines = [
        f"strategy:       {config.strategy}",
        f"default region: {config.default_region}",
        f"listen:         {config.listen.address} ({tls})",
        f"admin:          {config.admin.address} (token from ${config.admin.token_env})",
        f"geoip database: {config.geo.database or 'none (every client -> default region)'}",
        f"probe:          every {format_duration(p.interval)}, timeout {format_duration(p.timeout)},"
        f" fall {p.fall}, rise {p.rise}, latency every {format_duration(p.latency_interval)}",
        f"                fast {format_duration(p.fast_interval)}, down {format_duration(p.down_interval)};"
        f" {flapping}",
        f"breaker:        opens after {b.consecutive_failures} failures"
        f" for {format_duration(b.open_for)} (max {format_duration(b.max_open_for)})",
        f"steering:       slow start {format_duration(config.slow_start) if config.slow_start else 'off'};"
        f" degraded over {config.degrade.error_rate:.0%} errors or p95 {format_duration(config.degrade.latency)}"
        f" ({format_duration(config.degrade.window)} window, >= {config.degrade.min_requests} requests)",
        f"workers:        {config.workers}",
        f"decisions:      {config.state.backend}"
        + {"file": f" ({config.state.path})", "redis": f" ({_redact(config.state.url)})"}.get(config.state.backend, ""),
        f"regions ({len(config.regions)}):",
    ]
    width = max(len(r.id) for r in config.regions) if config.regions else 0
    for r in config.regions:
        n = len(config.geo.countries.get(r.id, ()))
        failover = ", ".join(r.failover) or "-"
        lines.append(f"  {r.id:<{width}}  {r.role:<7}  {r.api}  failover: {failover}"
                     f"  countries: {n}")
    if config.residency:
        lines.append(f"residency ({len(config.residency)}):")
        for rule in config.residency:
            lines.append(f"  {', '.join(sorted(rule.countries))} -> only {', '.join(rule.regions)}")
    else:
        lines.append("residency:      none")
    rl = config.rate_limit
    if rl.rules:
        lines.append(f"rate limit ({len(rl.rules)} rules, {rl.backend}):")
        for r in rl.rules:
            match = "".join((f" on {r.path_prefix}*" if r.path_prefix else "",
                             f" for {','.join(sorted(r.methods))}" if r.methods else ""))
            lines.append(f"  {r.name}: {r.rate_text}, burst {r.burst}, per {r.key}{match}"
                         + (" (log_only)" if r.action == "log_only" else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------- [[notify]]
# Event groups a [[notify]] entry can subscribe to (router/ops/notify.py EVENT_KINDS maps
# each event kind to one of them).
NOTIFY_EVENTS = ("health", "breaker", "degraded", "panic", "failover", "operator", "reload")


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """One [[notify]] webhook: where, with which bearer token, for which events."""

    url: str
    token_env: str | None = None  # bearer token read from this environment variable
    events: tuple[str, ...] = NOTIFY_EVENTS
    min_interval: float = 30.0  # at most one message per region per event kind per this


_NOTIFY = {"url": _url, "token_env": _string, "events": _string_list, "min_interval": _duration(allow_zero=True)}


def _notify(c: _Checker, raw: list) -> tuple[NotifyConfig, ...]:
    out: list[NotifyConfig] = []
    for i, entry in enumerate(raw):
        path = f"notify[{i}]"
        got = c.table(entry, path, _NOTIFY)
        if "events" in got:
            events = c.items(got["events"], f"{path}.events", _choice(NOTIFY_EVENTS, "event"))
            if not got["events"]:
                c.add(f"{path}.events", "must not be empty (leave it out for every event)")
            got["events"] = tuple(dict.fromkeys(events))
        if c.require(got, entry, path, ("url",)):
            out.append(NotifyConfig(**got))
    return tuple(out)
