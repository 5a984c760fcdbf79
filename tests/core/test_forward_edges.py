"""The streaming forward's edges (gateway/proxy/forward.py), against real upstream sockets: the
request head it writes, the exact refusals it answers with, how an upstream's answer is framed
for the client on either door, and what an early or broken answer does to both connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from gateway.errors import UpstreamUnavailable
from gateway.proxy.exchange import request_head
from tests.conftest import MakeGateway, Upstream
from tests.core.test_proxy import port_of, raw_get, raw_request
from tests.core.test_upstream_client import ALL, _reset, fixed, raw_upstream
from tests.support import captured_access_log, refusing_port

# ---------------------------------------------------------------------------------------------
# the request head


def test_the_request_head_is_one_header_per_line_and_ends_with_its_framing() -> None:
    headers = [("X-A", "1"), ("X-Bin", "caf\udce9"), ("X-A", "2")]
    head = request_head("POST", "/p?q=1", "up:8080", headers, "Content-Length: 3")
    assert head == (
        b"POST /p?q=1 HTTP/1.1\r\nHost: up:8080\r\nX-A: 1\r\nX-Bin: caf\xe9\r\nX-A: 2\r\n"
        b"Content-Length: 3\r\n\r\n"
    )
    assert request_head("GET", "/", "up", [], None) == b"GET / HTTP/1.1\r\nHost: up\r\n\r\n"


def test_the_fast_doors_rendered_identity_lines_go_after_the_headers_and_before_the_framing() -> None:
    ours = b"X-Auth-Type: token\r\nX-Auth-Subject: cli\r\n"
    head = request_head("PUT", "/p", "up", [("X-A", "1")], "Content-Length: 3", ours)
    assert head == (
        b"PUT /p HTTP/1.1\r\nHost: up\r\nX-A: 1\r\nX-Auth-Type: token\r\nX-Auth-Subject: cli\r\n"
        b"Content-Length: 3\r\n\r\n"
    )
    assert request_head("GET", "/", "up", [], None, ours) == (
        b"GET / HTTP/1.1\r\nHost: up\r\nX-Auth-Type: token\r\nX-Auth-Subject: cli\r\n\r\n"
    )


@pytest.mark.parametrize("value", ["a\nInjected: 1", "a\rInjected: 1", "a\r\nInjected: 1", "a\x00b"])
def test_a_header_that_would_break_the_head_is_never_written(value: str) -> None:
    with pytest.raises(UpstreamUnavailable) as err:
        request_head("GET", "/", "up", [("X-Evil", value)], None)
    assert err.value.detail == "a header cannot be forwarded"


async def test_a_header_value_that_is_not_utf8_goes_up_byte_for_byte(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """Such a request is aiohttp's (the fast door takes ASCII only); its head goes up exactly,
    with nothing after it: the next request on the connection starts right after."""
    async with raw_upstream(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        for path in ("/bin", "/next"):
            resp = await raw_request(port_of(gw), raw_get(path, "X-Bin: caf\xe9 \xff!"))
            assert resp.status == 200 and resp.body == b"ok"
        assert [h.split(b"\r\n")[0] for h in up.heads] == [b"GET /bin HTTP/1.1", b"GET /next HTTP/1.1"]
        assert b"\r\nX-Bin: caf\xe9 \xff!\r\n" in up.heads[0]
        assert up.connections == 1


def closes_after_first_answer(head_answer: bytes) -> Callable[[bytes, int, int], Awaitable[bytes | None]]:
    async def respond(head: bytes, _conn: int, index: int) -> bytes | None:
        if index >= 1:
            return None  # the kept-alive connection is closed as the request arrives
        return head_answer if head.startswith(b"HEAD ") else b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    return respond


async def test_bodiless_requests_through_aiohttp_are_retried_and_heads_end_at_their_head(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """A request without a body that aiohttp takes (here: a byte the fast door leaves to it)
    goes through the same exchange as the fast door's: a GET retried once on a new connection
    when the kept-alive one was closed under it, a HEAD answer complete at its head."""
    respond = closes_after_first_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        odd = "X-Bin: \xe9"
        head, body = await exchange(port_of(gw), raw_get("/h", odd, method="HEAD"))
        assert head.startswith(b"HTTP/1.1 200") and b"\r\nContent-Length: 1234" in head and body == b""
        get = await raw_request(port_of(gw), raw_get("/g", odd))
        assert get.status == 200 and get.body == b"ok"
        assert [h.split(b" ")[1] for h in up.heads] == [b"/h", b"/g", b"/g"]
        assert up.connections == 2


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


# ---------------------------------------------------------------------------------------------
# the answer as the client gets it, on both doors (a GET: the fast door; a POST: aiohttp)


async def exchange(port: int, data: bytes) -> tuple[bytes, bytes]:
    """One request on its own connection (it asks to close): the answer's head and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def both_doors(path: str) -> list[bytes]:
    return [raw_get(path), raw_get(path, "Content-Length: 1", method="POST") + b"b"]


async def test_a_streamed_answer_keeps_its_length_and_reason(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """An answer whose body comes after its head is streamed with the upstream's own
    Content-Length (no chunking), reason phrase and headers, a numeric one included."""
    body = b"L" * 300_000

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b"Content-Length: 1" in head:
                    await reader.readexactly(1)
                writer.write(b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 300000\r\nX-Items: 12\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.1)
                writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(script, "127.0.0.1", 0)
    try:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        for data in both_doors("/stream"):
            head, got = await exchange(port_of(gw), data)
            lines = head.split(b"\r\n")
            assert lines[0] == b"HTTP/1.1 200 Fine Thanks"
            assert b"Content-Length: 300000" in lines and b"X-Items: 12" in lines
            assert not any(line.lower().startswith(b"transfer-encoding") for line in lines)
            assert got == body
    finally:
        server.close()


async def test_a_whole_chunked_answer_goes_out_with_its_length(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    async with raw_upstream(fixed(chunked)) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        for data in both_doors("/small"):
            head, body = await exchange(port_of(gw), data)
            assert b"\r\nContent-Length: 11" in head and b"chunked" not in head.lower()
            assert body == b"hello world"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\nX-Done: 1\r\n\r\n",
        b'HTTP/1.1 304 Not Modified\r\nX-Done: 1\r\nETag: "v"\r\n\r\n',
    ],
    ids=["204", "304"],
)
async def test_a_204_or_304_has_no_framing_on_either_door(
    make_gateway: MakeGateway, upstream: Upstream, answer: bytes
) -> None:
    """No Content-Length or Transfer-Encoding on an answer that has no body by its status; the
    upstream sent no Server, so the gateway's own is said, once."""
    async with raw_upstream(fixed(answer)) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        for data in both_doors("/gone"):
            head, body = await exchange(port_of(gw), data)
            assert head.startswith(answer.split(b"\r\n")[0] + b"\r\n") and b"\r\nX-Done: 1" in head
            assert b"content-length" not in head.lower() and b"transfer-encoding" not in head.lower()
            assert [line for line in head.split(b"\r\n") if line.lower().startswith(b"server:")] == [
                b"Server: scopegate"
            ]
            assert body == b""


async def test_a_head_request_with_a_body_still_ends_at_the_answers_head(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async def respond(head: bytes, _conn: int, _index: int) -> bytes | None:
        if head.startswith(b"HEAD "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        head, body = await exchange(port_of(gw), raw_get("/h", "Content-Length: 3", method="HEAD") + b"abc")
        assert head.startswith(b"HTTP/1.1 200") and b"\r\nContent-Length: 1234" in head and body == b""
        assert up.bodies == [b"abc"]
        # The HEAD answer was complete at its head: its connection carries the next request.
        assert await (await gw.client.get("/g")).read() == b"ok"
        assert up.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["close-delimited", "chunked"],
)
async def test_an_http10_client_gets_a_streamed_body_that_ends_at_close(
    make_gateway: MakeGateway, upstream: Upstream, answer: bytes
) -> None:
    """HTTP/1.0 has no chunked coding: a body of unknown length goes out as it comes and the
    connection closes at its end (it was a 500, from asking aiohttp to chunk for HTTP/1.0)."""
    body = b"z" * 300_000
    chunked = b"chunked" in answer

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"Content-Length: 1" in head:
            await reader.readexactly(1)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.1)  # the body after the head: streamed, not sent whole
        writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if chunked else body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(script, "127.0.0.1", 0)
    try:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        for data in both_doors("/old"):
            head, got = await exchange(port_of(gw), data.replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1))
            assert head.startswith(b"HTTP/1.0 200 OK\r\n"), head
            assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
            assert got == body
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------
# early and broken answers: what happens to both connections


async def test_an_early_answer_closes_the_client_connection_and_retires_the_upstream_one(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """The upstream answers (keeping its connection alive) before the client's body is all
    sent: the answer is passed on with `Connection: close` (the rest of the client's body can
    never be read as a request), and the upstream connection, left mid-body, is not reused."""

    async def respond(head: bytes, conn: int, _index: int) -> bytes | None:
        if head.startswith(b"POST "):
            return b"!earlyHTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % conn

    async with raw_upstream(respond) as up:
        gw = await make_gateway(
            ALL, extra="limits: {max_body: 64MiB}\n", upstream_url=f"http://127.0.0.1:{up.port}"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 10000000\r\n\r\n" + b"a" * 65536
        )
        answer = await asyncio.wait_for(reader.readuntil(b"too big!"), 5)
        writer.close()
        head = answer.split(b"\r\n\r\n")[0].split(b"\r\n")
        assert head[0] == b"HTTP/1.1 413 Payload Too Large" and b"Connection: close" in head
        assert await (await gw.client.get("/next")).read() == b"2"
        assert up.connections == 2


async def test_a_second_answer_keeps_the_client_connection(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """An upstream that answers twice loses its connection; the client, whose request was
    read whole, keeps its own and is answered again on it."""
    split = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!"
    async with raw_upstream(fixed(split)) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
        for _ in range(2):
            writer.write(b"POST /split HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"ok"
        writer.close()
        assert up.connections == 2


async def test_a_reset_mid_body_cuts_the_client_and_is_counted(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    part = b"x" * 100_000

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"Content-Length: 1" in head:
            await reader.readexactly(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + part)
        await writer.drain()
        await asyncio.sleep(0.2)
        _reset(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        for number, send in enumerate(
            (lambda: gw.client.get("/big"), lambda: gw.client.post("/big", data=b"b")), 1
        ):
            resp = await send()  # one at a time: each reset counted before the next request
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await asyncio.wait_for(resp.read(), 10)
            labels = {"upstream": "default", "kind": "reset"}
            assert (
                gw.runtime.metrics.registry.get_sample_value("scopegate_upstream_errors_total", labels)
                == number
            )
    finally:
        server.close()


async def test_the_decision_log_times_the_upstream(make_gateway: MakeGateway, upstream: Upstream) -> None:
    async def respond(_head: bytes, _conn: int, _index: int) -> bytes | None:
        await asyncio.sleep(0.3)
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        with captured_access_log(json.loads) as lines:
            assert (await gw.client.post("/timed", data=b"b")).status == 200
        (line,) = [line for line in lines if line.get("path") == "/timed"]
        assert 300 <= line["upstream_ms"] <= line["total_ms"]


async def test_a_retried_head_still_ends_at_its_head(make_gateway: MakeGateway, upstream: Upstream) -> None:
    """A HEAD sent again on a new connection is still a HEAD: its answer ends at its head, and
    that connection carries the next request."""

    async def respond(head: bytes, conn: int, index: int) -> bytes | None:
        if conn == 1 and index == 1:
            return None  # the kept-alive connection is closed as the HEAD arrives
        if head.startswith(b"HEAD "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % conn

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        assert await (await gw.client.get("/first")).read() == b"1"
        head = await asyncio.wait_for(gw.client.head("/h"), 5)
        assert head.status == 200 and head.headers["Content-Length"] == "1234"
        assert await (await gw.client.get("/last")).read() == b"2"
        assert [h.split(b" ")[1] for h in up.heads] == [b"/first", b"/h", b"/h", b"/last"]
        assert up.connections == 2
