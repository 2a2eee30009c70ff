"""The region connection (router/upstream.py): a discarded answer is read to its
end and the connection kept; the region's Keep-Alive timeout bounds reuse."""
from __future__ import annotations

import asyncio

from wire_rig import pool_with_one_connection


def test_discarded_answer_is_read_to_its_end_and_the_connection_kept():
    class Sink:
        def __init__(self):
            self.heads = []

        def upstream_head(self, head):
            self.heads.append(head)
            conn.discard()  # what the proxy does with a 503 it retries elsewhere

        def upstream_failed(self, exc):
            raise AssertionError(exc)

    async def main():
        nonlocal conn
        pool, conn = pool_with_one_connection()
        sink = Sink()
        conn.begin(False, sink)
        conn.data_received(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 10\r\n\r\n01234")
        assert sink.heads[0].status == 503 and pool.idle_connections == 0  # body still coming
        conn.data_received(b"56789")
        assert pool.idle_connections == 1 and not conn.closed  # read to its end, back in the pool
        assert pool.take_idle() is conn
        pool.close()

    conn = None
    asyncio.run(main())


def test_region_keep_alive_timeout_bounds_reuse():
    class Sink:
        def upstream_head(self, head):
            if conn.relay()[1]:  # complete in the same read: the caller ends it
                conn.finish()

        def upstream_body(self, data):
            pass

        def upstream_flush(self):
            pass

        def upstream_complete(self):
            conn.finish()

    async def main():
        nonlocal conn
        pool, conn = pool_with_one_connection()
        conn.begin(False, Sink())
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5, max=100\r\n\r\nok")
        assert conn.idle_limit == 4.0 and pool.idle_connections == 1
        conn.idle_since -= 4.5  # idle past what the region promised (less a second)
        assert pool.take_idle() is None and conn.closed
        pool.close()

    conn = None
    asyncio.run(main())


def test_a_status_below_100_is_a_bad_response_not_relayed():
    class Sink:
        def __init__(self):
            self.heads, self.failures = [], []

        def upstream_head(self, head):
            self.heads.append(head)

        def upstream_failed(self, exc):
            self.failures.append(exc)

        def upstream_flush(self):
            pass

    async def main():
        pool, conn = pool_with_one_connection()
        sink = Sink()
        conn.begin(False, sink)
        conn.data_received(b"HTTP/1.1 000 OK\r\nContent-Length: 6\r\n\r\nresp-A")  # llhttp takes it
        assert sink.heads == [] and [f.reason for f in sink.failures] == ["bad-response"]
        assert "000" in sink.failures[0].detail and conn.closed and pool.idle_connections == 0
        pool.close()

    asyncio.run(main())
