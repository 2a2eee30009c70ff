"""Logging: the process log on stderr (text lines or JSON objects, `[log] format`),
JSON audit lines, and the JSON access log on stdout.

Every timestamp is ISO-8601 UTC with milliseconds ("2026-11-29T18:58:41.853Z").
Under `--workers` every line names its process ("worker 2", "supervisor").
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

import orjson
from aiohttp.http_exceptions import HttpProcessingError

if TYPE_CHECKING:
    from .exchange import Exchange

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# Which process of a `--workers` group this is; None for a single process.
_process: str | None = None


def set_process_name(name: str | None) -> None:
    """Name this process in every later log and access line (e.g. "worker 2")."""
    global _process
    _process = name


class _Clock:
    """ISO-8601 UTC text for a time.time() value; the seconds part is made once a second."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return "%s.%03dZ" % (self._prefix, int((t - second) * 1000))


iso_time = _Clock()


def _base(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {"time": iso_time(record.created), "level": record.levelname.lower(),
                              "logger": record.name}
    if _process is not None:
        fields["process"] = _process
        fields["pid"] = os.getpid()
    return fields


class TextFormatter(logging.Formatter):
    """`2026-11-29T18:58:41.853Z WARNING edge_router.state [worker 2]: message`."""

    def format(self, record: logging.LogRecord) -> str:
        who = f" [{_process}]" if _process is not None else ""
        line = f"{iso_time(record.created)} {record.levelname} {record.name}{who}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, [process, pid], message[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _base(record)
        fields["message"] = record.getMessage()
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(fields).decode()


class AuditFormatter(logging.Formatter):
    """The record's message is a JSON object (router/admin.py); it stays one JSON
    object, with time (and, in json format, level and logger) in front."""

    def __init__(self, json_format: bool) -> None:
        super().__init__()
        self.json_format = json_format

    def format(self, record: logging.LogRecord) -> str:
        fields = _base(record)
        if not self.json_format:
            del fields["level"], fields["logger"]
        fields.update(orjson.loads(record.getMessage()))
        return orjson.dumps(fields).decode()


class _ClientFaultIsInfo(logging.Filter):
    """aiohttp logs a request it could not parse (a 4xx it answers itself) as ERROR
    with a traceback; that is the client's fault, not the router's: one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            record.msg = "%s: %s" % (record.getMessage(), " ".join(str(exc).split()))
            record.args = None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger("edge_router").isEnabledFor(logging.INFO)
        return True


def setup_logging(level: str = "info", stream: TextIO | None = None, fmt: str = "text") -> None:
    stream = stream or sys.stderr
    root = logging.getLogger("edge_router")
    root.handlers.clear()
    root.setLevel(_LEVELS.get(level, logging.INFO))
    h = logging.StreamHandler(stream)
    h.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(h)
    root.propagate = False
    # The libraries' own complaints (an aiohttp handler error, a task exception
    # nobody retrieved) come out in the same format, not as bare text.
    for name in ("aiohttp", "asyncio"):
        lib = logging.getLogger(name)
        lib.handlers[:] = [h]
        lib.setLevel(max(logging.WARNING, root.level))
        lib.propagate = False
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ClientFaultIsInfo) for f in server_log.filters):
        server_log.addFilter(_ClientFaultIsInfo())
    audit = logging.getLogger("edge_router.audit")
    audit.handlers.clear()
    ah = logging.StreamHandler(stream)
    ah.setFormatter(AuditFormatter(json_format=fmt == "json"))
    audit.addHandler(ah)
    audit.setLevel(logging.INFO)  # audit lines are written whatever the log level
    audit.propagate = False


def fatal(message: str) -> None:
    """Why the process stops: a log line in the configured format once logging is
    set up (a JSON reader sees it too), else a plain line on stderr."""
    if logging.getLogger("edge_router").handlers:
        logging.getLogger("edge_router.cli").error("%s", message)
    else:
        print(f"edge-router: {message}", file=sys.stderr)


routing_log = logging.getLogger("edge_router.routing")


def skipped_text(skipped) -> str:
    """The regions passed over and why, "eu-west-1 disabled, us-east-1 breaker_open", each
    named once: a connect failure's detail already names its region ("eu-west-1
    host:port: ...", "eu-west-1: TLS handshake failed: ...")."""
    return ", ".join(why if why.startswith((rid + " ", rid + ":")) else f"{rid} {why}" for rid, why in skipped)


def log_route(ex: "Exchange", region: str, status: int) -> None:
    """One DEBUG line per request: who, where from, the strategy's order, what was
    passed over and why, and where it went."""
    skipped = skipped_text(ex.skipped or ()) or "none"
    routing_log.debug(
        "route %s %s request_id=%s client=%s country=%s strategy=%s order=[%s] skipped=[%s]"
        " -> %s status=%d attempts=%d",
        ex.req.method, ex.req.url.decode("latin-1")[:200], ex.request_id.decode("latin-1"),
        ex.client_ip, ex.country or "-", ex.proxy.store.strategy, ", ".join(ex.order), skipped,
        region, status, ex.attempts,
    )


class AccessLog:
    """One JSON line per request (orjson), written to a stream (stdout)."""

    __slots__ = ("_write", "flush", "_process")

    def __init__(self, stream: TextIO | None = None) -> None:
        stream = stream or sys.stdout
        buf = getattr(stream, "buffer", None)
        self._write = buf.write if buf is not None else (lambda b: stream.write(b.decode()))
        # Buffered for speed; the server flushes it on every tick (0.5 s).
        self.flush = buf.flush if buf is not None else stream.flush
        self._process = _process

    def __call__(self, ex: "Exchange", duration: float) -> None:
        req = ex.req
        line = {
            "time": iso_time(time.time()),
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
        }
        if self._process is not None:
            line["process"] = self._process
        self._write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
