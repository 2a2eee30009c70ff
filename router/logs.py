"""Logging: human lines for the process log, JSON lines for audit and access."""
from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

import orjson

if TYPE_CHECKING:
    from .exchange import Exchange

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _AuditFormatter(logging.Formatter):
    """The record's message is a JSON object; add the time in front of its fields."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return '{"time":"%s.%03dZ",%s' % (ts, int(record.msecs), record.getMessage()[1:])


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    root = logging.getLogger("edge_router")
    root.handlers.clear()
    root.setLevel(_LEVELS.get(level, logging.INFO))
    h = logging.StreamHandler(stream)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(h)
    root.propagate = False
    audit = logging.getLogger("edge_router.audit")
    audit.handlers.clear()
    ah = logging.StreamHandler(stream)
    ah.setFormatter(_AuditFormatter())
    audit.addHandler(ah)
    audit.setLevel(logging.INFO)  # audit lines are written whatever the log level
    audit.propagate = False


class AccessLog:
    """One JSON line per request (orjson), written to a stream (stdout)."""

    __slots__ = ("_write", "flush")

    def __init__(self, stream: TextIO | None = None) -> None:
        stream = stream or sys.stdout
        buf = getattr(stream, "buffer", None)
        self._write = buf.write if buf is not None else (lambda b: stream.write(b.decode()))
        # Buffered for speed; the server flushes it on every tick (0.5 s).
        self.flush = buf.flush if buf is not None else stream.flush

    def __call__(self, ex: "Exchange", duration: float) -> None:
        req = ex.req
        self._write(
            orjson.dumps(
                {
                    "time": time.time(),
                    "request_id": ex.request_id.decode("latin-1"),
                    "client": ex.client_ip,
                    "country": ex.country,
                    "method": req.method,
                    "path": req.url.decode("latin-1")[:512],
                    "region": ex.region if ex.status else None,
                    "strategy": ex.proxy.store.strategy,
                    "status": ex.status or 499,
                    "attempts": ex.attempts,
                    "upstream_ms": round(ex.upstream_time * 1000, 3),
                    "duration_ms": round(duration * 1000, 3),
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
        )
