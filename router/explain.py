"""A dry run of the routing decision: where would this client go now, and why.

Uses the live ranker (so least-latency's hysteresis shows), except for a
ranker whose rank() moves on (round-robin): a fresh copy then, so that
explaining never moves the live rotation. Never takes a half-open trial slot.
"""
from __future__ import annotations

from policies.model import RequestFacts

from .state import RegionStore, make_policy, skip_reason


def explain_route(
    store: RegionStore, *, country: str | None, client_ip: str | None, max_in_flight: int
) -> dict:
    snap = store.snapshot
    ranker = store.ranker
    if getattr(ranker, "advances", False):
        ranker = make_policy(store.strategy, store.config).prepare(snap, None)
    order = ranker.rank(RequestFacts(country, client_ip, "GET", "/"))
    allowed = store.residency.get(country) if country else None
    now = store.clock.now()
    candidates = []
    chosen = None
    for rid in order:
        rt = store.regions[rid]
        if allowed is not None and rid not in allowed:
            candidates.append({"region": rid, "usable": False, "reason": "residency"})
            continue
        # Draw 0: a draining region is usable while it still admits any share.
        reason = skip_reason(rt, 0.0, now, max_in_flight, trial=False)
        entry = {"region": rid, "usable": not reason, "reason": reason or None}
        if rt.draining and not reason:
            entry["admits"] = round(rt.admit, 4)
        candidates.append(entry)
        if not reason and chosen is None:
            chosen = rid
    if allowed is not None:
        for rid in store.regions:
            if rid in allowed and rid not in order:
                reason = skip_reason(store.regions[rid], 0.0, now, max_in_flight, trial=False)
                candidates.append({"region": rid, "usable": not reason, "reason": reason or None})
                if not reason and chosen is None:
                    chosen = rid
    return {
        "strategy": store.strategy,
        "client_ip": client_ip,
        "country": country,
        "home_region": snap.country_home.get(country or "", snap.default_region),
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
