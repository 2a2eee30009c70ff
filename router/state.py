"""The region store: single writer of everything the data plane reads.

Prober, breakers and operator decisions change `RegionRuntime` objects through
this store; it then publishes a frozen, versioned `RegionSnapshot` and the
strategy's ranker prepared for it. Requests read both once.
"""
from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Callable

from policies import REGISTRY
from policies.base import Policy, Ranker
from policies.model import CLOSED, OPEN, RegionSnapshot, RegionView

from .breaker import CircuitBreaker
from .candidates import CandidateOrders
from .clock import Clock
from .config import Config, RegionConfig
from .store.model import Decisions, DecisionSource, drain_factor
from .degrade import DEGRADED, Degrade
from .ewma import PeakEwma
from .health import HealthState
from .metrics import BREAKER_VALUES, Metrics, RegionMetrics
from .ops.notify import Notifier
from .slowstart import RampedRanker, SlowStart

if TYPE_CHECKING:
    from .pool import UpstreamPool

log = logging.getLogger("edge_router.state")

# Smoothed latency: a busy region averages over about this many seconds.
LATENCY_DECAY = 10.0


class RegionRuntime:
    """Mutable live state of one region. Only the store's owner writes it."""

    __slots__ = (
        "id", "config", "pool", "breaker", "health", "latency", "in_flight",
        "admit", "disabled", "draining", "effective_weight", "metrics", "health_excluded",
        "degrade", "slow_start", "ramp",
    )

    def __init__(self, cfg: RegionConfig, breaker: CircuitBreaker, health: HealthState, metrics: RegionMetrics):
        self.id = cfg.id
        self.config = cfg
        self.pool: UpstreamPool | None = None  # attached by the server once the loop runs
        self.breaker = breaker
        self.health = health
        self.latency = PeakEwma(LATENCY_DECAY)
        self.in_flight = 0
        self.admit = 1.0  # share of requests this region accepts (drains)
        self.disabled = False
        self.draining = False
        self.effective_weight = cfg.weight
        self.health_excluded = False  # prober says unhealthy and we are not in panic
        self.metrics = metrics
        self.degrade: Degrade | None = None  # performance-based failover, set by the store
        self.slow_start: SlowStart | None = None
        self.ramp = 1.0  # slow-start share at the last publication


def make_policy(name: str, config: Config) -> Policy:
    """A strategy from the registry, with its settings from the config."""
    return REGISTRY[name](config.strategy_settings(name))


class RegionStore:
    def __init__(
        self,
        config: Config,
        decisions: DecisionSource,
        metrics: Metrics,
        clock: Clock,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.decisions = decisions
        self.metrics = metrics
        self.clock = clock
        self._wall = wall
        self._cap_hit = False  # the ejection cap kept a breaker closed (logged once)
        self._panicked: set[str] = set()  # regions in a breaker-panic episode (logged once)
        self.regions: dict[str, RegionRuntime] = {rc.id: self._runtime(rc) for rc in config.regions}
        metrics.in_flight = lambda: {rid: rt.in_flight for rid, rt in self.regions.items()}
        self._maps()
        self.version = 0
        self.seq = 0  # requests ranked so far (RequestFacts.seq)
        # set by the prober: measure this region's latency now
        self.latency_check: Callable[[RegionRuntime], None] | None = None
        # set by the workers' supervisor: every raw probe result, for the workers (workers.verdict_fanout)
        self.probe_results: Callable[[dict], None] | None = None
        self.panic = False
        self.snapshot: RegionSnapshot
        self.ranker: Ranker  # what requests use: the prepared ranker, with slow start
        self.candidates: CandidateOrders  # the ranker's walk orders, narrowed to residency
        self.prepared: Ranker  # the strategy's own, handed back to it on the next prepare
        self.strategy = ""
        self._policy: Policy | None = None
        self.listeners: list[Callable[[RegionSnapshot], None]] = []
        self.notifier = Notifier(())  # webhooks; the server puts the configured one here
        self.publish()

    def _runtime(self, rc: RegionConfig) -> RegionRuntime:
        """A region's live state, fresh: at start and for a region a reload changed."""
        config = self.config
        rm = self.metrics.region_bound(rc.id)
        transitions = rm.transitions
        rt = RegionRuntime(
            rc,
            CircuitBreaker(config.breaker, may_open=self.may_eject,
                           on_change=lambda to: transitions[to].inc()),
            HealthState.from_config(config.probe),
            rm,
        )
        rt.degrade = Degrade(config.degrade)
        rt.slow_start = SlowStart(config.slow_start)
        return rt

    def _maps(self) -> None:
        """The country map and residency rules, from self.config."""
        self.country_home = dict(self.config.country_home)
        self.residency: dict[str, frozenset[str]] = {}
        for rule in self.config.residency:
            for c in rule.countries:
                self.residency[c] = self.residency.get(c, frozenset()) | frozenset(rule.regions)
                self.metrics.residency_refusals.labels(c)  # the series exists at 0 from the start

    def reconfigure(self, config: Config) -> list[RegionRuntime]:
        """A reloaded config. A region whose settings (and breaker and rise/fall
        settings) are unchanged keeps its live state; a changed or new one starts
        fresh. Returns the runtimes no longer used: the caller drains their pools."""
        p, q = config.probe, self.config.probe
        fresh_verdicts = (
            (config.breaker, config.degrade, config.slow_start) != (self.config.breaker, self.config.degrade,
                                                                    self.config.slow_start)
            or (p.fall, p.rise, p.flap_limit, p.flap_window, p.flap_hold)
            != (q.fall, q.rise, q.flap_limit, q.flap_window, q.flap_hold))
        old = self.regions
        self.config = config
        regions = {}
        for rc in config.regions:
            rt = old.get(rc.id)
            regions[rc.id] = rt if rt is not None and rt.config == rc and not fresh_verdicts else self._runtime(rc)
        self.metrics.regions = tuple(regions)
        self.regions = regions
        self._maps()
        self._policy = None  # made again: strategy settings may have changed
        self.publish()
        return [rt for rid, rt in old.items() if regions.get(rid) is not rt]

    # -- publication -----------------------------------------------------------
    def publish(self) -> RegionSnapshot:
        """Recompute derived state and publish a new snapshot + ranker."""
        now = self.clock.now()
        d: Decisions = self.decisions.current()
        if d.strategy != self.strategy or self._policy is None:
            self._policy = make_policy(d.strategy, self.config)
            previous = None
            self.strategy = d.strategy
            self.metrics.set_strategy(d.strategy)
        else:
            previous = getattr(self, "prepared", None)
        wall = self._wall()
        regs = self.regions.values()
        # Panic (Envoy's panic threshold at 0 %): when the prober holds every
        # region down, the prober itself is the likelier failure. Its verdicts
        # are ignored; breakers still protect.
        # Regions an operator disabled do not count, and disabling every region is
        # an operator's decision, not a prober failure: no panic then.
        enabled = [rt for rt in regs if rt.id not in d.disabled]
        panic = bool(enabled) and all(rt.health.healthy is False for rt in enabled)
        if panic != self.panic:
            self.panic = panic
            self.metrics.panic.set(1 if panic else 0)
            if panic:
                log.error("panic: every region looks down to the prober; ignoring its verdicts")
            else:
                log.warning("panic over: prober verdicts are used again")
            self.notifier.emit("panic_started" if panic else "panic_ended")
        # A policy that schedules by effective weight (round-robin) has applied the
        # drain and slow start already; admitting only `factor` of its picks on top
        # would count them twice and spill the rest onto the next region in the
        # rotation. For the others, drains thin a region's picks here (admit) and
        # slow start reorders (RampedRanker): a ramping region is never skipped.
        weighted = self._policy.shares_by_weight
        views = []
        for rt in regs:
            drain = d.drains.get(rt.id)
            state = rt.breaker.state(now)
            rt.disabled = rt.id in d.disabled
            rt.slow_start.update(
                not rt.disabled and rt.health.healthy is not False and state == CLOSED
                and not rt.degrade.degraded, now)
            rt.ramp = rt.slow_start.share(now)
            factor = 0.0 if rt.disabled else drain_factor(drain, wall)
            rt.draining = drain is not None and not rt.disabled
            rt.admit = 1.0 if weighted and factor > 0 else factor
            factor *= rt.ramp
            weight = d.weights.get(rt.id, rt.config.weight)  # an operator's weight wins over the file's
            rt.effective_weight = weight * factor
            rt.health_excluded = rt.health.healthy is False and not panic
            views.append(
                RegionView(
                    id=rt.id,
                    failover=rt.config.failover,
                    weight=weight,
                    effective_weight=rt.effective_weight,
                    healthy=rt.health.healthy,
                    breaker=state,
                    latency_ms=None if rt.latency.value is None else rt.latency.value * 1000.0,
                    error_rate=rt.breaker.error_rate(now),
                    disabled=rt.disabled,
                    draining=rt.draining,
                    in_flight=rt.in_flight,
                    role=rt.config.role,
                    degraded=rt.degrade.degraded,
                )
            )
        if self._panicked:  # an episode ends when its region's breaker closes
            self._panicked = {rid for rid in self._panicked if self.regions[rid].breaker.ejected}
        self.publish_gauges()
        self.version += 1
        snap = RegionSnapshot(
            regions=tuple(views),
            default_region=self.config.default_region,
            country_home=self.country_home,
            version=self.version,
            now=now,
        )
        self.snapshot = snap
        self.prepared = self._policy.prepare(snap, previous)
        ramps = {rt.id: rt.ramp for rt in regs if rt.ramp < 1.0}
        self.ranker = RampedRanker(self.prepared, ramps) if ramps and not weighted else self.prepared
        self.candidates = CandidateOrders(self.ranker, self.residency, tuple(self.regions))
        for cb in self.listeners:
            cb(snap)
        return snap

    def publish_gauges(self) -> None:
        now = self.clock.now()
        for rt in self.regions.values():
            m = rt.metrics
            m.circuit.set(BREAKER_VALUES[rt.breaker.state(now)])
            if rt.health.healthy is not None:
                m.healthy.set(1 if rt.health.healthy else 0)
            if rt.latency.value is not None:
                m.probe_latency.set(rt.latency.value)
            m.degraded.set(1 if rt.degrade.degraded else 0)

    def tick(self) -> None:
        """Periodic republish: drains progress, half-open comes due, dwell times
        pass, slow starts ramp, degrade windows are judged."""
        now = self.clock.now()
        for rt in self.regions.values():
            rt.breaker.tick(now)
            self.judge_degrade(rt, now)
        self.publish()

    def judge_degrade(self, rt: RegionRuntime, now: float) -> None:
        change = rt.degrade.evaluate(now)
        if change is None:
            return
        cfg = self.config.degrade
        level = logging.WARNING if change == DEGRADED else logging.INFO
        log.log(level, "region %s %s: %s over the last %gs (thresholds: error rate %g, p95 %gs,"
                " at least %d requests)", rt.id, change, rt.degrade.stats_at_change.describe(),
                cfg.window, cfg.error_rate, cfg.latency, cfg.min_requests)
        self.notifier.emit("region_degraded" if change == DEGRADED else "region_recovered", rt.id,
                           detail=f"{change}: {rt.degrade.stats_at_change.describe()} over the last {cfg.window:g}s")

    # -- events from the data plane and the prober -----------------------------
    def breaker_changed(self, rt: RegionRuntime, new_state: str | None) -> None:
        if new_state is not None:
            level = logging.WARNING if new_state == OPEN else logging.INFO
            b = rt.breaker
            if new_state == OPEN:
                log.log(level, "breaker %s: open for %gs: %s", rt.id, b.open_for, b.why)
            else:
                log.log(level, "breaker %s: %s: %s", rt.id, new_state, b.why)
            if new_state != "half-open":
                self.notifier.emit("breaker_open" if new_state == OPEN else "breaker_closed", rt.id,
                                   detail=b.why)
            self.publish()

    def may_eject(self) -> bool:
        """Envoy's max_ejection_percent: breakers never hold more than that share
        of the regions open or half-open (at least one region, unless 0 %)."""
        pct = self.config.breaker.max_ejected_percent
        cap = max(1, len(self.regions) * pct // 100) if pct else 0
        ejected = sum(1 for rt in self.regions.values() if rt.breaker.ejected)
        allowed = ejected < cap
        if not allowed and not self._cap_hit:
            log.warning("ejection cap: %d of %d regions already held out by breakers "
                        "(breaker.max_ejected_percent = %d); keeping the next one in",
                        ejected, len(self.regions), pct)
        self._cap_hit = not allowed
        return allowed

    def breaker_panic(self, rid: str) -> RegionRuntime:
        """A request goes to a breaker-open region (see panic_pick): counted,
        and logged once per episode."""
        self.metrics.breaker_panic.inc()
        if rid not in self._panicked:
            self._panicked.add(rid)
            log.error("breaker panic: every candidate's breaker is open; sending to %s anyway", rid)
            self.notifier.emit("breaker_panic", rid)
        return self.regions[rid]

    def record_probe(self, rt: RegionRuntime, ok: bool, latency: float | None) -> None:
        if self.probe_results is not None:
            self.probe_results({"region": rt.id, "ok": ok})
        now = self.clock.now()
        if latency is not None and ok:
            rt.latency.update(latency, now)
        was = rt.health.healthy
        held = rt.health.held_until
        changed = rt.health.record(ok, now)
        if rt.health.held_until != held and rt.health.held_until > now:
            log.warning("region %s flapped: %d health changes within %gs (limit %d); held down for %gs",
                        rt.id, rt.health.held_flaps, self.config.probe.flap_window,
                        self.config.probe.flap_limit, self.config.probe.flap_hold)
        if changed:
            # Lost is worth a warning; found (at start-up, or back) is news.
            if rt.health.healthy:
                log.info("region %s is now healthy%s", rt.id, " again" if was is False else "")
            else:
                log.warning("region %s is now UNHEALTHY (%d probes failed in a row)", rt.id, rt.health.fall)
            if was is not None or not rt.health.healthy:  # not the first "healthy" at startup
                self.notifier.emit("region_healthy" if rt.health.healthy else "region_unhealthy", rt.id)
            if was is False and rt.health.healthy:
                # Back after being down: let trial requests through at once
                # rather than keep it out for the rest of open_for.
                if rt.breaker.probe_recovered(self.clock.now()) is not None:
                    log.info("breaker %s: half-open (the prober saw it recover)", rt.id)
            self.publish()

    def record_latency(self, rt: RegionRuntime, seconds: float, confirming: bool = False) -> None:
        """A latency probe's timing. A probe sent to confirm a slow live answer
        counts only if it is slow too: a fast health URL must not break the
        run of slow answers that confirms a slowdown."""
        if self.probe_results is not None:
            self.probe_results({"region": rt.id, "latency": seconds, "confirming": confirming})
        before = rt.latency.value
        if confirming and before is not None and seconds < 2.0 * before:
            return
        self._latency_sample(rt, seconds, self.clock.now())

    def record_outcome(self, rt: RegionRuntime, seconds: float, status: int) -> None:
        """A live request's result: `status` 0 when no answer came (timeout,
        reset). Answers below 500 feed the smoothed latency; all feed the
        degrade window."""
        now = self.clock.now()
        failed = status == 0 or status >= 500
        rt.degrade.record(now, seconds if status else None, failed)
        if not failed:
            self._latency_sample(rt, seconds, now)

    def _latency_sample(self, rt: RegionRuntime, seconds: float, now: float) -> None:
        before = rt.latency.value
        after = rt.latency.update(seconds, now)
        if before is None or after >= 2.0 * before:
            # A first measurement or a confirmed slowdown (x2 at least) can reorder
            # everything: publish now, not at the next tick.
            self.publish()
        elif seconds >= 2.0 * before and self.latency_check is not None:
            # One slow sample is not believed alone: have the prober measure now
            # rather than wait for the next live request or latency_interval.
            self.latency_check(rt)

    def next_seq(self) -> int:
        """Number the next request (RequestFacts.seq)."""
        self.seq = seq = self.seq + 1
        return seq

    # -- operator decisions -----------------------------------------------------
    def set_strategy(self, name: str) -> None:
        if name not in REGISTRY:
            raise KeyError(name)
        self.decisions.set_strategy(name)
        self.publish()

    def drain(self, region: str, over: float) -> None:
        self.decisions.drain(region, self._wall(), over)
        self.publish()

    def disable(self, region: str) -> None:
        self.decisions.disable(region)
        self.publish()

    def enable(self, region: str) -> None:
        self.decisions.enable(region)
        self.publish()

    @property
    def any_available(self) -> bool:
        now = self.clock.now()
        return any(
            rt.admit > 0 and not rt.health_excluded and rt.breaker.state(now) != OPEN
            for rt in self.regions.values()
        )

    def state_json(self) -> dict:
        """GET /admin/state, shaped as SPEC fixes it (plus a few extra fields)."""
        snap = self.snapshot
        now = self.clock.now()
        regions = []
        for v in snap.regions:
            rt = self.regions[v.id]
            regions.append(
                {
                    "id": v.id,
                    "healthy": rt.health.healthy,
                    "breaker": rt.breaker.state(now),
                    "latency_ms": None if rt.latency.value is None else round(rt.latency.value * 1000.0, 3),
                    "error_rate": round(rt.breaker.error_rate(now), 4),
                    "weight": float(v.weight),
                    "effective_weight": round(rt.effective_weight, 4),
                    "disabled": rt.disabled,
                    "draining": rt.draining,
                    "in_flight": rt.in_flight,
                    "role": rt.config.role,
                    **self.steering_json(rt, now),
                    "failover": list(rt.config.failover),
                    "connections": None if rt.pool is None else {
                        "open": rt.pool.open_connections,
                        "idle": rt.pool.idle_connections,
                        "opened_total": rt.pool.connects,
                    },
                }
            )
        return {
            "strategy": self.strategy,
            "version": snap.version,
            "panic": self.panic,
            "process": {"pid": os.getpid(), "requests": sum(self.metrics.request_counts.values())},
            "default_region": snap.default_region,
            "regions": regions,
        }

    def steering_json(self, rt: RegionRuntime, now: float) -> dict:
        """Degrade verdict and window, slow start, flap hold: /admin/state fields."""
        st = rt.degrade.stats(now)
        return {
            "degraded": rt.degrade.degraded,
            "degrade_window": {
                "requests": st.requests, "error_rate": round(st.error_rate, 4),
                "p95_ms": None if st.p95 is None else round(st.p95 * 1000.0, 1),
            },
            "slow_start": round(rt.ramp, 4) if rt.ramp < 1.0 else None,
            "held_down_for": round(rt.health.held_until - now, 3) if rt.health.held(now) else None,
        }


__all__ = ["RegionRuntime", "RegionStore", "CLOSED"]
