"""A dry run of the routing decision: where would this client go now, and why.

Uses the live ranker (so least-latency's hysteresis shows) with the next
request's sequence number, without taking it: rank() is pure, so explaining
never moves the rotation. Never takes a half-open trial slot.
"""
from __future__ import annotations

from policies.model import RequestFacts

from .candidates import residency_extra, skip_reason
from .state import RegionStore


def explain_route(
    store: RegionStore, *, country: str | None, client_ip: str | None, max_in_flight: int
) -> dict:
    snap = store.snapshot
    ranker = store.ranker
    facts = RequestFacts(country, client_ip, "GET", "/", store.seq + 1)
    order = ranker.rank(facts)
    allowed = store.candidates.allowed(country)
    now = store.clock.now()
    candidates = []
    chosen = None
    for rid in order:
        rt = store.regions[rid]
        if allowed is not None and rid not in allowed:
            candidates.append({"region": rid, "usable": False, "reason": "residency"})
            continue
        # Draw 0: a draining region is usable while it still admits any share.
        reason = skip_reason(rt, 0.0, now, max_in_flight)
        entry = {"region": rid, "usable": not reason, "reason": reason or None}
        if rt.draining and not reason:
            entry["admits"] = round(rt.admit, 4)
        if rt.ramp < 1.0 and not reason:
            entry["slow_start"] = round(rt.ramp, 4)
        if rt.degrade.degraded:
            entry["degraded"] = rt.degrade.stats(now).describe()
        candidates.append(entry)
        if not reason and chosen is None:
            chosen = rid
    if allowed is not None:
        for rid in residency_extra(order, allowed, tuple(store.regions)):
            reason = skip_reason(store.regions[rid], 0.0, now, max_in_flight)
            candidates.append({"region": rid, "usable": not reason, "reason": reason or None})
            if not reason and chosen is None:
                chosen = rid
    home = snap.country_home.get(country or "")
    # An unknown (or unmapped) country goes to the default region: no "home" then.
    start = ({"home_region": home} if home is not None
             else {"default_region": snap.default_region,
                   "why_default": ("no country for this client" if country is None
                                   else f"{country} is not in the country map")})
    return {
        "strategy": store.strategy,
        "client_ip": client_ip,
        "country": country,
        **start,
        **ranker.explain(facts),
        "residency": sorted(allowed) if allowed is not None else None,
        "panic": store.panic,
        "candidates": candidates,
        "chosen": chosen,
        "answer": (
            "503 residency: no allowed region available" if chosen is None and allowed is not None
            else "503 no_region" if chosen is None
            else f"forwarded to {chosen}"
        ),
    }
