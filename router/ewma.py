"""Exponentially weighted moving average, for smoothed latency."""
from __future__ import annotations


class Ewma:
    """`Ewma(alpha=0.3)` or `Ewma(half_life=5)` (in samples: a sample's weight
    halves after that many newer ones). The first sample is taken as is."""

    __slots__ = ("alpha", "value")

    def __init__(self, alpha: float | None = None, *, half_life: float | None = None):
        if (alpha is None) == (half_life is None):
            raise ValueError("give exactly one of alpha or half_life")
        if half_life is not None:
            if half_life <= 0:
                raise ValueError("half_life must be > 0")
            alpha = 1.0 - 0.5 ** (1.0 / half_life)
        assert alpha is not None  # one of the two was given
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha: float = alpha
        self.value: float | None = None

    def update(self, value: float) -> float:
        prev = self.value
        new = value if prev is None else prev + self.alpha * (value - prev)
        self.value = new
        return new
