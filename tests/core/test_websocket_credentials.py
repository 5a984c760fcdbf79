"""A WebSocket proxied for a token is closed with 1008 once the token is revoked or expires."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import Gateway, MakeGateway, Upstream
from tests.gates.conftest import bearer, jwt_extra, make_jwt


async def _token(gw: Gateway, **body: object) -> tuple[str, str]:
    record, secret = await gw.runtime.service.create(
        None, {"name": "ws", "workspace": "w1", "scopes": ["read"], **body}
    )
    return record.id, secret


async def test_websocket_is_closed_with_1008_when_its_token_is_revoked(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    token_id, secret = await _token(gw)
    async with gw.client.ws_connect(
        "/v1/playlists/live", headers={"Authorization": f"Bearer {secret}"}
    ) as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "echo:hello"
        await gw.runtime.service.revoke(None, token_id)
        started = time.monotonic()
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1008
        # Checked once a second: closed at the first check after the revocation, not the second.
        assert time.monotonic() - started < 1.5
    handshake = upstream.seen[0]
    assert handshake.header("X-Auth-Type") == "token"
    assert handshake.header("Authorization") is None


async def test_websocket_is_closed_with_1008_when_its_token_expires(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    _, secret = await _token(gw, expires_in=2)
    async with gw.client.ws_connect(
        "/v1/playlists/live", headers={"Authorization": f"Bearer {secret}"}
    ) as ws:
        msg = await ws.receive(timeout=6)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1008


@pytest.mark.parametrize("upgrade", ["websocket", "WebSocket"])
async def test_websocket_without_credential_is_refused_before_any_upgrade(
    make_gateway: MakeGateway, upstream: Upstream, upgrade: str
) -> None:
    gw = await make_gateway()
    resp = await gw.client.get(
        "/v1/playlists/live",
        headers={
            "Upgrade": upgrade,
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_token"
    assert resp.headers.get("Connection", "").lower() == "close"
    assert upstream.seen == []


async def test_websocket_is_closed_with_1008_when_its_jwt_expires(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """The JWT case is checked by expiry alone (no store to ask), so it needs its own test."""
    gw = await make_gateway(extra=jwt_extra().replace("}\n", ", leeway: 0}\n"))
    exp = int(time.time()) + 3
    credential = make_jwt(exp_in=None, exp=exp, workspace_id="w1", scope="read")
    async with gw.client.ws_connect("/v1/playlists/live", headers=bearer(credential)) as ws:
        await ws.send_str("before")
        assert (await ws.receive(timeout=5)).data == "echo:before"
        msg = await ws.receive(timeout=exp - time.time() + 10)
        closed_at = time.time()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1008
        # Closed once the JWT expired (the watch looks every second), never before.
        assert exp <= closed_at < exp + 5
    assert upstream.seen[0].header("X-Auth-Type") == "jwt"


async def test_anonymous_websocket_outlives_the_credential_checks(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """No credential, nothing to expire: the every-second watch never closes it (an anonymous
    principal has no expiry; a wrong default there would break the watch and end the socket)."""
    gw = await make_gateway()
    async with gw.client.ws_connect("/open/live") as ws:
        await ws.send_str("before")
        assert (await ws.receive(timeout=5)).data == "echo:before"
        await asyncio.sleep(2.5)  # the watch has looked at least twice
        await ws.send_str("after")
        assert (await ws.receive(timeout=5)).data == "echo:after"
    assert upstream.seen[0].header("X-Auth-Type") == "anonymous"
