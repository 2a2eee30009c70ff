"""Who is the client? The socket peer, or, behind trusted proxies, the first
untrusted address of X-Forwarded-For read right to left. Pure."""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any, Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    """An address from a peer or an XFF entry; IPv4-mapped IPv6 becomes IPv4."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1 and "." in text:  # "203.0.113.7:5000"
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class TrustedProxies:
    """Answers "is this peer a proxy whose X-Forwarded-For we believe?"."""

    __slots__ = ("_nets", "is_trusted")

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]):
        self._nets = tuple(networks)
        # Peers repeat (the same load balancers), so the answer is cached.
        self.is_trusted = lru_cache(maxsize=4096)(self._is_trusted)

    def __bool__(self) -> bool:
        return bool(self._nets)

    def _is_trusted(self, ip: str) -> bool:
        addr = parse_ip(ip)
        if addr is None:
            return False
        return any(addr.version == n.version and addr in n for n in self._nets)


def client_address(peer: str, xff: bytes | None, trusted: TrustedProxies) -> str:
    """The client's address as text (IPv4-mapped peers shown as IPv4).

    Only a trusted peer's X-Forwarded-For is read; entries are walked right to
    left, skipping trusted hops; the first untrusted address is the client. An
    unparsable entry stops the walk: we cannot vouch for anything left of it,
    so the last hop we could verify is the client.
    """
    if not xff or not trusted or not trusted.is_trusted(peer):
        return _canonical(peer)
    client = peer
    for entry in reversed(xff.decode("latin-1").split(",")):
        entry = entry.strip()
        if not entry:
            continue
        addr = parse_ip(entry)
        if addr is None:
            break
        client = str(addr)
        if not trusted.is_trusted(client):
            return client
    return _canonical(client)


@lru_cache(maxsize=4096)
def _canonical(peer: str) -> str:
    addr = parse_ip(peer)
    return str(addr) if addr is not None else peer


def identify_client(peer: str, xff: bytes | None, trusted: TrustedProxies, geo: Any) -> tuple[str, str | None]:
    """(client address, its country or None): what a request needs to be
    ranked. `geo` is a geodata GeoReader, or None without a database."""
    ip = client_address(peer, xff, trusted)
    return ip, (geo.lookup(ip) if geo is not None else None)
