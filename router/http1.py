"""HTTP/1.1 wire helpers: header rules, precomputed status lines, framing.

Pure bytes in, bytes out; no sockets here. The parser itself is llhttp
(httptools); this module holds the rules llhttp leaves to us.
"""
from __future__ import annotations

import functools
import re
from http import HTTPStatus
from typing import Final

import orjson

# RFC 9110 7.6.1, plus the legacy ones proxies also drop.
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    )
)

# A header name's kind in a classification table: forwarded as it is.
ORDINARY = -1


def exact_case_table(special: dict[bytes, int], common: tuple[bytes, ...]) -> dict[bytes, int]:
    """A header-name table keyed by names as peers actually spell them (lower
    case and Canonical-Case), so that most headers are classified without
    lowercasing them: `special` (lower-case names -> kind) and `common`
    ordinary names (-> ORDINARY). A name missing from it is lowercased and
    looked up in `special` (see header_kind), so the answer is the same."""
    table: dict[bytes, int] = {}
    for name in (*special, *common):
        kind = special.get(name, ORDINARY)
        table[name] = kind
        table[b"-".join(part.capitalize() for part in name.split(b"-"))] = kind
    return table


def header_kind(exact: dict[bytes, int], special: dict[bytes, int], name: bytes) -> int:
    """The kind of header `name` in any letter case: `special`'s, else ORDINARY."""
    kind = exact.get(name)
    if kind is None:
        kind = special.get(name.lower(), ORDINARY)
    return kind


def request_version(head: bytes, method: str, target: bytes) -> str | None:
    """"1.1" when the request line of this raw head, as llhttp accepted it
    (method SP target SP version CRLF), ends in HTTP/1.1 CRLF; else None (ask
    the parser). Spares the parser's version call, which formats a new string,
    on almost every request. The version is looked for where it must be when
    the head starts with the request line; after leading empty lines (which
    llhttp skips) it is not found there, since a target holds no SP, CR or LF."""
    at = len(method) + 1 + len(target)
    if head[at:at + 11] == b" HTTP/1.1\r\n":
        return "1.1"
    return None


# Connection header values that name no other header and do not close: the
# usual one is skipped without splitting it into tokens.
KEEP_ALIVE_ONLY: Final = frozenset((b"keep-alive", b"Keep-Alive"))


_REQUEST_ID_OK: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def valid_request_id(rid: bytes) -> bool:
    """A client's X-Request-Id the router passes on (else it makes its own):
    1-200 characters of letters, digits and -_.: (no way to inject a header)."""
    return 0 < len(rid) <= 200 and all(c in _REQUEST_ID_OK for c in rid)


def origin_form(target: bytes) -> bytes:
    """The request target as a region is sent it: origin-form (path and query).
    An absolute-form target (RFC 9112 3.2.2) keeps only its path and query."""
    if target[:1] == b"/" or target == b"*":
        return target
    i = target.find(b"://")
    if i >= 0:
        j = target.find(b"/", i + 3)
        return target[j:] if j >= 0 else b"/"
    return b"/" + target


def _status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase.encode("latin-1"))


# Precomputed so that building a head is one join.
STATUS_LINES: dict[int, bytes] = {c: _status_line(c) for c in range(100, 600)}


def status_line(code: int) -> bytes:
    line = STATUS_LINES.get(code)
    return line if line is not None else _status_line(code)


def status_class(code: int) -> str:
    return ("1xx", "2xx", "3xx", "4xx", "5xx")[min(max(code // 100, 1), 5) - 1]


def no_body_status(code: int) -> bool:
    """RFC 9112 6.3: 1xx, 204 and 304 never carry a body."""
    return code < 200 or code == 204 or code == 304


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names listed in a Connection header (they are hop-by-hop too)."""
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


# RFC 3986 host [":" port]: an IP literal, or reg-name / IPv4 characters. No
# userinfo ("@"), path ("/"), query ("?"), whitespace or control bytes.
_HOST_RE = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::([0-9]{1,5}))?")


@functools.lru_cache(maxsize=4096)  # the same few hosts, request after request
def valid_host(value: bytes) -> bool:
    """A Host header value (or an absolute-form authority) the router accepts."""
    m = _HOST_RE.fullmatch(value)
    return m is not None and (m.group(1) is None or int(m.group(1)) <= 65535)


def absolute_authority(target: bytes) -> bytes | None:
    """The authority of an absolute-form target (RFC 9112 3.2.2), or None if it
    is not an http(s) URI with one."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    end = len(rest)
    for c in b"/?#":
        i = rest.find(c)
        if 0 <= i < end:
            end = i
    return rest[:end]


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_body(error: str, detail: str, **extra: object) -> bytes:
    return orjson.dumps({"error": error, "detail": detail, **extra})


def error_response(
    code: int,
    error: str,
    detail: str,
    *,
    region: str = "none",
    request_id: str = "",
    close: bool = False,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
    **extra: object,
) -> bytes:
    """A complete JSON error response made by the router itself."""
    body = error_body(error, detail, **extra)
    parts = [
        status_line(code),
        b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body),
        b"X-Edge-Region: %s\r\n" % region.encode(),
    ]
    if request_id:
        parts.append(b"X-Request-Id: %s\r\n" % request_id.encode("latin-1"))
    for k, v in extra_headers:
        parts.append(b"%s: %s\r\n" % (k, v))
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


@functools.lru_cache(maxsize=256)
def refusal(code: int, error: str, detail: str) -> bytes:
    """A closing error response with no request id (the router refused the
    request before it had one): the same few, made once. Hostile clients come
    in bursts (thousands of 408s at once)."""
    return error_response(code, error, detail, close=True)
