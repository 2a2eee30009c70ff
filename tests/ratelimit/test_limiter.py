"""The limiter on a fake clock: rules, matches, keys, answers, lifts, reloads."""
from __future__ import annotations

import tomllib

import pytest
from prometheus_client import CollectorRegistry, Counter

from router.clock import FakeClock
from router.config import RateLimitConfig, parse_config
from router.defaults import SEED_TOML
from router.ratelimit import LiftError, Limited, RateLimiter
from router.ratelimit.rules import key_hash


def rl_config(rules_toml: str, extra: str = "") -> RateLimitConfig:
    return parse_config(tomllib.loads(SEED_TOML + "\n[rate_limit]\n" + extra + "\n" + rules_toml)).rate_limit


def limiter(rules_toml: str, extra: str = "", metric=None) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(rl_config(rules_toml, extra), clock.now, metric=metric), clock


def hit(rl: RateLimiter, ip="10.0.0.1", method="GET", url=b"/", headers=(), country=None):
    return rl.check(method, url, list(headers), ip, country)


IP_RULE = '[[rate_limit.rules]]\nkey = "client_ip"\nrate = "2/s"\nburst = 3\n'


def test_one_client_limited_another_untouched():
    rl, clock = limiter(IP_RULE)
    assert [type(hit(rl)) for _ in range(4)] == [bytes, bytes, bytes, Limited]
    assert isinstance(hit(rl, ip="10.0.0.2"), bytes)
    clock.advance(0.5)  # one token back
    assert isinstance(hit(rl), bytes)
    assert isinstance(hit(rl), Limited)


def test_rejection_answer_headers():
    rl, clock = limiter('[[rate_limit.rules]]\nname = "per-ip"\nkey = "client_ip"\nrate = "6/m"\nburst = 2\n')
    hit(rl), hit(rl)
    got = hit(rl)
    assert isinstance(got, Limited)
    headers = dict(got.headers)
    assert got.retry_after == 10 and headers[b"Retry-After"] == b"10"  # 6/m: a token every 10 s
    assert headers[b"RateLimit-Policy"] == b'"per-ip";q=2;w=20'
    assert headers[b"RateLimit"] == b'"per-ip";r=0;t=10'
    assert "per-ip" in got.detail and "6/m" in got.detail


def test_allowed_answers_carry_remaining_quota():
    rl, clock = limiter('[[rate_limit.rules]]\nname = "ip"\nkey = "client_ip"\nrate = "1/s"\nburst = 3\n')
    assert hit(rl) == b'RateLimit-Policy: "ip";q=3;w=3\r\nRateLimit: "ip";r=2;t=1\r\n'
    assert hit(rl) == b'RateLimit-Policy: "ip";q=3;w=3\r\nRateLimit: "ip";r=1;t=2\r\n'
    clock.advance(10)
    assert b'r=2;' in hit(rl)


def test_headers_off():
    rl, _ = limiter(IP_RULE, extra="headers = false")
    assert hit(rl) == b""
    hit(rl), hit(rl)
    assert isinstance(hit(rl), Limited)  # the 429 keeps its headers


def test_several_rules_strictest_decides_and_rejected_take_nothing():
    rules = (
        '[[rate_limit.rules]]\nname = "loose"\nkey = "client_ip"\nrate = "100/s"\nburst = 100\n'
        '[[rate_limit.rules]]\nname = "strict"\nkey = "client_ip"\nrate = "1/s"\nburst = 2\n'
    )
    rl, clock = limiter(rules)
    first = hit(rl)
    assert b'"strict";r=1' in first  # the headers show the rule with the least left
    hit(rl)
    got = hit(rl)
    assert isinstance(got, Limited) and got.rule == "strict"
    for _ in range(50):
        hit(rl)
    loose = next(r for r in rl.rules if r.name == "loose")
    # the rejected requests took no token from the loose rule either
    assert loose.bucket.remaining(loose.table.tats["10.0.0.1"], clock.now()) == 98


def test_match_path_prefix_and_methods():
    rules = ('[[rate_limit.rules]]\nkey = "client_ip"\nrate = "1/s"\nburst = 1\n'
             'match = { path_prefix = "/api/v1/payments", methods = ["POST", "PUT"] }\n')
    rl, _ = limiter(rules)
    assert hit(rl, method="POST", url=b"/api/v1/payments/1") != b""
    assert isinstance(hit(rl, method="POST", url=b"/api/v1/payments/2"), Limited)
    assert hit(rl, method="GET", url=b"/api/v1/payments/3") == b""  # method does not match
    assert hit(rl, method="POST", url=b"/api/v1/accounts") == b""  # path does not match
    # absolute-form targets are matched on their path
    assert isinstance(hit(rl, method="PUT", url=b"http://api.example.com/api/v1/payments/9"), Limited)


def test_country_key():
    rl, _ = limiter('[[rate_limit.rules]]\nkey = "country"\nrate = "1/s"\nburst = 2\n')
    hit(rl, ip="1.1.1.1", country="GB"), hit(rl, ip="1.1.1.2", country="GB")
    assert isinstance(hit(rl, ip="1.1.1.3", country="GB"), Limited)  # one bucket per country
    assert isinstance(hit(rl, ip="1.1.1.3", country="FR"), bytes)
    hit(rl, ip="2.2.2.2"), hit(rl, ip="2.2.2.3")
    assert isinstance(hit(rl, ip="2.2.2.4"), Limited)  # no GeoIP answer: one shared "unknown" bucket


def test_header_key_and_absent_header():
    rl, _ = limiter('[[rate_limit.rules]]\nkey = "header:X-Api-Key"\nrate = "1/s"\nburst = 1\n')
    alice = [b"User-Agent: x\r\n", b"x-api-key: alice\r\n"]
    assert hit(rl, headers=alice) != b""
    assert isinstance(hit(rl, ip="9.9.9.9", headers=[b"X-API-KEY:  alice \r\n"]), Limited)  # any case, any IP
    assert hit(rl, headers=[b"X-Api-Key: bob\r\n"]) != b""
    assert hit(rl) == b"" and hit(rl) == b""  # no key header: the rule does not apply
    top = rl.state_json()["rules"][0]["top_limited"]
    assert top == [{"key": key_hash("alice"), "limited": 1}]  # API keys never shown in clear


def test_log_only_lets_through_and_counts():
    registry = CollectorRegistry()
    metric = Counter("edge_router_rate_limited", "test", ["rule"], registry=registry)
    rl, _ = limiter('[[rate_limit.rules]]\nname = "dry"\nkey = "client_ip"\nrate = "1/s"\nburst = 2\n'
                    'action = "log_only"\n', metric=metric)
    answers = [hit(rl) for _ in range(10)]
    assert all(a == b"" for a in answers)  # through, and no quota headers from a dry run
    assert registry.get_sample_value("edge_router_rate_limited_total", {"rule": "dry"}) == 8
    assert rl.state_json()["rules"][0]["limited"] == 8


def test_lift_lets_a_key_through_for_a_while():
    rl, clock = limiter(IP_RULE)
    for _ in range(3):
        hit(rl)
    assert isinstance(hit(rl), Limited)
    done = rl.lift("client_ip", "10.0.0.1", "10m")
    assert done == {"rule": "client_ip", "key": "10.0.0.1", "lifted_for_seconds": 600.0}
    assert all(isinstance(hit(rl), bytes) for _ in range(100))
    assert isinstance(hit(rl, ip="10.0.0.2"), bytes)
    clock.advance(601)
    for _ in range(3):
        hit(rl)
    assert isinstance(hit(rl), Limited)


def test_lift_api_key_by_its_hash():
    rl, _ = limiter('[[rate_limit.rules]]\nname = "k"\nkey = "header:X-Api-Key"\nrate = "1/s"\nburst = 1\n')
    h = [b"X-Api-Key: s3cret\r\n"]
    hit(rl, headers=h)
    assert isinstance(hit(rl, headers=h), Limited)
    assert rl.lift("k", key_hash("s3cret"), "1m")["key"] == key_hash("s3cret")
    assert isinstance(hit(rl, headers=h), bytes)
    assert rl.lift("k", "s3cret", "1m")["key"] == key_hash("s3cret")  # the audit never sees it in clear


@pytest.mark.parametrize("args, field", [
    (("nope", "1.2.3.4", "1m"), "rule"),
    (("client_ip", "", "1m"), "key"),
    (("client_ip", 5, "1m"), "key"),
    (("client_ip", "1.2.3.4", "forever"), "for"),
    (("client_ip", "1.2.3.4", "30d" ), "for"),
    (("client_ip", "1.2.3.4", 60), "for"),
])
def test_lift_errors_name_the_field(args, field):
    rl, _ = limiter(IP_RULE)
    with pytest.raises(LiftError) as err:
        rl.lift(*args)
    assert err.value.field == field


def test_reconfigure_keeps_buckets_of_unchanged_rules():
    rl, _ = limiter(IP_RULE)
    for _ in range(3):
        hit(rl)
    rl.reconfigure(rl_config(IP_RULE + '[[rate_limit.rules]]\nname = "c"\nkey = "country"\nrate = "1/m"\nburst = 1\n'))
    assert [r.name for r in rl.rules] == ["client_ip", "c"]
    assert isinstance(hit(rl), Limited)  # the client_ip bucket survived the reload
    rl.reconfigure(rl_config('[[rate_limit.rules]]\nkey = "client_ip"\nrate = "100/s"\nburst = 100\n'))
    assert isinstance(hit(rl), bytes)  # a new rate applies at once
    rl.reconfigure(rl_config(""))
    assert rl.rules == () and hit(rl) == b""


def test_state_lists_rules_and_top_limited_keys():
    rl, _ = limiter(IP_RULE)
    for ip, n in (("10.0.0.1", 10), ("10.0.0.2", 5), ("10.0.0.3", 3)):
        for _ in range(n):
            hit(rl, ip=ip)
    rule = rl.state_json()["rules"][0]
    assert rule["rate"] == "2/s" and rule["burst"] == 3 and rule["action"] == "reject"
    assert rule["limited"] == 7 + 2 and rule["keys"] == 3
    assert rule["top_limited"] == [{"key": "10.0.0.1", "limited": 7}, {"key": "10.0.0.2", "limited": 2}]


def test_summary_is_logged_not_each_request(caplog):
    rl, _ = limiter(IP_RULE)
    for _ in range(50):
        hit(rl)
    with caplog.at_level("WARNING", logger="edge_router.ratelimit"):
        rl.log_summary()
        rl.log_summary()  # nothing new: no second line
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "47 requests over 2/s" in lines[0] and "10.0.0.1" in lines[0]


@pytest.mark.parametrize("rate, burst, policy", [
    ("100/s", 200, b"q=200;w=2"), ("6/m", 2, b"q=2;w=20"), ("100/s", 10, b"q=100;w=1"),
    ("100/s", 150, b"q=150;w=2"), ("1/s", 1, b"q=1;w=1"),
])
def test_policy_header_quota_and_window(rate, burst, policy):
    rl, _ = limiter(f'[[rate_limit.rules]]\nname = "p"\nkey = "client_ip"\nrate = "{rate}"\nburst = {burst}\n')
    assert rl.rules[0].policy == b'"p";' + policy
