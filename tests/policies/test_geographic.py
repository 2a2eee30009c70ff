import pytest

from policies.geographic import GeographicPolicy
from policies.model import RegionSnapshot, RegionView, RequestFacts

# The seed topology: three regions with failover lists, a country map.
SEED = RegionSnapshot(
    regions=(
        RegionView("us-east-1", failover=("us-west-2", "eu-west-1", "ap-southeast-1")),
        RegionView("us-west-2", failover=("us-east-1", "ap-southeast-1")),
        RegionView("eu-west-1", failover=("us-east-1", "eu-west-1", "us-west-2")),
        RegionView("ap-southeast-1", failover=("us-west-2", "nowhere-1", "us-west-2")),
    ),
    default_region="us-east-1",
    country_home={"US": "us-east-1", "GB": "eu-west-1", "AU": "ap-southeast-1",
                  "JP": "us-west-2", "XX": "retired-1"},
)


@pytest.mark.parametrize(
    "country, order",
    [
        ("US", ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")),
        # home listed again in its own failover list: deduplicated
        ("GB", ("eu-west-1", "us-east-1", "us-west-2")),
        # unknown failover target dropped, duplicate dropped, no other regions appended
        ("AU", ("ap-southeast-1", "us-west-2")),
        ("JP", ("us-west-2", "us-east-1", "ap-southeast-1")),
        # unmapped, unknown and mapped-to-missing-region countries: default region
        ("FR", ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")),
        (None, ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")),
        ("XX", ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")),
    ],
)
def test_order(country, order):
    ranker = GeographicPolicy().prepare(SEED, None)
    assert ranker.rank(RequestFacts(country=country)) == order


def test_order_ignores_health_the_data_plane_filters():
    snap = RegionSnapshot(
        regions=(RegionView("a", failover=("b",), healthy=False, breaker="open"),
                 RegionView("b")),
        default_region="a",
    )
    assert GeographicPolicy().prepare(snap, None).rank(RequestFacts()) == ("a", "b")


def test_missing_default_falls_back_to_first_region():
    snap = RegionSnapshot(regions=(RegionView("a", failover=("b",)), RegionView("b")),
                          default_region="gone")
    assert GeographicPolicy().prepare(snap, None).rank(RequestFacts("US")) == ("a", "b")


def test_rank_is_a_lookup_of_shared_tuples():
    ranker = GeographicPolicy().prepare(SEED, None)
    assert ranker.rank(RequestFacts("US")) is ranker.rank(RequestFacts("FR"))


def test_degraded_regions_move_to_the_end_of_each_chain():
    from policies.model import RegionView as V

    snap = RegionSnapshot(
        regions=(V("a", failover=("b", "c")), V("b", failover=("a",), degraded=True),
                 V("c", failover=("b", "a"))),
        default_region="a", country_home={"US": "a", "GB": "b", "FR": "c"},
    )
    ranker = GeographicPolicy().prepare(snap, None)
    assert ranker.rank(RequestFacts("US")) == ("a", "c", "b")
    assert ranker.rank(RequestFacts("GB")) == ("a", "b")  # the home region itself is demoted
    assert ranker.rank(RequestFacts("FR")) == ("c", "a", "b")
