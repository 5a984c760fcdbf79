"""WebSocket pass-through: authorised like a GET, then frames pumped both ways."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from ..errors import BadRequest
from .exchange import UpstreamErrors

_HANDSHAKE = (
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "sec-websocket-protocol",
)
POLICY_VIOLATION = 1008
NORMAL, BAD_GATEWAY = 1000, 1014
# Codes that never travel in a close frame (RFC 6455 7.4.1): 1004 is reserved; aiohttp's client
# reports the others for an ending without one (1005 no code, 1006 no close frame, 1015 TLS).
_NOT_SENT = frozenset({1004, 1005, 1006, 1015})


def client_close_code(upstream_code: int | None) -> int:
    """The code the client's side is closed with once the upstream's side has ended."""
    if not upstream_code or upstream_code == 1005:
        return NORMAL  # the upstream closed without a code (aiohttp reports 0 for that frame)
    if upstream_code in _NOT_SENT or not 1000 <= upstream_code <= 4999:
        return BAD_GATEWAY  # the upstream connection failed: nothing of its own to pass on
    return upstream_code


async def proxy_websocket(
    request: web.Request,
    session: aiohttp.ClientSession,
    name: str,
    url: URL,
    headers: CIMultiDict[str],
    still_valid: Callable[[], Awaitable[bool]],
    check_every: float = 1.0,
) -> web.WebSocketResponse:
    protocols = tuple(
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    )
    for h in _HANDSHAKE:
        headers.popall(h, None)
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    if not web.WebSocketResponse().can_prepare(request).ok:
        # SECURITY: the client's handshake is judged before anything reaches the upstream
        # (no `Connection: upgrade`, a bad key or version): a JSON 400, no upstream socket.
        raise BadRequest("broken WebSocket handshake (Connection, Sec-WebSocket-Key or -Version)")
    # Connect upstream before answering 101, so a dead upstream is still a clean 502.
    async with UpstreamErrors(name):
        upstream = await session.ws_connect(ws_url, headers=headers, protocols=protocols, autoping=True)
    # The client is told the subprotocol the upstream chose from its offer, or none: never one
    # the upstream does not speak.
    client = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (), autoping=True)
    try:
        await client.prepare(request)
    except BaseException:
        await upstream.close()  # the upstream socket never outlives a failed client handshake
        raise

    async def pump(
        src: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
        dst: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
    ) -> None:
        async for msg in src:
            if msg.type is WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            else:
                break

    async def watch() -> None:
        while True:
            await asyncio.sleep(check_every)
            if not await still_valid():
                await client.close(code=POLICY_VIOLATION, message=b"credential no longer valid")
                await upstream.close()
                return

    tasks = [
        asyncio.create_task(pump(client, upstream)),
        asyncio.create_task(pump(upstream, client)),
        asyncio.create_task(watch()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if not upstream.closed:
            await upstream.close()
        if not client.closed:
            await client.close(code=client_close_code(upstream.close_code))
    return client
