"""The admin API (aiohttp), on its own listener, apart from traffic.

Reads are open; every mutation needs `Authorization: Bearer <token>`,
compared in constant time. No token configured means mutations are refused
(403), never open by default. Each mutation writes one audit line.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Callable

import orjson
from aiohttp import web

from policies import NAMES

from .client_ip import parse_ip
from .config import parse_duration
from .explain import explain_route
from .metrics import CONTENT_TYPE
from .state import RegionStore

audit_log = logging.getLogger("edge_router.audit")


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, error: str, detail: str, **extra: object) -> web.Response:
    return _json({"error": error, "detail": detail, **extra}, status)


def token_fingerprint(token: str) -> str:
    """Short, non-reversible: enough to tell tokens apart in an audit trail."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:12]


# The admin API, in one table: the single process and the workers' supervisor
# (router/workers.py) serve the same routes with handlers of these names.
ROUTES = (
    ("GET", "/admin/state", "state"),
    ("PUT", "/admin/strategy", "set_strategy"),
    ("POST", "/admin/regions/{id}/drain", "drain"),
    ("POST", "/admin/regions/{id}/disable", "disable"),
    ("POST", "/admin/regions/{id}/enable", "enable"),
    ("GET", "/admin/route", "route"),
    ("GET", "/metrics", "metrics"),
    ("GET", "/healthz", "healthz"),
    ("GET", "/readyz", "readyz"),
)
MUTATIONS = ("set_strategy", "drain", "disable", "enable")


def build_app(handlers: object) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    for method, path, name in ROUTES:
        app.router.add_route(method, path, getattr(handlers, name))
    return app


def authorize(request: web.Request, token: str | None, token_env: str) -> tuple[web.Response | None, str]:
    """(None, token fingerprint) for a good bearer token, else (the 401/403 answer, "")."""
    if token is None:
        return _error(
            403, "forbidden",
            f"admin mutations are disabled: set the {token_env} environment variable "
            "to a secret token and restart, then send 'Authorization: Bearer <token>'",
        ), ""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    given = given.strip()
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header that
    # is not ASCII (or not UTF-8) is just a wrong token: 401, never a 500.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    ):
        resp = _error(401, "unauthorized", "missing or wrong bearer token")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="edge-router admin"'
        return resp, ""
    return None, token_fingerprint(given)


def audit(request: web.Request, who: str, action: str, args: dict) -> None:
    """One JSON audit line: action, arguments, source address, token fingerprint."""
    audit_log.info(
        orjson.dumps({"audit": True, "action": action, "args": args, "source": request.remote, "token": who}).decode()
    )


class AdminAPI:
    def __init__(
        self,
        store: RegionStore,
        *,
        token: str | None,
        token_env: str,
        geo,
        metrics_render: Callable[[], bytes],
        ready: Callable[[], bool],
        max_in_flight: int,
        audit: bool = True,
    ) -> None:
        self.audit = audit  # off in workers: the supervisor writes the one audit line
        self.store = store
        self.token = token or None
        self.token_env = token_env
        self.geo = geo
        self.metrics_render = metrics_render
        self.ready = ready
        self.max_in_flight = max_in_flight

    def app(self) -> web.Application:
        return build_app(self)

    # -- reads -------------------------------------------------------------------
    async def state(self, request: web.Request) -> web.Response:
        return _json(self.store.state_json())

    async def metrics(self, request: web.Request) -> web.Response:
        self.store.publish_gauges()
        return web.Response(body=self.metrics_render(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return _json({"status": "ready"})
        return _json({"status": "not ready"}, 503)

    async def route(self, request: web.Request) -> web.Response:
        ip = request.query.get("ip")
        country = request.query.get("country")
        if (ip is None) == (country is None):
            return _error(400, "bad_request", "give exactly one of ?ip= or ?country=", field="ip")
        if ip is not None:
            addr = parse_ip(ip)
            if addr is None:
                return _error(400, "bad_request", f"not an IP address: {ip!r}", field="ip")
            ip = str(addr)
            country = self.geo.lookup(ip) if self.geo is not None else None
        else:
            country = country.strip().upper()
            if len(country) != 2 or not country.isalpha() or not country.isascii():
                return _error(400, "bad_request", "country must be an ISO 3166-1 alpha-2 code", field="country")
        return _json(
            explain_route(self.store, country=country, client_ip=ip, max_in_flight=self.max_in_flight)
        )

    # -- mutations ---------------------------------------------------------------
    def _authorize(self, request: web.Request) -> tuple[web.Response | None, str]:
        return authorize(request, self.token, self.token_env)

    async def _body(self, request: web.Request, required: tuple[str, ...]) -> dict | web.Response:
        raw = await request.read()
        if not raw.strip():
            data: object = {}
        else:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return _error(400, "bad_request", f"body is not valid JSON: {exc}", field="body")
        if not isinstance(data, dict):
            return _error(400, "bad_request", "body must be a JSON object", field="body")
        for name in required:
            if name not in data:
                return _error(400, "bad_request", f"missing field '{name}'", field=name)
        return data

    def _audit(self, request: web.Request, who: str, action: str, args: dict) -> None:
        if self.audit:
            audit(request, who, action, args)

    def _region(self, request: web.Request) -> tuple[str, web.Response | None]:
        rid = request.match_info["id"]
        if rid not in self.store.regions:
            return rid, _error(
                404, "not_found", f"unknown region '{rid}'", field="id", regions=list(self.store.regions)
            )
        return rid, None

    async def set_strategy(self, request: web.Request) -> web.Response:
        denied, who = self._authorize(request)
        if denied:
            return denied
        data = await self._body(request, ("strategy",))
        if isinstance(data, web.Response):
            return data
        name = data["strategy"]
        if not isinstance(name, str) or name not in NAMES:
            return _error(
                400, "bad_request",
                f"unknown strategy {name!r}; valid: {', '.join(NAMES)}",
                field="strategy", valid=list(NAMES),
            )
        before = self.store.strategy
        self.store.set_strategy(name)
        self._audit(request, who, "set_strategy", {"strategy": name, "previous": before})
        return _json({"strategy": name, "previous": before})

    async def _region_mutation(self, request: web.Request) -> web.Response | tuple[str, str, dict]:
        """Authorized, known region, JSON body: (who, region, body) or the 4xx answer."""
        denied, who = self._authorize(request)
        if denied:
            return denied
        rid, missing = self._region(request)
        if missing:
            return missing
        data = await self._body(request, ())
        if isinstance(data, web.Response):
            return data
        return who, rid, data

    async def drain(self, request: web.Request) -> web.Response:
        prepared = await self._region_mutation(request)
        if isinstance(prepared, web.Response):
            return prepared
        who, rid, data = prepared
        over_raw = data.get("over", "60s")
        try:
            if not isinstance(over_raw, str):
                raise ValueError
            over = parse_duration(over_raw)
        except ValueError:
            return _error(
                400, "bad_request", f"field 'over': bad duration {over_raw!r}: use a string like '60s', '2m', '500ms'",
                field="over",
            )
        unknown = set(data) - {"over"}
        if unknown:
            return _error(400, "bad_request", f"unknown field '{sorted(unknown)[0]}'", field=sorted(unknown)[0])
        self.store.drain(rid, over)
        self._audit(request, who, "drain", {"region": rid, "over": over_raw})
        return _json({"region": rid, "draining": True, "over_seconds": over})

    async def disable(self, request: web.Request) -> web.Response:
        return await self._toggle(request, "disable")

    async def enable(self, request: web.Request) -> web.Response:
        return await self._toggle(request, "enable")

    async def _toggle(self, request: web.Request, action: str) -> web.Response:
        prepared = await self._region_mutation(request)
        if isinstance(prepared, web.Response):
            return prepared
        who, rid, data = prepared
        if data:
            field = sorted(data)[0]
            return _error(400, "bad_request", f"unknown field '{field}' ({action} takes no body)", field=field)
        getattr(self.store, action)(rid)
        self._audit(request, who, action, {"region": rid})
        return _json({"region": rid, "disabled": action == "disable"})
