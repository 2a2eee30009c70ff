"""least-latency: the fastest usable region, with hysteresis against flapping.

The leader is replaced
- at once when it becomes unusable or degraded (and something better exists);
- at once when a challenger beats it by a large factor: the leader is at least
  `takeover_factor` times slower and `takeover_margin` slower in absolute terms
  (a 10 ms region slowing to 200 ms is not a close call);
- otherwise only when a challenger beats it by both `relative_margin` and
  `absolute_margin`, continuously for `dwell` seconds (measured with
  `snapshot.now`). Smaller margins never move traffic: 40 ms vs 44 ms stays put.

The checks run in `prepare`, so they rely on the data plane republishing
snapshots periodically (about every half second) even when nothing else changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import Policy, Prepared
from .model import RegionSnapshot, RegionView, RequestFacts, tier

DURATION = {"unit": "duration"}


@dataclass(frozen=True, slots=True)
class LeastLatencySettings:
    """[least_latency]; durations in seconds."""

    dwell: float = field(default=10.0, metadata=DURATION)  # a small win must last this long ...
    relative_margin: float = 0.2  # ... by this share of the leader's latency ...
    absolute_margin: float = field(default=0.005, metadata=DURATION)  # ... and this much
    takeover_factor: float = field(default=2.0, metadata={"min": 1.0})  # a big win moves at once:
    takeover_margin: float = field(default=0.05, metadata=DURATION)  # this many times and this much


class LeastLatencyRanker(Prepared):
    """One precomputed order plus the hysteresis state carried to the next snapshot."""

    __slots__ = ("order", "leader", "beaten_since", "why", "latencies")

    def __init__(self, order: tuple[str, ...], leader: str | None, beaten_since: float | None,
                 why: str, latencies: dict[str, float | None]):
        self.order = order
        self.leader = leader
        self.beaten_since = beaten_since  # when the leader first lost by both margins
        self.why = why
        self.latencies = latencies  # what was compared, ms

    def rank(self, facts: RequestFacts) -> tuple[str, ...]:
        return self.order

    def explain(self, facts: RequestFacts) -> dict[str, Any]:
        return {"leader": self.leader, "latencies_ms": self.latencies, "why": self.why}


def _ms(v: float | None) -> str:
    return "unmeasured" if v is None else f"{v:.1f} ms"


class LeastLatencyPolicy(Policy):
    name = "least-latency"
    Settings = LeastLatencySettings

    def prepare(self, snapshot: RegionSnapshot, previous: object | None) -> LeastLatencyRanker:
        s: LeastLatencySettings = self.settings
        index = {r.id: i for i, r in enumerate(snapshot.regions)}

        def key(r: RegionView) -> tuple:
            # Usable before degraded before unusable, measured before unmeasured,
            # fastest, config order.
            return (tier(r), r.latency_ms is None, r.latency_ms or 0.0, index[r.id])

        ranked = sorted(snapshot.regions, key=key)
        latencies = {r.id: None if r.latency_ms is None else round(r.latency_ms, 3) for r in ranked}
        best = ranked[0] if ranked and tier(ranked[0]) < 2 else None

        prev_leader, beaten_since = None, None
        if isinstance(previous, LeastLatencyRanker):
            prev_leader, beaten_since = previous.leader, previous.beaten_since
        current = snapshot.get(prev_leader) if prev_leader is not None else None

        if best is None:
            leader, beaten_since = None, None
            why = "no usable region: plain latency order"
        elif current is None or tier(current) > tier(best) or current.latency_ms is None:
            leader, beaten_since = best.id, None
            why = (f"{best.id} is the fastest ({_ms(best.latency_ms)})" if current is None
                   else f"{best.id} ({_ms(best.latency_ms)}) replaces {current.id}, which is "
                        + ("unmeasured" if current.latency_ms is None and tier(current) == tier(best)
                           else "degraded" if tier(current) == 1 else "not usable"))
        elif best.id == current.id or best.latency_ms is None:
            leader, beaten_since = current.id, None
            why = f"{current.id} is the fastest ({_ms(current.latency_ms)})"
        else:
            lead, chal = current.latency_ms, best.latency_ms
            gain_s = (lead - chal) / 1000.0
            if lead >= s.takeover_factor * chal and gain_s >= s.takeover_margin:
                leader, beaten_since = best.id, None
                why = (f"{best.id} ({_ms(chal)}) took over at once from {current.id} ({_ms(lead)}):"
                       f" at least {s.takeover_factor:g}x and {s.takeover_margin * 1000:g} ms faster")
            elif gain_s >= s.absolute_margin and lead - chal >= s.relative_margin * lead:
                if beaten_since is None:
                    beaten_since = snapshot.now
                waited = snapshot.now - beaten_since
                if waited >= s.dwell:
                    leader, beaten_since = best.id, None
                    why = (f"{best.id} ({_ms(chal)}) beat {current.id} ({_ms(lead)}) by the margins"
                           f" for {s.dwell:g} s")
                else:
                    leader = current.id
                    why = (f"{current.id} ({_ms(lead)}) stays leader: {best.id} ({_ms(chal)}) has beaten"
                           f" it for {waited:.1f} of {s.dwell:g} s")
            else:
                leader, beaten_since = current.id, None
                why = (f"{current.id} ({_ms(lead)}) stays leader: {best.id} ({_ms(chal)}) is within"
                       f" the margins ({s.relative_margin:.0%} and {s.absolute_margin * 1000:g} ms)")

        rest = tuple(r.id for r in ranked if r.id != leader)
        order = (leader, *rest) if leader is not None else rest
        return LeastLatencyRanker(order, leader, beaten_since, why, latencies)
