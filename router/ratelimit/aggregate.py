"""`serve --workers N`: the workers' rate-limit views as one. Pure.

Counts add up (limited requests, keys held, evictions, per-key counts of the
top list); the Redis link is up only if it is up in every worker.
"""
from __future__ import annotations

_SUMMED = ("limited", "keys", "evicted", "evicted_before_refill")


def merge_rate_limit(views: list[dict]) -> dict:
    first = views[0]
    out = dict(first)
    rules = []
    for i, rule in enumerate(first["rules"]):
        same = [v["rules"][i] for v in views if i < len(v["rules"]) and v["rules"][i]["name"] == rule["name"]]
        merged = dict(rule)
        for k in _SUMMED:
            merged[k] = sum(r[k] for r in same)
        top: dict[str, int] = {}
        for r in same:
            for t in r["top_limited"]:
                top[t["key"]] = top.get(t["key"], 0) + t["limited"]
        merged["top_limited"] = [{"key": k, "limited": n}
                                 for k, n in sorted(top.items(), key=lambda kv: -kv[1])[:len(rule["top_limited"]) or 10]]
        rules.append(merged)
    out["rules"] = rules
    links = [v["redis"] for v in views if "redis" in v]
    if links:
        down = [link for link in links if link["up"] is False]
        out["redis"] = dict(down[0] if down else links[0], workers_down=len(down))
    return out
