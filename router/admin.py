"""The admin API (aiohttp), on its own listener, apart from traffic.

Reads are open; every mutation needs `Authorization: Bearer <token>`,
compared in constant time. No token configured means mutations are refused
(403), never open by default. Each mutation writes one audit line.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Awaitable, Callable

import orjson
from aiohttp import web

from policies import NAMES

from .client_ip import parse_ip
from .config import parse_duration
from .explain import explain_route
from .metrics import CONTENT_TYPE
from .ratelimit import LiftError
from .ops.page import status_page
from .state import RegionStore
from .store import Conflict, DecisionBook, Mutation, StoreUnavailable, replica_id

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
    ("PUT", "/admin/regions/{id}/weight", "set_weight"),
    ("POST", "/admin/reload", "reload"),
    ("GET", "/admin/route", "route"),
    ("GET", "/metrics", "metrics"),
    ("GET", "/healthz", "healthz"),
    ("GET", "/readyz", "readyz"),
    ("POST", "/admin/ratelimit/lift", "ratelimit_lift"),
)
MUTATIONS = ("set_strategy", "drain", "disable", "enable", "set_weight", "ratelimit_lift")
# The supervisor of `--workers N` names the operator to its workers (whose own
# caller, with the internal token, is the supervisor itself).
OPERATOR_HEADER = "X-Edge-Operator"
# audit action -> notification event kind (router/ops/notify.py)
OPERATOR_EVENTS = {"set_strategy": "strategy_changed", "drain": "region_drained",
                   "disable": "region_disabled", "enable": "region_enabled", "set_weight": "region_weight_changed",
                   "ratelimit_lift": "rate_limit_lifted"}


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own answers (no such path, wrong method, body too large) as JSON,
    like every other admin error."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = sorted(exc.allowed_methods)
            resp = _error(405, "method_not_allowed",
                          f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}",
                          allowed=allowed)
            resp.headers["Allow"] = ", ".join(allowed)
            return resp
        if isinstance(exc, web.HTTPNotFound):
            return _error(404, "not_found", f"no admin endpoint {request.path}",
                          endpoints=["/", *dict.fromkeys(path for _, path, _ in ROUTES)])
        return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)


def build_app(handlers: object) -> web.Application:
    app = web.Application(client_max_size=64 * 1024, middlewares=[json_errors])
    app.router.add_get("/", status_page)  # the live status page (router/ops/page.py)
    for method, path, name in ROUTES:
        if method == "GET":  # and HEAD, GET's answer without its body (load balancers, curl -I)
            app.router.add_get(path, getattr(handlers, name))
        else:
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


def audit(request: web.Request, who: str, action: str, args: dict, replica: str | None = None) -> None:
    """One JSON audit line: action, arguments, source address, token fingerprint,
    and the replica that took the decision (one line per decision, fleet-wide)."""
    audit_log.info(orjson.dumps({
        "audit": True, "action": action, "args": args, "source": request.remote, "token": who,
        "replica": replica or replica_id(),
    }).decode())


def decision_options(data: dict, allowed: tuple[str, ...]) -> tuple[bool, bool] | web.Response:
    """(force, local) from a mutation body, or the 400 naming the field."""
    force = data.get("force", False)
    if "force" in allowed and not isinstance(force, bool):
        return _error(400, "bad_request", "field 'force' must be true or false", field="force")
    scope = data.get("scope", "shared")
    if "scope" in allowed and scope not in ("shared", "local"):
        return _error(400, "bad_request", "field 'scope' must be \"shared\" or \"local\"", field="scope")
    return force, scope == "local"


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
        decisions: DecisionBook,
        reload: Callable[[], Awaitable[dict]] | None = None,
        audit: bool = True,
        rate_limiter=None,
    ) -> None:
        self.decisions = decisions
        self.reload_config = reload
        self.audit = audit  # off in workers: the supervisor writes the one audit line
        self.store = store
        self.token = token or None
        self.token_env = token_env
        self.geo = geo
        self.metrics_render = metrics_render
        self.ready = ready
        self.max_in_flight = max_in_flight
        self.rate_limiter = rate_limiter

    def app(self) -> web.Application:
        return build_app(self)

    # -- reads -------------------------------------------------------------------
    async def state(self, request: web.Request) -> web.Response:
        data = {**self.store.state_json(), "decisions": self.decisions.describe()}
        if self.rate_limiter is not None:
            data["rate_limit"] = self.rate_limiter.state_json()
        return _json(data)

    async def metrics(self, request: web.Request) -> web.Response:
        self.store.publish_gauges()
        return web.Response(body=self.metrics_render(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        book = self.decisions
        detail = {"backend": book.backend.name, "store_up": book.up, "cause": book.cause or None,
                  "loaded": book.loaded, "version": book.shared.version}
        if not book.up and book.loaded:
            detail["note"] = "decision store unreachable: serving the last known decisions"
        if self.ready():
            return _json({"status": "ready", "decisions": detail})
        return _json({"status": "not ready", "decisions": detail}, 503)

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
        kind = OPERATOR_EVENTS.get(action)
        if not self.audit:  # a worker: authorized with the internal token, so the header is the supervisor's
            who = request.headers.get(OPERATOR_HEADER, "")  # none: a decision replayed to a new worker
        if kind is not None and who:
            self.store.notifier.emit(kind, args.get("region"), who=who,
                                     **{k: v for k, v in args.items() if k != "region"})
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
        return await self._decide(request, who, Mutation("strategy", strategy=name), {"previous": before},
                                  {"strategy": name, "previous": before})

    async def _decide(self, request: web.Request, who: str, m: Mutation, audit_args: dict, answer: dict,
                      *, force: bool = False, local: bool = False) -> web.Response:
        """Commit through the decision store; 409 (guard rail) or 503 (store down) otherwise."""
        try:
            d = await self.decisions.mutate(m, force=force, local=local)
        except Conflict as exc:
            return _error(409, "conflict", str(exc), regions=exc.regions)
        except StoreUnavailable as exc:
            hint = ' (an emergency disable of this replica alone: send {"scope": "local"})' \
                if m.action == "disable" else ""
            return _error(503, "state_store_unavailable", f"decision not taken: {exc}{hint}", cause=str(exc))
        action = {"strategy": "set_strategy", "weight": "set_weight"}.get(m.action, m.action)
        extra: dict = {"scope": "local"} if local else {}
        if "disabled" in answer:
            answer["disabled"] = m.region in d.disabled
        if not local and not self.decisions.up:  # an enable that could only clear the local override
            extra.update(scope="local", note=f"only this replica's local override was cleared: {self.decisions.cause}")
        if force:
            extra["force"] = True
        self._audit(request, who, action, {**m.args(), **audit_args, **extra})
        return _json({**answer, **extra, "version": d.version})

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
        unknown = set(data) - {"over", "force"}
        if unknown:
            return _error(400, "bad_request", f"unknown field '{sorted(unknown)[0]}'", field=sorted(unknown)[0])
        opts = decision_options(data, ("force",))
        if isinstance(opts, web.Response):
            return opts
        m = Mutation("drain", rid, over=over)
        return await self._decide(request, who, m, {"over": over_raw},
                                  {"region": rid, "draining": True, "over_seconds": over}, force=opts[0])

    async def disable(self, request: web.Request) -> web.Response:
        return await self._toggle(request, "disable")

    async def enable(self, request: web.Request) -> web.Response:
        return await self._toggle(request, "enable")

    async def _toggle(self, request: web.Request, action: str) -> web.Response:
        prepared = await self._region_mutation(request)
        if isinstance(prepared, web.Response):
            return prepared
        who, rid, data = prepared
        allowed = ("scope", "force") if action == "disable" else ("scope",)
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            return _error(400, "bad_request", f"unknown field '{unknown[0]}' ({action} takes {', '.join(allowed)})",
                          field=unknown[0])
        opts = decision_options(data, allowed)
        if isinstance(opts, web.Response):
            return opts
        force, local = opts
        return await self._decide(request, who, Mutation(action, rid), {}, {"region": rid, "disabled": action == "disable"},
                                  force=force, local=local)

    async def set_weight(self, request: web.Request) -> web.Response:
        prepared = await self._region_mutation(request)
        if isinstance(prepared, web.Response):
            return prepared
        who, rid, data = prepared
        weight = data.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1e6:
            return _error(400, "bad_request", "field 'weight' must be a number from 0 to 1000000", field="weight")
        unknown = sorted(set(data) - {"weight"})
        if unknown:
            return _error(400, "bad_request", f"unknown field '{unknown[0]}'", field=unknown[0])
        return await self._decide(request, who, Mutation("weight", rid, weight=float(weight)), {},
                                  {"region": rid, "weight": float(weight)})

    async def reload(self, request: web.Request) -> web.Response:
        """POST /admin/reload: the config file again, as SIGHUP does."""
        denied, who = self._authorize(request)
        if denied:
            return denied
        if self.reload_config is None:
            return _error(409, "no_config_file", "this router runs the built-in default config: nothing to reload")
        result = await self.reload_config()
        self._audit(request, who, "reload", {"ok": result["ok"]})
        if not result["ok"]:
            return _json({"error": "invalid_config", "detail": "the running config is kept",
                          "problems": result["problems"]}, 400)
        return _json(result)

    # -- rate limiting (router/ratelimit) ------------------------------------------
    async def ratelimit_lift(self, request: web.Request) -> web.Response:
        """POST /admin/ratelimit/lift {"rule", "key", "for"}: let one key through a rule for a while."""
        denied, who = self._authorize(request)
        if denied:
            return denied
        data = await self._body(request, ("rule", "key"))
        if isinstance(data, web.Response):
            return data
        unknown = sorted(set(data) - {"rule", "key", "for"})
        if unknown:
            return _error(400, "bad_request", f"unknown field '{unknown[0]}'", field=unknown[0])
        if self.rate_limiter is None:
            return _error(400, "bad_request", "no [rate_limit] rules are configured", field="rule")
        try:
            done = self.rate_limiter.lift(data["rule"], data["key"], data.get("for", "10m"))
        except LiftError as exc:
            return _error(400, "bad_request", str(exc), field=exc.field)
        self._audit(request, who, "ratelimit_lift", done)  # API keys appear hashed
        return _json(done)
