"""Routing strategies. Names -> implementations in one table (REGISTRY).

The CLI, config validation and the admin API all read NAMES / REGISTRY.
"""
from __future__ import annotations

NAMES: tuple[str, ...] = ("geographic", "least-latency", "health-based", "round-robin")

REGISTRY: dict = {}  # filled below once the strategy modules exist
