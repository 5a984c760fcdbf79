"""A WebSocket upgrade whose client handshake is broken: judged before the upstream hears of it.

Issue 8 item 6: the upstream WebSocket was opened first, leaked, and the client got aiohttp's
plain-text 400 with no decision line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import MakeGateway, Upstream
from tests.core.test_proxy import assert_refusal, port_of, raw_request
from tests.support import captured_access_log

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(*headers: str) -> bytes:
    lines = ["GET /open/live HTTP/1.1", "Host: gateway.test", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


@pytest.fixture
def access_log() -> Iterator[list[str]]:
    with captured_access_log(str) as lines:
        yield lines


BROKEN = [
    pytest.param(
        (
            "Upgrade: websocket",
            "Connection: keep-alive",
            f"Sec-WebSocket-Key: {KEY}",
            "Sec-WebSocket-Version: 13",
        ),
        id="no-connection-upgrade",
    ),
    pytest.param(
        ("Upgrade: websocket", f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"),
        id="no-connection-header",
    ),
    pytest.param(
        ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"),
        id="no-key",
    ),
    pytest.param(
        (
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: c2hvcnQ=",
            "Sec-WebSocket-Version: 13",
        ),
        id="short-key",
    ),
    pytest.param(
        (
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {KEY}",
            "Sec-WebSocket-Version: 99",
        ),
        id="bad-version",
    ),
]


@pytest.mark.parametrize("headers", BROKEN)
async def test_broken_handshake_is_a_json_400_and_never_reaches_the_upstream(
    make_gateway: MakeGateway, upstream: Upstream, access_log: list[str], headers: tuple[str, ...]
) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), upgrade(*headers))
    assert_refusal(resp.status, resp.json(), 400, "bad_request")
    assert "handshake" in resp.json()["detail"]
    assert resp.headers["Content-Type"].startswith("application/json")
    assert upstream.seen == []  # no upstream WebSocket was ever opened
    records = [json.loads(line) for line in access_log]
    assert len(records) == 1
    assert records[0]["route"] == "open"
    assert (records[0]["decision"], records[0]["reason"], records[0]["status"]) == (
        "deny",
        "bad_request",
        400,
    )


async def test_a_good_handshake_still_proxies(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    async with gw.client.ws_connect("/open/live") as ws:
        await ws.send_str("hi")
        assert (await ws.receive_str()) == "echo:hi"
    assert len(upstream.seen) == 1
