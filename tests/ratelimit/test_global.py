"""Global mode against a real redis-server: replicas share one quota; Redis
stopped -> each replica keeps its share locally; Redis back -> global again."""
from __future__ import annotations

import asyncio
import time

import pytest

from router.config import RateLimitConfig, RateLimitRule, StateConfig
from router.ratelimit import RateLimiter

pytestmark = pytest.mark.timeout(90)


def make(url: str, rate: float, burst: int, interval: float = 0.1, replicas: int = 1, **tls) -> RateLimiter:
    rule = RateLimitRule(name="ip", key="client_ip", rate=rate, burst=burst, rate_text=f"{rate:g}/s")
    cfg = RateLimitConfig(backend="redis", rules=(rule,), sync_interval=interval, replicas=replicas)
    return RateLimiter(cfg, time.monotonic, state=StateConfig(backend="redis", url=url, key_prefix="t:", **tls))


async def wait_for(cond, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_two_replicas_share_one_quota(redis_server):
    rate, burst, interval, window = 40.0, 10, 0.1, 4.0

    async def main() -> tuple[int, list[int], float]:
        a, b = make(redis_server.url, rate, burst, interval), make(redis_server.url, rate, burst, interval)
        await a.start()
        await b.start()
        try:
            await wait_for(lambda: a.sync.replicas == 2 and b.sync.replicas == 2)
            allowed = [0, 0]
            t0 = time.monotonic()
            while time.monotonic() - t0 < window:
                for i, rl in enumerate((a, b)):
                    for _ in range(3):  # each replica offered far more than the rate
                        if rl.check("GET", b"/", [], "203.0.113.7", None).__class__ is bytes:
                            allowed[i] += 1
                await asyncio.sleep(0.002)
            elapsed = time.monotonic() - t0
            await a.stop()  # a replica that stops leaves the fleet at once
            await wait_for(lambda: b.sync.replicas == 1)
            return sum(allowed), allowed, elapsed
        finally:
            await a.stop()
            await b.stop()

    total, each, elapsed = asyncio.run(main())
    # global_sync.py's bound, N = 2, d = one interval + a round trip (generous on a loaded machine)
    d = interval + 0.2
    bound = rate * elapsed + burst + (2 - 1) * (burst + rate * d)
    print(f"allowed {each} = {total} in {elapsed:.2f}s; bound {bound:.0f}; independent replicas would allow"
          f" about {2 * (rate * elapsed + burst):.0f}")
    assert total <= bound
    assert total >= 0.8 * rate * elapsed  # the shared quota is used, not starved
    assert min(each) > 0.2 * total  # both replicas take part


def test_redis_down_falls_back_to_a_share_then_recovers(redis_server, caplog):
    async def main() -> None:
        a, b = make(redis_server.url, 10.0, 4), make(redis_server.url, 10.0, 4)
        await a.start()
        await b.start()
        try:
            await wait_for(lambda: a.sync.replicas == 2 and a.sync.up is True)
            redis_server.stop()
            await wait_for(lambda: a.sync.up is False)
            st = a.state_json()
            assert st["redis"]["up"] is False and st["redis"]["mode"].startswith("local fallback")
            assert st["redis"]["error"]
            assert st["rules"][0]["share"] == 2
            rule = a.rules[0]
            assert (rule.bucket.rate, rule.bucket.burst) == (5.0, 2)  # half of 10/s, burst 4
            # the hot path never waits on Redis: local decisions at once
            t0 = time.monotonic()
            got = [a.check("GET", b"/", [], "198.51.100.1", None).__class__ is bytes for _ in range(10)]
            assert time.monotonic() - t0 < 0.05
            assert got.count(True) == 2
            redis_server.start()  # same port
            await wait_for(lambda: a.sync.up is True)
            assert a.rules[0].share == 1 and a.state_json()["redis"]["mode"] == "global"
        finally:
            await a.stop()
            await b.stop()

    with caplog.at_level("WARNING", logger="edge_router.ratelimit"):
        asyncio.run(main())
    text = caplog.text
    assert "falling back to local limits" in text and "1/2 of each rule's rate" in text
    assert "is back" in text


def test_reload_switches_backend(redis_server):
    async def main() -> None:
        rl = make(redis_server.url, 10.0, 4)
        await rl.start()
        try:
            await wait_for(lambda: rl.sync.up is True)
            local = RateLimitConfig(rules=rl.config.rules)
            rl.reconfigure(local)
            assert rl.sync is None and rl.rules[0].pending is None
            rl.reconfigure(RateLimitConfig(backend="redis", rules=rl.config.rules, sync_interval=0.1))
            await wait_for(lambda: rl.sync is not None and rl.sync.up is True)
        finally:
            await rl.stop()

    asyncio.run(main())


def test_rediss_with_client_certificates(redis_tls):
    server, files = redis_tls

    async def main() -> None:
        good = make(server.url, 10.0, 4, tls_ca=files["ca.pem"], tls_cert=files["client.crt"],
                    tls_key=files["client.key"])
        anonymous = make(server.url, 10.0, 4, tls_ca=files["ca.pem"])  # no client certificate
        await good.start()
        await anonymous.start()
        try:
            await wait_for(lambda: good.sync.up is True and anonymous.sync.up is False)
            assert good.sync.replicas == 1  # the refused one never joined
            assert good.state_json()["redis"]["redis"] == f"127.0.0.1:{server.port}/0"
        finally:
            await good.stop()
            await anonymous.stop()

    asyncio.run(main())


def test_the_url_may_come_from_the_environment(redis_server, monkeypatch):
    """As for the decision store: EDGE_ROUTER_STATE_URL (a password kept out of the file) wins."""
    monkeypatch.setenv("EDGE_ROUTER_STATE_URL", redis_server.url)

    async def main() -> None:
        rl = make("redis://127.0.0.1:1/0", 10.0, 4)  # nothing listens there
        await rl.start()
        try:
            await wait_for(lambda: rl.sync.up is True)
            assert rl.state_json()["redis"]["redis"] == f"127.0.0.1:{redis_server.port}/0"
        finally:
            await rl.stop()

    asyncio.run(main())
