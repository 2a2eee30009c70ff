"""The built-in configuration: exactly the seed's multi-region deployment.

`edge-router serve` without `--config` runs this; it is kept as TOML text (not
dataclasses) so it goes through the same validation as any operator's file and
can be printed as a starting point.
"""
from __future__ import annotations

import textwrap

from geodata.countries import SEED_COUNTRIES


def _countries_toml() -> str:
    """[geo.countries] written from geodata.countries, the one source of the seed's map."""
    lines = ["[geo.countries]                       # region -> ISO 3166-1 alpha-2 codes"]
    for region, codes in SEED_COUNTRIES.items():
        head = f'"{region}" = ['
        lines.append(textwrap.fill(", ".join(f'"{c}"' for c in codes) + "]", width=100,
                                   initial_indent=head, subsequent_indent=" " * len(head),
                                   break_on_hyphens=False))
    return "\n".join(lines) + "\n"


SEED_TOML = """\
default_region = "us-east-1"          # unknown country, and the last resort
strategy = "geographic"               # geographic | least-latency | health-based | round-robin

[listen]
address = "0.0.0.0:8080"

[admin]
address = "127.0.0.1:9901"
token_env = "EDGE_ROUTER_ADMIN_TOKEN"

[geo]
database = "/usr/share/GeoIP/GeoLite2-Country.mmdb"
trusted_proxies = ["127.0.0.1/32", "::1/128"]

""" + _countries_toml() + """
[probe]
interval = "30s"
timeout = "5s"
fall = 3
rise = 2
latency_interval = "60s"

[breaker]
consecutive_failures = 5
open_for = "30s"

[[regions]]
id = "us-east-1"
provider = "aws"
role = "primary"
api = "https://api-us-east-1.finnexusai.com"
health = "https://health-us-east-1.finnexusai.com/api/v1/health"
failover = ["us-west-2", "eu-west-1", "ap-southeast-1"]

[[regions]]
id = "us-west-2"
provider = "aws"
role = "standby"
api = "https://api-us-west-2.finnexusai.com"
health = "https://health-us-west-2.finnexusai.com/api/v1/health"
failover = ["us-east-1", "eu-west-1", "ap-southeast-1"]

[[regions]]
id = "eu-west-1"
provider = "aws"
role = "standby"
api = "https://api-eu-west-1.finnexusai.com"
health = "https://health-eu-west-1.finnexusai.com/api/v1/health"
failover = ["us-east-1", "us-west-2", "ap-southeast-1"]

[[regions]]
id = "ap-southeast-1"
provider = "aws"
role = "standby"
api = "https://api-ap-southeast-1.finnexusai.com"
health = "https://health-ap-southeast-1.finnexusai.com/api/v1/health"
failover = ["us-west-2", "us-east-1", "eu-west-1"]
"""
