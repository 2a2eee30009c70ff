"""Router.reload without the network: validation, the swap, reload hooks."""
from __future__ import annotations

import asyncio
import dataclasses

from router.config import ConfigError, default_config
from router.server import Router


def test_reload_runs_hooks_and_reports_problems():
    base = default_config()
    faster = dataclasses.replace(base, probe=dataclasses.replace(base.probe, interval=7.0))
    sources = [faster, ConfigError(["probe.interval: bad duration 'x'"]), faster]

    def source():
        item = sources.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def run():
        router = Router(base, None, reload_source=source)
        router.probing = False  # no probes to the seed's real regions from a unit test
        seen = []
        router.reload_hooks.append(seen.append)
        result = await router.reload()
        assert result["ok"] and result["changed"] == ["probe"] and seen == [router.config]
        assert router.config.probe.interval == 7.0 and router.prober.config.probe.interval == 7.0
        assert router.metrics.config_reload_success._value.get() == 1
        result = await router.reload()
        assert result == {"ok": False, "problems": ["probe.interval: bad duration 'x'"]}
        assert router.config.probe.interval == 7.0 and len(seen) == 1  # the running config is kept
        assert router.metrics.config_reload_success._value.get() == 0

        def broken(config):
            raise RuntimeError("rules do not compile")

        router.reload_hooks.append(broken)
        result = await router.reload()
        assert not result["ok"] and "rules do not compile" in result["problems"][0] and len(seen) == 2
        assert router.metrics.config_reload_success._value.get() == 0
        for rt in router.store.regions.values():
            rt.pool.close()

    asyncio.run(run())
