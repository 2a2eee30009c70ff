"""Misbehaving regions (bench/rogue.py) behind `python -m router serve`
with a one-connection pool: two clients one after the other, and who gets what.
Client A provokes the region; client B must get its own answer."""
from __future__ import annotations

import json
import socket
import time

import pytest

from harness import make_config, request, start_router, wait_until
from bench.rogue import RogueRegion


@pytest.fixture(scope="module")
def rogue():
    r = RogueRegion(late=0.3)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def router(rogue):
    cfg = make_config(
        {"us-east-1": rogue.port},
        limits={"pool_size": 1, "read_timeout": "1s", "max_response_header_bytes": 8192, "pool_wait": "2s"},
        breaker={"consecutive_failures": 100, "min_requests": 1000},
    )
    rp = start_router(cfg)
    yield rp
    rp.stop()


def ask(router, method, path, rid, body=None):
    return request(router.port, method, path, body=body, headers={"X-Request-Id": rid}, timeout=15)


def b_gets_its_own(router, rogue):
    r = ask(router, "GET", "/", "B")
    assert r.status == 200 and r.body == b"for:B", (r.status, r.body)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_clean_answers_share_one_connection(router, rogue):
    assert ask(router, "GET", "/x", "A").body == b"for:A"
    before = rogue.api_connections()
    b_gets_its_own(router, rogue)
    assert rogue.api_connections() == before  # the same connection, reused


def test_late_second_answer_never_reaches_the_next_client(router, rogue):
    r = ask(router, "GET", "/late", "A")
    assert r.status == 200 and r.body == b"for:A"
    before = rogue.api_connections()
    time.sleep(0.8)  # the late answer arrives while the connection is idle
    b_gets_its_own(router, rogue)
    assert rogue.api_connections() == before + 1  # the dirty one was closed
    # (An answer that comes only after the next request went out on the same
    # connection cannot be told from that request's answer: HTTP/1.1 has no
    # request ids. What can be seen, before reuse, is.)


def test_second_answer_in_the_same_write(router, rogue):
    r = ask(router, "GET", "/double", "A")
    assert r.status == 200 and r.body == b"for:A"
    b_gets_its_own(router, rogue)


def test_body_after_a_head_answer(router, rogue):
    r = ask(router, "HEAD", "/head-body", "A")
    assert r.status == 200 and r.body == b""
    time.sleep(0.3)
    b_gets_its_own(router, rogue)


def test_answer_before_the_body_was_read(router, rogue):
    body = b"p" * (512 * 1024)
    r = ask(router, "POST", "/early", "A", body)
    assert r.status == 200 and r.body == b"early:A"
    b_gets_its_own(router, rogue)


def test_answer_and_never_read_the_body(router, rogue):
    body = b"p" * (4 * 1024 * 1024)  # more than the socket buffers take
    try:
        r = ask(router, "POST", "/early-noread", "A", body)
        assert r.body == b"early:A"
    except (ConnectionError, socket.timeout):
        pass  # the router may cut the upload once the answer is out: fine
    # When the kernel took the whole body before the answer came, that answer
    # cannot be told from one given after reading it (HAProxy cannot either):
    # the connection is reused and the region never answers B. B then gets the
    # router's 504, never anyone else's bytes; and the connection is gone after it.
    r = ask(router, "GET", "/", "B")
    assert (r.status, r.body) == (200, b"for:B") or (r.status == 504 and r.json()["error"] == "upstream_timeout"), r
    b_gets_its_own(router, rogue)


def test_endless_response_head(router, rogue):
    rss = rss_kib(router.proc.pid)
    r = ask(router, "GET", "/endless-head", "A")
    assert r.status == 502 and r.json()["error"] == "upstream_head_too_large", r.body
    assert rss_kib(router.proc.pid) < rss + 20 * 1024
    b_gets_its_own(router, rogue)


def test_region_that_never_answers(router, rogue):
    r = ask(router, "GET", "/never", "A")
    assert r.status == 504 and r.json()["error"] == "upstream_timeout"
    b_gets_its_own(router, rogue)


def test_unasked_101(router, rogue):
    r = ask(router, "GET", "/switch", "A")
    assert r.status == 502 and "101" in r.json()["detail"] and b"for:A" not in r.body
    b_gets_its_own(router, rogue)


def test_bad_chunk_size_in_the_first_read(router, rogue):
    r = ask(router, "GET", "/bad-chunk", "A")
    assert r.status == 502 and r.json()["error"] == "upstream_failed", r.body
    b_gets_its_own(router, rogue)
