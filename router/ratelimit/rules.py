"""A configured rule, compiled for the hot path: what it matches, how it finds
its key, its bucket, its key table, and what the operator sees of it."""
from __future__ import annotations

import hashlib
import math

from ..config import RateLimitRule
from .bucket import Bucket, KeyTable

CLIENT_IP, COUNTRY, HEADER = range(3)
UNKNOWN_COUNTRY = "unknown"  # no GeoIP answer: these clients share one bucket
TOP_KEPT = 256  # limited keys counted per rule, for /admin/state's top list


def key_hash(key: str | bytes) -> str:
    """How an API key is shown (admin state, audit) and named in Redis: never in clear."""
    raw = key if isinstance(key, bytes) else key.encode("latin-1", "replace")
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def header_value(headers: list[bytes], lname: bytes) -> bytes | None:
    """The first value of a header, from the listener's "Name: value\\r\\n" lines, as
    bytes: header rules key their tables by the raw value (no decoding per request)."""
    n = len(lname)
    colon = n - 1
    for line in headers:
        # the colon test first: only names of the right length are lowered
        if len(line) > n and line[colon] == 58 and line[:n].lower() == lname:
            return line[n:-2].strip()
    return None


def path_of(url: bytes) -> bytes:
    """The request target's path (absolute-form keeps only its path)."""
    if url[:1] == b"/":
        return url
    i = url.find(b"://")
    if i < 0:
        return b"/" + url
    j = url.find(b"/", i + 3)
    return url[j:] if j >= 0 else b"/"


class Rule:
    __slots__ = (
        "config", "name", "kind", "header", "prefix", "methods", "base", "bucket", "table",
        "log_only", "policy", "lifts", "limited", "top", "counter", "pending", "share", "tats",
        "filtered", "head", "lines",
    )

    def __init__(self, config: RateLimitRule, max_keys: int, counter=None) -> None:
        self.config = config
        self.name = config.name
        key = config.key
        self.kind = CLIENT_IP if key == "client_ip" else COUNTRY if key == "country" else HEADER
        self.header = (key[7:].lower() + ":").encode() if self.kind == HEADER else b""
        self.prefix = config.path_prefix.encode() if config.path_prefix else None
        self.methods = config.methods
        self.filtered = self.prefix is not None or self.methods is not None
        self.base = Bucket(config.rate, config.burst)
        self.bucket = self.base  # the base, or this replica's share while Redis is away
        self.share = 1
        self.table = KeyTable(max_keys)
        self.tats = self.table.tats  # the hot path's shortcut
        self.log_only = config.action == "log_only"
        # RateLimit-Policy (draft-ietf-httpapi-ratelimit-headers) has a quota per whole
        # seconds, no burst: "burst requests per the time it takes to refill"
        # (100/s burst 200 -> q=200;w=2), rounded up so that it never promises more; a
        # bucket that refills within a second says its rate (100/s burst 10 -> q=100;w=1).
        window = max(1, math.ceil(config.burst / config.rate - 1e-9))
        quota = config.burst if window > 1 else max(config.burst, int(config.rate))
        self.policy = b'"%s";q=%d;w=%d' % (self.name.encode(), quota, window)
        # an allowed answer's header lines, up to the remaining count
        self.lines: dict[int, bytes] = {}  # (remaining, t) -> the whole lines, bounded
        self.head = b'RateLimit-Policy: %s\r\nRateLimit: "%s";r=' % (self.policy, self.name.encode())
        self.lifts: dict[str, float] = {}  # key (or its hash) -> lifted until (clock time)
        self.limited = 0  # requests over the limit (rejected, or let through when log_only)
        self.top: dict[str, int] = {}  # key -> times limited, at most TOP_KEPT keys
        self.counter = counter  # edge_router_rate_limited_total{rule=name}, if metrics are on
        self.pending: dict[str, int] | None = None  # redis: admitted since the last sync

    def take_over(self, prev: "Rule") -> None:
        """A reload kept this rule: its buckets, lifts and counts carry over."""
        self.table, self.tats, self.lifts, self.top, self.limited = (
            prev.table, prev.tats, prev.lifts, prev.top, prev.limited)

    def shown(self, key: str) -> str:
        return key_hash(key) if self.kind == HEADER else key

    def set_share(self, share: int) -> None:
        self.share = share
        self.bucket = self.base if share <= 1 else self.base.scaled(share)

    def lifted(self, key: str, now: float) -> bool:
        """Has the operator lifted this key's limit (by its value or, for API keys, its hash)?"""
        lifts = self.lifts
        if self.kind == HEADER:  # bytes: lifts name it as text or by its hash
            key = key.decode("latin-1")
            until = lifts.get(key)
            if until is None:
                until = lifts.get(key_hash(key))
        else:
            until = lifts.get(key)
        if until is None:
            return False
        if until > now:
            return True
        lifts.pop(key, None)
        return False

    def count_limited(self, key: str) -> None:
        self.limited += 1
        if self.counter is not None:
            self.counter.inc()
        top = self.top
        n = top.get(key)
        if n is not None:
            top[key] = n + 1
        else:
            if len(top) >= TOP_KEPT:  # keep the heavier half: a flood of keys cannot grow it
                for k, _ in sorted(top.items(), key=lambda kv: kv[1])[: TOP_KEPT // 2]:
                    del top[k]
            top[key] = 1

    def state_json(self, now: float, top: int = 10) -> dict:
        c = self.config
        return {
            "name": self.name,
            "key": c.key,
            "match": {"path_prefix": c.path_prefix, "methods": sorted(c.methods) if c.methods else None},
            "rate": c.rate_text,
            "burst": c.burst,
            "action": c.action,
            "share": self.share,
            "limited": self.limited,
            "keys": len(self.table),
            "max_keys": self.table.limit,
            "evicted": self.table.evicted,
            "evicted_before_refill": self.table.evicted_active,
            "top_limited": [
                {"key": self.shown(k), "limited": n}
                for k, n in sorted(self.top.items(), key=lambda kv: -kv[1])[:top]
            ],
            "lifts": [
                {"key": self.shown(k) if not k.startswith("sha256:") else k, "for_seconds": round(u - now, 1)}
                for k, u in self.lifts.items() if u > now
            ],
        }
