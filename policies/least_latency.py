"""least-latency: the fastest usable region, with hysteresis against flapping.

The leader is replaced only when some usable region beats it by both a relative
and an absolute margin, continuously for `dwell` seconds (measured with
`snapshot.now`), or at once when the leader becomes unusable. The dwell check runs
in `prepare`, so it relies on the data plane republishing snapshots periodically
(about every second) even when nothing else changed; otherwise a switch waits for
the next published snapshot.
"""
from __future__ import annotations

from .model import OPEN, RegionSnapshot, RegionView, RequestFacts


def usable(r: RegionView) -> bool:
    """Could take traffic now, as far as the snapshot knows."""
    return r.healthy is not False and r.breaker != OPEN and not r.disabled and r.effective_weight > 0


class LeastLatencyRanker:
    """One precomputed order plus the hysteresis state carried to the next snapshot."""

    __slots__ = ("order", "leader", "beaten_since")

    def __init__(self, order: tuple[str, ...], leader: str | None, beaten_since: float | None):
        self.order = order
        self.leader = leader
        self.beaten_since = beaten_since  # when the leader first lost by both margins

    def rank(self, facts: RequestFacts) -> tuple[str, ...]:
        return self.order


class LeastLatencyPolicy:
    name = "least-latency"

    def __init__(self, *, relative_margin: float = 0.2, absolute_margin_ms: float = 5.0,
                 dwell: float = 10.0):
        self.relative_margin = relative_margin
        self.absolute_margin_ms = absolute_margin_ms
        self.dwell = dwell

    def _beats(self, challenger: float, leader: float) -> bool:
        gain = leader - challenger
        return gain >= self.absolute_margin_ms and gain >= self.relative_margin * leader

    def prepare(self, snapshot: RegionSnapshot, previous: object | None) -> LeastLatencyRanker:
        index = {r.id: i for i, r in enumerate(snapshot.regions)}

        def key(r: RegionView) -> tuple:
            # Usable before unusable, measured before unmeasured, fastest, config order.
            return (not usable(r), r.latency_ms is None, r.latency_ms or 0.0, index[r.id])

        ranked = sorted(snapshot.regions, key=key)
        best = ranked[0] if ranked and usable(ranked[0]) else None

        prev_leader, beaten_since = None, None
        if isinstance(previous, LeastLatencyRanker):
            prev_leader, beaten_since = previous.leader, previous.beaten_since
        current = snapshot.get(prev_leader) if prev_leader is not None else None

        if best is None:
            leader, beaten_since = None, None  # nothing usable: plain latency order
        elif current is None or not usable(current) or current.latency_ms is None:
            # No leader, leader gone or unusable, or leader never measured: no
            # reason to wait.
            leader, beaten_since = best.id, None
        elif best.id != current.id and best.latency_ms is not None \
                and self._beats(best.latency_ms, current.latency_ms):
            if beaten_since is None:
                beaten_since = snapshot.now
            if snapshot.now - beaten_since >= self.dwell:
                leader, beaten_since = best.id, None
            else:
                leader = current.id
        else:
            leader, beaten_since = current.id, None

        rest = tuple(r.id for r in ranked if r.id != leader)
        order = (leader, *rest) if leader is not None else rest
        return LeastLatencyRanker(order, leader, beaten_since)
