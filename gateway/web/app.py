"""The aiohttp application: the proxy door, the management mount, and the admin listener."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from ..auth.principal import Principal
from ..errors import InvalidToken, StoreUnavailable
from ..pipeline import Decision
from ..proxy.formscan import scanner_for
from ..proxy.forward import forward
from ..proxy.headers import SERVER
from ..proxy.websocket import proxy_websocket
from .errors import error_response
from .ledger import Ledger
from .management import management
from .peer import client_of, peer_of
from .runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)


async def handle(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    rt.in_flight += 1
    try:
        response = await _handle(rt, request)
    finally:
        rt.in_flight -= 1
    if rt.draining:
        response.force_close()  # no keep-alive while shutting down
    return response


async def _handle(rt: Runtime, request: web.Request) -> web.StreamResponse:
    led = Ledger(rt, request.method, request.raw_path, request.headers)
    response: web.StreamResponse
    try:
        path = rt.pipeline.vet(request.method, request.raw_path, request.headers)
        if path.segments[: len(rt.mount_segments)] == rt.mount_segments:
            led.fields["route"] = "management"
            response = await management(rt, request, path, led.rid, led.fields)
            led.decision = "allow" if response.status < 400 else "deny"
        else:
            client = client_of(request, rt.cfg.trusted_proxies)
            d = await rt.pipeline.decide(request.method, path, request.headers, client)
            led.decided(d)
            response = await _proxy(rt, request, d, led.rid, led.timings)
            led.forwarded(d, response.status)
    except Exception as exc:
        err, bug = led.refusal(exc)
        response = error_response(err, led.rid, close=bug or "Upgrade" in request.headers)
    if not response.prepared and "Server" not in response.headers:
        response.headers["Server"] = SERVER
    led.done(response.status)
    return response


async def _proxy(
    rt: Runtime, request: web.Request, d: Decision, rid: str, timings: dict[str, float]
) -> web.StreamResponse:
    principal = d.principal
    headers = CIMultiDict(
        rt.headers.upstream_pairs(
            request.headers,
            principal,
            peer=peer_of(request),
            scheme=request.scheme,
            host=request.headers.get("Host"),
            rid=rid,
            keep_authorization=principal.kind == "jwt",
        )
    )
    if request.headers.get("Upgrade", "").lower() == "websocket":
        url = rt.upstreams.url(d.route.upstream, d.path.raw, d.path.query)
        credential = request.headers.get("Authorization", "").partition(" ")[2].strip()
        return await proxy_websocket(
            request,
            rt.upstreams.session(d.route.upstream),
            d.route.upstream,
            url,
            headers,
            lambda: _still_valid(rt, principal, credential),
        )
    target = rt.upstreams.target(d.route.upstream, d.path.raw, d.path.query)
    # SECURITY: a form body naming `_method` is refused before the upstream has all of it.
    scan = (
        scanner_for(request.headers, rt.cfg.limits.form_inspect, request.method)
        if request.body_exists
        else None
    )
    return await forward(
        request,
        rt.upstreams,
        d.route.upstream,
        target,
        headers,
        rt.cfg.limits.max_body,
        timings,
        scan,
    )


async def _still_valid(rt: Runtime, principal: Principal, credential: str) -> bool:
    if principal.expires_at is not None and time.time() >= principal.expires_at:
        return False
    if principal.kind != "token":
        return True
    try:
        return await rt.validator.authenticate(credential) is not None
    except (InvalidToken, StoreUnavailable):
        return False


class _Everything(web.PlainResource):
    """A resource that matches every path, so aiohttp's router never builds a 404 per request."""

    def _match(self, path: str) -> dict[str, str] | None:
        return {}


@web.middleware
async def _every_target(request: web.Request, handler: Handler) -> web.StreamResponse:
    # SECURITY: every request lands in `handle`, whatever aiohttp's router makes of it: a
    # catch-all `/{tail:.*}` misses decoded CR/LF, and asterisk- or authority-form targets match
    # no resource at all; aiohttp would answer those itself (plain-text 404, unlogged).
    del handler
    return await handle(request)


def build_app(rt: Runtime) -> web.Application:
    app = web.Application(
        client_max_size=rt.cfg.limits.max_body,
        middlewares=[_every_target],
        # read_bufsize: aiohttp 3.14 buffers up to twice this much of a request body per
        # connection before it stops reading the client; its 256 KiB default made that 512 KiB,
        # about 1 MB of peak RSS per connection moving a large body. 64 KiB: 74 MB, not 88, for a
        # worker with 32 connections uploading 1 MB each, at the same upload MB/s (measured both
        # ways, alternating: README, Performance).
        handler_args={"max_field_size": 16384, "read_bufsize": 2**16},
    )
    app[RUNTIME] = rt

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await rt.start()
        yield
        await rt.close()

    app.cleanup_ctx.append(lifecycle)
    everything = _Everything("/")
    app.router.register_resource(everything)
    everything.add_route("*", handle)
    return app
