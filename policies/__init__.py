"""Routing strategies. Names -> implementations in one table (REGISTRY).

The CLI, config validation and the admin API all read NAMES / REGISTRY.
"""
from __future__ import annotations

from .base import Policy
from .geographic import GeographicPolicy
from .health_based import HealthBasedPolicy
from .least_latency import LeastLatencyPolicy
from .round_robin import RoundRobinPolicy

REGISTRY: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (GeographicPolicy, LeastLatencyPolicy, HealthBasedPolicy, RoundRobinPolicy)
}

NAMES: tuple[str, ...] = tuple(REGISTRY)
