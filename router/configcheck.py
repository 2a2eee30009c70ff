"""The generic half of the config loader: TOML value checkers, units, the problem collector.

Durations ("250ms", "5s"), addresses ("host:port"), rates ("100/s"), and _Checker,
which walks a TOML table against a spec (key -> checker) and collects every problem
as "<key.path>: <message>". Nothing here knows the schema: router/config.py holds
the dataclasses and spec tables and re-exports what other modules import.
The checkers keep their leading underscore: they are for spec tables, not callers.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_DURATION_HINT = "use a number with a unit: 250ms, 5s, 2m, 1h"
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(Exception):
    """Every problem in a config, each as "<key.path>: <message>"."""

    def __init__(self, problems: list[str], source: str = "<config>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))


def parse_duration(text: str) -> float:
    """"250ms", "5s", "1.5s", "2m", "1h" -> seconds. A bare number is ambiguous, so refused."""
    m = _DURATION_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"bad duration {text!r} ({_DURATION_HINT})")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest unit that writes it as a whole number (inverse of parse_duration)."""
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"


def parse_address(text: str) -> Address:
    """"host:port", "[::1]:8080" or ":8080" (all interfaces) -> Address."""
    if not isinstance(text, str) or not text or any(c.isspace() for c in text):
        raise ValueError(f"bad address {text!r} (use HOST:PORT, [IPv6]:PORT or :PORT)")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad address {text!r} (use [IPv6]:PORT)")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad address {text!r} ({host!r} is not an IPv6 address)") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"bad address {text!r} (missing :PORT)")
        if ":" in host:
            raise ValueError(f"bad address {text!r} (put an IPv6 host in brackets: [::1]:8080)")
        host = host or "0.0.0.0"
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad address {text!r} (port must be 0..65535)")
    return Address(host, int(port))


# ---- value checkers: each takes the raw TOML value and returns the typed one or raises _Bad

class _Bad(Exception):
    """A value's problem; the key path is added by the caller."""


_TOML_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string",
               list: "array", dict: "table"}


def _type_name(value: Any) -> str:
    return _TOML_TYPES.get(type(value), "date/time")


def _expect(value: Any, kind: type | tuple[type, ...], name: str) -> None:
    # bool is an int subclass in Python; TOML keeps them apart, so do we.
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise _Bad(f"expected {name}, got {_type_name(value)} {value!r}")


def _string(value: Any) -> str:
    _expect(value, str, "a string")
    if not value:
        raise _Bad("must not be empty")
    return value


def _boolean(value: Any) -> bool:
    _expect(value, bool, "a boolean")
    return value


def _integer(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        _expect(value, int, "an integer")
        if value < minimum:
            raise _Bad(f"must be >= {minimum}, got {value}")
        return value
    return check


def _number(*, low: float = 0.0, high: float | None = None,
            allow_low: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        _expect(value, (int, float), "a number")
        if value < low or (value == low and not allow_low) or (high is not None and value > high):
            bound = f">= {low:g}" if allow_low else f"> {low:g}"
            raise _Bad(f"must be {bound}" + (f" and <= {high:g}" if high is not None else "")
                       + f", got {value!r}")
        return float(value)
    return check


def _duration(*, allow_zero: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _Bad(str(exc)) from None
        if seconds == 0 and not allow_zero:
            raise _Bad(f"must be longer than 0, got {value!r}")
        return seconds
    return check


def _choice(options: tuple[str, ...], what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        _expect(value, str, "a string")
        if value not in options:
            raise _Bad(f"unknown {what} {value!r} (choose one of: {', '.join(options)})")
        return value
    return check


def _address(value: Any) -> Address:
    _expect(value, str, "a string")
    try:
        return parse_address(value)
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _url(value: Any) -> str:
    _expect(value, str, "a string")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise _Bad(f"bad URL {value!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Bad(f"bad URL {value!r} (need http:// or https:// and a host)")
    return value


def _string_list(value: Any) -> list[str]:
    # Elements are checked by the caller, which knows their key paths.
    _expect(value, list, "an array")
    return value


def _country(value: Any) -> str:
    _expect(value, str, "a string")
    if not (len(value) == 2 and value.isascii() and value.isalpha() and value.isupper()):
        raise _Bad(f"bad country code {value!r} (use ISO 3166-1 alpha-2 in upper case, e.g. 'GB')")
    return value


# A token: safe in a header value, a metric label, a URL path segment, a log line.
_REGION_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def _region_id(value: Any) -> str:
    rid = _string(value)
    if not _REGION_ID_RE.fullmatch(rid):
        raise _Bad(f"bad region id {rid!r} (use lower-case letters, digits, '.', '_', '-', "
                   "starting with a letter or digit, at most 63 characters)")
    return rid


def _statuses(value: Any) -> frozenset[int]:
    _expect(value, list, "an array of HTTP status codes")
    for code in value:
        _expect(code, int, "an HTTP status code (integer)")
        if not 100 <= code <= 599:
            raise _Bad(f"bad HTTP status {code} (use 100..599)")
    return frozenset(value)


def _percent(value: Any) -> int:
    _expect(value, int, "an integer percentage")
    if not 0 <= value <= 100:
        raise _Bad(f"must be 0..100, got {value}")
    return value


def _network(value: Any) -> IPNetwork:
    _expect(value, str, "a string")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _Bad(f"bad network {value!r} (use an address or CIDR, e.g. '10.0.0.0/8')") from None


def _key(path: str, key: str) -> str:
    name = key if _BARE_KEY_RE.fullmatch(key) else f'"{key}"'
    return f"{path}.{name}" if path else name


class _Checker:
    """Collects problems while walking the TOML document."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def table(self, value: Any, path: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Check a table's keys against spec; return the values that passed, converted.

        A spec entry that is a plain type (dict, list, str) only checks the type;
        the caller validates the contents.
        """
        if not isinstance(value, dict):
            self.add(path, f"expected a table, got {_type_name(value)}")
            return {}
        out: dict[str, Any] = {}
        for key, raw in value.items():
            where = _key(path, key)
            check = spec.get(key)
            if check is None:
                self.add(where, "unknown key")
                continue
            try:
                if isinstance(check, type):
                    _expect(raw, check, {dict: "a table", list: "an array of tables",
                                         str: "a string"}[check])
                    out[key] = raw
                else:
                    out[key] = check(raw)
            except _Bad as exc:
                self.add(where, str(exc))
        return out

    def items(self, values: list, path: str, check: Callable[[Any], Any]) -> list:
        """Check each element of an array; return the ones that passed."""
        out = []
        for i, raw in enumerate(values):
            try:
                out.append(check(raw))
            except _Bad as exc:
                self.add(f"{path}[{i}]", str(exc))
        return out

    def require(self, got: dict[str, Any], raw: Any, path: str, keys: tuple[str, ...]) -> bool:
        """Report required keys that are absent (not those present but invalid)."""
        ok = True
        for key in keys:
            if key not in got:
                ok = False
                if isinstance(raw, dict) and key not in raw:
                    self.add(_key(path, key), "required key missing")
        return ok

    def pair(self, got: dict[str, Any], path: str, a: str, b: str) -> None:
        if (a in got) != (b in got):
            have, missing = (a, b) if a in got else (b, a)
            self.add(_key(path, missing), f"required when {have} is set")


_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> float:
    """"100/s", "6000/m", "10000/h" -> tokens per second."""
    count, sep, unit = text.partition("/") if isinstance(text, str) else ("", "", "")
    if not sep or unit not in _RATE_UNITS or not count.isascii() or not count.isdigit() or int(count) == 0:
        raise ValueError(f"bad rate {text!r} (use a whole count per unit: '100/s', '6000/m', '10000/h')")
    return int(count) / _RATE_UNITS[unit]
