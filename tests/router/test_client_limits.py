"""Hostile clients, bytes in and bytes out on a moved clock: head size counted
on raw bytes, header/body/send timeouts, the connection limit, and the client's
own failures never held against a region."""
from __future__ import annotations

import pytest

from router.config import LimitsConfig, default_config
from router.proxy import default_max_connections

GET = b"GET /a HTTP/1.1\r\nHost: api\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def status_of(out: bytes) -> int:
    assert out.startswith(b"HTTP/1.1 "), out[:200]
    return int(out[9:12])


# -- 1. head size on raw bytes ------------------------------------------------------

@pytest.mark.parametrize("start,unit", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ", b"v" * 100),  # one endless value
    (b"GET / HTTP/1.1\r\nHost: x\r\n", b"N" * 100),  # one endless name
    (b"GET / HTTP/1.1\r\nHost: x\r\n", b"X-A: b\r\n" * 12),  # many small headers
])
def test_endless_head_is_431_as_soon_as_the_limit_arrives(rig_factory, start, unit):
    rig = rig_factory(max_header_bytes=1024)
    conn, t = rig.client()
    conn.data_received(start)
    sent = len(start)
    while sent + len(unit) <= 1024:
        conn.data_received(unit)
        sent += len(unit)
        assert not t.out and not t.closed  # nothing parsed, nothing answered yet
        assert sum(map(len, conn._head_parts)) == sent <= 1024  # held raw, bounded
        assert conn.req is None  # the parser has not seen a byte
    conn.data_received(unit)  # past the limit, still no end of head
    assert status_of(t.take()) == 431 and t.closed
    assert conn._head_parts == []


def test_head_in_one_byte_reads_is_parsed_once(rig_factory):
    rig = rig_factory()
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    feeds = []
    real = conn.parser

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def feed_data(self, data):
            feeds.append(bytes(data))
            real.feed_data(data)

    conn.parser = Counting()
    head = b"GET /x?y=1 HTTP/1.1\r\nHost: api\r\nX-A: 1\r\n\r\n"
    for i in range(len(head)):
        conn.data_received(head[i:i + 1])
    assert feeds == [head]  # one parse of the whole head: linear in its bytes
    assert ut.out.startswith(b"GET /x?y=1 HTTP/1.1\r\n")
    up.data_received(OK)
    assert status_of(t.take()) == 200


def test_head_of_exactly_the_limit_passes_and_one_more_byte_is_431(rig_factory):
    base = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n"
    for extra, status in ((0, 200), (1, 431)):
        rig = rig_factory(max_header_bytes=200)
        up, _ = rig.upstream("us-east-1")
        conn, t = rig.client()
        head = base.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (200 - len(base) + extra))
        conn.data_received(head)
        if status == 200:
            up.data_received(OK)
        assert status_of(t.take()) == status


def test_long_request_line_is_414(rig_factory):
    rig = rig_factory(max_header_bytes=256)
    conn, t = rig.client()
    conn.data_received(b"GET /" + b"a" * 300)
    assert status_of(t.take()) == 414 and t.closed


def test_a_head_after_a_sized_body_in_the_same_read_is_counted(rig_factory):
    rig = rig_factory(max_header_bytes=512)
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /next HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 600 + b"\r\n\r\n"
    )
    assert ut.out.endswith(b"\r\n\r\nhello")  # the first went on
    up.data_received(OK)
    rig.run()
    out = t.take()
    assert status_of(out) == 200 and b"HTTP/1.1 431 " in out and t.closed


def test_pipelined_heads_split_anywhere_are_answered_in_order(rig_factory):
    rig = rig_factory()
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    data = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    conn.data_received(data[:30])
    conn.data_received(data[30:47])
    conn.data_received(data[47:])
    assert ut.take().startswith(b"GET /1 ")
    up.data_received(OK)
    rig.run()
    assert ut.take().startswith(b"GET /2 ")
    up.data_received(OK)
    rig.run()
    assert t.take().count(b"HTTP/1.1 200 OK") == 2 and not t.closed


# -- 2. header_timeout from the first byte of every head ----------------------------

def test_partial_head_is_408_at_header_timeout(rig_factory):
    rig = rig_factory(header_timeout=10.0, idle_timeout=60.0)
    conn, t = rig.client()
    conn.data_received(b"GET / HTTP/1.1\r\n")
    for _ in range(9):  # a byte a second does not buy more time
        rig.advance(1.0)
        conn.data_received(b"X")
    assert not t.out and not t.closed
    rig.advance(1.5)
    assert status_of(t.take()) == 408 and t.closed


def test_keep_alive_head_timed_from_its_own_first_byte(rig_factory):
    rig = rig_factory(header_timeout=10.0, idle_timeout=60.0)
    up, _ = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(GET)
    up.data_received(OK)
    assert status_of(t.take()) == 200
    rig.advance(50.0)  # idle, within idle_timeout
    assert not t.closed
    conn.data_received(b"G")
    rig.advance(9.0)
    assert not t.closed
    rig.advance(1.5)
    assert status_of(t.take()) == 408 and t.closed


def test_idle_keep_alive_closes_quietly(rig_factory):
    rig = rig_factory(idle_timeout=5.0)
    conn, t = rig.client()
    rig.advance(5.5)
    assert t.closed and not t.out


# -- 3. body timeout: the client's stall ---------------------------------------------

POST = b"POST /pay HTTP/1.1\r\nHost: api\r\nContent-Length: 10\r\n\r\n"


def test_a_small_body_is_read_whole_before_a_region_is_chosen(rig_factory):
    rig = rig_factory(body_timeout=5.0)
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(POST + b"abc")
    assert not ut.out  # a stalling client holds no region connection
    rig.advance(5.5)
    assert status_of(t.take()) == 408 and t.closed
    assert not ut.out and rig.region("us-east-1").pool.idle_connections == 1
    conn2, t2 = rig.client()
    conn2.data_received(POST + b"abcde")
    conn2.data_received(b"fghij")
    assert ut.take().endswith(b"\r\n\r\nabcdefghij")  # head and body in one write
    up.data_received(OK)
    assert status_of(t2.take()) == 200


def test_stalled_body_is_408_and_never_held_against_the_region(rig_factory):
    rig = rig_factory(body_timeout=5.0, read_timeout=30.0, retry_body_bytes=2)  # streamed from byte 3
    up, ut = rig.upstream("us-east-1")
    other, other_t = rig.upstream("us-west-2")
    conn, t = rig.client()
    conn.data_received(POST + b"abc")
    assert ut.out.endswith(b"abc")
    rig.advance(4.0)
    conn.data_received(b"de")  # bytes keep it alive
    rig.advance(4.0)
    assert not t.out
    rig.advance(1.5)
    assert status_of(t.take()) == 408 and t.closed
    assert ut.aborted and up.closed  # the region connection is freed, not pooled
    assert rig.region("us-east-1").pool.open_connections == 0
    assert not other_t.out  # never retried elsewhere
    assert rig.failures("us-east-1") == 0 and rig.region("us-east-1").in_flight == 0


def test_region_silence_while_the_client_owes_the_body_is_the_clients_fault(rig_factory):
    rig = rig_factory(body_timeout=30.0, read_timeout=5.0, retry_body_bytes=2)
    up, ut = rig.upstream("us-east-1")
    rig.upstream("us-west-2")
    conn, t = rig.client()
    conn.data_received(POST + b"abc")
    rig.advance(6.0)  # the region's read timeout fires first
    assert status_of(t.take()) == 408 and t.closed
    assert rig.failures("us-east-1") == 0 and up.closed


def test_body_paused_by_the_router_does_not_time_out(rig_factory):
    rig = rig_factory(body_timeout=5.0, read_timeout=60.0, retry_body_bytes=2)
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(POST + b"abc")
    up.pause_writing()  # the region does not take the body: we stop reading the client
    assert t.paused
    rig.advance(20.0)
    assert not t.out and not t.closed
    up.resume_writing()
    conn.data_received(b"defghij")
    up.data_received(OK)
    assert status_of(t.take()) == 200 and rig.failures("us-east-1") == 0


# -- 4. send timeout: the client does not read ----------------------------------------

def test_client_not_reading_is_cut_and_the_region_connection_freed(rig_factory):
    rig = rig_factory(send_timeout=8.0)
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(GET)
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
    conn.pause_writing()  # the client's buffer is full
    assert ut.paused  # the region is not read meanwhile
    rig.advance(7.0)
    assert not t.closed
    rig.advance(1.5)
    assert t.aborted
    conn.connection_lost(None)
    assert up.closed and rig.region("us-east-1").pool.open_connections == 0
    assert rig.failures("us-east-1") == 0 and rig.region("us-east-1").in_flight == 0


def test_a_slow_reader_that_keeps_reading_is_not_cut(rig_factory):
    rig = rig_factory(send_timeout=8.0)
    up, _ = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(GET)
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
    for _ in range(4):
        conn.pause_writing()
        rig.advance(5.0)
        conn.resume_writing()
    up.data_received(b"def")
    assert not t.closed and t.take().endswith(b"abcdef")


def test_closing_with_unsent_bytes_is_bounded_by_send_timeout(rig_factory):
    rig = rig_factory(send_timeout=3.0, max_header_bytes=100)
    conn, t = rig.client()
    t.buffered = 4096  # the client reads nothing of our 431
    conn.data_received(b"GET / HTTP/1.1\r\nX: " + b"a" * 200)
    assert t.closed and not t.aborted
    rig.advance(3.5)
    assert t.aborted


# -- 5. connection limit -------------------------------------------------------------

def test_connections_over_the_limit_are_refused_at_once(rig_factory):
    rig = rig_factory(max_connections=2)
    rig.client()
    rig.client()
    conn, t = rig.client()
    out = t.take()
    assert status_of(out) == 503 and b"Retry-After: 1\r\n" in out and t.closed
    assert conn not in rig.proxy.connections and len(rig.proxy.connections) == 2
    assert b"edge_router_connections_refused_total 1.0" in rig.metrics.render()
    conn.connection_lost(None)  # its close does not free someone else's place
    assert len(rig.proxy.connections) == 2


def test_default_connection_limit_leaves_descriptors_for_pools_and_probes():
    cfg = default_config()  # 4 regions, pool_size 128
    assert default_max_connections(cfg, nofile=20000) == 20000 - 4 * (128 + 2) - 64
    assert default_max_connections(cfg, nofile=100) == 16  # never zero
    assert LimitsConfig().max_connections is None


# -- 15. the client's failures are its own ------------------------------------------------

def test_body_too_large_mid_stream_is_413_and_not_the_regions_fault(rig_factory):
    rig = rig_factory(max_body_bytes=8, retry_body_bytes=2)  # streamed already
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n")
    conn.data_received(b"5\r\nfghij\r\n")
    assert status_of(t.take()) == 413 and t.closed and up.closed
    assert rig.failures("us-east-1") == 0


def test_client_abort_mid_request_is_not_the_regions_fault(rig_factory):
    rig = rig_factory(retry_body_bytes=2)
    up, _ = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(POST + b"abc")
    conn.connection_lost(ConnectionResetError())
    assert up.closed and rig.failures("us-east-1") == 0 and rig.region("us-east-1").in_flight == 0


def test_new_limits_are_read_and_checked_with_their_key_path():
    import tomllib

    from router.config import ConfigError, parse_config

    base = ('default_region = "r"\n[[regions]]\nid = "r"\napi = "http://127.0.0.1:1"\n'
            'health = "http://127.0.0.1:1/h"\n')
    cfg = parse_config(tomllib.loads(
        base + '[limits]\nbody_timeout = "5s"\nsend_timeout = "250ms"\nmax_connections = 300\n'))
    assert (cfg.limits.body_timeout, cfg.limits.send_timeout, cfg.limits.max_connections) == (5.0, 0.25, 300)
    assert LimitsConfig().body_timeout == 30.0 and LimitsConfig().send_timeout == 60.0
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(
            base + '[limits]\nbody_timeout = 5\nsend_timeout = "0s"\nmax_connections = 0\n'))
    text = str(info.value)
    assert "limits.body_timeout" in text and "limits.send_timeout" in text and "limits.max_connections" in text


def test_a_steady_upload_longer_than_read_timeout_is_not_cut(rig_factory):
    rig = rig_factory(body_timeout=30.0, read_timeout=5.0, retry_body_bytes=2)
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(POST + b"a")
    for c in b"bcdefghi":
        rig.advance(3.0)  # 24 s in all, never 5 s without a byte sent to the region
        conn.data_received(bytes([c]))
    conn.data_received(b"j")
    assert ut.out.endswith(b"abcdefghij") and not t.out
    up.data_received(OK)
    assert t.take().startswith(b"HTTP/1.1 200 ") and rig.failures("us-east-1") == 0


def test_pipelined_requests_wait_as_raw_bytes_not_as_parsed_requests(rig_factory):
    rig = rig_factory()
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    conn.data_received(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(500)))
    assert len(conn.queue) == 1  # one waiting; the other 498 are still bytes
    answered = 0
    while answered < 500:
        sent = ut.take()
        assert sent.startswith(b"GET /%d " % answered), sent[:30]
        up.data_received(OK)
        rig.run()
        answered += 1
        assert len(conn.queue) <= 1
    assert t.take().count(b"HTTP/1.1 200 OK") == 500 and not t.closed


def test_too_many_pipelined_inside_one_read_is_a_503_after_the_others(rig_factory):
    rig = rig_factory()
    up, ut = rig.upstream("us-east-1")
    conn, t = rig.client()
    # A chunked body is fed whole: what follows it in the same read is parsed at once.
    conn.data_received(b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
                       + b"GET /q HTTP/1.1\r\nHost: x\r\n\r\n" * 40)
    assert len(conn.queue) == 32
    for _ in range(33):
        up.data_received(OK)
        rig.run()
    out = t.take()
    assert out.count(b"HTTP/1.1 200 OK") == 33 and b"HTTP/1.1 503 " in out and t.closed


# -- 4b. a client that stops reading costs its own connection, not others' turn --------

def _fresh_connection(rig):
    """What the pool's next connect gets: the real protocol over an in-memory transport."""
    from wire_rig import MemTransport

    made = []

    async def create_connection(factory, *args, **kwargs):
        conn, t = factory(), MemTransport(("127.0.0.1", 9))
        conn.connection_made(t)
        made.append((conn, t))
        return t, conn
    rig.loop.create_connection = create_connection
    return made


def _downloading(rig, send_timeout):
    """A client in the middle of a big answer on the pool's only connection."""
    rig_ = rig(pool_size=1, pool_wait=2.0, send_timeout=send_timeout)
    up, ut = rig_.upstream("us-east-1")
    client, ct = rig_.client(("203.0.113.7", 4000))
    client.data_received(GET)
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n" + b"x" * 1000)
    return rig_, ut, client, ct


def test_a_stalled_client_loses_its_region_connection_to_a_waiting_request(rig_factory):
    rig, ut, hog, ht = _downloading(rig_factory, 60.0)
    hog.pause_writing()  # it stopped reading
    assert ut.paused
    made = _fresh_connection(rig)
    normal, nt = rig.client(("203.0.113.8", 4001))
    normal.data_received(GET)  # the pool's one connection is busy: it waits
    rig.run()
    assert not ht.closed and not made
    rig.advance(1.0)  # half of pool_wait without reading: the stalled client is cut
    assert ht.aborted and ut.aborted
    ((up2, ut2),) = made  # the waiting request got the freed slot
    assert ut2.out.startswith(b"GET ")
    up2.data_received(OK)
    assert status_of(nt.take()) == 200
    hog.connection_lost(None)
    rt = rig.region("us-east-1")
    assert rig.failures("us-east-1") == 0 and rt.in_flight == 0 and rt.pool.open_connections == 1
    assert rig.metrics.stalled_clients_cut.labels("us-east-1")._value.get() == 1


def test_a_stalled_client_is_left_alone_while_nobody_waits(rig_factory):
    rig, ut, hog, ht = _downloading(rig_factory, 8.0)
    hog.pause_writing()
    rig.advance(7.0)  # only send_timeout cuts it
    assert not ht.closed
    hog.resume_writing()  # it reads again: no longer a candidate
    hog.pause_writing()
    rig.advance(1.0)
    assert not ht.closed


def test_a_client_that_reads_again_is_not_cut_for_a_waiting_request(rig_factory):
    rig, ut, reader, rt_ = _downloading(rig_factory, 60.0)
    reader.pause_writing()
    rig.advance(0.5)
    reader.resume_writing()  # drained: it is reading
    made = _fresh_connection(rig)
    normal, nt = rig.client(("203.0.113.8", 4001))
    normal.data_received(GET)
    rig.advance(1.5)
    assert not rt_.closed and not ut.closed and not made  # the waiter waits its turn (pool_wait)
