"""`python -m router.simulator` / `edge-router simulate`: run simulated regions."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys

from ..logs import setup_logging
from .control import Simulator
from .faults import parse_duration
from .region import DEFAULT_SPECS, RegionSpec


def parse_region(text: str) -> RegionSpec:
    """RegionSpec from "id[:port[:latency]]", e.g. "us-east-1:8101:20ms"."""
    parts = text.split(":")
    if not parts[0] or len(parts) > 3:
        raise argparse.ArgumentTypeError(f"expected ID[:PORT[:LATENCY]], got {text!r}")
    try:
        port = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        latency = parse_duration(parts[2]) if len(parts) > 2 else 0.0
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port out of range")
    return RegionSpec(parts[0], port, latency)


def _write_atomically(path: str, text: str) -> None:
    # A poller must never read a half-written file.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


async def _serve(args: argparse.Namespace, ssl_context: ssl.SSLContext | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim = Simulator()
    try:
        await sim.start(args.region or list(DEFAULT_SPECS), args.control, args.host, ssl_context)
    except (OSError, ValueError) as exc:
        print(f"simulator: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        line = json.dumps(sim.ready_info())
        if args.ready_file:
            _write_atomically(args.ready_file, line + "\n")
        print(line, flush=True)
        await stop.wait()
    finally:
        await sim.stop()
    return 0


CONTROL_HELP = """\
control endpoints (JSON, on the --control port):
  GET  /regions                    every region: port, latency, up, faults, stats
  GET  /regions/{id}               one region
  POST /regions/{id}/fault         partial fault update, e.g. {"down": true},
                                   {"error_rate": 0.5}, {"extra_latency": "250ms"},
                                   {"hang": true}, {"health_fail": true},
                                   {"drop_after_body": true}
  POST /regions/{id}/reset         clear every fault
  GET  /regions/{id}/stats         requests by path and method, request ids, payments
  POST /regions/{id}/stats/reset   zero the counters

region endpoints: GET /api/v1/health, * /api/v1/echo, POST /api/v1/payments,
  GET /api/v1/large?bytes=N, PUT|POST /api/v1/upload, * /api/v1/status/{code},
  GET /api/v1/ws (WebSocket echo; ?greet=1 names the region first),
  GET /api/v1/events?count=10&interval=1s (server-sent events naming the region)

Once listening it prints {"control": port, "regions": {id: port}} as one JSON line.
exit codes: 0 stopped by SIGINT/SIGTERM, 1 cannot start (port in use, bad TLS files),
  2 bad command line
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options, shared by `python -m router.simulator` and `edge-router simulate`."""
    parser.add_argument(
        "--region", action="append", type=parse_region, metavar="ID[:PORT[:LATENCY]]",
        help="a region to simulate, e.g. us-east-1:8101:20ms (repeatable; port 0 = any free); "
             "default: the seed's four regions on free ports",
    )
    parser.add_argument("--control", type=int, default=0, metavar="PORT",
                        help="control server port (default: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve the regions over HTTPS")
    parser.add_argument("--tls-key", metavar="FILE", help="private key for --tls-cert")
    parser.add_argument("--tls-client-ca", metavar="FILE",
                        help="require client certificates signed by this CA (mutual TLS)")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="also write the ready JSON line to this file")
    parser.add_argument("--log-level", default="WARNING", type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="simulator log level (default WARNING)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 1 if the regions cannot start."""
    if args.tls_key and not args.tls_cert:
        print("simulator: --tls-key needs --tls-cert", file=sys.stderr)
        return 2
    setup_logging(args.log_level.lower())  # the router's format: ISO-8601 UTC times
    ssl_context = None
    if args.tls_cert:
        try:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
            if args.tls_client_ca:
                ssl_context.verify_mode = ssl.CERT_REQUIRED
                ssl_context.load_verify_locations(args.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            print(f"simulator: cannot start: {exc}", file=sys.stderr)
            return 1
    return asyncio.run(_serve(args, ssl_context))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.simulator",
        description="Run simulated regions and a control server that injects faults.",
        epilog=CONTROL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        return 130
