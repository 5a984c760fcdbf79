"""The upstream side of WebSockets (the aiohttp client session `Upstreams.start` opens per
upstream, gateway/proxy/forward.py), against real upstream sockets: the handshake carries the
client's headers and none of aiohttp's own, no cookie jar is shared between clients, the
upstream's timeouts apply, and connections are not rationed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError, web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from tests.conftest import MakeGateway, Upstream
from tests.core.test_proxy import port_of
from tests.core.test_upstream_client import ALL
from tests.support import silent_port

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@contextlib.asynccontextmanager
async def ws_upstream(seen: list[dict[str, str]]) -> AsyncIterator[TestServer]:
    """A WebSocket echo upstream that records each handshake's headers and sets a cookie."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        seen.append(dict(request.headers))
        ws = web.WebSocketResponse()
        ws.set_cookie("sid", f"client-{len(seen)}")
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_the_upstream_handshake_adds_no_headers_of_its_own(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    seen: list[dict[str, str]] = []
    async with ws_upstream(seen) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
        writer.write(HANDSHAKE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
    assert head.startswith(b"HTTP/1.1 101")
    names = {name.lower() for name in seen[0]}
    # The client sent none of these; aiohttp would add its own unless told not to.
    assert not names & {"user-agent", "accept", "accept-encoding", "content-type"}


async def test_no_cookie_of_one_client_reaches_the_upstream_for_another(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """The session is shared by every client of the upstream: it must keep no cookie jar (a
    host name upstream, whose cookies a jar would keep)."""
    seen: list[dict[str, str]] = []
    async with ws_upstream(seen) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://localhost:{up.port}")
        for _ in range(2):
            async with gw.client.ws_connect("/ws") as ws:
                await ws.send_str("hi")
                assert (await ws.receive(timeout=5)).data == "echo:hi"
    assert len(seen) == 2
    assert "Cookie" not in seen[1]


async def test_websockets_to_one_upstream_are_not_rationed(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """More open WebSockets to one upstream than aiohttp's default connection limit (100): a
    limited session would make the 101st client wait for one of the others to close."""
    seen: list[dict[str, str]] = []
    async with ws_upstream(seen) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        writers = []
        try:
            for _ in range(105):
                reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
                writers.append(writer)
                writer.write(HANDSHAKE)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 101"), (len(writers), head)
            assert len(seen) == 105  # every one open at the upstream at once
        finally:
            for writer in writers:
                writer.close()


@pytest.mark.parametrize("stage", ["connect", "handshake"])
async def test_a_websocket_upstream_too_slow_is_504_at_its_timeouts(
    make_gateway: MakeGateway, upstream: Upstream, stage: str
) -> None:
    """An upstream that never accepts (connect_timeout) or never answers the upgrade (timeout)
    is a 504 within the upstream's own limits (2 s each here)."""
    with silent_port(accepting=stage == "handshake") as port:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{port}")
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
        writer.write(HANDSHAKE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 504"), head


async def test_the_websocket_target_goes_up_byte_for_byte(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    target = "/open/ws/%7Euser/caf%c3%a9?q=%20x&r=a+b&s=%2F"
    async with gw.client.ws_connect(URL(target, encoded=True)) as ws:
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "echo:hi"
    assert upstream.last.raw_path == target


@pytest.mark.parametrize("with_ca", [True, False], ids=["ca_file", "system-cas"])
async def test_a_wss_upstream_is_verified_with_its_ca_file(tmp_path: Path, with_ca: bool) -> None:
    """The WebSocket session trusts the upstream's `ca_file` as the pool does, and only with it:
    SECURITY: without one, the system CAs judge, and a certificate they do not know is a 502
    before the upstream sees a request."""
    from gateway.config import load_config
    from gateway.web.runtime import Runtime
    from tests.conftest import ListenerServer, write_config
    from tests.core.test_upstream_client import _test_ca, with_ca_file

    ca_file, server_ctx = _test_ca(tmp_path)
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        seen.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("secure:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    url = f"https://127.0.0.1:{port}"
    config = write_config(tmp_path, url, ALL)
    if with_ca:
        config = with_ca_file(config, url, str(ca_file))
    client = TestClient(ListenerServer(Runtime(load_config(str(config)))))
    await client.start_server()
    try:
        if not with_ca:
            with pytest.raises(WSServerHandshakeError) as refused:
                await client.ws_connect("/ws")
            assert refused.value.status == 502
            assert seen == []
            return
        async with client.ws_connect("/ws") as ws:
            await ws.send_str("hi")
            assert (await ws.receive(timeout=5)).data == "secure:hi"
        assert len(seen) == 1
    finally:
        await client.close()
        await runner.cleanup()
