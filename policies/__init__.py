"""Routing strategies. Names -> implementations in one table (REGISTRY).

The CLI, config validation and the admin API all read NAMES / REGISTRY.
"""
from __future__ import annotations

from .geographic import GeographicPolicy
from .health_based import HealthBasedPolicy
from .least_latency import LeastLatencyPolicy
from .round_robin import RoundRobinPolicy

NAMES: tuple[str, ...] = ("geographic", "least-latency", "health-based", "round-robin")

REGISTRY: dict[str, type] = {
    cls.name: cls
    for cls in (GeographicPolicy, LeastLatencyPolicy, HealthBasedPolicy, RoundRobinPolicy)
}
