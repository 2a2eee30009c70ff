"""Faults a simulated region can be told to have, and their checked form."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any


@dataclass
class Faults:
    down: bool = False
    error_rate: float = 0.0
    extra_latency: float = 0.0
    hang: bool = False
    health_fail: bool = False
    drop_after_body: bool = False


_FAULT_FIELDS = {f.name: f.type for f in fields(Faults)}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m)?\s*$")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds from "250ms", "1.5s", "2m", "100us", or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 250ms, 2s, or seconds)")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {value!r}")
    return seconds


def validate_faults(changes: dict[str, Any]) -> dict[str, Any]:
    """Checked, normalised fault changes; ValueError naming the first bad field."""
    if not isinstance(changes, dict):
        raise ValueError("body must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in _FAULT_FIELDS:
            raise ValueError(f"unknown fault {key!r}; known: {', '.join(_FAULT_FIELDS)}")
        if key == "error_rate":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError("error_rate must be a number from 0 to 1")
            out[key] = float(value)
        elif key == "extra_latency":
            try:
                out[key] = parse_duration(value)
            except ValueError as exc:
                raise ValueError(f"extra_latency: {exc}") from None
        elif not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        else:
            out[key] = value
    return out


