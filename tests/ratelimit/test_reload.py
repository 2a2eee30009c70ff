"""Config reload reaches the hot path: Router.apply_rate_limit (the hook SIGHUP and
POST /admin/reload call) turns rules on and off in a running router."""
from __future__ import annotations

import asyncio
import tomllib
from dataclasses import replace

from router.config import Address, parse_config
from router.defaults import SEED_TOML
from router.server import Router

RULE = '\n[[rate_limit.rules]]\nkey = "client_ip"\nrate = "1/s"\nburst = 1\n'


def config(extra: str = ""):
    cfg = parse_config(tomllib.loads(SEED_TOML + extra))
    local = Address("127.0.0.1", 0)
    return replace(cfg, listen=replace(cfg.listen, address=local), admin=replace(cfg.admin, address=local),
                   regions=tuple(replace(r, api="http://127.0.0.1:9", health="http://127.0.0.1:9/h")
                                 for r in cfg.regions))


def test_reload_turns_rules_on_and_off():
    async def main() -> None:
        router = Router(config(), None)
        await router.start()
        try:
            assert router.proxy.rate_limiter is None  # no rules: the hot path skips the limiter
            router.apply_rate_limit(config(RULE))
            assert router.proxy.rate_limiter is router.rate_limiter
            assert [r.name for r in router.rate_limiter.rules] == ["client_ip"]
            router.apply_rate_limit(config())
            assert router.proxy.rate_limiter is None
        finally:
            await router.shutdown()

    asyncio.run(main())
