"""The Grafana dashboard charts what an operator watches: every per-region metric of the
README's metrics table and the WebSocket tunnel metrics."""
from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
DASHBOARD = json.loads((REPO / "deploy/grafana/edge-router.json").read_text(encoding="utf-8"))


def queries() -> str:
    return "\n".join(t.get("expr", "") for p in DASHBOARD["panels"] for t in p.get("targets", []))


def test_every_region_metric_and_the_tunnels_are_charted():
    table = README.split("## Metrics, logs, audit", 1)[1].split("\n\n", 2)[1]
    per_region = re.findall(r"^\| `(edge_router_\w+)` \|[^|]*\|[^|]*`region`", table, re.M)
    assert len(per_region) >= 10, table  # the table's shape changed: fix the pattern
    tunnels = ["edge_router_tunnels_active", "edge_router_tunnels_total", "edge_router_tunnel_bytes_total"]
    exprs = queries()
    missing = [m for m in per_region + tunnels if m not in exprs]
    assert missing == [], f"metrics the dashboard does not chart: {missing}"


def test_panel_ids_are_unique_and_panels_do_not_overlap():
    panels = DASHBOARD["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in panels:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (mine & cells), f"panel {p['title']!r} overlaps another"
        cells |= mine
