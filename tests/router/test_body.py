"""The request body (router/body.py): held for a retry while small, streamed
and no longer held when large, the client paused while no region takes it."""
from __future__ import annotations

from router.body import PENDING_HIGH, RequestBody
from router.http1 import encode_chunk


class Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b


class Source:
    def __init__(self):
        self.paused = False

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False


def test_body_held_for_replay_while_small():
    body = RequestBody(Source(), chunked=False, expected=6, hold_limit=100)
    body.feed(b"abc")
    s1 = Sink()
    body.attach(s1)
    body.feed(b"def")
    body.finish()
    assert bytes(s1.data) == b"abcdef" and body.replayable
    body.detach()
    s2 = Sink()
    body.attach(s2)  # a retry to another region gets the whole body again
    assert bytes(s2.data) == b"abcdef"


def test_body_streams_and_stops_holding_when_large():
    src = Source()
    body = RequestBody(src, chunked=True, expected=None, hold_limit=4)
    s = Sink()
    body.attach(s)
    body.feed(b"abc")
    body.feed(b"defgh")
    body.finish()
    assert not body.replayable
    assert bytes(s.data) == encode_chunk(b"abc") + encode_chunk(b"defgh") + b"0\r\n\r\n"
    assert body.chunks == []  # nothing kept once it is too big to replay


def test_body_pauses_client_when_no_region_takes_it():
    src = Source()
    body = RequestBody(src, chunked=False, expected=10 * PENDING_HIGH, hold_limit=0)
    body.feed(b"x" * (PENDING_HIGH + 1))
    assert src.paused
    body.attach(Sink())
    assert not src.paused
