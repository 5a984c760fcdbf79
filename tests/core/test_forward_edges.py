"""The streaming forward's edges (gateway/proxy/forward.py), against real upstream sockets: the
request head it writes, the exact refusals it answers with, how an upstream's answer is framed
for the client on either door, and what an early or broken answer does to both connections."""

from __future__ import annotations

import asyncio
import json

import pytest
from multidict import CIMultiDict

from gateway.errors import UpstreamUnavailable
from gateway.proxy.forward import request_head
from tests.conftest import MakeGateway, Upstream
from tests.core.test_proxy import port_of, raw_get, raw_request
from tests.core.test_upstream_client import ALL, fixed, raw_upstream
from tests.support import refusing_port

# ---------------------------------------------------------------------------------------------
# the request head


def test_the_request_head_is_one_header_per_line_and_ends_with_its_framing() -> None:
    headers = CIMultiDict([("X-A", "1"), ("X-Bin", "caf\udce9"), ("X-A", "2")])
    head = request_head("POST", "/p?q=1", "up:8080", headers, "Content-Length: 3")
    assert head == (
        b"POST /p?q=1 HTTP/1.1\r\nHost: up:8080\r\nX-A: 1\r\nX-Bin: caf\xe9\r\nX-A: 2\r\n"
        b"Content-Length: 3\r\n\r\n"
    )
    assert request_head("GET", "/", "up", CIMultiDict(), None) == b"GET / HTTP/1.1\r\nHost: up\r\n\r\n"


@pytest.mark.parametrize("value", ["a\nInjected: 1", "a\rInjected: 1", "a\r\nInjected: 1", "a\x00b"])
def test_a_header_that_would_break_the_head_is_never_written(value: str) -> None:
    with pytest.raises(UpstreamUnavailable) as err:
        request_head("GET", "/", "up", CIMultiDict([("X-Evil", value)]), None)
    assert err.value.detail == "a header cannot be forwarded"


async def test_a_header_value_that_is_not_utf8_goes_up_byte_for_byte(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async with raw_upstream(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        resp = await raw_request(port_of(gw), raw_get("/bin", "X-Bin: caf\xe9 \xff!"))
        assert resp.status == 200 and resp.body == b"ok"
        assert b"\r\nX-Bin: caf\xe9 \xff!\r\n" in up.heads[0]


# ---------------------------------------------------------------------------------------------
# exact refusals


async def test_refusals_name_the_upstream_and_the_limit(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    with refusing_port() as port:
        down = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{port}")
        for resp in (await down.client.get("/down"), await down.client.post("/down", data=b"x")):
            assert resp.status == 502
            assert (await resp.json())["detail"] == "upstream default is unavailable"
    gw = await make_gateway(ALL, extra="limits: {max_body: 1KiB}\n")
    declared = raw_get("/big", "Content-Length: 1025", method="POST") + b"b" * 1025
    chunks = b"".join(b"100\r\n" + b"c" * 256 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    chunked = raw_get("/big", "Transfer-Encoding: chunked", method="POST") + chunks
    for data in (declared, chunked):
        resp413 = await raw_request(port_of(gw), data)
        assert resp413.status == 413
        assert json.loads(resp413.body)["detail"] == "request body over 1024 bytes"
    for resp in (await gw.client.get("/slow?s=3"), await gw.client.post("/slow?s=3", data=b"x")):
        assert resp.status == 504
        assert (await resp.json())["detail"] == "upstream default did not answer in time"


async def test_a_body_over_the_limit_in_small_separate_chunks_is_413(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """The limit counts the whole body, not each piece as it arrives."""
    gw = await make_gateway(extra="limits: {max_body: 1KiB}\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    writer.write(raw_get("/open/big", "Transfer-Encoding: chunked", method="POST"))
    for _ in range(6):  # 6 x 200 bytes, each read on its own
        writer.write(b"c8\r\n" + b"c" * 200 + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
    writer.write(b"0\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert not any(s.raw_path == "/open/big" and s.complete for s in upstream.seen)
