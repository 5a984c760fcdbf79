"""What the gateway's own upstream client (gateway/proxy/pool.py) owns, each against a real
upstream socket that writes exactly the bytes a test scripts: every response framing, keep-alive
and its races, resets, flow control, pipelining, early answers, https, header hygiene."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import MakeGateway, Upstream, write_config

ALL = """routes:
  - id: all
    match: {prefix: /}
    class: anonymous
"""

Respond = Callable[[bytes, int, int], Awaitable[bytes | None]]  # (head, connection no, request no)


class RawUpstream:
    """An upstream on a real socket that answers each request head with scripted bytes."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        index = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                out = await self.respond(head, number, index)
                index += 1
                if out is None:
                    break
                body = await read_body(reader, head) if not out.startswith(b"!early") else b""
                self.bodies.append(body)
                writer.write(out.removeprefix(b"!early"))
                await writer.drain()
                if b"\r\nconnection: close\r\n" in out.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return body
            body += data[:-2]
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    return b""


@contextlib.asynccontextmanager
async def raw_upstream(
    respond: Respond, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[RawUpstream]:
    up = RawUpstream(respond)
    await up.start(ssl_context)
    try:
        yield up
    finally:
        await up.close()


def fixed(response: bytes) -> Respond:
    async def respond(_head: bytes, _conn: int, _index: int) -> bytes | None:
        return response

    return respond


# ---------------------------------------------------------------------------------------------
# framing


FRAMINGS = [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello", id="content-length"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        200,
        b"hello world",
        id="chunked",
    ),
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        201,
        b"ok",
        id="100-continue-absorbed",
    ),
    pytest.param(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        200,
        b"ok",
        id="103-early-hints-absorbed",
    ),
    pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", id="204"),
    pytest.param(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n', 304, b"", id="304"),
]


@pytest.mark.parametrize(("response", "status", "body"), FRAMINGS)
async def test_framing_and_keep_alive(
    make_gateway: MakeGateway, upstream: Upstream, response: bytes, status: int, body: bytes
) -> None:
    async with raw_upstream(fixed(response)) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        for _ in range(3):
            resp = await gw.client.get("/thing")
            assert resp.status == status
            assert await resp.read() == body
        # One upstream connection carried all three: keep-alive after every framing.
        assert up.connections == 1


async def test_close_delimited_body_ends_at_close(make_gateway: MakeGateway, upstream: Upstream) -> None:
    big = b"z" * 300_000  # past the high-water mark: streamed, not read whole
    async with raw_upstream(fixed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + big)) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        for _ in range(2):
            resp = await gw.client.get("/stream")
            assert resp.status == 200
            assert await resp.read() == big
        assert up.connections == 2  # Connection: close from the upstream is honoured


async def test_head_response_keeps_its_length_and_the_connection(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async def respond(head: bytes, _conn: int, _index: int) -> bytes | None:
        if head.startswith(b"HEAD "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget"

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        head = await gw.client.head("/x")
        assert head.status == 200 and head.headers["Content-Length"] == "1234"
        get = await gw.client.get("/x")
        assert await get.read() == b"get"
        assert up.connections == 1


async def test_client_connection_close_is_honoured(make_gateway: MakeGateway, upstream: Upstream) -> None:
    async with raw_upstream(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)  # the gateway closes after the answer
        writer.close()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok")
        # The client's Connection header is hop-by-hop: it never reaches the upstream.
        assert b"connection: close" not in up.heads[0].lower()


# ---------------------------------------------------------------------------------------------
# keep-alive races: retried once only when idempotent and bodiless


def closes_reused_connection() -> Respond:
    """Answers the first request of every connection; the second one on a connection is met
    with a close and no byte, as an upstream closing an idle keep-alive connection does."""

    async def respond(_head: bytes, _conn: int, index: int) -> bytes | None:
        if index >= 1:
            return None
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    return respond


async def test_get_on_a_closed_idle_connection_is_retried_once(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async with raw_upstream(closes_reused_connection()) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        assert (await gw.client.get("/first")).status == 200
        resp = await gw.client.get("/second")
        assert resp.status == 200 and await resp.read() == b"ok"
        assert up.connections == 2
        assert [h.split(b" ")[1] for h in up.heads] == [b"/first", b"/second", b"/second"]


async def test_post_on_a_closed_idle_connection_is_not_retried(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async with raw_upstream(closes_reused_connection()) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        assert (await gw.client.get("/first")).status == 200
        resp = await gw.client.post("/create", data=b"payload")
        assert resp.status == 502
        assert (await resp.json())["error"] == "upstream_unavailable"
        # Sent once, on the reused connection; never again on a new one.
        assert [h.split(b" ")[1] for h in up.heads] == [b"/first", b"/create"]
        assert up.connections == 1


async def test_get_on_a_fresh_connection_that_closes_is_not_retried(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async def respond(_head: bytes, _conn: int, _index: int) -> bytes | None:
        return None

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        resp = await gw.client.get("/x")
        assert resp.status == 502
        assert up.connections == 1


# ---------------------------------------------------------------------------------------------
# resets mid-body: the client's connection is cut, never a complete-looking 200


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
    ],
    ids=["content-length", "chunked", "close-delimited"],
)
async def test_upstream_reset_mid_body_cuts_the_client(
    make_gateway: MakeGateway, upstream: Upstream, head: bytes
) -> None:
    part = b"x" * 100_000
    chunked = b"chunked" in head

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + (b"%x\r\n" % len(part) + part + b"\r\n" if chunked else part))
        await writer.drain()
        await asyncio.sleep(0.2)
        _reset(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{port}")
        resp = await gw.client.get("/big")
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------
# pipelining and early answers


async def test_pipelined_requests_answered_in_order(make_gateway: MakeGateway, upstream: Upstream) -> None:
    async def respond(head: bytes, _conn: int, _index: int) -> bytes | None:
        path = head.split(b" ")[1]
        if path == b"/slow":
            await asyncio.sleep(0.3)
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path)

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.port)
        writer.write(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in (b"/slow", b"/b", b"/c")))
        bodies = []
        for _ in range(3):
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.startswith(b"HTTP/1.1 200")
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            bodies.append(await reader.readexactly(length))
        writer.close()
        assert bodies == [b"/slow", b"/b", b"/c"]


async def test_upstream_answering_before_the_body_is_complete(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async def respond(_head: bytes, _conn: int, _index: int) -> bytes | None:
        # Answer at once, without reading the body, and hang up.
        return (
            b"!earlyHTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!"
        )

    async with raw_upstream(respond) as up:
        gw = await make_gateway(
            ALL, extra="limits: {max_body: 64MiB}\n", upstream_url=f"http://127.0.0.1:{up.port}"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.port)
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 10000000\r\n\r\n" + b"a" * 65536
        )
        answer = await asyncio.wait_for(reader.readuntil(b"too big!"), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 413")
        assert up.connections == 1


# ---------------------------------------------------------------------------------------------
# header hygiene


async def test_hop_by_hop_and_connection_named_response_headers_removed(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\n"
        b"Connection: keep-alive, X-Private\r\n"
        b"X-Private: secret\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"Proxy-Authenticate: Basic\r\n"
        b"Trailer: X-Sum\r\n"
        b"Upgrade: h2c\r\n"
        b"X-Kept: yes\r\n"
        b"Server: upstream/1.0\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n"
    )
    async with raw_upstream(fixed(response)) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        resp = await gw.client.get("/h")
        assert await resp.read() == b"ok"
        for name in ("X-Private", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade"):
            assert name not in resp.headers, name
        assert resp.headers["X-Kept"] == "yes"
        assert resp.headers.getall("Server") == ["upstream/1.0"]
        assert "Content-Length" not in resp.headers or "Transfer-Encoding" not in resp.headers


@pytest.mark.parametrize(
    "second",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!", b"HTTP/1.1 204 No Content\r\n\r\n"],
    ids=["with-body", "bodyless"],
)
async def test_a_second_answer_to_one_request_is_never_passed_on(
    make_gateway: MakeGateway, upstream: Upstream, second: bytes
) -> None:
    # Bodyless, the second answer is seen only as it begins (no body bytes to notice later).
    split = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + second
    async with raw_upstream(fixed(split)) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        for _ in range(2):
            resp = await gw.client.get("/split")
            assert await resp.read() == b"ok"
        # The desynchronised connection was dropped, not reused for the second request.
        assert up.connections == 2


async def test_request_head_written_once_with_the_upstream_host(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async with raw_upstream(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")
        resp = await gw.client.post("/p?q=1", data=b"12345", headers={"Connection": "X-Drop", "X-Drop": "1"})
        assert resp.status == 200
        head = up.heads[0].decode()
        assert head.startswith("POST /p?q=1 HTTP/1.1\r\n")
        lines = head.lower().split("\r\n")
        assert f"host: 127.0.0.1:{up.port}" in lines
        assert "content-length: 5" in lines and "x-drop: 1" not in lines
        assert sum(1 for line in lines if line.startswith("host:")) == 1
        assert up.bodies == [b"12345"]


# ---------------------------------------------------------------------------------------------
# https upstreams with a CA of the test's own


def _test_ca(folder: Path) -> tuple[Path, ssl.SSLContext]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scopegate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return ca_file, server


def with_ca_file(config: Path, url: str, ca_file: str) -> Path:
    text = config.read_text()
    old = f'default: {{url: "{url}", connect_timeout: 2, timeout: 2}}'
    assert old in text
    config.write_text(text.replace(old, f'default: {{url: "{url}", ca_file: "{ca_file}", timeout: 2}}'))
    return config


async def test_https_upstream_with_its_ca_file(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient

    from gateway.config import load_config
    from gateway.web.runtime import Runtime
    from tests.conftest import ListenerServer

    ca_file, server_ctx = _test_ca(tmp_path)
    async with raw_upstream(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure"), server_ctx) as up:
        url = f"https://127.0.0.1:{up.port}"
        config = with_ca_file(write_config(tmp_path, url, ALL), url, str(ca_file))
        client = TestClient(ListenerServer(Runtime(load_config(str(config)))))
        await client.start_server()
        try:
            for _ in range(2):
                resp = await client.get("/s")
                assert resp.status == 200 and await resp.read() == b"secure"
            assert up.connections == 1  # kept alive over TLS too
        finally:
            await client.close()


async def test_https_upstream_with_an_unknown_ca_is_502(
    make_gateway: MakeGateway, upstream: Upstream, tmp_path: Path
) -> None:
    _, server_ctx = _test_ca(tmp_path)
    async with raw_upstream(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure"), server_ctx) as up:
        gw = await make_gateway(ALL, upstream_url=f"https://127.0.0.1:{up.port}")
        resp = await gw.client.get("/s")
        assert resp.status == 502
        assert up.heads == []  # nothing was sent over an unverified connection


def test_ca_file_must_exist_and_belong_to_an_https_upstream(tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.errors import ConfigError

    ca_file, _ = _test_ca(tmp_path)
    for url, ca, wanted in (
        ("https://127.0.0.1:1", str(tmp_path / "missing.pem"), "no such file"),
        ("http://127.0.0.1:1", str(ca_file), "only an https upstream"),
    ):
        config = with_ca_file(write_config(tmp_path, url), url, ca)
        with pytest.raises(ConfigError) as err:
            load_config(str(config))
        assert any(wanted in str(p) for p in err.value.problems), err.value.problems


# ---------------------------------------------------------------------------------------------
# flow control: a slow client does not make the gateway hold the body


def _hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
async def test_slow_client_reading_50mb_keeps_gateway_memory_flat(tmp_path: Path, upstream: Upstream) -> None:
    from tests.core.test_blackbox import running_gateway

    mib = 2**20
    config = write_config(tmp_path, upstream.url, ALL)
    async with running_gateway(config) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, limit=64 * 1024)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)

        async def download(size: int, pause: float) -> int:
            writer.write(f"GET /download/{size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
            total = 0
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                n = int(line.strip(), 16)
                left = n + 2
                while left:  # read the chunk slowly, 64 KiB at a time
                    part = await asyncio.wait_for(reader.read(min(left, 64 * 1024)), 10)
                    assert part, "the gateway closed mid-body"
                    left -= len(part)
                    if pause:
                        await asyncio.sleep(pause)
                if n == 0:
                    return total
                total += n

        assert await download(2 * mib, 0) == 2 * mib  # warm every path first
        baseline = _hwm(gw.pid)
        assert await download(50 * mib, 0.001) == 50 * mib
        grown = _hwm(gw.pid) - baseline
        writer.close()
    assert grown < 16 * mib, grown


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_serve_on_either_event_loop(tmp_path: Path, upstream: Upstream, loop: str) -> None:
    from tests.core.test_blackbox import running_gateway

    config = write_config(tmp_path, upstream.url, ALL)
    async with running_gateway(config, "--loop", loop) as gw, aiohttp.ClientSession() as session:
        for _ in range(2):  # the second one on a kept-alive upstream connection
            async with session.post(gw.url + "/echo", data=b"x" * 100_000) as resp:
                assert resp.status == 200
                assert (await resp.json())["body_len"] == 100_000


async def test_a_trickled_request_body_is_bounded_by_the_upstream_timeout(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    async def respond(_head: bytes, _conn: int, _index: int) -> bytes | None:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async with raw_upstream(respond) as up:
        gw = await make_gateway(ALL, upstream_url=f"http://127.0.0.1:{up.port}")  # timeout: 2
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.port)
        writer.write(
            b"POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000\r\n\r\nabc"
        )
        await writer.drain()
        started = asyncio.get_running_loop().time()
        answer = await asyncio.wait_for(reader.read(4096), 15)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 504"), answer
        assert b"upstream_timeout" in answer
        assert 1.5 <= asyncio.get_running_loop().time() - started < 10
