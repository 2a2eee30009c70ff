"""Region side, bytes in and bytes out: a pooled connection is reused only after
a provably clean exchange; a region's head is bounded; 101 and broken framing
are clean failures. The real UpstreamConnection and UpstreamPool, no network
(one test uses a socketpair to see poll(2) at checkout)."""
from __future__ import annotations

import asyncio
import socket

import pytest

from router.errors import Sent
from router.pool import Endpoint, UpstreamPool
from router.resolver import Resolver
from router.upstream import UpstreamConnection

from wire_rig import MemTransport  # noqa: E402


class Client:
    """Does with the answer what the exchange does: relay it, end the exchange."""

    def __init__(self, conn: UpstreamConnection):
        self.conn = conn
        self.head = None
        self.body = bytearray()
        self.done = False
        self.failed: BaseException | None = None
        self.interim: list[int] = []

    def upstream_interim(self, status, headers):
        self.interim.append(status)

    def upstream_head(self, head):
        self.head = head
        early, complete, failed = self.conn.relay()
        for chunk in early:
            self.body += chunk
        if complete:
            self.upstream_complete()
        elif failed is not None:
            self.upstream_failed(failed)

    def upstream_body(self, data):
        self.body += data

    def upstream_flush(self):
        pass

    def upstream_complete(self):
        self.done = True
        self.conn.finish()

    def upstream_failed(self, exc):
        self.failed = exc

    def upstream_pause_writing(self):
        pass

    def upstream_resume_writing(self):
        pass


def pool_of_one(conn: UpstreamConnection, max_head: int = 65536) -> UpstreamPool:
    """A one-slot pool whose slot `conn` holds."""
    loop = asyncio.get_running_loop()
    pool = UpstreamPool("r", Endpoint.parse("http://127.0.0.1:9"), resolver=Resolver(loop), ssl_context=None,
                        size=1, wait=0.2, connect_timeout=1.0, read_timeout=5.0, idle_timeout=60.0,
                        max_head_bytes=max_head)
    conn.pool = pool
    pool._open = 1
    return pool


def one_slot_pool(max_head: int = 65536):
    conn = UpstreamConnection(asyncio.get_running_loop(), "r", 5.0, max_head)
    t = MemTransport()
    conn.connection_made(t)
    return pool_of_one(conn, max_head), conn, t


def exchange(conn, *reads: bytes, head: bool = False) -> Client:
    client = Client(conn)
    conn.begin(head, client)
    for data in reads:
        if conn.closed:
            break
        conn.data_received(data)
    return client


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def run(coro_fn):
    return asyncio.run(coro_fn())


def test_clean_exchange_goes_back_to_the_pool():
    async def main():
        pool, conn, _ = one_slot_pool()
        c = exchange(conn, OK[:20], OK[20:])
        assert c.done and bytes(c.body) == b"ok"
        assert pool.idle_connections == 1 and pool.take_idle() is conn
        pool.close()
    run(main)


@pytest.mark.parametrize("after", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!",  # a second answer in the same read
    b"extra",  # leftover bytes past Content-Length
    b"\x00\x01",
])
def test_bytes_after_the_answer_in_the_same_read_make_it_dirty(after):
    async def main():
        pool, conn, _ = one_slot_pool()
        c = exchange(conn, OK + after)
        assert c.done and bytes(c.body) == b"ok" and c.head.status == 200  # the first answer, only
        assert conn.closed and pool.idle_connections == 0 and pool.open_connections == 0
        pool.close()
    run(main)


def test_a_second_head_never_joins_the_first():
    async def main():
        pool, conn, _ = one_slot_pool()
        c = exchange(conn, OK + b"HTTP/1.1 200 OK\r\nSet-Cookie: stolen=1\r\nContent-Length: 0\r\n\r\n")
        assert all(b"stolen" not in h for h in c.head.headers)
        assert conn.closed
        pool.close()
    run(main)


def test_late_bytes_while_idle_close_the_connection():
    async def main():
        pool, conn, _ = one_slot_pool()
        exchange(conn, OK)
        assert pool.idle_connections == 1
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        assert conn.closed and pool.idle_connections == 0 and pool.open_connections == 0
        assert pool.take_idle() is None
        pool.close()
    run(main)


@pytest.mark.parametrize("body", [
    b"hello",  # the Content-Length body a HEAD answer must not carry
])
def test_body_after_head_answer(body):
    async def main():
        pool, conn, _ = one_slot_pool()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        c = exchange(conn, head + body, head=True)  # same read
        assert c.done and bytes(c.body) == b"" and conn.closed
        pool2, conn2, _ = one_slot_pool()
        c2 = exchange(conn2, head, head=True)  # clean HEAD answer: reused ...
        assert c2.done and pool2.idle_connections == 1
        conn2.data_received(body)  # ... until its body shows up later
        assert conn2.closed and pool2.idle_connections == 0
        pool.close()
        pool2.close()
    run(main)


def test_chunked_head_answer_followed_by_a_last_chunk_is_dirty():
    async def main():
        pool, conn, _ = one_slot_pool()
        c = exchange(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", head=True)
        assert c.done and conn.closed
        pool.close()
    run(main)


def test_request_bytes_still_in_the_write_buffer_forbid_reuse():
    async def main():
        pool, conn, t = one_slot_pool()
        client = Client(conn)
        conn.begin(False, client)
        conn.write(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n")
        t.buffered = 4096  # the region answered while our body was still queued
        conn.data_received(OK)
        assert client.done and conn.closed and pool.idle_connections == 0
        pool.close()
    run(main)


def test_checkout_polls_for_bytes_that_arrived_while_idle():
    """Bytes in the kernel that the loop has not read yet: seen at checkout."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        _, conn = await loop.create_connection(lambda: UpstreamConnection(loop, "r", 5.0), sock=a)
        pool = pool_of_one(conn)
        client = Client(conn)
        conn.begin(False, client)
        b.sendall(OK)
        for _ in range(100):
            if client.done:
                break
            await asyncio.sleep(0.01)
        assert client.done and pool.idle_connections == 1
        b.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        # no await: the loop has not run data_received, only poll(2) can tell
        assert pool.take_idle() is None and conn.closed and pool.open_connections == 0
        c, d = socket.socketpair()
        clean = await loop.create_connection(lambda: UpstreamConnection(loop, "r", 5.0), sock=c)
        assert clean[1].idle_clean()  # nothing to read: clean
        d.close()
        assert not clean[1].idle_clean()  # the region closed it (EOF is readable)
        clean[0].close()
        b.close()
        pool.close()
    run(main)


def test_handed_to_a_waiter_but_dirty_before_it_runs():
    async def main():
        pool, conn, _ = one_slot_pool()
        c = Client(conn)
        conn.begin(False, c)
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        conn.data_received(OK)  # released to the waiter ...
        conn.data_received(b"X")  # ... then a late byte before it runs
        with pytest.raises(Exception) as err:
            # the slot is free: the waiter opens a new connection (to port 9: refused)
            await asyncio.wait_for(waiter, 2.0)
        assert "closed" not in str(err.value)
        assert conn.closed
        pool.close()
    run(main)


# -- head size ----------------------------------------------------------------------------
def test_response_head_over_the_limit_is_a_failure_before_any_relay():
    async def main():
        pool, conn, _ = one_slot_pool(max_head=1024)
        c = Client(conn)
        conn.begin(False, c)
        conn.data_received(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):  # header lines, forever
            if conn.closed:
                break
            conn.data_received(b"X-Filler: " + b"a" * 90 + b"\r\n")
        assert c.head is None and isinstance(c.failed, Sent) and c.failed.reason == "head-too-large"
        assert conn.closed and pool.open_connections == 0
        assert conn._head_bytes <= 1024 + 200  # stopped at the limit
        pool.close()
    run(main)


def test_endless_header_value_in_one_big_read_is_cut_at_the_limit():
    async def main():
        pool, conn, _ = one_slot_pool(max_head=4096)
        c = exchange(conn, b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * 1_000_000)
        assert c.failed is not None and c.failed.reason == "head-too-large" and c.head is None
        pool.close()
    run(main)


def test_head_just_under_the_limit_with_a_big_body_in_the_same_read():
    async def main():
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
        pool, conn, _ = one_slot_pool(max_head=len(head))
        c = exchange(conn, head + b"b" * 100000)
        assert c.done and len(c.body) == 100000 and c.failed is None
        assert pool.idle_connections == 1
        pool.close()
    run(main)


def test_interim_answers_count_toward_the_head_limit():
    async def main():
        pool, conn, _ = one_slot_pool(max_head=1024)
        c = exchange(conn, *[b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"] * 100)
        assert c.failed is not None and c.failed.reason == "head-too-large"
        pool.close()
    run(main)


# -- 101 and broken framing ---------------------------------------------------------------
@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
])
def test_unasked_101_is_a_clean_failure(answer):
    async def main():
        pool, conn, _ = one_slot_pool()
        c = exchange(conn, answer)
        assert c.head is None and isinstance(c.failed, Sent) and "101" in c.failed.detail
        assert conn.closed and pool.open_connections == 0
        pool.close()
    run(main)


def test_invalid_chunk_size_in_the_first_read_never_relays_the_head():
    async def main():
        pool, conn, _ = one_slot_pool()
        c = exchange(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n")
        assert c.head is None and isinstance(c.failed, Sent) and conn.closed
        pool.close()
    run(main)


def test_invalid_chunk_size_after_the_head_went_out_fails_mid_body():
    async def main():
        pool, conn, _ = one_slot_pool()
        c = exchange(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", b"zz\r\n")
        assert c.head is not None and bytes(c.body) == b"abc" and c.failed is not None and conn.closed
        pool.close()
    run(main)
