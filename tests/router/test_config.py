"""Config loader: the seed default, validation that reports everything, parsers, overrides."""
from __future__ import annotations

import ipaddress
import tomllib

import pytest

from router.config import (
    Address,
    ConfigError,
    default_config,
    format_duration,
    load_config,
    parse_address,
    parse_config,
    parse_duration,
    summarize,
    with_overrides,
)
from router.defaults import SEED_TOML

MINIMAL = """
default_region = "a"
[[regions]]
id = "a"
api = "http://127.0.0.1:9000"
health = "http://127.0.0.1:9000/health"
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text))
    return info.value.problems


# ---- the built-in default is the seed's deployment

def test_default_has_the_seed_regions():
    config = default_config()
    assert config.default_region == "us-east-1"
    assert config.strategy == "geographic"
    assert [r.id for r in config.regions] == ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1"]
    assert [r.role for r in config.regions] == ["primary", "standby", "standby", "standby"]
    east = config.region("us-east-1")
    assert east.provider == "aws"
    assert east.api == "https://api-us-east-1.finnexusai.com"
    assert east.health == "https://health-us-east-1.finnexusai.com/api/v1/health"
    assert east.failover == ("us-west-2", "eu-west-1", "ap-southeast-1")
    assert config.region("ap-southeast-1").failover == ("us-west-2", "us-east-1", "eu-west-1")
    assert config.region("nowhere") is None


def test_default_takes_the_seed_map_from_geodata():
    """One source: [geo.countries] is written from geodata.countries; the rest must agree."""
    from geodata.countries import DEFAULT_REGION, SEED_COUNTRIES, SEED_REGIONS
    config = default_config()
    assert dict(config.geo.countries) == SEED_COUNTRIES
    assert config.default_region == DEFAULT_REGION
    assert tuple(r.id for r in config.regions) == SEED_REGIONS

def test_default_country_map_and_cadence():
    config = default_config()
    home = config.country_home
    assert home["US"] == home["BR"] == "us-east-1"
    assert home["GB"] == "eu-west-1"
    assert home["NO"] == "eu-west-1"  # Norway stays a country code, not a boolean
    assert home["SG"] == home["JP"] == "ap-southeast-1"
    assert "ZA" not in home
    assert (len(config.geo.countries["us-east-1"]), len(config.geo.countries["eu-west-1"]),
            len(config.geo.countries["ap-southeast-1"])) == (9, 28, 15)
    assert (config.probe.interval, config.probe.timeout, config.probe.fall, config.probe.rise,
            config.probe.latency_interval) == (30.0, 5.0, 3, 2, 60.0)
    assert (config.breaker.consecutive_failures, config.breaker.open_for) == (5, 30.0)
    assert config.listen.address == Address("0.0.0.0", 8080)
    assert config.admin.address == Address("127.0.0.1", 9901)
    assert config.admin.token_env == "EDGE_ROUTER_ADMIN_TOKEN"
    assert config.geo.database == "/usr/share/GeoIP/GeoLite2-Country.mmdb"
    assert config.geo.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),
                                          ipaddress.ip_network("::1/128"))


def test_summary_mentions_every_region():
    text = summarize(default_config())
    for needle in ("geographic", "us-east-1", "primary", "0.0.0.0:8080", "127.0.0.1:9901",
                   "ap-southeast-1", "countries: 28", "every 30s"):
        assert needle in text


def test_minimal_config_takes_dataclass_defaults():
    config = parse_config(tomllib.loads(MINIMAL))
    assert config.strategy == "geographic"
    assert config.workers == 1
    assert config.limits.max_attempts == 3
    assert config.log.level == "info"
    assert dict(config.geo.countries) == {}


def test_optional_sections_are_read():
    config = parse_config(tomllib.loads("workers = 4\n" + MINIMAL + """
[limits]
connect_timeout = "250ms"
max_header_bytes = 8192
[log]
level = "debug"
access_log = true
[listen]
address = "[::]:8443"
tls_cert = "/etc/cert.pem"
tls_key = "/etc/key.pem"
[[residency]]
countries = ["DE", "FR"]
regions = ["a"]
"""))
    assert config.workers == 4
    assert config.limits.connect_timeout == 0.25
    assert config.limits.max_header_bytes == 8192
    assert (config.log.level, config.log.access_log) == ("debug", True)
    assert config.listen.address == Address("::", 8443)
    assert config.residency[0].countries == frozenset({"DE", "FR"})
    assert config.residency[0].regions == ("a",)


# ---- a broken file: every problem at once, each with its key path

BROKEN = """
default_region = "us-central-9"
strategy = "fastest"

[listen]
adress = "0.0.0.0:8080"

[probe]
interval = "30 s"
fall = 0

[geo.countries]
"us-east-1" = ["US", "GB"]
"eu-west-1" = ["GB", "gb"]

[[regions]]
id = "us-east-1"
api = "https://api-us-east-1.example.com"
health = "https://health-us-east-1.example.com/api/v1/health"
failover = ["eu-west-1", "eu-west-9", "us-east-1"]

[[regions]]
id = "eu-west-1"
health = "https://health-eu-west-1.example.com/api/v1/health"
role = "secondary"
weight = 0
"""


def test_broken_config_reports_every_problem():
    problems = problems_of(BROKEN)
    expected = [
        "listen.adress: unknown key",
        "probe.interval: bad duration '30 s' (use a number with a unit: 250ms, 5s, 2m, 1h)",
        "probe.fall: must be >= 1, got 0",
        "regions[0].failover[1]: unknown region 'eu-west-9'",
        "regions[0].failover[2]: a region cannot fail over to itself ('us-east-1')",
        "regions[1].api: required key missing",
        "geo.countries.eu-west-1[0]: 'GB' is mapped to both 'us-east-1' and 'eu-west-1'",
        "geo.countries.eu-west-1[1]: bad country code 'gb' (use ISO 3166-1 alpha-2 in upper case, e.g. 'GB')",
    ]
    for line in expected:
        assert line in problems, (line, problems)
    by_key = {p.split(":", 1)[0] for p in problems}
    assert {"strategy", "default_region", "regions[1].role", "regions[1].weight"} <= by_key
    assert "geographic, least-latency, health-based, round-robin" in next(
        p for p in problems if p.startswith("strategy:"))
    assert "'us-central-9'" in next(p for p in problems if p.startswith("default_region:"))


def test_error_text_lists_problems_one_per_line():
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(BROKEN))
    assert str(info.value).splitlines() == info.value.problems


@pytest.mark.parametrize("snippet, problem", [
    ('[[regions]]\nid = "a"\napi = "ftp://x"\nhealth = "http://x/h"',
     "regions[1].api: bad URL 'ftp://x' (need http:// or https:// and a host)"),
    ('[[regions]]\nid = "a"\napi = "http://x"\nhealth = "http:///h"', "regions[1].id: duplicate"),
    ('[geo]\ntrusted_proxies = ["10.0.0.0/33"]', "geo.trusted_proxies[0]: bad network"),
    ('[geo.countries]\nnowhere = ["US"]', "geo.countries.nowhere: unknown region 'nowhere'"),
    ('[listen]\ntls_cert = "/c.pem"', "listen.tls_key: required when tls_cert is set"),
    ('[breaker]\nopen_for = 30', "breaker.open_for: bad duration 30"),
    ('[breaker]\nconsecutive_failures = -1', "breaker.consecutive_failures: must be >= 1"),
    ('[probe]\ntimeout = "0s"', "probe.timeout: must be longer than 0"),
    ('[probe]\nrise = 2.0', "probe.rise: expected an integer, got float 2.0"),
    ('[log]\nlevel = "verbose"', "log.level: unknown log level 'verbose'"),
    ('[log]\naccess_log = "yes"', "log.access_log: expected a boolean"),
    ('[admin]\naddress = "localhost"', "admin.address: bad address 'localhost' (missing :PORT)"),
    ('[[residency]]\ncountries = []\nregions = ["z"]', "residency[0].countries: must not be empty"),
    ('[[residency]]\ncountries = ["DE"]\nregions = ["z"]', "residency[0].regions[0]: unknown region 'z'"),
    ('[[residency]]\ncountries = ["DEU"]\nregions = ["a"]', "residency[0].countries[0]: bad country code"),
    ('[[residency]]\ncountries = ["DE"]', "residency[0].regions: required key missing"),
    ('[surprise]\nx = 1', "surprise: unknown key"),
])
def test_single_problem(snippet, problem):
    problems = problems_of(MINIMAL + snippet)
    assert any(p.startswith(problem) for p in problems), problems


def test_top_level_workers_and_missing_essentials():
    assert "workers: must be >= 1, got 0" in problems_of("workers = 0\n" + MINIMAL)
    problems = problems_of("")
    assert "default_region: required key missing" in problems
    assert any(p.startswith("regions:") for p in problems)


# ---- files

def test_load_config_reads_a_file(tmp_path):
    path = tmp_path / "router.toml"
    path.write_text(SEED_TOML)
    assert load_config(path) == default_config()


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.problems == [f"{tmp_path / 'nope.toml'}: no such file"]


def test_load_config_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('default_region = "a"\nstrategy = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert "TOML syntax error" in problem and "line 2" in problem and "column" in problem


# ---- durations and addresses

@pytest.mark.parametrize("text, seconds", [
    ("250ms", 0.25), ("5s", 5.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("0s", 0.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "30 s", "5S", "-1s", "s", "", "1d", " 5s", "1e3s", 30])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.25, 5.0, 1.5, 120.0, 3600.0, 90.0])
def test_format_duration_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("text, host, port", [
    ("127.0.0.1:9901", "127.0.0.1", 9901),
    ("localhost:80", "localhost", 80),
    (":8080", "0.0.0.0", 8080),
    ("[::1]:8080", "::1", 8080),
    ("[::]:0", "::", 0),
    ("0.0.0.0:65535", "0.0.0.0", 65535),
])
def test_parse_address(text, host, port):
    assert parse_address(text) == Address(host, port)


def test_address_str_round_trips():
    for text in ("127.0.0.1:9901", "[::1]:8080"):
        assert str(parse_address(text)) == text


@pytest.mark.parametrize("text", [
    "8080", "host:", "host:65536", "host:-1", "::1:8080", "[::1]8080", "[nope]:80", "a b:80", "",
])
def test_parse_address_rejects(text):
    with pytest.raises(ValueError):
        parse_address(text)


# ---- command-line overrides

def test_overrides_replace_fields():
    config = with_overrides(default_config(), listen="[::1]:18080", admin=":19901",
                            strategy="round-robin", geoip_db="/tmp/demo.mmdb", workers=2,
                            log_level="debug")
    assert config.listen.address == Address("::1", 18080)
    assert config.admin.address == Address("0.0.0.0", 19901)
    assert config.strategy == "round-robin"
    assert config.geo.database == "/tmp/demo.mmdb"
    assert (config.workers, config.log.level) == (2, "debug")
    assert config.regions == default_config().regions


def test_no_overrides_is_identity():
    config = default_config()
    assert with_overrides(config) == config


def test_bad_overrides_name_the_flags():
    with pytest.raises(ConfigError) as info:
        with_overrides(default_config(), strategy="fastest", listen="nowhere", workers=0,
                       log_level="loud")
    keys = [p.split(":", 1)[0] for p in info.value.problems]
    assert keys == ["--listen", "--strategy", "--workers", "--log-level"]
    assert "round-robin" in info.value.problems[1]


# ---- steering: probe cadence, flap damping, [degrade], slow_start, strategy settings

def test_steering_defaults():
    c = parse_config(tomllib.loads(MINIMAL))
    assert (c.probe.fast_interval, c.probe.down_interval) == (c.probe.interval, c.probe.interval)
    assert (c.probe.flap_limit, c.probe.flap_window, c.probe.flap_hold) == (4, 300.0, 120.0)
    d = c.degrade
    assert (d.error_rate, d.latency, d.window, d.min_requests) == (0.05, 2.0, 60.0, 20)
    assert c.slow_start == 30.0
    ll = c.least_latency
    assert (ll.takeover_factor, ll.takeover_margin, ll.dwell) == (2.0, 0.05, 10.0)
    assert c.strategy_settings("round-robin") is None


def test_steering_keys_are_read():
    c = parse_config(tomllib.loads('slow_start = "0s"\n' + MINIMAL + """
[probe]
interval = "1s"
flap_limit = 2
flap_window = "1m"
flap_hold = "10s"
[degrade]
error_rate = 0.1
latency = "500ms"
window = "5s"
min_requests = 5
[least_latency]
takeover_factor = 3.0
takeover_margin = "20ms"
"""))
    assert c.slow_start == 0.0
    assert (c.probe.flap_limit, c.probe.flap_window, c.probe.flap_hold) == (2, 60.0, 10.0)
    assert (c.degrade.error_rate, c.degrade.latency, c.degrade.window, c.degrade.min_requests) == (0.1, 0.5, 5.0, 5)
    assert (c.least_latency.takeover_factor, c.least_latency.takeover_margin) == (3.0, 0.02)


@pytest.mark.parametrize("snippet, problem", [
    ('[probe]\ninterval = "1s"\nfast_interval = "2s"', "probe.fast_interval: must not be longer than probe.interval (1s)"),
    ('[probe]\ndown_interval = "1m"', "probe.down_interval: must not be longer than probe.interval (30s)"),
    ('[probe]\nflap_limit = -1', "probe.flap_limit: must be >= 0"),
    ('[degrade]\nerror_rate = 1.5', "degrade.error_rate: must be > 0 and <= 1"),
    ('[degrade]\nmin_requests = 0', "degrade.min_requests: must be >= 1"),
    ('[degrade]\nwindow = "0s"', "degrade.window: must be longer than 0"),
    ('[degrade]\np99 = "1s"', "degrade.p99: unknown key"),
    ('[least_latency]\ntakeover_factor = 0.5', "least_latency.takeover_factor: must be >= 1"),
    ('[least_latency]\ntakeover_margin = 50', "least_latency.takeover_margin: bad duration 50"),
])
def test_steering_problems(snippet, problem):
    problems = problems_of(MINIMAL + snippet)
    assert any(p.startswith(problem) for p in problems), problems


def test_slow_start_is_a_duration():
    assert any(p.startswith("slow_start: bad duration 30")
               for p in problems_of("slow_start = 30\n" + MINIMAL))
