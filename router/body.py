"""A request body on its way from the client to a region.

It streams: chunks go to the region as they arrive, with flow control. While
the body is small (<= retry_body_bytes) every chunk is also held, so that an
idempotent request can be replayed to another region; past that it is only
streamed and the request can no longer be retried once sent.
"""
from __future__ import annotations

from typing import Protocol

from .http1 import LAST_CHUNK, encode_chunk

# Pending (not yet written upstream) bytes above which the client is paused.
PENDING_HIGH = 256 * 1024


class BodyWriter(Protocol):
    def write(self, data: bytes) -> None: ...


class Pausable(Protocol):
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class RequestBody:
    __slots__ = (
        "chunks", "held", "flushed", "size", "done", "sink", "chunked", "hold_limit",
        "pending", "source", "expected",
    )

    def __init__(self, source: Pausable, chunked: bool, expected: int | None, hold_limit: int):
        self.source = source  # the client connection, paused when we fall behind
        self.chunked = chunked  # forward with chunked framing (else Content-Length)
        self.expected = expected  # declared Content-Length, if any
        self.hold_limit = hold_limit
        self.chunks: list[bytes] = []
        self.held = True  # chunks[] holds the whole body from its first byte
        self.flushed = 0  # chunks[:flushed] were written to the current sink
        self.pending = 0  # bytes received but not written to any sink
        self.size = 0
        self.done = not chunked and not expected  # no body at all
        self.sink: BodyWriter | None = None

    @property
    def empty(self) -> bool:
        return not self.chunked and not self.expected

    @property
    def replayable(self) -> bool:
        return self.held

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        sink = self.sink
        if sink is not None and self.flushed == len(self.chunks):
            sink.write(encode_chunk(data) if self.chunked else data)
            if self.held:
                self.chunks.append(data)
                self.flushed += 1
        else:
            self.chunks.append(data)
            self.pending += len(data)
        if self.held and self.size > self.hold_limit:
            # Too big to keep for a replay: keep only what is still unsent.
            self.held = False
            del self.chunks[: self.flushed]
            self.flushed = 0
        if self.pending > PENDING_HIGH:
            self.source.pause_reading()

    def finish(self) -> None:
        self.done = True
        if self.sink is not None and self.flushed == len(self.chunks) and self.chunked:
            self.sink.write(LAST_CHUNK)

    def attach(self, sink: BodyWriter, prefix: bytes = b"") -> None:
        """Start sending to a region: `prefix` (the request head), everything
        held or pending, then live. What is here already leaves in one write."""
        self.sink = sink
        chunked = self.chunked
        parts = [prefix] if prefix else []
        if chunked:
            parts.extend(encode_chunk(c) for c in self.chunks)
        else:
            parts.extend(self.chunks)
        if self.held:
            self.flushed = len(self.chunks)
        else:
            self.chunks.clear()
            self.flushed = 0
        was_pending = self.pending
        self.pending = 0
        if self.done and chunked:
            parts.append(LAST_CHUNK)
        if parts:
            sink.write(parts[0] if len(parts) == 1 else b"".join(parts))
        if was_pending > PENDING_HIGH:
            self.source.resume_reading()

    def detach(self) -> None:
        self.sink = None
        self.flushed = 0
