"""The upstream client's edges (gateway/proxy/pool.py), each against real sockets: flow control
both ways, the read timeout's bookkeeping, which connections are kept, reused and dropped, and
what an upstream that breaks the protocol gets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway.config import Upstream as UpstreamConfig
from gateway.config import load_config
from gateway.proxy.pool import Pool
from gateway.web.runtime import Runtime
from tests.conftest import ListenerServer, Upstream, write_config
from tests.core.test_upstream_client import ALL, raw_upstream
from tests.support import silent_port

MiB = 2**20


@contextlib.asynccontextmanager
async def gateway(
    folder: Path, url: str, *, timeout: float = 2, extra: str = ""
) -> AsyncIterator[TestClient[Any, Any]]:
    """The gateway behind its public listener, its upstream at `url` with this read timeout."""
    config = write_config(folder, url, ALL, extra)
    text = config.read_text().replace(
        "connect_timeout: 2, timeout: 2}", f"connect_timeout: 2, timeout: {timeout}}}"
    )
    config.write_text(text)
    client = TestClient(ListenerServer(Runtime(load_config(str(config)))))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def _stalling_upstream(go: asyncio.Event, got: list[int]) -> tuple[asyncio.Server, int]:
    """An upstream that reads a request head, then nothing until `go` is set; then the whole
    body, answering with its length. Its receive buffer is small, so a stall shows at once."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        await go.wait()
        body = await reader.readexactly(length)
        got.append(len(body))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(len(body))), len(body)))
        await writer.drain()
        writer.close()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # inherited by accepted sockets
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(serve, sock=sock)
    return server, int(sock.getsockname()[1])


async def test_an_upstream_that_stops_reading_stops_the_client_upload(tmp_path: Path) -> None:
    """While the upstream reads nothing, the gateway stops reading the client's body (it waits
    on the upstream socket's write buffer) instead of buffering the body in memory; when the
    upstream reads again, the whole body arrives."""
    size = 64 * MiB
    go, got = asyncio.Event(), []
    server, port = await _stalling_upstream(go, got)
    extra = "limits: {max_body: 100MiB}\n"
    # A read timeout long enough for the whole exchange (it bounds the upload as well).
    try:
        async with gateway(tmp_path, f"http://127.0.0.1:{port}", timeout=30, extra=extra) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.transport.set_write_buffer_limits(high=64 * 1024)
            writer.write(
                b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % size
            )
            block = b"u" * (64 * 1024)
            pushed = 0
            while pushed < size:
                writer.write(block)
                pushed += len(block)
                try:
                    await asyncio.wait_for(writer.drain(), 1.0)
                except TimeoutError:
                    break  # the client is held back: nothing reads its bytes any more
            held_at = pushed
            go.set()
            while pushed < size:
                writer.write(block)
                pushed += len(block)
                await asyncio.wait_for(writer.drain(), 20)
            answer = await asyncio.wait_for(reader.read(), 20)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            assert answer.endswith(b"\r\n\r\n%d" % size)
            assert got == [size]
            # Held back well before the end: what sits in socket buffers, not the whole body.
            assert held_at < size // 2, held_at
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------
# the read timeout: per read, not per answer; paused while the client is the slow one


async def test_a_body_that_stalls_midway_is_cut_at_the_read_timeout(tmp_path: Path) -> None:
    """The deadline moves with each read; once the upstream goes quiet mid-body, the client's
    connection is cut one read timeout later (not left hanging)."""

    async def respond(_head: bytes, _conn: int, _index: int) -> bytes | None:
        await asyncio.sleep(0.5)  # the first read comes late: the deadline must move with it
        # 10 bytes of 100, then nothing: the connection stays open, waiting for a next request.
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"p" * 10

    async with raw_upstream(respond) as up, gateway(tmp_path, f"http://127.0.0.1:{up.port}") as gw:
        started = asyncio.get_running_loop().time()
        resp = await gw.get("/stall")
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(resp.read(), 8)
        assert 2.2 <= asyncio.get_running_loop().time() - started < 8


async def test_a_connection_idle_past_the_read_timeout_is_reused_and_still_timed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The read timer of an answered request (a GET's, and a HEAD's) fires while its connection
    idles in the pool: it neither kills the idle connection nor leaves the next request on it
    without a timeout."""
    pairs = [asyncio.Event(), asyncio.Event()]
    seen = 0

    async def respond(head: bytes, _conn: int, _index: int) -> bytes | None:
        nonlocal seen
        if head.startswith(b"GET /stall "):
            await asyncio.sleep(30)
        else:  # two at a time, held until both are in: two connections, both busy
            seen += 1
            pair = pairs[(seen - 1) // 2]
            if seen % 2 == 0:
                pair.set()
            await pair.wait()
        if head.startswith(b"HEAD "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async with raw_upstream(respond) as up, gateway(tmp_path, f"http://127.0.0.1:{up.port}") as gw:
        first = await asyncio.gather(gw.get("/one"), gw.head("/one"))
        assert [r.status for r in first] == [200, 200]
        await asyncio.sleep(2.5)  # past the read deadlines, within IDLE_TIMEOUT
        second = await asyncio.gather(gw.get("/two"), gw.get("/two"))
        assert [await r.read() for r in second] == [b"ok", b"ok"]
        assert up.connections == 2  # both idle connections were still there
        started = asyncio.get_running_loop().time()
        stalled = await asyncio.wait_for(gw.get("/stall"), 8)
        assert stalled.status == 504
        assert (await stalled.json())["error"] == "upstream_timeout"
        assert asyncio.get_running_loop().time() - started >= 1.9
        # A timeout on a reused connection is not a closed keep-alive connection: the slow
        # upstream got the request once, never again on a new connection.
        assert [h.split(b" ")[1] for h in up.heads].count(b"/stall") == 1
        assert up.connections == 2
    await asyncio.sleep(0.1)  # the upstream has closed them: their timers had fired, quietly
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


async def test_a_slow_client_is_not_the_upstream_timing_out(tmp_path: Path) -> None:
    """While the client reads nothing (the gateway stops reading the upstream), the read
    timeout waits; once the client has taken every byte the upstream sent and the upstream
    stays quiet, the timeout cuts the body off."""
    sent = 16 * MiB

    async def respond(_head: bytes, _conn: int, _index: int) -> bytes | None:
        # Half of the promised body, then nothing (the connection stays open).
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * sent) + b"s" * sent

    async with raw_upstream(respond) as up, gateway(tmp_path, f"http://127.0.0.1:{up.port}") as gw:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", gw.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
        writer.write(b"GET /slow-reader HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(3.0)  # longer than the read timeout, reading nothing
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        received = 0
        while part := await asyncio.wait_for(reader.read(256 * 1024), 10):
            received += len(part)
        writer.close()
        # Every byte the upstream sent reached the client, then the connection was cut.
        assert received == sent


# ---------------------------------------------------------------------------------------------
# retried once only before any byte of an answer


@pytest.mark.parametrize(
    "second",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nno colon here\r\n\r\n",
    ],
    ids=["head-cut-short", "malformed-head"],
)
async def test_a_get_answered_in_part_on_a_reused_connection_is_not_retried(
    tmp_path: Path, second: bytes
) -> None:
    """The upstream had begun answering (a head cut off by a close, or one llhttp refuses): the
    request reached it, so it is not sent again, even though GET is idempotent."""

    async def respond(_head: bytes, _conn: int, index: int) -> bytes | None:
        return second if index == 1 else b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async with raw_upstream(respond) as up, gateway(tmp_path, f"http://127.0.0.1:{up.port}") as gw:
        assert (await gw.get("/first")).status == 200
        resp = await gw.get("/second")
        assert resp.status == 502
        assert (await resp.json())["error"] == "upstream_unavailable"
        assert [h.split(b" ")[1] for h in up.heads] == [b"/first", b"/second"]
        assert up.connections == 1


# ---------------------------------------------------------------------------------------------
# opening connections: where to, and for how long


@pytest.mark.parametrize(
    ("url", "port", "authority", "prefix"),
    [
        ("http://up.internal", 80, "up.internal", ""),
        ("http://up.internal:80/", 80, "up.internal", ""),
        ("https://up.internal:443/api/", 443, "up.internal", "/api"),
        ("https://up.internal", 443, "up.internal", ""),
        ("http://up.internal:443/v1//", 443, "up.internal:443", "/v1"),
        ("https://up.internal:80/XX/", 80, "up.internal:80", "/XX"),
        ("http://10.0.0.7:8080/a%2Fb/", 8080, "10.0.0.7:8080", "/a%2Fb"),
        ("http://[::1]:8080/api", 8080, "[::1]:8080", "/api"),
        ("http://[fe80::1]/", 80, "[fe80::1]", ""),
    ],
)
def test_the_host_header_names_the_upstream_as_its_url_does(
    url: str, port: int, authority: str, prefix: str
) -> None:
    """The Host the upstream is sent: its port only when not the scheme's default, an IPv6
    address in brackets; the path prefix without its trailing slashes."""
    pool = Pool(UpstreamConfig("default", URL(url)))
    assert (pool.port, pool.authority, pool.prefix) == (port, authority, prefix)
    assert pool.host == URL(url).host
    assert (pool.ssl is not None) == url.startswith("https:")


async def test_an_upstream_that_does_not_accept_is_504_at_the_connect_timeout(tmp_path: Path) -> None:
    """A connection the upstream never accepts (its backlog full: the SYN is dropped) is given
    up at `connect_timeout` as a 504, not left to the system's own minutes-long timeout."""
    with silent_port(accepting=False) as port:
        async with gateway(tmp_path, f"http://127.0.0.1:{port}", timeout=30) as gw:
            started = asyncio.get_running_loop().time()
            resp = await asyncio.wait_for(gw.get("/x"), 15)
            assert resp.status == 504
            assert (await resp.json())["error"] == "upstream_timeout"
            assert asyncio.get_running_loop().time() - started >= 1.9  # connect_timeout: 2


async def test_the_connection_goes_to_the_upstreams_own_address() -> None:
    """An upstream listening on 127.0.0.2 alone is reached there (not at whatever a missing host
    would resolve to, which is 127.0.0.1 on this machine)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        pool = Pool(UpstreamConfig("default", URL(f"http://127.0.0.2:{port}")))
        conn = await pool.connect()
        assert conn.transport.get_extra_info("peername")[:2] == ("127.0.0.2", port)
        conn.send_head(b"GET / HTTP/1.1\r\nHost: up\r\n\r\n", head_request=False)
        assert (await conn.head()).status == 200
        assert await conn.read() == b"ok"
        conn.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_pooled_connection_whose_transport_is_closing_is_not_handed_out(upstream: Upstream) -> None:
    """Between a transport's close() and its connection_lost (the next loop turn), the pool
    already knows it is not to be used."""
    pool = Pool(UpstreamConfig("default", URL(upstream.url)))
    conn = await pool.connect()
    conn.send_head(b"GET /x HTTP/1.1\r\nHost: up\r\n\r\n", head_request=False)
    await conn.head()
    while await conn.read():
        pass
    pool.release(conn)
    assert list(pool._idle) == [conn]  # kept alive for the next request
    conn.transport.close()  # connection_lost has not run yet: `closed` is still False
    assert not conn.closed
    again, reused = await pool.acquire()
    assert again is not conn and not reused
    again.close()
