"""Stopping global mode (shutdown, a reload that changes [rate_limit]) ends the
sync loop whenever the stop lands, against a real redis-server."""
from __future__ import annotations

import asyncio
import time

import pytest

from router.config import RateLimitConfig, RateLimitRule, StateConfig
from router.ratelimit import RateLimiter

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("steps", range(4))
def test_stop_just_after_a_sync_answer_ends_the_loop(redis_server, steps):
    # Python 3.11's asyncio.wait_for returns the inner result instead of raising
    # when a cancel lands once the inner call has finished: the loop would go on
    # syncing (and reconnecting to Redis) after stop().
    async def main() -> None:
        rule = RateLimitRule(name="ip", key="client_ip", rate=10.0, burst=10, rate_text="10/s")
        cfg = RateLimitConfig(backend="redis", rules=(rule,), sync_interval=0.05, replicas=1)
        rl = RateLimiter(cfg, time.monotonic, state=StateConfig(backend="redis", url=redis_server.url, key_prefix="s:"))
        await rl.start()
        sync = rl.sync
        real = sync.script
        answered = asyncio.Event()

        async def script(*args, **kwargs):  # the real call, and a flag once Redis answered
            result = await real(*args, **kwargs)
            answered.set()
            return result

        sync.script = script
        task = sync._task
        deadline = time.monotonic() + 10
        while not answered.is_set():  # step by step, to stop right after an answer
            assert time.monotonic() < deadline, "no sync round within 10 s"
            await asyncio.sleep(0)
        for _ in range(steps):
            await asyncio.sleep(0)
        await rl.stop()
        done, _ = await asyncio.wait([task], timeout=2.0)
        assert done, "the sync loop ignored its cancellation"

    asyncio.run(main())
