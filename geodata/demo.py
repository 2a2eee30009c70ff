"""A tiny demo GeoIP database over the documentation address ranges.

`edge-router demo` and the tests need a database that sends clients to each
region without shipping real GeoLite2 data. The ranges are the RFC 5737 / RFC 3849
documentation blocks, so they never collide with real clients.
"""
from __future__ import annotations

import ipaddress
import os
import tempfile
from typing import NamedTuple

from mmdb_writer import MMDBWriter
from netaddr import IPNetwork, IPSet

from geodata.countries import seed_region

DATABASE_TYPE = "GeoLite2-Country"

# network, ISO code, English name. Every seed region with countries has an IPv4
# and an IPv6 block; ZA is in no region's list, so it lands on the default region.
DEMO_NETWORKS: tuple[tuple[str, str, str], ...] = (
    ("198.51.100.0/26", "US", "United States"),
    ("198.51.100.64/26", "GB", "United Kingdom"),
    ("198.51.100.128/26", "SG", "Singapore"),
    ("198.51.100.192/26", "DE", "Germany"),
    ("203.0.113.0/25", "JP", "Japan"),
    ("203.0.113.128/25", "BR", "Brazil"),
    ("192.0.2.0/25", "CA", "Canada"),
    ("192.0.2.128/25", "ZA", "South Africa"),
    ("2001:db8:1::/48", "FR", "France"),
    ("2001:db8:2::/48", "AU", "Australia"),
    ("2001:db8:3::/48", "US", "United States"),
)


class DemoClient(NamedTuple):
    ip: str
    country: str
    region: str


def demo_clients() -> list[DemoClient]:
    """One sample address per demo network, with the region the seed map sends it to."""
    return [
        DemoClient(str(ipaddress.ip_network(net)[10]), code, seed_region(code))
        for net, code, _ in DEMO_NETWORKS
    ]


def build_demo_db(path: str | os.PathLike[str]) -> list[DemoClient]:
    """Write the demo Country DB to `path` (atomically) and return its sample clients."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=DATABASE_TYPE,
        languages=["en"],
        description="edge-router demo GeoIP database (documentation ranges only)",
    )
    for net, code, name in DEMO_NETWORKS:
        record = {"country": {"iso_code": code, "names": {"en": name}}}
        network = IPNetwork(net)
        writer.insert_network(IPSet([network]), record)
        if network.version == 4:
            # Real MaxMind DBs alias ::ffff:0:0/96 to the IPv4 tree; readers that do
            # not unwrap mapped addresses themselves find them there.
            writer.insert_network(IPSet([network.ipv6(ipv4_compatible=False)]), record)

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".demo-geo-", suffix=".mmdb", dir=directory)
    os.close(fd)
    try:
        writer.to_db_file(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the router may run as another user
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return demo_clients()
