"""Which upstream connections the pool keeps and hands out again (gateway/proxy/pool.py), and
what of an answer's head reaches the client, against real upstream sockets: a connection is
reused only after an exchange that ended cleanly and in step; never one that said
`Connection: close`, sent bytes nobody asked for, or put a body after a HEAD answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from gateway.proxy.pool import IDLE_TIMEOUT, MAX_IDLE
from tests.conftest import MakeGateway, Upstream
from tests.core.test_proxy import port_of
from tests.core.test_upstream_client import ALL, fixed, raw_upstream

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ScriptedUpstream:
    """An upstream whose every connection is served by `script(reader, writer, number)`; it
    records, per connection, whether the gateway closed it (EOF seen by `wait_eof`)."""

    def __init__(self, script: Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]):
        self.script = script
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@contextlib.asynccontextmanager
async def scripted(
    script: Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]],
) -> AsyncIterator[ScriptedUpstream]:
    up = ScriptedUpstream(script)
    up.server = await asyncio.start_server(up._serve, "127.0.0.1", 0)
    try:
        yield up
    finally:
        up.server.close()


# ---------------------------------------------------------------------------------------------
# the status line's reason phrase


async def test_a_reason_phrase_split_across_reads_reaches_the_client_whole(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        interim = True
        while True:
            await reader.readuntil(b"\r\n\r\n")
            if interim:  # an interim answer with a reason of its own first, every other time
                writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            interim = not interim
            writer.write(b"HTTP/1.1 200 Fine")  # the final status line in two pieces
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b", Thanks\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with scripted(script) as up:
        gw = await make_gateway(ALL, upstream_url=up.url)
        for _ in range(2):
            for door in ("fast", "handed"):  # the fast door, then aiohttp (a request with a body)
                resp = await (gw.client.get("/r") if door == "fast" else gw.client.post("/r", data=b"b"))
                assert (resp.status, resp.reason) == (200, "Fine, Thanks"), door
                assert await resp.read() == b"ok"


# ---------------------------------------------------------------------------------------------
# connections that are not reused


async def test_bytes_on_an_idle_connection_retire_it(
    make_gateway: MakeGateway, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes nobody asked for (an idle connection's stray data) mean the connection is out of
    step: it is closed, quietly, and the next request goes on a new one and gets its own answer."""

    async def respond(_head: bytes, conn: int, _index: int) -> bytes | None:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % conn

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        assert await (await gw.client.get("/a")).read() == b"1"
        up.writers[0].write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
        await up.writers[0].drain()
        await asyncio.sleep(0.2)
        resp = await gw.client.get("/b")
        assert await resp.read() == b"2"
        assert up.connections == 2
    # An upstream's stray bytes are its fault, handled: nothing for the event loop to report.
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


async def test_a_body_after_a_head_answer_retires_the_connection(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async def respond(head: bytes, conn: int, _index: int) -> bytes | None:
        if head.startswith(b"HEAD "):
            # A HEAD answer has no body; these 5 bytes put the connection out of step.
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % conn

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        head = await gw.client.head("/h")
        assert head.status == 200 and head.headers["Content-Length"] == "5"
        get = await gw.client.get("/g")
        assert await get.read() == b"2"
        assert up.connections == 2


async def test_connection_close_is_honoured_even_when_the_upstream_leaves_it_open(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """An answer saying `Connection: close` ends its connection: the gateway closes it itself,
    whether or not the upstream does, and never sends another request on it."""
    closed: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if await reader.read(1) == b"":  # left open by us: only the gateway can close it
            closed.append(number)

    async with scripted(script) as up:
        gw = await make_gateway(ALL, upstream_url=up.url)
        for path in ("/a", "/b"):
            resp = await gw.client.get(path)
            assert resp.status == 200 and await resp.read() == b"ok"
        await asyncio.sleep(0.2)
        assert up.connections == 2
        assert closed == [1, 2]


async def test_a_closed_idle_connection_is_skipped_for_an_older_live_one(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    both = asyncio.Event()

    async def respond(_head: bytes, conn: int, index: int) -> bytes | None:
        if index == 0:
            if conn == 2:
                both.set()
            await both.wait()
            if conn == 2:
                await asyncio.sleep(0.2)  # released last: the first one the pool hands out
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % conn

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        first = await asyncio.gather(gw.client.get("/a"), gw.client.get("/b"))
        assert sorted([await r.read() for r in first]) == [b"1", b"2"]
        up.writers[1].close()  # the upstream closes the idle connection released last
        await asyncio.sleep(0.2)
        resp = await gw.client.get("/c")
        assert await resp.read() == b"1"
        assert up.connections == 2


async def test_at_most_max_idle_connections_are_kept(make_gateway: MakeGateway, upstream: Upstream) -> None:
    """Past MAX_IDLE idle connections the oldest is closed; all the others serve the next burst."""
    burst = MAX_IDLE + 1
    arrived = 0
    rounds = [asyncio.Event(), asyncio.Event()]

    async def respond(_head: bytes, _conn: int, _index: int) -> bytes | None:
        # Each burst is held until it is all in, so its requests are in flight at once.
        nonlocal arrived
        arrived += 1
        done = rounds[(arrived - 1) // burst]
        if arrived % burst == 0:
            done.set()
        await done.wait()
        return OK

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        url = str(gw.client.make_url("/x"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def get() -> int:
                async with session.get(url) as resp:
                    await resp.read()
                    return resp.status

            assert await asyncio.wait_for(asyncio.gather(*(get() for _ in range(burst))), 30) == [200] * burst
            assert up.connections == burst
            # MAX_IDLE kept; the second burst takes them all and opens one more.
            assert await asyncio.wait_for(asyncio.gather(*(get() for _ in range(burst))), 30) == [200] * burst
            assert up.connections == burst + 1


# ---------------------------------------------------------------------------------------------
# a body cut short by a clean close is never passed on as complete


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"c" * 10,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n" + b"c" * 10 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\na\r\n" + b"c" * 10 + b"\r\n",
    ],
    ids=["content-length", "chunked", "chunked-last-coding"],
)
async def test_a_framed_body_cut_by_a_clean_close_is_not_complete(
    make_gateway: MakeGateway, upstream: Upstream, answer: bytes
) -> None:
    """Only an answer without framing ends at the close; a Content-Length or chunked body that
    the upstream closes (FIN, no reset) before its end is cut off at the client, on either door."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"Content-Length: 1" in head:
            await reader.readexactly(1)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.1)  # the head is out and passed on; then a clean close

    async with scripted(script) as up:
        gw = await make_gateway(ALL, upstream_url=up.url)
        for resp in (await gw.client.get("/cut"), await gw.client.post("/cut", data=b"b")):
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await asyncio.wait_for(resp.read(), 10)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Mode: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: gzip\r\n\r\n",
    ],
    ids=["chunked-elsewhere", "coding-not-chunked"],
)
async def test_a_body_without_framing_ends_at_the_close(
    make_gateway: MakeGateway, upstream: Upstream, answer: bytes
) -> None:
    """Neither `chunked` in some other header nor a transfer coding that is not chunked frames
    a body: it ends, complete, when the upstream closes."""
    body = b"d" * 1000

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"Content-Length: 1" in head:
            await reader.readexactly(1)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(body)
        await writer.drain()

    async with scripted(script) as up:
        gw = await make_gateway(ALL, upstream_url=up.url)
        for resp in (await gw.client.get("/open"), await gw.client.post("/open", data=b"b")):
            assert resp.status == 200
            assert await asyncio.wait_for(resp.read(), 10) == body


async def test_the_head_is_passed_on_before_any_of_the_body(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """The client has the answer's head while the upstream still holds back the whole body."""
    got_head = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"Content-Length: 1" in head:
                await reader.readexactly(1)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
            await writer.drain()
            await got_head.wait()  # nothing more until the client has seen the head
            got_head.clear()
            writer.write(b"body")
            await writer.drain()

    async with scripted(script) as up:
        gw = await make_gateway(ALL, upstream_url=up.url)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
        for data in (
            b"GET /h HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb",
        ):
            writer.write(data)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            got_head.set()
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"body"
        writer.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nno colon here\r\n\r\nok",
    ],
    ids=["unasked-upgrade", "malformed"],
)
async def test_an_answer_llhttp_refuses_is_a_quiet_502(
    make_gateway: MakeGateway, upstream: Upstream, caplog: pytest.LogCaptureFixture, answer: bytes
) -> None:
    async with raw_upstream(fixed(answer)) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        for resp in (await gw.client.get("/x"), await gw.client.post("/x", data=b"b")):
            assert resp.status == 502
            assert (await resp.json())["error"] == "upstream_unavailable"
        await asyncio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


async def test_idle_connections_past_the_idle_timeout_are_all_closed(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """After IDLE_TIMEOUT idle, a connection is not reused (the upstream may be closing it): the
    next request opens a new one, and every expired one is closed, not left open in the pool."""
    both = asyncio.Event()
    closed: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if number == 2:
            both.set()
        await both.wait()  # the first two requests in flight at once: two connections
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % number)
        await writer.drain()
        if await reader.read(1) == b"":
            closed.append(number)

    async with scripted(script) as up:
        gw = await make_gateway(ALL, upstream_url=up.url)
        first = await asyncio.gather(gw.client.get("/a"), gw.client.get("/b"))
        assert sorted([await r.read() for r in first]) == [b"1", b"2"]
        await asyncio.sleep(IDLE_TIMEOUT + 0.5)
        assert await (await gw.client.get("/c")).read() == b"3"
        await asyncio.sleep(0.2)
        assert sorted(closed) == [1, 2]
