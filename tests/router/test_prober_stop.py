"""Prober.stop() ends every probe loop, whenever it comes: a reload (SIGHUP,
POST /admin/reload) and shutdown await it. No network: probe_once is replaced."""
from __future__ import annotations

import asyncio

import pytest

from router.clock import FakeClock
from router.config import default_config
from router.metrics import Metrics
from router.prober import Prober
from router.state import RegionStore
from router.store import MemoryDecisionStore


@pytest.mark.parametrize("steps", range(6))
def test_stop_right_after_a_latency_wake_up_ends_the_loop(steps):
    # A slow live answer wakes the latency loop (measure_now) just as a reload
    # stops the prober. asyncio.wait_for of Python 3.11 returns the inner result
    # instead of raising when the cancel lands once the event has fired, and the
    # loop would go on forever: the reload never answered.
    async def run() -> None:
        config = default_config()
        store = RegionStore(config, MemoryDecisionStore(config.strategy),
                            Metrics(tuple(r.id for r in config.regions)), FakeClock(), lambda: 1_700_000_000.0)
        prober = Prober(config, store)

        async def probe_once(rt):
            return True, 0.01, ""

        prober.probe_once = probe_once
        rt = next(iter(store.regions.values()))
        prober._measure_now[rt.id] = asyncio.Event()
        task = asyncio.create_task(prober._latency_loop(rt))
        for _ in range(3):  # the loop is waiting for latency_interval or a wake-up
            await asyncio.sleep(0)
        prober.measure_now(rt)
        for _ in range(steps):  # the cancel lands at each point of the wake-up
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2.0)
        assert done, "the latency loop ignored its cancellation"

    asyncio.run(run())
