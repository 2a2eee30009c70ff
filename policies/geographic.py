"""geographic: the client's home region, then that region's failover list."""
from __future__ import annotations

from .base import Policy, Prepared
from .model import RegionSnapshot, RequestFacts, demote_degraded


class GeographicRanker(Prepared):
    """Country -> precomputed order; unknown countries get the default order."""

    __slots__ = ("_by_country", "_default")
    by_country = True  # the order is the country's: asked once per country and snapshot

    def __init__(self, by_country: dict[str, tuple[str, ...]], default: tuple[str, ...]):
        self._by_country = by_country
        self._default = default

    def rank(self, facts: RequestFacts) -> tuple[str, ...]:
        if facts.country is None:
            return self._default
        return self._by_country.get(facts.country, self._default)


def _chain(snapshot: RegionSnapshot, home: str, known: frozenset[str]) -> tuple[str, ...]:
    """(home, *home.failover), deduplicated, keeping only regions in the snapshot."""
    region = snapshot.get(home)
    if region is None:
        return ()
    chain = tuple(dict.fromkeys(r for r in (home, *region.failover) if r in known))
    return demote_degraded(chain, snapshot)


class GeographicPolicy(Policy):
    """Home region from `country_home`, else `default_region`; then its failovers.

    Other regions are never appended: the operator's failover lists are the
    whole failover path (a region missing from them was left out on purpose).
    A degraded region moves to the end of every chain it is in. Drains and slow
    start thin the home region's share in the data plane: the rest of its
    countries' traffic goes on down the chain.
    """

    name = "geographic"

    def prepare(self, snapshot: RegionSnapshot, previous: object | None) -> GeographicRanker:
        known = frozenset(snapshot.ids)
        default_home = snapshot.default_region
        if default_home not in known and snapshot.regions:
            # Config validation rejects this; stay useful rather than answer 503.
            default_home = snapshot.regions[0].id
        chains = {rid: _chain(snapshot, rid, known) for rid in known}
        default = chains.get(default_home, ())
        # One tuple per home region, shared by every country that maps to it.
        by_country = {c: chains.get(home, default) for c, home in snapshot.country_home.items()}
        return GeographicRanker(by_country, default)
