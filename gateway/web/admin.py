"""The admin listener: /healthz, /readyz, /metrics. Never on the public port."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import GatewayError
from ..proxy.headers import SERVER
from .runtime import Runtime


def build_admin_app(rt: Runtime) -> web.Application:
    app = web.Application()

    async def server_header(_: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER

    app.on_response_prepare.append(server_header)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "worker": rt.worker})

    async def readyz(_: web.Request) -> web.Response:
        problems = []
        try:
            await rt.store.ping()
        except GatewayError as exc:
            problems.append(f"store: {exc.detail}")
        if not rt.surface.routes:
            problems.append("surface: no routes loaded")
        if problems:
            return web.json_response({"status": "unavailable", "problems": problems}, status=503)
        return web.json_response({"status": "ready", "routes": len(rt.surface.routes)})

    async def metrics(_: web.Request) -> web.Response:
        body = rt.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
