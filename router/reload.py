"""What a config reload may change in a running router, and what needs a restart. Pure.

Regions, the country map, trusted proxies, residency, strategy settings,
limits, probe and breaker settings are swapped live. Listeners, workers, the
decision store, the GeoIP database file and logging stay as they started:
a reload that changes them says so, and they take effect at the next restart.
The strategy in force is an operator decision (router/store/): the file's
`strategy` is only where a new store starts, so a reload never overrides it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import Config

# Config fields applied live vs kept until a restart (the rest of Config's fields
# are compared as whole sections).
RESTART_ONLY = ("listen", "admin", "workers", "state", "log", "notify")  # webhooks: their sender starts with the process


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    config: Config  # what the router runs after the reload
    changed: tuple[str, ...]  # sections swapped live
    needs_restart: tuple[str, ...]  # sections that differ but wait for a restart


def plan_reload(running: Config, loaded: Config) -> ReloadPlan:
    keep = {name: getattr(running, name) for name in RESTART_ONLY}
    needs_restart = [name for name, value in keep.items() if getattr(loaded, name) != value]
    if loaded.geo.database != running.geo.database:
        needs_restart.append("geo.database")
    config = dataclasses.replace(
        loaded, **keep, geo=dataclasses.replace(loaded.geo, database=running.geo.database)
    )
    changed = [f.name for f in dataclasses.fields(Config)
               if f.name not in RESTART_ONLY and getattr(config, f.name) != getattr(running, f.name)]
    if "geo" in changed and config.geo.countries != running.geo.countries:
        changed[changed.index("geo")] = "geo.countries" if config.geo.trusted_proxies == running.geo.trusted_proxies \
            else "geo"
    return ReloadPlan(config, tuple(changed), tuple(needs_restart))


def summary(plan: ReloadPlan, regions_new: list[str], regions_fresh: list[str], regions_gone: list[str]) -> dict:
    return {
        "ok": True,
        "changed": list(plan.changed),
        "needs_restart": list(plan.needs_restart),
        "regions": {"added": regions_new, "restarted": regions_fresh, "removed": regions_gone},
    }
