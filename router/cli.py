"""`edge-router` command line: demo, serve, check-config, geo, simulate, drill."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import replace

from policies import NAMES

from .config import (
    Config,
    ConfigError,
    default_config,
    load_config,
    summarize,
    with_overrides,
)
from .logs import fatal, set_process_name, setup_logging


EXIT_CODES = """\
exit codes:
  0    done; serve and demo: stopped by SIGTERM or Ctrl-C after draining
  1    cannot start: a port in use, an unreadable certificate or GeoIP database,
       a worker that died
  2    invalid configuration (every problem is printed with its key path) or a bad
       command line
  130  interrupted (Ctrl-C) before serving
  141  stdout was closed early (e.g. piped into head): stops quietly
"""
# The container image sets it to /etc/edge-router/config.toml: a mounted file is used,
# and without one the image still runs (the built-in config, and it says so).
CONFIG_ENV = "EDGE_ROUTER_CONFIG"
TOKEN_HELP = """\
The admin token is read at start-up from the environment variable named by
[admin] token_env, EDGE_ROUTER_ADMIN_TOKEN by default; without it every admin
mutation answers 403. It is never read from the config file.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-router", description="Global traffic-steering reverse proxy.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=version_text(),
                   help="version, and which build runs (compiled or pure Python)")
    sub = p.add_subparsers(dest="command", required=True)

    def serve_flags(sp: argparse.ArgumentParser, with_config: bool) -> None:
        if with_config:
            sp.add_argument("--config", metavar="FILE",
                            help=f"TOML config (default: ${CONFIG_ENV} if that file exists, else the built-in "
                                 "seed config)")
            sp.add_argument("--strategy", choices=NAMES, help="routing strategy")
            sp.add_argument("--geoip-db", metavar="FILE", help="MaxMind DB (GeoLite2/GeoIP2 Country or City)")
            sp.add_argument("--workers", type=int, metavar="N",
                            help="worker processes sharing the port (SO_REUSEPORT); default 1")
        sp.add_argument("--listen", metavar="HOST:PORT", help="traffic listener")
        sp.add_argument("--admin", metavar="HOST:PORT", help="admin API listener")
        sp.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="process log level (overrides [log] level); debug shows each routing decision")

    serve_flags(sub.add_parser(
        "serve", help="run the router (production entry point)",
        description="Run the router. Without --config it serves the built-in seed deployment "
                    "(`edge-router check-config --print-default` prints it).",
        epilog=TOKEN_HELP + "\n" + EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    ), True)
    serve_flags(sub.add_parser(
        "demo", help="four simulated regions and the router in front, on loopback",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    ), False)
    cc = sub.add_parser(
        "check-config", help="validate a config file, or print the built-in one",
        epilog="exit codes: 0 valid, 2 problems (each printed with its key path)",
    )
    cc.add_argument("file", nargs="?", help="the TOML config file to check")
    cc.add_argument("--print-default", action="store_true",
                    help="print the built-in config (the seed deployment) as a TOML file to start from")
    geo = sub.add_parser(
        "geo", help="country and region for an IP address",
        epilog="exit codes: 0 answered, 1 no or unreadable database, 2 not an IP address",
    )
    geo.add_argument("ip", help="IPv4 or IPv6 address to look up")
    geo.add_argument("--db", metavar="FILE", help="MaxMind DB (default: the config's)")
    geo.add_argument("--config", metavar="FILE", help="config for the country map (default: built-in)")
    from .simulator.cli import CONTROL_HELP, add_arguments

    add_arguments(sub.add_parser(
        "simulate", help="simulated regions with a fault-injection control server (for tests and demos)",
        description="Run simulated regions and a control server that injects faults.",
        epilog=CONTROL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    ))
    drill_flags(sub.add_parser(
        "drill", help="planned failover drill against a running router",
        description="Drain a region over --over, check its traffic moved to its failover regions with few "
                    "errors, hold, enable it again and check its traffic comes back. Needs traffic through "
                    "the router. Exit 0: passed, 1: failed, 2: could not run. Ctrl-C enables the region again.",
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


def drill_flags(d: argparse.ArgumentParser) -> None:
    d.add_argument("--admin", required=True, metavar="URL", help="the router's admin API, e.g. http://127.0.0.1:9901")
    d.add_argument("--region", required=True, metavar="ID", help="the region to drain")
    d.add_argument("--over", default="30s", metavar="DURATION", help="drain window (default 30s)")
    d.add_argument("--hold", default="60s", metavar="DURATION", help="time held fully drained (default 60s)")
    d.add_argument("--settle", default="10s", metavar="DURATION",
                   help="traffic measured before and after the drill (default 10s)")
    d.add_argument("--recover-timeout", default="30s", metavar="DURATION",
                   help="how long the region's traffic may take to come back (default 30s)")
    d.add_argument("--max-error-rate", type=float, default=0.05, metavar="RATIO",
                   help="share of 5xx answers tolerated during the drill (default 0.05)")
    d.add_argument("--token-env", default="EDGE_ROUTER_ADMIN_TOKEN", metavar="NAME",
                   help="environment variable holding the admin token (default EDGE_ROUTER_ADMIN_TOKEN)")
    d.add_argument("--json", action="store_true", help="write the report as JSON on stdout")


def main(argv: list[str] | None = None) -> int:
    # Line-buffered, so that a reader who leaves (`| head`) is noticed here, not at exit.
    if hasattr(sys.stdout, "reconfigure"):  # not when a test harness replaced it
        sys.stdout.reconfigure(line_buffering=True)
    try:
        args = _parser().parse_args(argv)
        if args.command == "check-config":
            return check_config(args.file, args.print_default)
        if args.command == "geo":
            return geo_command(args)
        if args.command == "serve":
            return serve(args)
        if args.command == "simulate":
            from .simulator.cli import run

            return run(args)
        if args.command == "drill":
            from .ops.drill_run import drill_command

            return drill_command(args)
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
    except BrokenPipeError:
        # Stop quietly, as Unix tools do; nothing more can reach the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a port in use, a certificate that cannot be read, ...
        fatal(f"cannot start: {exc}")
        return 1
    return 1


def check_config(path: str | None, print_default: bool = False) -> int:
    if print_default:
        from .defaults import SEED_TOML

        print("# edge-router built-in configuration: the seed deployment.")
        print("# Save it, edit it, check it with `edge-router check-config FILE`,")
        print("# run it with `edge-router serve --config FILE`.")
        print(SEED_TOML, end="")
        return 0
    if path is None:
        print("edge-router check-config: give a FILE, or --print-default", file=sys.stderr)
        return 2
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

    env_config = os.environ.get(CONFIG_ENV, "")
    if not args.config and env_config and os.path.isfile(env_config):
        args.config = env_config
    config = _load(args)
    setup_logging(config.log.level, fmt=config.log.format)
    if config.workers > 1:
        set_process_name("supervisor")
    if not args.config:
        config = _builtin_notice(config, env_config, explicit_db=bool(args.geoip_db))
    try:
        geo = open_geo(config)
    except GeoDatabaseError as exc:
        fatal(f"cannot start: {exc} (get a GeoLite2-Country database from MaxMind, see README "
              "'Geolocation', or pass --geoip-db FILE)")
        return 1
    if config.state.backend == "file":
        from .store.file import unwritable

        problem = unwritable(config.state.path)
        if problem:
            fatal(f"cannot start: state.path: {problem}")
            return 1
    # SIGHUP and POST /admin/reload read the file again, with the same flags on top.
    reload_source = (lambda: _load(args)) if args.config else None
    if config.workers > 1:
        from .workers import serve_workers

        if geo is not None:
            geo.close()  # it opened: each worker opens its own
        return serve_workers(config, reload_source)
    install_uvloop()
    asyncio.run(serve_until_signalled(Router(config, geo, reload_source=reload_source)))
    return 0


def _builtin_notice(config: Config, env_config: str, explicit_db: bool) -> Config:
    """Say, first, that the built-in config is served and where its regions are.
    Its GeoIP database missing, serve without one rather than not at all."""
    log = logging.getLogger("edge_router.cli")
    why = f"no --config and no file at ${CONFIG_ENV} ({env_config})" if env_config else "no --config"
    log.warning(
        "%s: serving the built-in seed deployment, regions %s "
        "(`edge-router check-config --print-default` prints it)",
        why, ", ".join(f"{r.id} at {r.api}" for r in config.regions),
    )
    db = config.geo.database
    if db and not explicit_db and not os.path.exists(db):
        log.warning("no GeoIP database at %s: every client goes to the default region %s "
                    "(mount one there, or pass --geoip-db FILE)", db, config.default_region)
        config = replace(config, geo=replace(config.geo, database=None))
    return config


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
