"""[rate_limit] and [state]: good configs parse, bad ones name the key path."""
from __future__ import annotations

import tomllib

import pytest

from router.config import ConfigError, parse_config, parse_rate
from router.defaults import SEED_TOML


def parse(extra: str):
    return parse_config(tomllib.loads(SEED_TOML + "\n" + extra))


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(extra)
    return err.value.problems


@pytest.mark.parametrize("text, per_second", [("100/s", 100.0), ("6000/m", 100.0), ("36000/h", 10.0), ("1/m", 1 / 60)])
def test_rates(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


def test_defaults_and_a_full_example():
    assert parse("").rate_limit.rules == ()
    cfg = parse(
        '[state]\nbackend = "redis"\nurl = "redis://10.0.0.5:6379/2"\n'
        '[rate_limit]\nbackend = "redis"\nheaders = false\nmax_keys = 5000\nsync_interval = "300ms"\n'
        '[[rate_limit.rules]]\nkey = "client_ip"\nrate = "100/s"\nburst = 200\n'
        '[[rate_limit.rules]]\nname = "api-keys"\nkey = "header:X-Api-Key"\nrate = "6000/m"\naction = "log_only"\n'
        'match = { path_prefix = "/api/", methods = ["POST", "PUT"] }\n'
    )
    rl = cfg.rate_limit
    assert (rl.backend, rl.headers, rl.max_keys, rl.sync_interval) == ("redis", False, 5000, 0.3)
    ip, api = rl.rules
    assert (ip.name, ip.rate, ip.burst, ip.action) == ("client_ip", 100.0, 200, "reject")
    assert (api.name, api.rate, api.burst, api.rate_text) == ("api-keys", 100.0, 100, "6000/m")  # burst: a second's worth
    assert api.path_prefix == "/api/" and api.methods == {"POST", "PUT"}
    assert cfg.state.url == "redis://10.0.0.5:6379/2"


@pytest.mark.parametrize("extra, expected", [
    ('[[rate_limit.rules]]\nkey = "client_ip"\nrate = "100/d"\n', "rate_limit.rules[0].rate: bad rate '100/d'"),
    ('[[rate_limit.rules]]\nkey = "client_ip"\nrate = "0/s"\n', "rate_limit.rules[0].rate: bad rate"),
    ('[[rate_limit.rules]]\nkey = "client_ip"\nrate = 100\n', "rate_limit.rules[0].rate: expected a string"),
    ('[[rate_limit.rules]]\nkey = "client_ip"\nrate = "1/s"\nburst = 0\n', "rate_limit.rules[0].burst: must be >= 1"),
    ('[[rate_limit.rules]]\nkey = "cookie"\nrate = "1/s"\n', "rate_limit.rules[0].key: unknown key 'cookie'"),
    ('[[rate_limit.rules]]\nkey = "header:X-Forwarded-For"\nrate = "1/s"\n', "rate_limit.rules[0].key: 'X-Forwarded-For' is handled"),
    ('[[rate_limit.rules]]\nkey = "client_ip"\n', "rate_limit.rules[0].rate: required key missing"),
    ('[[rate_limit.rules]]\nkey = "client_ip"\nrate = "1/s"\naction = "drop"\n', "rate_limit.rules[0].action: unknown action 'drop'"),
    ('[[rate_limit.rules]]\nkey = "client_ip"\nrate = "1/s"\nzone = 1\n', "rate_limit.rules[0].zone: unknown key"),
    ('[[rate_limit.rules]]\nkey = "client_ip"\nrate = "1/s"\nmatch = { path_prefix = "api" }\n',
     "rate_limit.rules[0].match.path_prefix: must start with '/'"),
    ('[[rate_limit.rules]]\nkey = "client_ip"\nrate = "1/s"\nmatch = { methods = ["get"] }\n',
     "rate_limit.rules[0].match.methods[0]: bad method 'get'"),
    ('[[rate_limit.rules]]\nkey = "client_ip"\nrate = "1/s"\n[[rate_limit.rules]]\nkey = "client_ip"\nrate = "2/s"\n',
     "rate_limit.rules[1].name: duplicate rule name 'client_ip'"),
    ('[[rate_limit.rules]]\nname = "a b"\nkey = "client_ip"\nrate = "1/s"\n', "rate_limit.rules[0].name: bad rule name"),
    ('[rate_limit]\nbackend = "redis"\n', "rate_limit.backend: 'redis' uses the Redis of [state]"),
    ('[rate_limit]\nbackend = "memcached"\n', "rate_limit.backend: unknown rate_limit backend"),
    ('[rate_limit]\nmax_keys = 0\n', "rate_limit.max_keys: must be >= 1"),
    ('[state]\nbackend = "redis"\n', "state.url: required when state.backend is"),
    ('[state]\nbackend = "file"\n', "state.path: required when state.backend is"),
    ('[state]\nbackend = "redis"\nurl = "http://x"\n', "state.url: bad URL"),
    ('[state]\nurl = "redis://x"\ntls_cert = "c.pem"\n', "state.tls_key: required when tls_cert is set"),
])
def test_problems_name_the_key_path(extra, expected):
    found = problems(extra)
    assert any(p.startswith(expected) for p in found), found


def test_check_config_summary_lists_the_rules():
    from router.config import summarize

    text = summarize(parse('[[rate_limit.rules]]\nname = "p"\nkey = "header:X-Api-Key"\nrate = "10/m"\n'
                           'action = "log_only"\nmatch = { path_prefix = "/api/v1/payments", methods = ["POST"] }\n'))
    assert "rate limit (1 rules, local):" in text
    assert "p: 10/m, burst 1, per header:X-Api-Key on /api/v1/payments* for POST (log_only)" in text
