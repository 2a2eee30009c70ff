"""Probe verdict with rise/fall hysteresis (HAProxy style) and probe cadence.

Start-up choice: `healthy` is None (unknown) until the first verdict. One success
makes it healthy at once (a fresh router should not wait `rise` probes before
using a region that answers); failures take `fall` consecutive results, as from
healthy, so a single lost probe at start-up does not take a region out. While
unknown the data plane does not filter the region and the prober uses the fast
interval, so a dead region is found within `fall` fast probes (and its breaker
usually opens sooner).
"""
from __future__ import annotations

from .config import ProbeConfig


class HealthState:
    __slots__ = ("fall", "rise", "healthy", "_fails", "_oks")

    def __init__(self, fall: int, rise: int):
        self.fall = max(1, fall)
        self.rise = max(1, rise)
        self.healthy: bool | None = None
        self._fails = 0  # consecutive failures
        self._oks = 0  # consecutive successes

    def record(self, ok: bool) -> bool:
        """Count one probe result; True if the verdict changed."""
        if ok:
            self._oks += 1
            self._fails = 0
            flip = self.healthy is None or (self.healthy is False and self._oks >= self.rise)
            new = True
        else:
            self._fails += 1
            self._oks = 0
            flip = self.healthy is not False and self._fails >= self.fall
            new = False
        if flip:
            self.healthy = new
        return flip

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
