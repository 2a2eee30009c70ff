import re

from geodata.countries import DEFAULT_REGION, SEED_COUNTRIES, SEED_REGIONS, seed_region


def test_seed_regions():
    assert SEED_REGIONS == ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")
    assert DEFAULT_REGION == "us-east-1"
    assert set(SEED_COUNTRIES) <= set(SEED_REGIONS)


def test_seed_country_lists():
    assert len(SEED_COUNTRIES["us-east-1"]) == 9
    assert len(SEED_COUNTRIES["eu-west-1"]) == 28
    assert len(SEED_COUNTRIES["ap-southeast-1"]) == 15
    codes = [code for region in SEED_COUNTRIES.values() for code in region]
    assert len(codes) == len(set(codes)), "a country is homed in two regions"
    assert all(re.fullmatch(r"[A-Z]{2}", code) for code in codes)
    assert "NO" in SEED_COUNTRIES["eu-west-1"]  # Norway, not YAML's false


def test_seed_region():
    assert seed_region("US") == "us-east-1"
    assert seed_region("gb") == "eu-west-1"
    assert seed_region("SG") == "ap-southeast-1"
    assert seed_region("ZA") == DEFAULT_REGION
    assert seed_region(None) == DEFAULT_REGION
    assert seed_region("") == DEFAULT_REGION
