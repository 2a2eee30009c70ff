"""Who the client is (router/client_ip.py): the socket peer, or the first
untrusted X-Forwarded-For hop behind trusted proxies."""
from __future__ import annotations

import ipaddress

from router.client_ip import TrustedProxies, client_address, parse_ip


def test_client_ip_rules():
    trusted = TrustedProxies([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")])
    assert client_address("203.0.113.5", b"1.2.3.4", trusted) == "203.0.113.5"  # untrusted peer
    assert client_address("10.0.0.1", b"1.2.3.4", trusted) == "1.2.3.4"
    assert client_address("10.0.0.1", b"9.9.9.9, 1.2.3.4, 10.0.0.7", trusted) == "1.2.3.4"
    assert client_address("::1", b"2001:db8::1", trusted) == "2001:db8::1"
    assert client_address("::ffff:10.0.0.1", b"1.2.3.4", trusted) == "1.2.3.4"
    assert client_address("::ffff:203.0.113.5", None, trusted) == "203.0.113.5"
    assert client_address("10.0.0.1", b"garbage, 1.2.3.4", trusted) == "1.2.3.4"
    assert client_address("10.0.0.1", b"1.2.3.4, garbage", trusted) == "10.0.0.1"
    assert client_address("10.0.0.1", b"10.0.0.2, 10.0.0.3", trusted) == "10.0.0.2"
    assert parse_ip("[2001:db8::1]:443") == ipaddress.ip_address("2001:db8::1")
    assert parse_ip("203.0.113.7:5000") == ipaddress.ip_address("203.0.113.7")
    assert parse_ip("nope") is None
