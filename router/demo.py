"""`edge-router demo`: four simulated regions on loopback, a demo GeoIP
database made at startup, and the router in front of them."""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import secrets
import shutil
import tempfile
from dataclasses import replace

from geodata.demo import build_demo_db
from geodata.reader import GeoReader

from .config import Config, default_config, parse_address
from .logs import setup_logging
from .server import Router, install_uvloop, serve_until_signalled
from .simulator import RegionSpec, Simulator

# One-way latencies as seen from a router near us-east-1.
DEMO_LATENCIES = {"us-east-1": 0.008, "us-west-2": 0.035, "eu-west-1": 0.040, "ap-southeast-1": 0.110}
# The seed homes no country in us-west-2 (a standby); the demo moves Canada there
# so that one of its addresses shows that region too.
DEMO_MOVES = {"CA": "us-west-2"}


def _demo_countries(countries) -> dict[str, tuple[str, ...]]:
    out = {rid: tuple(c for c in codes if c not in DEMO_MOVES) for rid, codes in countries.items()}
    for code, rid in DEMO_MOVES.items():
        out[rid] = (*out.get(rid, ()), code)
    return out


def demo_config(ports: dict[str, int], geo_db: str, listen: str, admin: str) -> Config:
    """The seed config pointed at simulated regions on loopback, probing fast."""
    base = default_config()
    regions = tuple(
        replace(
            r,
            api=f"http://127.0.0.1:{ports[r.id]}",
            health=f"http://127.0.0.1:{ports[r.id]}/api/v1/health",
        )
        for r in base.regions
    )
    return replace(
        base,
        regions=regions,
        listen=replace(base.listen, address=parse_address(listen)),
        admin=replace(base.admin, address=parse_address(admin)),
        geo=replace(
            base.geo,
            database=geo_db,
            # curl on this machine is the "load balancer" whose X-Forwarded-For we believe
            trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
            countries=_demo_countries(base.geo.countries),
            country_header=True,  # curl -i shows X-Edge-Country next to X-Edge-Region
        ),
        # One JSON line per request on stdout, so that a person sees each request.
        log=replace(base.log, access_log=True),
        probe=replace(base.probe, interval=2.0, timeout=1.0, fast_interval=0.5, down_interval=1.0,
                      latency_interval=2.0),
        breaker=replace(base.breaker, open_for=5.0),
    )


def _banner(router: Router, sim: Simulator, clients, token: str) -> str:
    host = router.config.listen.address.host
    url = f"http://{host}:{router.listen_port}"
    admin = f"http://{router.config.admin.address.host}:{router.admin_port}"
    lines = [
        "",
        "edge-router demo is running (Ctrl-C stops everything)",
        f"  traffic:   {url}",
        f"  admin:     {admin}   (token: {token})",
        f"  status:    {admin}/   (the live status page: open it in a browser)",
        f"  simulator: http://{sim.host}:{sim.control_port}/regions",
        "  regions:   " + ", ".join(f"{r} on :{p}" for r, p in sim.ports.items()),
        "",
        "Try (the X-Forwarded-For address picks the country, shown in X-Edge-Country;",
        "X-Edge-Region names the region that answered; each request is logged on stdout):",
    ]
    home = router.config.country_home
    clients = [c._replace(region=home.get(c.country, router.config.default_region)) for c in clients]
    seen = set()
    for c in clients:
        if c.region in seen and c.country != "ZA":
            continue
        seen.add(c.region)
        lines.append(f"  curl -si -H 'X-Forwarded-For: {c.ip}' {url}/api/v1/echo   # {c.country} -> {c.region}")
    europe = next(c for c in clients if c.region == "eu-west-1")
    sim_url = f"http://{sim.host}:{sim.control_port}"
    lines += [
        "",
        "Streams (the region names itself in each event; the WebSocket echoes what you type):",
        f"  curl -N -H 'X-Forwarded-For: {europe.ip}' '{url}/api/v1/events?count=5&interval=1s'"
        f"   # server-sent events, one a second: {europe.country} -> {europe.region}",
        f"  python3 -m websockets 'ws://{host}:{router.listen_port}/api/v1/ws?greet=1'"
        "   # WebSocket echo (pip install websockets)",
        "",
        "Operate:",
        f"  curl -s {admin}/admin/state",
        f"  curl -s '{admin}/admin/route?ip={clients[1].ip}'",
        f"  curl -s -X PUT -H 'Authorization: Bearer {token}' -d '{{\"strategy\": \"round-robin\"}}' {admin}/admin/strategy",
        f"  curl -s -X POST -H 'Authorization: Bearer {token}' {admin}/admin/regions/eu-west-1/disable",
        f"  curl -s -X POST -H 'Authorization: Bearer {token}' {admin}/admin/regions/eu-west-1/enable",
        f"  curl -s -X POST -d '{{\"down\": true}}' {sim_url}/regions/us-east-1/fault   # kill a region",
        f"  curl -s -X POST {sim_url}/regions/us-east-1/reset   # restore it",
        f"  curl -s {admin}/metrics | grep edge_router_requests_total",
        "",
    ]
    return "\n".join(lines)


async def _demo(args: argparse.Namespace, workdir: str) -> None:
    token = os.environ.get("EDGE_ROUTER_ADMIN_TOKEN") or secrets.token_urlsafe(18)
    os.environ["EDGE_ROUTER_ADMIN_TOKEN"] = token
    db = os.path.join(workdir, "demo-country.mmdb")
    clients = build_demo_db(db)
    sim = Simulator()
    await sim.start([RegionSpec(rid, 0, lat) for rid, lat in DEMO_LATENCIES.items()])
    try:
        config = demo_config(
            sim.ports, db, args.listen or "127.0.0.1:8080", args.admin or "127.0.0.1:9901"
        )
        if args.log_level:
            config = replace(config, log=replace(config.log, level=args.log_level))
        setup_logging(config.log.level, fmt=config.log.format)
        router = Router(config, GeoReader(db))
        await serve_until_signalled(
            router, on_ready=lambda r: print(_banner(r, sim, clients, token), flush=True)
        )
    finally:
        await sim.stop()


def run_demo(args: argparse.Namespace) -> int:
    workdir = tempfile.mkdtemp(prefix="edge-router-demo-")
    try:
        install_uvloop()
        asyncio.run(_demo(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("edge-router demo stopped.")
    return 0
