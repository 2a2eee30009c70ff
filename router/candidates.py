"""Candidate selection, pure: which regions a request may walk, in what order,
and why one is passed over. Shared by the data plane (exchange.py) and the
dry run behind /admin/route (explain.py), so both give the same answer.

Nothing here takes a half-open breaker's trial slot: the caller that is about
to send does that itself (`CircuitBreaker.allow`), after `passed_over` said "".
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from policies.model import OPEN, RequestFacts

if TYPE_CHECKING:
    from .state import RegionRuntime

# Skips that say "not a candidate at all" (an operator's or the prober's
# verdict), as opposed to "a candidate, but its breaker is open".
NOT_CANDIDATES = frozenset(("disabled", "draining", "unhealthy"))


def passed_over(rt: "RegionRuntime", draw: float, max_in_flight: int) -> str:
    """Why this candidate is passed over before its breaker is asked ("" = not
    passed over). `draw` in [0, 1) decides drains: a region admitting 30 %
    takes requests whose draw is below 0.3."""
    if rt.disabled:
        return "disabled"
    if rt.health_excluded:
        return "unhealthy"
    if draw >= rt.admit:
        return "draining"
    if rt.in_flight >= max_in_flight:
        return "overloaded"
    return ""


def skip_reason(rt: "RegionRuntime", draw: float, now: float, max_in_flight: int) -> str:
    """Why this candidate is passed over ("" = use it); a half-open breaker
    counts as usable (whether its trial slot is free is the sender's to ask)."""
    reason = passed_over(rt, draw, max_in_flight)
    if reason:
        return reason
    return "breaker_open" if rt.breaker.state(now) == OPEN else ""


def panic_pick(skipped: list[tuple[str, str]] | None, attempts: int) -> str | None:
    """Breaker panic (Envoy's panic threshold): when every candidate of a request
    was passed over because its breaker is open, the first of them is used
    anyway; better a region that may be failing than a certain 503. None when
    any region was tried, or any candidate was passed over for another reason
    (overload, a failed connection). The order was already narrowed to the
    request's residency, so residency still holds."""
    if attempts or not skipped:
        return None
    first = None
    for rid, reason in skipped:
        if reason == "breaker_open":
            first = first or rid
        elif reason not in NOT_CANDIDATES:
            return None
    return first


def residency_extra(order: tuple[str, ...], allowed: frozenset[str], region_ids: tuple[str, ...]) -> tuple[str, ...]:
    """Allowed regions the ranker left out: residency narrows the candidates
    under every strategy, and an allowed region is still a last resort."""
    return tuple(r for r in region_ids if r in allowed and r not in order)


def narrow(order: tuple[str, ...], allowed: frozenset[str] | None, region_ids: tuple[str, ...]) -> tuple[str, ...]:
    """The walk order: the ranked regions the client's residency allows, then
    the allowed ones the ranker left out."""
    if allowed is None:
        return order
    return tuple(r for r in order if r in allowed) + residency_extra(order, allowed, region_ids)


class CandidateOrders:
    """The walk order per request, for one published ranker and residency.

    A ranker whose order depends on the client's country alone (it says so
    with `by_country = True`, e.g. geographic) is asked once per country and
    snapshot: the request path is then one dict lookup, no RequestFacts.
    The cache is bounded by the country codes GeoIP knows (~250)."""

    __slots__ = ("ranker", "residency", "region_ids", "_cached", "_by_country")

    def __init__(self, ranker: Any, residency: dict[str, frozenset[str]], region_ids: tuple[str, ...]) -> None:
        self.ranker = ranker
        self.residency = residency
        self.region_ids = region_ids
        self._by_country: bool = bool(getattr(ranker, "by_country", False))
        self._cached: dict[str | None, tuple[str, ...]] = {}

    def allowed(self, country: str | None) -> frozenset[str] | None:
        return self.residency.get(country) if country else None

    def order(self, country: str | None, client_ip: str, method: str, seq: int) -> tuple[str, ...]:
        if self._by_country:
            order = self._cached.get(country)
            if order is None:
                order = self._cached[country] = self._rank(country, client_ip, method, seq)
            return order
        return self._rank(country, client_ip, method, seq)

    def _rank(self, country: str | None, client_ip: str, method: str, seq: int) -> tuple[str, ...]:
        ranked: tuple[str, ...] = self.ranker.rank(RequestFacts(country, client_ip, method, "", seq))
        return narrow(ranked, self.allowed(country), self.region_ids)
