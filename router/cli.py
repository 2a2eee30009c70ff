"""`edge-router` command line: demo, serve, check-config, geo, simulate."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

from policies import NAMES

from .config import (
    Config,
    ConfigError,
    default_config,
    load_config,
    summarize,
    with_overrides,
)
from .logs import setup_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-router", description="Global traffic-steering reverse proxy."
    )
    p.add_argument("--version", action="version", version=version_text(),
                   help="version, and which build runs (compiled or pure Python)")
    sub = p.add_subparsers(dest="command", required=True)

    def serve_flags(sp: argparse.ArgumentParser, with_config: bool) -> None:
        if with_config:
            sp.add_argument("--config", metavar="FILE", help="TOML config (default: the built-in seed config)")
            sp.add_argument("--strategy", choices=NAMES, help="routing strategy")
            sp.add_argument("--geoip-db", metavar="FILE", help="MaxMind DB (GeoLite2/GeoIP2 Country or City)")
            sp.add_argument("--workers", type=int, metavar="N",
                            help="worker processes sharing the port (SO_REUSEPORT); default 1")
        sp.add_argument("--listen", metavar="HOST:PORT", help="traffic listener")
        sp.add_argument("--admin", metavar="HOST:PORT", help="admin API listener")
        sp.add_argument("--log-level", choices=("debug", "info", "warning", "error"))

    serve_flags(sub.add_parser("serve", help="run the router (production entry point)"), True)
    serve_flags(sub.add_parser("demo", help="four simulated regions and the router in front, on loopback"), False)
    cc = sub.add_parser("check-config", help="validate a config file")
    cc.add_argument("file")
    geo = sub.add_parser("geo", help="country and region for an IP address")
    geo.add_argument("ip")
    geo.add_argument("--db", metavar="FILE", help="MaxMind DB (default: the config's)")
    geo.add_argument("--config", metavar="FILE", help="config for the country map (default: built-in)")
    from .simulator.cli import CONTROL_HELP, add_arguments

    add_arguments(sub.add_parser(
        "simulate", help="simulated regions with a fault-injection control server (for tests and demos)",
        description="Run simulated regions and a control server that injects faults.",
        epilog=CONTROL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    ))
    return p


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from . import BUILD

    try:
        v = version("edge-router")
    except PackageNotFoundError:  # run from a source tree that was never installed
        v = "(not installed)"
    return f"edge-router {v}, {BUILD}, Python {sys.version.split()[0]}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return check_config(args.file)
        if args.command == "geo":
            return geo_command(args)
        if args.command == "serve":
            return serve(args)
        if args.command == "simulate":
            from .simulator.cli import run

            return run(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args)
    except ConfigError as exc:
        print(f"edge-router: invalid configuration ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a port in use, a certificate that cannot be read, ...
        print(f"edge-router: cannot start: {exc}", file=sys.stderr)
        return 1
    return 1


def check_config(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    print(f"{path}: OK")
    print(summarize(config))
    db = config.geo.database
    if db and not os.path.exists(db):
        print(f"warning: geo.database {db} does not exist here; serve will refuse to start without it",
              file=sys.stderr)
    return 0


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config) if getattr(args, "config", None) else default_config()
    return with_overrides(
        config,
        listen=args.listen,
        admin=args.admin,
        strategy=getattr(args, "strategy", None),
        geoip_db=getattr(args, "geoip_db", None),
        workers=getattr(args, "workers", None),
        log_level=args.log_level,
    )


def serve(args: argparse.Namespace) -> int:
    from geodata.reader import GeoDatabaseError

    from .server import Router, install_uvloop, open_geo, serve_until_signalled

    config = _load(args)
    setup_logging(config.log.level)
    try:
        geo = open_geo(config)
    except GeoDatabaseError as exc:
        print(f"edge-router: cannot start: {exc}", file=sys.stderr)
        print("  get a GeoLite2-Country database from MaxMind (see README, 'Geolocation') "
              "or pass --geoip-db FILE", file=sys.stderr)
        return 1
    if config.workers > 1:
        from .workers import serve_workers

        if geo is not None:
            geo.close()  # it opened: each worker opens its own
        return serve_workers(config)
    install_uvloop()
    asyncio.run(serve_until_signalled(Router(config, geo)))
    return 0


def geo_command(args: argparse.Namespace) -> int:
    from geodata.reader import GeoDatabaseError, GeoReader

    from .client_ip import parse_ip

    config = load_config(args.config) if args.config else default_config()
    db = args.db or config.geo.database
    addr = parse_ip(args.ip)
    if addr is None:
        print(f"edge-router geo: not an IP address: {args.ip!r}", file=sys.stderr)
        return 2
    if not db:
        print("edge-router geo: no database (pass --db FILE)", file=sys.stderr)
        return 1
    try:
        reader = GeoReader(db)
    except GeoDatabaseError as exc:
        print(f"edge-router geo: {exc}", file=sys.stderr)
        return 1
    with reader:
        country = reader.lookup(str(addr))
    home = config.country_home.get(country) if country else None
    region = home or config.default_region
    why = f"home region of {country}" if home else (
        f"{country} is not in the country map: default region" if country else "no country: default region"
    )
    print(f"ip:      {addr}")
    print(f"country: {country or '-'}")
    print(f"region:  {region} ({why})")
    rc = config.region(region)
    if rc is not None and rc.failover:
        print(f"failover: {' -> '.join(rc.failover)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
