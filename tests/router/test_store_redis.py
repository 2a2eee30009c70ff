"""The Redis backend against a real redis-server: ordering of concurrent
commits, the guard rail inside the transaction, repair after data loss."""
from __future__ import annotations

import asyncio

import pytest
import redis

from bench.redisproc import RedisServer
from router.config import StateConfig
from router.store import Conflict, DecisionBook, Mutation, RedisDecisionStore
from router.store.model import decode, encode

REGIONS = ("a", "b", "c")


@pytest.fixture
def server():
    s = RedisServer().start()
    yield s
    s.close()


def _book(server: RedisServer, name: str) -> DecisionBook:
    cfg = StateConfig(backend="redis", url=server.url, key_prefix="u:")
    return DecisionBook(RedisDecisionStore(cfg, server.url, "geographic", name), lambda: REGIONS, name)


def test_concurrent_commits_are_ordered_and_the_guard_sees_the_latest(server):
    async def run():
        a, b = _book(server, "A"), _book(server, "B")
        await a.start()
        await b.start()
        await a.mutate(Mutation("disable", "a"))
        # Each alone would be allowed; together they would leave nothing enabled.
        results = await asyncio.gather(a.mutate(Mutation("disable", "b")), b.mutate(Mutation("disable", "c")),
                                       return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["Conflict", "Decisions"], results
        stored = decode(redis.Redis.from_url(server.url).get("u:decisions"))
        assert stored.version == 2 and len(stored.disabled) == 2
        # Both replicas converge on the stored document (pub/sub), whoever committed.
        for _ in range(100):
            if a.shared == stored and b.shared == stored:
                break
            await asyncio.sleep(0.01)
        assert a.shared == stored and b.shared == stored
        # Many writers at once: every commit lands, each exactly one version up.
        await asyncio.gather(*(book.mutate(Mutation("weight", "c", weight=float(i)))
                               for i, book in enumerate([a, b] * 5)))
        assert decode(redis.Redis.from_url(server.url).get("u:decisions")).version == 12
        await a.close()
        await b.close()
    asyncio.run(run())


def test_redis_that_lost_data_gets_the_newest_decisions_back(server):
    async def run():
        a = _book(server, "A")
        await a.start()
        await a.mutate(Mutation("disable", "a"))
        old = encode(a.shared)
        await a.mutate(Mutation("strategy", strategy="round-robin"))
        raw = redis.Redis.from_url(server.url)
        raw.set("u:decisions", old)  # a failover lost the last write
        await a.backend.load()
        assert decode(raw.get("u:decisions")).strategy == "round-robin"
        raw.flushall()  # a restart without persistence
        await a.backend.load()
        assert decode(raw.get("u:decisions")) == a.shared and a.shared.version == 2
        # A replica that starts after: the repaired document, not its config's.
        c = _book(server, "C")
        await c.start()
        assert c.shared == a.shared and c.current().strategy == "round-robin"
        # Its guard rail counts the shared disable of "a" and its own local ones.
        await c.mutate(Mutation("disable", "b"), local=True)
        with pytest.raises(Conflict):
            await c.mutate(Mutation("disable", "c"), local=True)
        await a.close()
        await c.close()
    asyncio.run(run())


def test_rediss_with_a_client_certificate(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_cert, client_cert = ca.issue_cert("127.0.0.1"), ca.issue_cert("edge-router")
    paths = {}
    for name, blob in (("ca", ca.cert_pem), ("cert", server_cert.cert_chain_pems[0]),
                       ("key", server_cert.private_key_pem), ("ccert", client_cert.cert_chain_pems[0]),
                       ("ckey", client_cert.private_key_pem)):
        paths[name] = str(tmp_path / f"{name}.pem")
        blob.write_to_path(paths[name])
    server = RedisServer(tls=(paths["cert"], paths["key"], paths["ca"])).start()

    def book(**tls) -> DecisionBook:
        cfg = StateConfig(backend="redis", url=server.url, **tls)
        return DecisionBook(RedisDecisionStore(cfg, server.url, "geographic", "T"), lambda: REGIONS, "T")

    async def run():
        good = book(tls_ca=paths["ca"], tls_cert=paths["ccert"], tls_key=paths["ckey"])
        await good.start()
        assert good.loaded and good.up
        assert (await good.mutate(Mutation("disable", "a"))).version == 1
        await good.close()
        # Without a client certificate the server refuses: the store is down, and says why.
        bare = book(tls_ca=paths["ca"])
        book_start = asyncio.create_task(bare.start())
        await asyncio.wait_for(book_start, 10)
        assert not bare.loaded and not bare.up and bare.cause.startswith("redis:")
        await bare.close()

    try:
        asyncio.run(run())
    finally:
        server.close()
