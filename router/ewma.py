"""Smoothed latency: a peak-sensitive, time-decayed moving average."""
from __future__ import annotations

from math import exp


class PeakEwma:
    """Smoothed latency that believes a big slowdown at once (after Finagle's
    peak EWMA).

    A jump to at least `jump` times the current value, confirmed by two samples
    in a row, is taken as is (the lower of the two): a region that slows from
    10 ms to 200 ms shows it after its second slow answer, while one stray slow
    sample moves it only a little. Anything else decays towards each sample
    with a weight that grows with the time since the previous one (time
    constant `decay` seconds): a busy region averages over about `decay`
    seconds, a rarely sampled one follows its latest sample. Smaller rises are
    averaged too, so that jitter does not bias a busy region upwards.
    """

    __slots__ = ("decay", "jump", "value", "_at", "_last")

    def __init__(self, decay: float = 10.0, jump: float = 2.0):
        if decay <= 0:
            raise ValueError("decay must be > 0")
        self.decay = decay
        self.jump = jump
        self.value: float | None = None
        self._at = 0.0  # time of the previous sample
        self._last: float | None = None  # the previous sample

    def update(self, sample: float, now: float) -> float:
        prev, last = self.value, self._last
        self._last = sample
        dt = now - self._at
        self._at = now
        if prev is None:
            value = sample
        elif last is not None and sample >= self.jump * prev and last >= self.jump * prev:
            value = sample if sample < last else last  # the confirmed jump
        else:
            value = sample + (prev - sample) * exp(-dt / self.decay) if dt > 0 else prev
        self.value = value
        return value
