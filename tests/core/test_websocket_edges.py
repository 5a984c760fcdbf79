"""gateway.proxy.websocket at its edges: subprotocols, pings, who closes first, and with what.

A real gateway on a real socket in front of a real aiohttp WebSocket upstream of the test's own,
which chooses a subprotocol, pings, closes with a code when asked, and notes when its side ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from gateway.proxy.websocket import client_close_code
from tests.conftest import MakeGateway, Upstream
from tests.core.test_proxy import port_of, raw_request
from tests.core.test_websocket_credentials import _token
from tests.support import captured_access_log, refusing_port

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@dataclass
class WsUpstream:
    server: TestServer
    handshakes: list[dict[str, str]] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)  # as each session ended
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
async def ws_upstream() -> AsyncIterator[WsUpstream]:
    """Speaks `superchat` only; `ping` pings the gateway then says `after-ping`; `close:N` closes
    with code N; `vanish` drops the connection without a close frame; `close-empty` sends a close frame
    without a code; anything else is echoed."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        up.handshakes.append(dict(request.headers))
        ws = web.WebSocketResponse(protocols=("superchat",))
        await ws.prepare(request)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                if msg.data == "ping":
                    await ws.ping(b"up")
                    await ws.send_str("after-ping")
                elif msg.data == "close-empty":
                    assert request.transport is not None
                    request.transport.write(b"\x88\x00")  # a close frame that gives no code
                elif msg.data == "vanish":
                    assert request.transport is not None
                    request.transport.abort()  # the TCP connection dropped: no close frame
                elif msg.data.startswith("close:"):
                    await ws.close(code=int(msg.data[6:]), message=b"bye")
                else:
                    await ws.send_str("echo:" + msg.data)
        finally:
            up.close_codes.append(ws.close_code)
            up.ended.set()
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    up = WsUpstream(TestServer(app, host="127.0.0.1"))
    await up.server.start_server()
    yield up
    await up.server.close()


async def test_the_client_is_answered_with_the_subprotocol_the_upstream_chose(
    make_gateway: MakeGateway, ws_upstream: WsUpstream
) -> None:
    """The client's offer goes upstream as it was made; the client is told what the upstream
    chose, not the first protocol it offered."""
    gw = await make_gateway(upstream_url=ws_upstream.url)
    async with gw.client.ws_connect("/open/ws", protocols=("chat", "superchat")) as ws:
        assert ws.protocol == "superchat"
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "echo:hi"
    assert ws_upstream.handshakes[0]["Sec-WebSocket-Protocol"] == "chat,superchat"


async def test_no_subprotocol_chosen_upstream_is_none_for_the_client(
    make_gateway: MakeGateway, ws_upstream: WsUpstream
) -> None:
    gw = await make_gateway(upstream_url=ws_upstream.url)
    async with gw.client.ws_connect("/open/ws", protocols=("chat",)) as ws:
        assert ws.protocol is None
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "echo:hi"
    assert ws_upstream.handshakes[0]["Sec-WebSocket-Protocol"] == "chat"


async def test_a_client_that_offers_no_subprotocol_offers_none_upstream(
    make_gateway: MakeGateway, ws_upstream: WsUpstream
) -> None:
    gw = await make_gateway(upstream_url=ws_upstream.url)
    async with gw.client.ws_connect("/open/ws") as ws:
        assert ws.protocol is None
    assert "Sec-WebSocket-Protocol" not in ws_upstream.handshakes[0]


async def test_pings_are_answered_on_both_sides_and_the_session_goes_on(
    make_gateway: MakeGateway, ws_upstream: WsUpstream
) -> None:
    gw = await make_gateway(upstream_url=ws_upstream.url)
    async with gw.client.ws_connect("/open/ws", autoping=False) as ws:
        await ws.ping(b"client")
        pong = await ws.receive(timeout=5)
        assert (pong.type, pong.data) == (WSMsgType.PONG, b"client")
        await ws.send_str("ping")  # the upstream pings the gateway, then speaks
        assert (await ws.receive(timeout=5)).data == "after-ping"
        await ws.send_str("still")
        assert (await ws.receive(timeout=5)).data == "echo:still"


async def test_a_client_that_closes_closes_the_upstream_socket_and_logs_one_line(
    make_gateway: MakeGateway, ws_upstream: WsUpstream
) -> None:
    gw = await make_gateway(upstream_url=ws_upstream.url)
    with captured_access_log(json.loads) as records:
        async with gw.client.ws_connect("/open/ws") as ws:
            await ws.send_str("hi")
            assert (await ws.receive(timeout=5)).data == "echo:hi"
        await asyncio.wait_for(ws_upstream.ended.wait(), 5)
        assert ws_upstream.close_codes == [1000]  # closed with a close frame, not dropped
        for _ in range(50):  # the handler logs once its clean-up is done
            if records:
                break
            await asyncio.sleep(0.1)
    assert [(r["route"], r["decision"], r["status"]) for r in records] == [("open", "allow", 101)]


async def test_a_revoked_tokens_socket_is_closed_with_a_reason(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    token_id, secret = await _token(gw)
    async with gw.client.ws_connect(
        "/v1/playlists/live", headers={"Authorization": f"Bearer {secret}"}
    ) as ws:
        await gw.runtime.service.revoke(None, token_id)
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "credential no longer valid")


async def test_a_dead_upstream_is_a_json_502_naming_the_upstream(make_gateway: MakeGateway) -> None:
    with refusing_port() as port:
        gw = await make_gateway(upstream_url=f"http://127.0.0.1:{port}")
        head = [
            "GET /open/ws HTTP/1.1",
            "Host: gateway.test",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {KEY}",
            "Sec-WebSocket-Version: 13",
        ]
        resp = await raw_request(port_of(gw), ("\r\n".join(head) + "\r\n\r\n").encode())
    assert resp.status == 502
    body = resp.json()
    assert (body["error"], body["detail"]) == ("upstream_unavailable", "upstream default is unavailable")


async def test_a_broken_handshake_names_what_is_broken(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    head = ["GET /open/ws HTTP/1.1", "Host: gateway.test", "Upgrade: websocket", "Connection: Upgrade"]
    resp = await raw_request(port_of(gw), ("\r\n".join(head) + "\r\n\r\n").encode())
    assert resp.status == 400
    assert resp.json()["detail"] == "broken WebSocket handshake (Connection, Sec-WebSocket-Key or -Version)"
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("command", "code"),
    [("close:4001", 4001), ("close-empty", 1000), ("vanish", 1014)],
    ids=["upstream-code", "no-code", "no-close-frame"],
)
async def test_the_client_is_closed_with_the_code_the_upstreams_ending_allows(
    make_gateway: MakeGateway, ws_upstream: WsUpstream, command: str, code: int
) -> None:
    """The upstream's own close code is passed on; a close frame without one is a normal close
    (1000); an upstream that drops the connection without a close frame is 1014 (bad gateway),
    never 1006, which RFC 6455 forbids in a close frame (aiohttp's client reports it then)."""
    gw = await make_gateway(upstream_url=ws_upstream.url)
    async with gw.client.ws_connect("/open/ws") as ws:
        await ws.send_str(command)
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE, msg
        assert ws.close_code == code


@pytest.mark.parametrize(
    ("upstream_code", "client_code"),
    [(None, 1000), (0, 1000), (1005, 1000),  # no code given (aiohttp: 0 for an empty close frame)
     (1000, 1000), (1001, 1001), (1011, 1011), (4000, 4000), (4999, 4999),
     (1004, 1014), (1006, 1014), (1015, 1014), (999, 1014), (5000, 1014)],
)  # fmt: skip
def test_only_codes_a_close_frame_may_carry_are_passed_on(
    upstream_code: int | None, client_code: int
) -> None:
    assert client_close_code(upstream_code) == client_code
