"""Many workers, one view: merging their /admin/state and /metrics. Pure.

Counts add up (requests, histogram buckets, requests in flight, CPU seconds,
memory); verdicts take the worst worker's (a region one worker holds
unhealthy or breaker-open is reported so); the rest is the first worker's.
"""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .ratelimit.aggregate import merge_rate_limit

_BREAKER_ORDER = {"closed": 0, "half-open": 1, "open": 2}

# Gauges whose per-worker values add up; every other gauge takes the maximum.
_SUMMED_GAUGES = frozenset((
    "edge_router_requests_in_flight",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
))
# ... except these, where the worst is the lowest.
_MIN_GAUGES = frozenset((
    "edge_router_region_healthy", "process_start_time_seconds",
    "edge_router_state_store_up", "edge_router_config_reload_success",
))


def merge_states(states: list[dict]) -> dict:
    """One /admin/state from every worker's."""
    first = states[0]
    strategies = {s["strategy"] for s in states}
    merged = {
        "strategy": first["strategy"] if len(strategies) == 1 else "mixed:" + ",".join(sorted(strategies)),
        "version": max(s.get("version", 0) for s in states),
        "panic": any(s.get("panic") for s in states),
        "default_region": first.get("default_region"),
        "workers": [s["process"] for s in states if "process" in s],
        # The store's document is the same in every worker; local overrides too
        # (the supervisor sends a local decision to each worker).
        "decisions": first.get("decisions"),
        "regions": [],
    }
    for i, region in enumerate(first["regions"]):
        views = [s["regions"][i] for s in states]
        healthy = [v["healthy"] for v in views]
        latencies = [v["latency_ms"] for v in views if v["latency_ms"] is not None]
        out = dict(region)
        out.update(
            healthy=None if all(h is None for h in healthy) else all(h is not False for h in healthy),
            breaker=max((v["breaker"] for v in views), key=_BREAKER_ORDER.__getitem__),
            latency_ms=round(sum(latencies) / len(latencies), 3) if latencies else None,
            error_rate=round(max(v["error_rate"] for v in views), 4),
            effective_weight=min(v["effective_weight"] for v in views),
            disabled=any(v["disabled"] for v in views),
            draining=any(v["draining"] for v in views),
            in_flight=sum(v["in_flight"] for v in views),
        )
        if "degraded" in region:  # performance-based failover: the worst worker's verdict
            out["degraded"] = any(v.get("degraded") for v in views)
        conns = [v.get("connections") for v in views if v.get("connections")]
        if conns:
            out["connections"] = {k: sum(c[k] for c in conns) for k in conns[0]}
        merged["regions"].append(out)
    if "rate_limit" in first:
        merged["rate_limit"] = merge_rate_limit([s["rate_limit"] for s in states])
    return merged


def merge_metrics(texts: list[str]) -> str:
    """One Prometheus text exposition from every worker's."""
    families: dict[str, tuple[str, str]] = {}  # name -> (type, help), in first-seen order
    values: dict[tuple[str, tuple], float] = {}  # (sample name, labels) -> merged value
    order: dict[str, list[tuple[str, tuple]]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            families.setdefault(fam.name, (fam.type, fam.documentation))
            keys = order.setdefault(fam.name, [])
            for sample in fam.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    keys.append(key)
                    values[key] = sample.value
                else:
                    values[key] = _combine(fam.type, fam.name, values[key], sample.value)
    lines = []
    for name, (kind, doc) in families.items():
        # The parser names a counter family without "_total"; the text format
        # names it as its samples are named.
        shown = f"{name}_total" if kind == "counter" else name
        lines.append(f"# HELP {shown} {_escape_help(doc)}")
        lines.append(f"# TYPE {shown} {kind}")
        for sample_name, labels in order[name]:
            label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            lines.append(f"{sample_name}{{{label_text}}} {_number(values[(sample_name, labels)])}"
                         if label_text else f"{sample_name} {_number(values[(sample_name, labels)])}")
    return "\n".join(lines) + "\n"


def _combine(kind: str, name: str, a: float, b: float) -> float:
    if kind in ("counter", "histogram", "summary") or name in _SUMMED_GAUGES:
        return a + b
    if name in _MIN_GAUGES:
        return min(a, b)
    return max(a, b)


def _number(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
