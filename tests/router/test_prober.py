"""The prober stops when told, whatever its probe tasks are doing (a config
reload stops and restarts it; a hang there hangs the reload)."""
from __future__ import annotations

import asyncio
from dataclasses import replace

from router.clock import FakeClock
from router.config import default_config
from router.metrics import Metrics
from router.prober import Prober
from router.state import RegionStore
from router.store import MemoryDecisionStore


def test_stop_returns_when_a_latency_probe_is_woken_as_it_is_cancelled():
    async def main():
        base = default_config()
        regions = tuple(replace(r, api="http://127.0.0.1:9", health="http://127.0.0.1:9/h") for r in base.regions)
        config = replace(base, regions=regions)
        store = RegionStore(config, MemoryDecisionStore(config.strategy), Metrics(tuple(r.id for r in regions)),
                            FakeClock(1000.0))
        for attempt in range(20):
            prober = Prober(config, store)

            async def probe_once(rt):  # answers at once: the loops spin on the event
                return True, 0.001, ""
            prober.probe_once = probe_once
            await prober.start()
            for _ in range(attempt % 4):
                await asyncio.sleep(0)
            for rt in store.regions.values():
                prober.measure_now(rt)  # woken in the same turn as stop() cancels
            await asyncio.wait_for(prober.stop(), 10)
            assert prober._tasks == []
    asyncio.run(main())
