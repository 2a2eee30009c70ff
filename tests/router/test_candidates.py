"""Candidate selection (router/candidates.py): residency narrowing and the
per-country walk orders, pure."""
from __future__ import annotations

import pytest

from router.candidates import CandidateOrders, narrow, residency_extra

IDS = ("us-east-1", "eu-west-1", "ap-south-1")


@pytest.mark.parametrize("order,allowed,walk", [
    (("us-east-1", "eu-west-1"), None, ("us-east-1", "eu-west-1")),
    (("us-east-1", "eu-west-1"), frozenset({"eu-west-1"}), ("eu-west-1",)),
    (("us-east-1",), frozenset({"ap-south-1"}), ("ap-south-1",)),  # left out by the ranker: a last resort
    (("eu-west-1", "us-east-1"), frozenset({"us-east-1", "ap-south-1"}), ("us-east-1", "ap-south-1")),
    ((), frozenset(), ()),
])
def test_narrow(order, allowed, walk):
    assert narrow(order, allowed, IDS) == walk


def test_residency_extra_keeps_config_order():
    assert residency_extra(("eu-west-1",), frozenset(IDS), IDS) == ("us-east-1", "ap-south-1")


class CountingRanker:
    def __init__(self, by_country: bool):
        self.by_country = by_country
        self.asked = []

    def rank(self, facts):
        self.asked.append((facts.country, facts.seq))
        return ("eu-west-1", "us-east-1") if facts.country == "GB" else ("us-east-1",)


def test_a_by_country_ranker_is_asked_once_per_country():
    ranker = CountingRanker(by_country=True)
    orders = CandidateOrders(ranker, {"GB": frozenset({"eu-west-1"})}, IDS)
    assert orders.order("GB", "81.2.69.142", "GET", 1) == ("eu-west-1",)
    assert orders.order("GB", "81.2.69.143", "POST", 2) == ("eu-west-1",)
    assert orders.order(None, "10.0.0.1", "GET", 3) == ("us-east-1",)
    assert orders.order(None, "10.0.0.1", "GET", 4) == ("us-east-1",)
    assert ranker.asked == [("GB", 1), (None, 3)]
    assert orders.allowed("GB") == frozenset({"eu-west-1"}) and orders.allowed(None) is None


def test_any_other_ranker_is_asked_for_every_request():
    ranker = CountingRanker(by_country=False)
    orders = CandidateOrders(ranker, {}, IDS)
    for seq in (1, 2, 3):
        assert orders.order("GB", "81.2.69.142", "GET", seq) == ("eu-west-1", "us-east-1")
    assert ranker.asked == [("GB", 1), ("GB", 2), ("GB", 3)]


def test_the_store_publishes_new_orders_with_each_snapshot():
    from router.clock import FakeClock
    from router.config import default_config
    from router.metrics import Metrics
    from router.state import RegionStore
    from router.store import MemoryDecisionStore

    cfg = default_config()
    store = RegionStore(cfg, MemoryDecisionStore(cfg.strategy), Metrics(tuple(r.id for r in cfg.regions)),
                        FakeClock())
    first = store.candidates
    assert first.order("GB", "81.2.69.142", "GET", 1)[0] == "eu-west-1"
    store.disable("eu-west-1")  # republished: a new ranker, new orders
    assert store.candidates is not first and store.candidates.ranker is store.ranker


def test_identify_keeps_no_long_forwarded_chains():
    """Any client may send a long X-Forwarded-For, new each time: answered, not cached."""
    import asyncio

    from memstack import Stack, config
    from router.proxy import IDENTIFY_CACHE_XFF

    async def main():
        proxy = Stack(config()).proxy
        short = b"81.2.69.142"
        long_chain = b", ".join([b"81.2.69.142"] * (IDENTIFY_CACHE_XFF // 10 + 1))
        assert len(long_chain) > IDENTIFY_CACHE_XFF
        assert proxy.identify("127.0.0.1", short) == ("81.2.69.142", None)
        assert proxy.identify("127.0.0.1", long_chain) == ("81.2.69.142", None)  # trusted peer: its chain is read
        assert proxy.identify("203.0.113.9", long_chain) == ("203.0.113.9", None)  # untrusted: its chain is not
        assert proxy._identified.cache_info().currsize == 1
        proxy.geo = type("Geo", (), {"lookup": staticmethod(lambda ip: "GB")})()  # another database
        assert proxy.identify("127.0.0.1", short) == ("81.2.69.142", "GB")

    asyncio.run(main())
