import ipaddress
import os

import geoip2.database

from geodata.countries import DEFAULT_REGION, SEED_COUNTRIES, seed_region
from geodata.demo import DEMO_NETWORKS, DemoClient, build_demo_db
from geodata.reader import GeoReader


def test_demo_db_readable_by_geo_reader_and_geoip2(tmp_path):
    path = tmp_path / "demo.mmdb"
    clients = build_demo_db(path)
    assert len(clients) == len(DEMO_NETWORKS)
    assert all(isinstance(c, DemoClient) for c in clients)
    with GeoReader(path) as reader, geoip2.database.Reader(str(path)) as g:
        assert reader.database_type == "GeoLite2-Country"
        for client in clients:
            assert reader.lookup(client.ip) == client.country, client
            assert g.country(client.ip).country.iso_code == client.country, client
            assert client.region == seed_region(client.country)
        assert g.country(clients[0].ip).country.name
        assert reader.errors == 0


def test_demo_clients_cover_every_homed_region_on_both_ip_versions(tmp_path):
    clients = build_demo_db(tmp_path / "demo.mmdb")
    for region in SEED_COUNTRIES:
        versions = {ipaddress.ip_address(c.ip).version for c in clients if c.region == region}
        assert versions == {4, 6}, region
    # One country outside the map shows the default region.
    assert any(c.country not in sum(SEED_COUNTRIES.values(), ()) and c.region == DEFAULT_REGION
               for c in clients)
    for client, (network, country, _) in zip(clients, DEMO_NETWORKS):
        assert ipaddress.ip_address(client.ip) in ipaddress.ip_network(network)
        assert client.country == country


def test_demo_db_outside_ranges_and_mapped_addresses(tmp_path):
    path = tmp_path / "demo.mmdb"
    build_demo_db(path)
    with GeoReader(path) as reader, geoip2.database.Reader(str(path)) as g:
        assert reader.lookup("198.51.99.1") is None
        assert reader.lookup("2001:db8:99::1") is None
        assert reader.lookup("8.8.8.8") is None
        assert reader.lookup("::ffff:198.51.100.70") == "GB"
        # The ::ffff:0:0/96 alias is in the file itself, for readers that do not unwrap.
        assert g.country("::ffff:198.51.100.70").country.iso_code == "GB"


def test_rebuild_replaces_file(tmp_path):
    path = tmp_path / "demo.mmdb"
    path.write_bytes(b"stale")
    build_demo_db(path)
    build_demo_db(path)
    with GeoReader(path) as reader:
        assert reader.lookup("203.0.113.10") == "JP"
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["demo.mmdb"]
