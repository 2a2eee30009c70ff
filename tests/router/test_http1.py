"""Wire helpers of router/http1.py: status classes and the router's own JSON answers."""
from __future__ import annotations

from router.http1 import error_response, status_class


def test_wire_helpers():
    assert status_class(204) == "2xx" and status_class(503) == "5xx"
    resp = error_response(503, "no_region", "all down", region="none", request_id="r1", close=True)
    head, body = resp.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"X-Edge-Region: none" in head and b"X-Request-Id: r1" in head and b"Connection: close" in head
    assert b"Content-Length: %d" % len(body) in head
    assert body == b'{"error":"no_region","detail":"all down"}'
