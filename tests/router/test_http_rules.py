"""HTTP rules at the edge (RFC 9110/9112), bytes in and bytes out: Host and
absolute-form, framing, interim answers, the last answer wins, Retry-After,
and max_attempts counting sent attempts only."""
from __future__ import annotations

import pytest

GET = b"GET /a HTTP/1.1\r\nHost: api\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def split(out: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head[9:12]), head, body


# -- 12, 13: refused at the edge ------------------------------------------------------

@pytest.mark.parametrize("data,status", [
    (b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a:x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", 400),
    (b"GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
])
def test_refused_with_its_status_and_closed(rig_factory, data, status):
    rig = rig_factory()
    _, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(data)
    got, head, body = split(t.take())
    assert got == status, head
    assert b"Connection: close" in head and t.closed and b'"error"' in body
    assert not ut.out  # never reached a region


def test_options_star_is_forwarded(rig_factory):
    rig = rig_factory()
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(b"OPTIONS * HTTP/1.1\r\nHost: api\r\n\r\n")
    assert ut.out.startswith(b"OPTIONS * HTTP/1.1\r\n")
    up.data_received(OK)
    assert split(t.take())[0] == 200


def test_absolute_form_authority_is_the_host(rig_factory):
    rig = rig_factory()
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(b"GET http://api.example:8080/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
    sent = bytes(ut.out)
    assert sent.startswith(b"GET /p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
    assert b"X-Forwarded-Host: api.example:8080\r\n" in sent and b"other.example" not in sent
    up.data_received(OK)
    assert split(t.take())[0] == 200


def test_http10_without_host_is_fine(rig_factory):
    rig = rig_factory()
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(b"GET / HTTP/1.0\r\n\r\n")
    up.data_received(OK)
    assert split(t.take())[0] == 200


# -- 10. interim answers ---------------------------------------------------------------

EARLY = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_103_goes_to_http11_clients_only(rig_factory, version):
    rig = rig_factory()
    up, _ = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(b"GET / HTTP/%s\r\nHost: api\r\n\r\n" % version)
    up.data_received(EARLY)
    up.data_received(b"HTTP/1.1 102 Processing\r\n\r\n" + OK)
    out = t.take()
    if version == b"1.1":
        assert out.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                              b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n")
    else:
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b" 103 " not in out
    assert out.endswith(b"ok")


def test_100_continue_from_a_region_is_not_relayed(rig_factory):
    rig = rig_factory()
    up, _ = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(GET)
    up.data_received(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert t.take().startswith(b"HTTP/1.1 200 OK\r\n")


# -- 11. the last answer wins ------------------------------------------------------------

BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 9\r\n\r\nbusy here"


def test_last_region_503_is_relayed_as_it_is(rig_factory):
    rig = rig_factory(max_attempts=1)
    up, _ = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(GET)
    up.data_received(BUSY)
    status, head, body = split(t.take())
    assert status == 503 and b"Retry-After: 7\r\n" in head and body == b"busy here"
    assert b"X-Edge-Region: us-east-1" in head


def test_region_503_with_no_candidate_left_is_relayed(rig_factory):
    rig = rig_factory()
    up, _ = rig.upstream("us-east-1")
    for rid in rig.REGIONS[1:]:
        rig.region(rid).disabled = True
    conn, t = rig.client()
    conn.data_received(GET)
    up.data_received(BUSY)
    status, head, body = split(t.take())
    assert status == 503 and body == b"busy here"


def test_region_503_without_a_retry_slot_is_relayed(rig_factory):
    rig = rig_factory(retry_budget_min=0, retry_budget_ratio=0.0)
    up, _ = rig.upstream("us-east-1")
    _, other = rig.upstream("us-west-2")
    conn, t = rig.client()
    conn.data_received(GET)
    up.data_received(BUSY)
    assert split(t.take())[2] == b"busy here" and not other.out


def test_region_503_with_a_candidate_left_is_retried(rig_factory):
    rig = rig_factory()
    up, _ = rig.upstream("us-east-1")
    up2, ut2 = rig.upstream("us-west-2")
    conn, t = rig.client()
    conn.data_received(GET)
    up.data_received(BUSY)
    assert ut2.out.startswith(b"GET /a ")
    up2.data_received(OK)
    status, head, _ = split(t.take())
    assert status == 200 and b"X-Edge-Region: us-west-2" in head


# -- 6. Retry-After on the router's own 503 ---------------------------------------------------

def test_no_region_503_carries_retry_after(rig_factory):
    rig = rig_factory()
    for rid in rig.REGIONS:
        rig.region(rid).disabled = True
    conn, t = rig.client()
    conn.data_received(GET)
    status, head, body = split(t.take())
    assert status == 503 and b"\r\nRetry-After: 1" in head and b'"no_region"' in body


# -- 14. max_attempts counts sent attempts --------------------------------------------------

def test_a_busy_pool_does_not_use_an_attempt(rig_factory):
    rig = rig_factory(max_attempts=1, pool_size=1, pool_wait=0.5)
    rig.upstream("us-east-1", idle=False)  # its only connection is busy
    up2, ut2 = rig.upstream("us-west-2")
    conn, t = rig.client()
    conn.data_received(GET)
    rig.advance(1.0)  # the pool wait ends: us-east-1 skipped, not sent
    assert ut2.out.startswith(b"GET /a ")
    up2.data_received(OK)
    assert split(t.take())[0] == 200
    assert rig.failures("us-east-1") == 0
