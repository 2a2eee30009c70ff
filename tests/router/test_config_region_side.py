"""Config keys of the region side: region ids are tokens; breaker verdicts;
the region's head limit. Each problem names its key path."""
from __future__ import annotations

import tomllib

import pytest

from router.config import ConfigError, parse_config

BASE = '''
default_region = {rid}
{top}
[[regions]]
id = {rid}
api = "http://127.0.0.1:1"
health = "http://127.0.0.1:1/h"
'''


def parse(rid: str = '"us-east-1"', top: str = ""):
    return parse_config(tomllib.loads(BASE.format(rid=rid, top=top)))


def problems(**kw) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(**kw)
    return err.value.problems


@pytest.mark.parametrize("rid", ["us-east-1", "eu.west_2", "a", "0abc", "a" * 63])
def test_region_ids_that_are_tokens(rid):
    cfg = parse(rid=f'"{rid}"')
    assert cfg.regions[0].id == rid


@pytest.mark.parametrize("rid", [
    '"us-east-1\\r\\nSet-Cookie: x=1"', '"US-EAST-1"', '"-lead"', '".lead"', '"a b"', '"a/b"',
    '"x%2F..%2Fy"', '"' + "a" * 64 + '"', '"é"', '"a:b"',
])
def test_region_ids_that_are_not(rid):
    got = problems(rid=rid)
    assert any(p.startswith("regions[0].id: bad region id") for p in got), got
    assert not any("\r" in p or "\n" in p for p in got), got  # never echoed raw


def test_breaker_keys():
    cfg = parse(top='[breaker]\nfailure_statuses = [500, 429]\nmax_ejected_percent = 25')
    assert cfg.breaker.failure_statuses == frozenset({500, 429}) and cfg.breaker.max_ejected_percent == 25
    d = parse()
    assert d.breaker.failure_statuses == frozenset() and d.breaker.max_ejected_percent == 50
    assert d.limits.max_response_header_bytes == 65536


@pytest.mark.parametrize("top,where", [
    ("[breaker]\nfailure_statuses = [700]", "breaker.failure_statuses: bad HTTP status 700"),
    ('[breaker]\nfailure_statuses = ["500"]', "breaker.failure_statuses: expected an HTTP status"),
    ("[breaker]\nfailure_statuses = 500", "breaker.failure_statuses: expected an array"),
    ("[breaker]\nmax_ejected_percent = 101", "breaker.max_ejected_percent: must be 0..100"),
    ("[breaker]\nmax_ejected_percent = 0.5", "breaker.max_ejected_percent: expected an integer"),
    ("[limits]\nmax_response_header_bytes = 10", "limits.max_response_header_bytes: must be >= 1024"),
])
def test_bad_values_name_their_key(top, where):
    got = problems(top=top)
    assert any(p.startswith(where) for p in got), got
