"""Client IP -> ISO country code, from a MaxMind DB (GeoLite2/GeoIP2 Country or City).

Only `country.iso_code` is used: the country the address is in. `registered_country`
(where the block is registered) and `represented_country` (e.g. a military base)
would send clients to the wrong region.
"""
from __future__ import annotations

import functools
import ipaddress
import logging
import os

import maxminddb
import maxminddb.errors

log = logging.getLogger("edge_router.geo")

# Addresses that never reach us from the public internet: looking them up is
# pointless at best and wrong at worst. Hand-written rather than is_private,
# because Python counts the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
# 203.0.113.0/24, 2001:db8::/32) as private, and the demo DB maps exactly those.
_NON_ROUTABLE_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",        # "this network"
        "10.0.0.0/8",       # private
        "100.64.0.0/10",    # carrier-grade NAT
        "127.0.0.0/8",      # loopback
        "169.254.0.0/16",   # link-local
        "172.16.0.0/12",    # private
        "192.0.0.0/24",     # IETF protocol assignments
        "192.168.0.0/16",   # private
        "198.18.0.0/15",    # benchmarking
        "224.0.0.0/4",      # multicast
        "240.0.0.0/4",      # reserved, and broadcast
    )
)
_NON_ROUTABLE_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",           # unspecified
        "::1/128",          # loopback
        "100::/64",         # discard-only
        "fc00::/7",         # unique local
        "fe80::/10",        # link-local
        "fec0::/10",        # site-local (deprecated)
        "ff00::/8",         # multicast
    )
)

DEFAULT_CACHE_SIZE = 65536


class GeoDatabaseError(Exception):
    """The GeoIP database cannot be used: message names the path and the reason."""


class GeoReader:
    """Reads country codes from one MaxMind DB file. Thread-safe; lookups are cached."""

    def __init__(self, path: str | os.PathLike[str], cache_size: int = DEFAULT_CACHE_SIZE):
        self.path = os.fspath(path)
        self._reader = _open(self.path)
        meta = self._reader.metadata()
        self.database_type: str = meta.database_type
        self.ip_version: int = meta.ip_version
        self.errors = 0
        self._lookup_cached = functools.lru_cache(maxsize=cache_size)(self._lookup)

    def lookup(self, ip: str) -> str | None:
        """The upper-case ISO 3166-1 alpha-2 country of `ip`, or None.

        None for unparsable strings, private/loopback/link-local/reserved addresses,
        addresses not in the database, records without a country, and lookups the
        database fails (counted in `errors`).
        """
        return self._lookup_cached(ip)

    def close(self) -> None:
        self._lookup_cached.cache_clear()
        self._reader.close()

    def __enter__(self) -> GeoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GeoReader({self.path!r}, database_type={self.database_type!r})"

    def _lookup(self, ip: str) -> str | None:
        addr = _routable_address(ip)
        if addr is None or (addr.version == 6 and self.ip_version == 4):
            return None
        try:
            record = self._reader.get(addr)
        except Exception as exc:  # noqa: BLE001 - a bad record must not fail the request
            self.errors += 1
            if self.errors == 1:
                log.warning(
                    "GeoIP database %s: lookup of %s failed (%s); "
                    "further lookup failures are only counted",
                    self.path, ip, exc,
                )
            return None
        if not isinstance(record, dict):
            return None
        country = record.get("country")
        code = country.get("iso_code") if isinstance(country, dict) else None
        return code.upper() if isinstance(code, str) and code else None


def _open(path: str) -> maxminddb.Reader:
    if os.path.isdir(path):
        raise GeoDatabaseError(f"GeoIP database {path}: is a directory, not a file")
    try:
        return maxminddb.open_database(path, maxminddb.MODE_AUTO)
    except FileNotFoundError:
        reason = "file not found"
    except PermissionError:
        reason = "permission denied"
    except (maxminddb.errors.InvalidDatabaseError, ValueError):
        # The library's own message repeats the path and adds nothing.
        reason = "is not a MaxMind DB"
    except OSError as exc:
        reason = f"cannot be read ({exc.strerror or exc})"
    raise GeoDatabaseError(f"GeoIP database {path}: {reason}")


def _routable_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(ip.strip())
    except (ValueError, AttributeError):
        return None
    if addr.version == 6:
        # ::ffff:a.b.c.d is how dual-stack sockets report IPv4 peers.
        mapped = addr.ipv4_mapped
        if mapped is not None:
            addr = mapped
        else:
            return None if any(addr in net for net in _NON_ROUTABLE_V6) else addr
    return None if any(addr in net for net in _NON_ROUTABLE_V4) else addr
