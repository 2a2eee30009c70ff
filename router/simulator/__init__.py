"""Region simulator: stand-ins for the regional API deployments.

One process runs any number of simulated regions, each an aiohttp server on its
own port, plus one control server for the whole process (so a region that is
"down", its listening socket really closed, can still be brought back).

Region endpoints (every answer carries `X-Sim-Region: <id>` and comes after the
region's latency plus any injected extra latency):

    GET  /api/v1/health             200 {"status": "ok", "region"}; 503 under health_fail
    *    /api/v1/echo               the request as received: method, path, query,
                                    headers, body size and sha256
    POST /api/v1/payments           JSON object -> 201 {"region", "payment_id", "amount", ...}
    GET  /api/v1/large?bytes=N      N bytes streamed in 64 KiB chunks, byte i is i % 256;
                                    chunked, or Content-Length with &sized=1
    PUT|POST /api/v1/upload         {"region", "bytes", "sha256"} of the streamed body
    *    /api/v1/status/{code}      that status, small JSON body (none for 204/304)
    GET  /api/v1/ws                 WebSocket echo: text back as text, binary as binary;
                                    ?greet=1 first sends {"region": id}
    GET  /api/v1/events             server-sent events (text/event-stream), each written
                                    at once: ?count=N (10) &interval=250ms (1s); every
                                    event's data is {"region", "seq", "of", "time"}
    anything else                   404 JSON

Faults (control server, or the Simulator methods):

    down             listening socket closed and open connections aborted; up again
                     on the same port
    error_rate       that share of requests (never health) answers 500; seeded per
                     region, 1.0 is exact
    extra_latency    added to the region's latency ("250ms" or seconds)
    hang             requests (health too) are accepted and never answered, until the
                     fault is cleared or the client goes away
    health_fail      health answers 503
    drop_after_body  requests (never health) have their body read, then the TCP
                     connection is aborted without an answer

Control server (JSON):

    GET  /regions                   {"regions": {id: region view}}
    GET  /regions/{id}              region view: id, port, latency, up, faults, stats
    POST /regions/{id}/fault        partial update of faults; answers the region and its faults (no stats)
    POST /regions/{id}/reset        clears every fault
    GET  /regions/{id}/stats        {"requests", "by_path", "by_method", "request_ids", "payments"}
    POST /regions/{id}/stats/reset

CLI (`python -m router.simulator` or `edge-router simulate`):

    python -m router.simulator --region us-east-1:8101:20ms --region eu-west-1:8102:80ms \\
        --control 8100 [--host 127.0.0.1] [--tls-cert F --tls-key F [--tls-client-ca F]]
        [--ready-file PATH]

prints {"control": port, "regions": {id: port}} as one JSON line once listening
(port 0 picks a free one) and stops cleanly on SIGINT/SIGTERM.
"""
from .control import Simulator
from .faults import Faults, parse_duration, validate_faults
from .region import CHUNK, DEFAULT_SPECS, HEALTH_PATH, Region, RegionSpec
from .cli import parse_region

__all__ = [
    "CHUNK", "DEFAULT_SPECS", "HEALTH_PATH", "Faults", "Region", "RegionSpec", "Simulator",
    "parse_duration", "parse_region", "validate_faults",
]
