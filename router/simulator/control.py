"""The simulator: its regions plus one control server for faults and stats."""
from __future__ import annotations

import json
import ssl
from typing import Any

from aiohttp import web

from .region import SHUTDOWN_TIMEOUT, Region, RegionSpec, bind, json_answer


class Simulator:
    """Regions plus one control server, all in the running event loop."""

    def __init__(self) -> None:
        self.regions: dict[str, Region] = {}
        self.control_port: int | None = None
        self.host = "127.0.0.1"
        self._control: web.AppRunner | None = None

    @property
    def ports(self) -> dict[str, int]:
        return {rid: region.port for rid, region in self.regions.items()}

    def ready_info(self) -> dict[str, Any]:
        return {"control": self.control_port, "regions": self.ports}

    async def start(
        self,
        specs: list[RegionSpec],
        control_port: int = 0,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        ids = [spec.id for spec in specs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate region ids in {ids}")
        self.host = host
        try:
            for spec in specs:
                region = Region(spec, host, ssl_context)
                self.regions[spec.id] = region
                await region.start()
            self._control = web.AppRunner(
                self._make_control_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
            )
            await self._control.setup()
            sock = bind(host, control_port)
            await web.SockSite(self._control, sock).start()
            self.control_port = sock.getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._control is not None:
            await self._control.cleanup()
            self._control = None
        for region in self.regions.values():
            await region.stop()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def region(self, region_id: str) -> Region:
        try:
            return self.regions[region_id]
        except KeyError:
            raise KeyError(f"unknown region {region_id!r}") from None

    async def set_fault(self, region_id: str, **changes: Any) -> dict[str, Any]:
        """Partial fault update, e.g. set_fault("eu-west-1", down=True, extra_latency="200ms")."""
        return await self.region(region_id).update_faults(changes)

    async def reset(self, region_id: str) -> dict[str, Any]:
        return await self.region(region_id).reset_faults()

    def stats(self, region_id: str) -> dict[str, Any]:
        return self.region(region_id).stats.to_dict()

    def reset_stats(self, region_id: str) -> dict[str, Any]:
        return self.region(region_id).reset_stats()

    def state(self) -> dict[str, Any]:
        return {"regions": {rid: region.view() for rid, region in self.regions.items()}}

    def _make_control_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/regions", self._ctl_state)
        app.router.add_get("/regions/{id}", self._ctl_region)
        app.router.add_post("/regions/{id}/fault", self._ctl_fault)
        app.router.add_post("/regions/{id}/reset", self._ctl_reset)
        app.router.add_get("/regions/{id}/stats", self._ctl_stats)
        app.router.add_post("/regions/{id}/stats/reset", self._ctl_stats_reset)
        return app

    def _ctl_lookup(self, request: web.Request) -> Region:
        region = self.regions.get(request.match_info["id"])
        if region is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"unknown region {request.match_info['id']!r}",
                                 "regions": list(self.regions)}),
                content_type="application/json",
            )
        return region

    async def _ctl_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _ctl_region(self, request: web.Request) -> web.Response:
        return web.json_response(self._ctl_lookup(request).view())

    async def _ctl_fault(self, request: web.Request) -> web.Response:
        region = self._ctl_lookup(request)
        try:
            changes = json.loads(await request.read() or b"null")
            return web.json_response(await region.update_faults(changes))
        except ValueError as exc:  # bad JSON or a bad field
            return json_answer(400, {"error": str(exc)})
        except OSError as exc:  # the port was taken while the region was down
            return json_answer(409, {"error": f"cannot reopen port {region.port}: {exc}"})

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        region = self._ctl_lookup(request)
        try:
            return web.json_response(await region.reset_faults())
        except OSError as exc:
            return json_answer(409, {"error": f"cannot reopen port {region.port}: {exc}"})

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._ctl_lookup(request).stats.to_dict())

    async def _ctl_stats_reset(self, request: web.Request) -> web.Response:
        return web.json_response(self._ctl_lookup(request).reset_stats())


