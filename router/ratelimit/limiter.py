"""The rate limiter: every rule that applies to a request, the strictest decides.

check() runs once per request on the event loop, without awaiting anything.
A rejected request takes no token from any rule (it never happened, as far as
quotas go); a `log_only` rule over its limit counts and lets the request pass.
"""
from __future__ import annotations

import asyncio
import logging
import math
from math import ceil
from typing import Callable

from ..config import RateLimitConfig, StateConfig, parse_duration
from .rules import CLIENT_IP, COUNTRY, HEADER, UNKNOWN_COUNTRY, Rule, header_value, key_hash, path_of

log = logging.getLogger("edge_router.ratelimit")

SUMMARY_EVERY = 10.0  # seconds between "rule X limited N requests" log lines
MAX_LIFTS = 10_000  # per rule: lifts are operator actions, but bounded all the same
MAX_LIFT_FOR = 7 * 86400.0


class Limited:
    """A rejection: what the 429 says."""

    __slots__ = ("rule", "retry_after", "headers", "detail")

    def __init__(self, rule: Rule, wait: float) -> None:
        self.rule = rule.name
        self.retry_after = retry = max(1, math.ceil(wait - 1e-9))
        self.headers = (
            (b"Retry-After", b"%d" % retry),
            (b"RateLimit-Policy", rule.policy),
            (b"RateLimit", b'"%s";r=0;t=%d' % (rule.name.encode(), retry)),
        )
        c = rule.config
        self.detail = (f"rate limit {rule.name!r} ({c.rate_text}, burst {c.burst}, per {c.key}) exceeded;"
                       f" retry in {retry} s")


class LiftError(ValueError):
    """A bad lift request; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RateLimiter:
    def __init__(self, config: RateLimitConfig, now: Callable[[], float], *, state: StateConfig | None = None,
                 metric=None) -> None:
        self.now = now
        self.metric = metric  # prometheus Counter labelled by rule, or None
        self.state_config = state or StateConfig()
        self.config = config
        self.rules: tuple[Rule, ...] = ()
        self.headers = config.headers
        self.sync = None  # GlobalSync while backend = "redis"
        self._task: asyncio.Task | None = None
        self._logged: dict[str, int] = {}
        self.reconfigure(config)

    # -- the hot path ------------------------------------------------------------------
    def check(self, method: str, url: bytes, headers: list[bytes], ip: str, country: str | None) -> bytes | Limited:
        """Header lines for the allowed answer (maybe b""), or the Limited that refuses it.

        Bucket.take / KeyTable.get / put, inlined: this runs for every request and rule.
        """
        now = self.now()
        takes = None
        worst = None
        wait = 0.0
        for rule in self.rules:
            if rule.filtered:  # the rule's match
                if rule.methods is not None and method not in rule.methods:
                    continue
                prefix = rule.prefix
                if prefix is not None and not url.startswith(prefix) and (
                        url[:1] == b"/" or not path_of(url).startswith(prefix)):
                    continue
            kind = rule.kind  # the rule's key
            if kind == CLIENT_IP:
                key = ip
            elif kind == COUNTRY:
                key = country or UNKNOWN_COUNTRY
            else:
                key = header_value(headers, rule.header)
                if key is None:  # no such header: the rule does not apply
                    continue
            bucket = rule.bucket
            tats = rule.tats
            tat = tats.get(key)
            if tat is None or tat < now:
                new = now + bucket.interval
            else:
                new = tat + bucket.interval
            if new - now - bucket.tau > 1e-9:  # over the limit
                if rule.lifts and rule.lifted(key, now):
                    continue
                rule.count_limited(key)
                if not rule.log_only and new - now - bucket.tau > wait:
                    worst, wait = rule, new - now - bucket.tau
                continue
            if takes is None:
                takes = [(rule, key, new, tat is not None)]
            else:
                takes.append((rule, key, new, tat is not None))
        if worst is not None:
            return Limited(worst, wait)
        if takes is None:
            return b""
        strictest = None
        left = 0
        for rule, key, new, known in takes:
            if known:
                tats = rule.tats
                tats[key] = new
                tats.move_to_end(key)
            else:
                rule.table.put(key, new, now)
            pending = rule.pending
            if pending is not None:
                pending[key] = pending.get(key, 0) + 1
            if not rule.log_only:
                bucket = rule.bucket
                r = int((bucket.tau - (new - now)) * bucket.rate + 1e-9)
                if strictest is None or r < left:
                    strictest, left, tat = rule, r, new
        if strictest is None or not self.headers:
            return b""
        # t: whole seconds until the bucket is full again. The lines repeat (same
        # remaining count, same t), so they are kept, up to a bound, not rebuilt.
        full = ceil(tat - now - 1e-9)
        lines = strictest.lines
        k = (left << 32) | full
        got = lines.get(k)
        if got is None:
            got = b"%s%d;t=%d\r\n" % (strictest.head, left, full)
            if len(lines) < 4096 and full < 1 << 32:
                lines[k] = got
        return got

    # -- operations -------------------------------------------------------------------
    def reconfigure(self, config: RateLimitConfig, state: StateConfig | None = None) -> None:
        """New rules (config reload). A rule keeping its name and key keeps its buckets,
        counts and lifts; the Redis link follows backend / [state] changes."""
        old = {(r.name, r.config.key): r for r in self.rules}
        rules = []
        for rc in config.rules:
            counter = self.metric.labels(rc.name) if self.metric is not None else None
            rule = Rule(rc, config.max_keys, counter)
            prev = old.get((rc.name, rc.key))
            if prev is not None:
                rule.take_over(prev)
                rule.table.limit = config.max_keys
                if prev.base.interval != rule.base.interval:
                    rule.table.rescale(prev.base.interval, rule.base.interval, self.now())
            rules.append(rule)
        state = state or self.state_config
        redis_changed = (config.backend != self.config.backend or state != self.state_config
                         or config.sync_interval != self.config.sync_interval)
        self.config, self.state_config, self.headers = config, state, config.headers
        self.rules = tuple(rules)
        if self.sync is not None and redis_changed:
            old_sync, self.sync = self.sync, None
            self._spawn(old_sync.stop())
        if config.backend == "redis":
            if self.sync is None:
                from .global_sync import GlobalSync

                self.sync = GlobalSync(self, config, state)
                if self._task is not None:  # already running: start the new link now
                    self._spawn(self.sync.start())
            self.sync.adopt(self.rules)
        log.info("rate limit: %d rules, backend %s", len(rules), config.backend)

    def lift(self, rule_name: object, key: object, duration: object) -> dict:
        """Let one key through a rule for a while (admin). Raises LiftError naming the field."""
        rule = next((r for r in self.rules if r.name == rule_name), None)
        if rule is None:
            raise LiftError("rule", f"unknown rule {rule_name!r} (rules: {', '.join(r.name for r in self.rules) or 'none'})")
        if not isinstance(key, str) or not key:
            raise LiftError("key", "'key' must be a non-empty string (for header rules, the value or its sha256: hash)")
        try:
            seconds = parse_duration(duration) if isinstance(duration, str) else None
        except ValueError:
            seconds = None
        if seconds is None or not 0 < seconds <= MAX_LIFT_FOR:
            raise LiftError("for", f"'for' must be a duration up to 7 days, like '10m' or '1h', got {duration!r}")
        now = self.now()
        for k in [k for k, u in rule.lifts.items() if u <= now]:
            del rule.lifts[k]
        if key not in rule.lifts and len(rule.lifts) >= MAX_LIFTS:
            raise LiftError("key", f"rule {rule.name!r} already has {MAX_LIFTS} lifts in force")
        rule.lifts[key] = now + seconds
        shown = key if rule.kind != HEADER or key.startswith("sha256:") else key_hash(key)
        return {"rule": rule.name, "key": shown, "lifted_for_seconds": seconds}

    def state_json(self) -> dict:
        now = self.now()
        out = {"backend": self.config.backend, "headers": self.headers,
               "rules": [r.state_json(now) for r in self.rules]}
        if self.sync is not None:
            out["redis"] = self.sync.state_json()
        return out

    # -- background: log summaries, the Redis link ---------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._summaries(), name="ratelimit-log")
            if self.sync is not None:
                await self.sync.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.sync is not None:
            await self.sync.stop()

    def _spawn(self, coro) -> None:
        try:
            asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (unit tests): nothing was started either
            coro.close()

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(SUMMARY_EVERY)
            self.log_summary()

    def log_summary(self) -> None:
        """One line per rule that limited anything since the last one (never one per request)."""
        for rule in self.rules:
            before = self._logged.get(rule.name, 0)
            if rule.limited > before:
                top = max(rule.top.items(), key=lambda kv: kv[1], default=None)
                log.warning(
                    "rate limit %r (%s): %d requests over %s, burst %d, per %s (%s) since the last report%s",
                    rule.name, rule.config.action, rule.limited - before, rule.config.rate_text,
                    rule.config.burst, rule.config.key,
                    "let through, dry run" if rule.log_only else "answered 429",
                    f"; top key {rule.shown(top[0])}" if top else "",
                )
            self._logged[rule.name] = rule.limited
