import logging
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from geodata.reader import GeoDatabaseError, GeoReader

DATA = Path(__file__).resolve().parent.parent / "data" / "geo"
GOOD_DBS = {
    "GeoLite2-Country-Test.mmdb": "GeoLite2-Country",
    "GeoIP2-Country-Test.mmdb": "GeoIP2-Country",
    "GeoLite2-City-Test.mmdb": "GeoLite2-City",
    "GeoIP2-City-Test.mmdb": "GeoIP2-City",
}
BROKEN_DB = DATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb"


@pytest.fixture(params=sorted(GOOD_DBS))
def reader(request):
    with GeoReader(DATA / request.param) as r:
        yield r


def test_database_type_and_path():
    for name, db_type in GOOD_DBS.items():
        with GeoReader(DATA / name) as r:
            assert r.database_type == db_type
            assert r.path == str(DATA / name)


@pytest.mark.parametrize(
    "ip, country",
    [
        ("81.2.69.142", "GB"),      # registered_country US
        ("2.125.160.216", "GB"),    # registered_country FR
        ("89.160.20.112", "SE"),    # registered_country DE
        ("67.43.156.1", "BT"),      # registered_country RO
        ("202.196.224.1", "PH"),    # represented_country US
        ("2001:218::1", "JP"),
        ("::ffff:81.2.69.142", "GB"),
        ("::FFFF:89.160.20.112", "SE"),
        ("2002:5102:458e::", "GB"),  # 6to4 alias of 81.2.69.142
        (" 81.2.69.142 ", "GB"),
    ],
)
def test_country_not_registered_or_represented(reader, ip, country):
    assert reader.lookup(ip) == country


@pytest.mark.parametrize(
    "ip",
    [
        "1.1.1.1", "2001:4860::1",              # not in the test DBs
        "214.1.1.1",                            # GeoIP2 DBs: record without country
        "10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "169.254.1.1",
        "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255",
        "::1", "::", "fe80::1", "fe80::1%eth0", "fd00::1", "ff02::1",
        "::ffff:10.0.0.1", "::ffff:127.0.0.1",
        "", "garbage", "1.2.3.256", "81.2.69.142:80", "[2001:218::1]",
    ],
)
def test_no_country(reader, ip):
    assert reader.lookup(ip) is None
    assert reader.errors == 0


def test_broken_db_returns_none_counts_and_logs_once(caplog):
    with caplog.at_level(logging.WARNING, logger="edge_router.geo"), GeoReader(BROKEN_DB) as r:
        assert r.lookup("81.2.69.142") is None
        assert r.lookup("81.2.69.142") is None
        assert r.errors == 1
        assert r.lookup("2001:218::1") is None
        assert r.errors == 2
        assert r.lookup("1.1.1.1") is None  # not found is not an error
        assert r.errors == 2
    records = [rec for rec in caplog.records if rec.name == "edge_router.geo"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert str(BROKEN_DB) in records[0].getMessage()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mmdb"
    with pytest.raises(GeoDatabaseError, match="file not found") as info:
        GeoReader(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"this is not a MaxMind database\n" * 100])
def test_not_an_mmdb(tmp_path, content):
    path = tmp_path / "fake.mmdb"
    path.write_bytes(content)
    with pytest.raises(GeoDatabaseError, match="is not a MaxMind DB") as info:
        GeoReader(path)
    assert str(path) in str(info.value)


def test_directory(tmp_path):
    with pytest.raises(GeoDatabaseError, match="directory"):
        GeoReader(tmp_path)


def _write_db(path, records, ip_version=6):
    writer = MMDBWriter(ip_version=ip_version, ipv4_compatible=ip_version == 6,
                        database_type="Custom-Country")
    for network, record in records:
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


def test_any_db_with_country_iso_code_layout(tmp_path):
    path = _write_db(tmp_path / "custom.mmdb", [
        ("198.51.100.0/25", {"country": {"iso_code": "gb"}}),          # lower case
        ("198.51.100.128/26", {"city": {"names": {"en": "Nowhere"}}}),  # no country
        ("198.51.100.192/26", {"country": "FR"}),                       # wrong shape
        ("2001:db8::/32", {"country": {"iso_code": "NZ"}}),
    ])
    with GeoReader(path) as r:
        assert r.database_type == "Custom-Country"
        assert r.lookup("198.51.100.1") == "GB"
        assert r.lookup("198.51.100.130") is None
        assert r.lookup("198.51.100.200") is None
        # Documentation ranges are real lookups, not "private".
        assert r.lookup("2001:db8::1") == "NZ"
        assert r.errors == 0


def test_ipv6_on_ipv4_only_db(tmp_path):
    path = _write_db(tmp_path / "v4.mmdb", [("203.0.113.0/24", {"country": {"iso_code": "JP"}})],
                     ip_version=4)
    with GeoReader(path) as r:
        assert r.lookup("203.0.113.7") == "JP"
        assert r.lookup("::ffff:203.0.113.7") == "JP"
        assert r.lookup("2001:218::1") is None
        assert r.errors == 0


def test_cached_lookups_agree(reader):
    first = [reader.lookup(ip) for ip in ("81.2.69.142", "10.0.0.1", "2001:218::1")]
    assert first == [reader.lookup(ip) for ip in ("81.2.69.142", "10.0.0.1", "2001:218::1")]
