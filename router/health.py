"""Probe verdict with rise/fall hysteresis (HAProxy style), flap damping and
probe cadence.

Start-up choice: `healthy` is None (unknown) until the first verdict. One success
makes it healthy at once (a fresh router should not wait `rise` probes before
using a region that answers); failures take `fall` consecutive results, as from
healthy, so a single lost probe at start-up does not take a region out. While
unknown the data plane does not filter the region and the prober uses the fast
interval, so a dead region is found within `fall` fast probes (and its breaker
usually opens sooner).

Flap damping (after BGP route-flap damping, simplified): a region whose verdict
changed more than `flap_limit` times within `flap_window` is held down for
`flap_hold` when it next recovers; it comes back at the first probe after the
hold that still finds it up (`rise` passes in a row). `flap_limit` 0 = off.
"""
from __future__ import annotations

from collections import deque

from .config import ProbeConfig


class HealthState:
    __slots__ = ("fall", "rise", "healthy", "_fails", "_oks", "flap_limit", "flap_window",
                 "flap_hold", "changes", "held_until", "held_flaps")

    def __init__(self, fall: int, rise: int, *, flap_limit: int = 0, flap_window: float = 0.0,
                 flap_hold: float = 0.0):
        self.fall = max(1, fall)
        self.rise = max(1, rise)
        self.healthy: bool | None = None
        self._fails = 0  # consecutive failures
        self._oks = 0  # consecutive successes
        self.flap_limit = flap_limit
        self.flap_window = flap_window
        self.flap_hold = flap_hold
        self.changes: deque[float] = deque()  # times of verdict changes (not the first verdict)
        self.held_until = 0.0  # while now < held_until a recovery is not reported
        self.held_flaps = 0  # verdict changes counted when the current/last hold began

    @classmethod
    def from_config(cls, probe: ProbeConfig) -> "HealthState":
        return cls(probe.fall, probe.rise, flap_limit=probe.flap_limit,
                   flap_window=probe.flap_window, flap_hold=probe.flap_hold)

    def record(self, ok: bool, now: float = 0.0) -> bool:
        """Count one probe result; True if the verdict changed."""
        if ok:
            self._oks += 1
            self._fails = 0
            flip = self.healthy is None or (self.healthy is False and self._oks >= self.rise)
            if flip and self.healthy is False and self._held(now):
                flip = False
            new = True
        else:
            self._fails += 1
            self._oks = 0
            flip = self.healthy is not False and self._fails >= self.fall
            new = False
        if flip:
            if self.healthy is not None:
                self.changes.append(now)
            self.healthy = new
        return flip

    def flaps(self, now: float) -> int:
        """Verdict changes within the flap window up to `now`."""
        changes = self.changes
        while changes and changes[0] <= now - self.flap_window:
            changes.popleft()
        return len(changes)

    def held(self, now: float) -> bool:
        """Is a recovery being held back now?"""
        return self.healthy is False and now < self.held_until

    def _held(self, now: float) -> bool:
        """A recovery is due: hold it back if the region flapped (starts a hold)."""
        if self.held_until:
            if now < self.held_until:
                return True
            # The hold is served: the region comes back with a clean record.
            self.held_until = 0.0
            self.changes.clear()
            return False
        n = self.flaps(now)
        if self.flap_limit > 0 and self.flap_hold > 0 and n > self.flap_limit:
            self.held_until = now + self.flap_hold
            self.held_flaps = n
            return True
        return False

    @property
    def transitioning(self) -> bool:
        """Some results already point away from the current verdict."""
        if self.healthy is None:
            return True
        return self._fails > 0 if self.healthy else self._oks > 0

    def next_delay(self, probe: ProbeConfig, rnd: float) -> float:
        """Seconds until the next probe; `rnd` in [0, 1) from the injected RNG."""
        if self.transitioning:
            base = probe.fast_interval
        elif self.healthy:
            base = probe.interval
        else:
            base = probe.down_interval
        # Spread probes of many routers/regions: base * (1 +- jitter).
        return max(0.0, base * (1.0 + probe.jitter * (2.0 * rnd - 1.0)))
