"""The clock, injected: logic takes `now` from here, tests drive FakeClock."""
from __future__ import annotations

import time


class Clock:
    __slots__ = ()

    # The C function itself: now() is called several times per request.
    now = staticmethod(time.monotonic)


class FakeClock(Clock):
    __slots__ = ("t",)

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
