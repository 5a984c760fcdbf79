"""Proxy fidelity: what goes in comes out, byte for byte, minus what the contract strips (section 9).

Every test runs a real gateway on a real socket in front of the recording `upstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from tests.conftest import EXAMPLE_ROUTES, Gateway, MakeGateway, Upstream, write_config
from tests.support import free_port

MiB = 2**20

# The example surface plus anonymous prefixes for the upstream's special endpoints.
ROUTES = EXAMPLE_ROUTES + "".join(
    f"""
  - id: {name}
    match: {{prefix: /{name}}}
    class: anonymous
"""
    for name in ("status", "slow", "download", "cookies", "hop", "gzip", "respond", "reset", "truncate")
)


# ---------------------------------------------------------------------------------------------
# helpers shared with test_hostile.py and test_blackbox.py


def port_of(gw: Gateway) -> int:
    port = URL(gw.url).port
    assert port is not None
    return port


def base(gw: Gateway) -> str:
    return f"http://127.0.0.1:{port_of(gw)}"


@dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    closed: bool  # the server closed the connection after this response

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


async def raw_request(port: int, data: bytes, *, timeout: float = 10.0) -> RawResponse:
    """Send bytes exactly as given and parse one HTTP/1.1 response (Content-Length or to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.add(name.strip(), value.strip())
        if "Content-Length" in headers:
            body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), timeout)
        else:
            body = await asyncio.wait_for(reader.read(), timeout)
        try:
            rest = await asyncio.wait_for(reader.read(1), 2.0)
            closed = rest == b""
        except TimeoutError:
            closed = False
        return RawResponse(status, headers, body, closed)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def raw_get(target: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test", *extra, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def body_of(size: int, block: int = 256 * 1024) -> AsyncIterator[bytes]:
    chunk = b"u" * block
    left = size
    while left > 0:
        n = min(left, block)
        yield chunk[:n]
        left -= n


def assert_refusal(status: int, body: dict[str, object], expect_status: int, code: str) -> None:
    assert status == expect_status
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["request_id"], str) and body["request_id"]


# ---------------------------------------------------------------------------------------------
# method, path, query, headers


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_method_is_forwarded(make_gateway: MakeGateway, upstream: Upstream, method: str) -> None:
    gw = await make_gateway()
    resp = await gw.client.request(method, "/open/m")
    assert resp.status == 200
    assert upstream.last.method == method
    assert upstream.last.raw_path == "/open/m"


@pytest.mark.parametrize(
    "target",
    [
        "/open/a%20b/c?x=1&y=%2F",
        "/open",
        "/open/",
        "/open/x/",
        "/open/%7Euser/~tilde",
        "/open/caf%C3%A9/caf%c3%a9",
        "/open/a+b/a%2Bb?q=a+b&r=%20",
        "/open/!$&'()*+,=:@",
        "/open/p?",
        "/open/p?a=1&a=2&empty=&flag",
        "/open/p?x=%0a%00&y=..%2F..",
        "/open/100%2541/%2525",
    ],
    ids=[
        "space-and-encoded-slash-in-query",
        "prefix-itself",
        "prefix-trailing-slash",
        "trailing-slash",
        "tilde-encoded-and-plain",
        "utf8-case-kept",
        "plus-kept",
        "subdelims",
        "empty-query",
        "repeated-query",
        "query-not-vetted-as-path",
        "encoded-percent-kept-raw",
    ],
)
async def test_raw_path_and_query_byte_for_byte(
    make_gateway: MakeGateway, upstream: Upstream, target: str
) -> None:
    gw = await make_gateway()
    async with (
        aiohttp.ClientSession() as session,
        session.get(URL(base(gw) + target, encoded=True)) as resp,
    ):
        assert resp.status == 200
    expected = target[:-1] if target.endswith("?") else target
    assert upstream.last.raw_path in (target, expected)
    assert upstream.last.raw_path.partition("?")[0] == target.partition("?")[0]


async def test_raw_path_over_raw_socket(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get("/open/a%20b/c?x=1&y=%2F"))
    assert resp.status == 200
    assert upstream.last.raw_path == "/open/a%20b/c?x=1&y=%2F"


async def test_request_headers_kept(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    headers: CIMultiDict[str] = CIMultiDict(
        [
            ("X-Custom", "value with  spaces"),
            ("Accept", "text/plain"),
            ("Accept-Encoding", "gzip"),
            ("Accept-Language", "fr"),
            ("User-Agent", "fidelity/1.0"),
            ("Cookie", "session=abc; other=def"),
            ("If-Match", '"etag"'),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
            ("Content-Type", "application/x-custom"),
        ]
    )
    resp = await gw.client.post("/open/h", headers=headers, data=b"body")
    assert resp.status == 200
    seen = upstream.last
    for name in (
        "X-Custom",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "User-Agent",
        "Cookie",
        "If-Match",
        "Content-Type",
    ):
        assert seen.header(name) == headers[name], name
    assert seen.all("X-Multi") == ["one", "two"]
    assert seen.body_len == 4
    # The upstream sees its own Host, and the client's in X-Forwarded-Host.
    assert seen.header("Host") == URL(upstream.url).raw_authority
    assert seen.header("X-Forwarded-Host") == f"127.0.0.1:{port_of(gw)}"


# ---------------------------------------------------------------------------------------------
# responses


@pytest.mark.parametrize("status", [200, 201, 202, 301, 302, 400, 401, 403, 404, 409, 418, 500, 503])
async def test_response_status_and_headers(
    make_gateway: MakeGateway, upstream: Upstream, status: int
) -> None:
    gw = await make_gateway(routes=ROUTES)
    resp = await gw.client.get(f"/respond?status={status}", allow_redirects=False)
    assert resp.status == status
    assert resp.headers["X-Up"] == "1"
    assert resp.headers.getall("X-Multi") == ["one", "two"]
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Location"] == "/elsewhere?a=%2F"
    # The upstream's own body, never a gateway refusal in its place.
    assert await resp.read() == b"respond"


async def test_set_cookie_headers_kept_apart(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(routes=ROUTES)
    resp = await gw.client.get("/cookies")
    assert resp.status == 200
    assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


async def test_204_has_no_body_or_framing(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(routes=ROUTES)
    resp = await raw_request(port_of(gw), raw_get("/status/204"))
    assert resp.status == 204
    assert resp.body == b""
    assert "Transfer-Encoding" not in resp.headers
    assert resp.headers.get("Content-Length", "0") == "0"


async def test_304_with_if_none_match(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(routes=ROUTES)
    resp = await raw_request(port_of(gw), raw_get("/status/304", 'If-None-Match: "v1"'))
    assert resp.status == 304
    assert resp.body == b""
    assert resp.headers["ETag"] == '"v1"'
    assert "Transfer-Encoding" not in resp.headers
    assert upstream.last.header("If-None-Match") == '"v1"'


async def test_head_then_get_on_one_connection(make_gateway: MakeGateway, upstream: Upstream) -> None:
    """HEAD carries the GET's Content-Length but no body; the keep-alive connection stays in sync."""
    gw = await make_gateway()
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(base(gw) + "/open/x") as get:
            assert get.status == 200
            await get.read()
        async with session.head(base(gw) + "/open/x") as head:
            assert head.status == 200
            assert await head.read() == b""
            # The upstream's HEAD answer announces the body a GET would get (its echo says "HEAD").
            expected = len(json.dumps({"method": "HEAD", "path": "/open/x", "body_len": 0}))
            assert head.headers.get("Content-Length") == str(expected)
        async with session.get(base(gw) + "/open/y") as again:
            assert again.status == 200
            assert json.loads(await again.read())["path"] == "/open/y"
    assert [s.method for s in upstream.seen] == ["GET", "HEAD", "GET"]


async def test_chunked_download(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(routes=ROUTES)
    resp = await gw.client.get("/download/300001")
    assert resp.status == 200
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in resp.headers
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert len(await resp.read()) == 300001


async def test_compressed_body_passed_through_untouched(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    import gzip

    gw = await make_gateway(routes=ROUTES)
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(base(gw) + "/gzip", headers={"Accept-Encoding": "gzip"}) as resp,
    ):
        assert resp.headers["Content-Encoding"] == "gzip"
        raw = await resp.read()
    assert gzip.decompress(raw) == b"compressed body " * 64


async def test_upstream_reset_is_502(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(routes=ROUTES)
    resp = await gw.client.get("/reset")
    body = await resp.json()
    assert_refusal(resp.status, body, 502, "upstream_unavailable")


async def test_truncated_upstream_body_is_not_a_clean_response(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(routes=ROUTES)
    resp = await gw.client.get("/truncate")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


# ---------------------------------------------------------------------------------------------
# large bodies, streamed


async def test_50mb_upload_streamed(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra="limits: {max_body: 100MiB}\n")
    resp = await gw.client.put("/open/upload", data=body_of(50 * MiB))
    assert resp.status == 200
    assert (await resp.json())["body_len"] == 50 * MiB
    assert upstream.last.body_len == 50 * MiB


async def test_50mb_download_streamed(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(routes=ROUTES)
    resp = await gw.client.get(f"/download/{50 * MiB}")
    assert resp.status == 200
    total = 0
    async for chunk in resp.content.iter_chunked(256 * 1024):
        total += len(chunk)
    assert total == 50 * MiB


def _vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{key} not in /proc/{pid}/status")


async def test_memory_stays_bounded_for_50mb_transfers(tmp_path: Path, upstream: Upstream) -> None:
    from tests.core.test_blackbox import running_gateway

    config = write_config(tmp_path, upstream.url, ROUTES, "limits: {max_body: 100MiB}\n")
    async with running_gateway(config) as gw, aiohttp.ClientSession() as session:
        # Warm up every code path first, so the baseline holds the imports and buffers.
        async with session.put(gw.url + "/open/warm", data=body_of(2 * MiB)) as resp:
            assert resp.status == 200
        async with session.get(gw.url + f"/download/{2 * MiB}") as resp:
            assert len(await resp.read()) == 2 * MiB
        baseline = _vm(gw.pid, "VmHWM")
        async with session.put(gw.url + "/open/upload", data=body_of(50 * MiB)) as resp:
            assert resp.status == 200
            assert (await resp.json())["body_len"] == 50 * MiB
        after_upload = _vm(gw.pid, "VmHWM")
        async with session.get(gw.url + f"/download/{50 * MiB}") as resp:
            total = 0
            async for chunk in resp.content.iter_chunked(256 * 1024):
                total += len(chunk)
            assert total == 50 * MiB
        after_download = _vm(gw.pid, "VmHWM")
    assert upstream.last.raw_path == f"/download/{50 * MiB}"
    assert after_upload - baseline < 16 * MiB, (baseline, after_upload)
    assert after_download - baseline < 16 * MiB, (baseline, after_download)


# ---------------------------------------------------------------------------------------------
# hop-by-hop and Connection


async def test_connection_named_header_removed_others_kept(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    resp = await raw_request(
        port_of(gw),
        raw_get(
            "/open/c",
            "Connection: keep-alive, X-Foo",
            "X-Foo: drop",
            "X-Bar: keep",
            "Keep-Alive: 5",
            "TE: trailers",
            "Proxy-Connection: keep-alive",
            "Proxy-Authorization: Basic eA==",
            "Trailer: X-T",
        ),
    )
    assert resp.status == 200
    seen = upstream.last
    assert seen.header("X-Foo") is None
    assert seen.header("X-Bar") == "keep"
    for hop in ("Keep-Alive", "TE", "Proxy-Connection", "Proxy-Authorization", "Trailer"):
        assert seen.header(hop) is None, hop


@pytest.mark.parametrize(
    ("named", "expect"),
    [
        ("X-Auth-Type", "anonymous"),
        ("x-auth-type", "anonymous"),
        ("X-Request-Id", "spoofed"),  # a valid id: kept, and not removed by Connection
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Proto", "http"),
    ],
    ids=["identity", "identity-lowercase", "request-id", "xff", "xfproto"],
)
async def test_connection_cannot_remove_gateway_headers(
    make_gateway: MakeGateway, upstream: Upstream, named: str, expect: str
) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get("/open/c", f"Connection: {named}", f"{named}: spoofed"))
    assert resp.status == 200
    assert upstream.last.all(named) == [expect]


async def test_hop_by_hop_response_headers_stripped(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(routes=ROUTES)
    resp = await gw.client.get("/hop")
    assert resp.status == 200
    assert await resp.text() == "hop"
    assert "X-Secret" not in resp.headers
    assert "Keep-Alive" not in resp.headers
    assert resp.headers["X-Kept"] == "yes"


@pytest.mark.parametrize("framing", ["content-length", "chunked", "empty"])
async def test_never_both_content_length_and_transfer_encoding(
    make_gateway: MakeGateway, upstream: Upstream, framing: str
) -> None:
    gw = await make_gateway()
    if framing == "content-length":
        data = raw_get("/open/f", "Content-Length: 5", method="POST") + b"hello"
    elif framing == "chunked":
        data = raw_get("/open/f", "Transfer-Encoding: chunked", method="POST") + b"5\r\nhello\r\n0\r\n\r\n"
    else:
        data = raw_get("/open/f", "Content-Length: 0", method="POST")
    resp = await raw_request(port_of(gw), data)
    assert resp.status == 200
    seen = upstream.last
    assert not (seen.all("Content-Length") and seen.all("Transfer-Encoding"))
    assert len(seen.all("Content-Length")) <= 1
    assert seen.body_len == (0 if framing == "empty" else 5)


# ---------------------------------------------------------------------------------------------
# X-Request-Id


@pytest.mark.parametrize(
    "given",
    ["abc-123", "A.b_c:d-9", "x" * 128, "550e8400-e29b-41d4-a716-446655440000"],
    ids=["simple", "all-classes", "128-chars", "uuid"],
)
async def test_valid_request_id_kept(make_gateway: MakeGateway, upstream: Upstream, given: str) -> None:
    gw = await make_gateway()
    resp = await gw.client.get("/open/r", headers={"X-Request-Id": given})
    assert resp.status == 200
    assert upstream.last.header("X-Request-Id") == given
    assert upstream.last.all("X-Request-Id") == [given]


@pytest.mark.parametrize(
    "given",
    ["x" * 129, "y" * 200, "has spaces", "semi;colon", 'quote"d', "", "é"],
    ids=["129-chars", "200-chars", "spaces", "semicolon", "quote", "empty", "non-ascii"],
)
async def test_invalid_request_id_replaced(make_gateway: MakeGateway, upstream: Upstream, given: str) -> None:
    gw = await make_gateway()
    value = given.encode("utf-8").decode("latin-1")
    resp = await raw_request(port_of(gw), raw_get("/open/r", f"X-Request-Id: {value}"))
    assert resp.status == 200
    forwarded = upstream.last.all("X-Request-Id")
    assert len(forwarded) == 1
    assert forwarded[0] != value
    assert 1 <= len(forwarded[0]) <= 128
    assert all(c.isalnum() or c in "._:-" for c in forwarded[0])


async def test_request_id_echoed_on_refusals(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    resp = await gw.client.get("/v1/playlists", headers={"X-Request-Id": "rid-401"})
    assert resp.status == 401
    assert resp.headers["X-Request-Id"] == "rid-401"
    assert (await resp.json())["request_id"] == "rid-401"
    resp = await gw.client.get("/v1/playlists", headers={"X-Request-Id": "bad id"})
    generated = resp.headers["X-Request-Id"]
    assert generated != "bad id"
    assert (await resp.json())["request_id"] == generated
    assert upstream.seen == []


@pytest.mark.parametrize("given", ["rid-ok", None], ids=["client-given", "generated"])
async def test_request_id_echoed_on_forwarded_responses(
    make_gateway: MakeGateway, upstream: Upstream, given: str | None
) -> None:
    gw = await make_gateway()
    resp = await gw.client.get("/open/r", headers={"X-Request-Id": given} if given else None)
    assert resp.status == 200
    assert resp.headers.get("X-Request-Id") == upstream.last.header("X-Request-Id")


# ---------------------------------------------------------------------------------------------
# X-Forwarded-*


SPOOFED_FORWARDING = (
    "X-Forwarded-For: 6.6.6.6",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: evil.example",
    "X-Forwarded-Port: 443",
    "X-Real-IP: 6.6.6.6",
    "Forwarded: for=6.6.6.6;proto=https;host=evil.example",
)


async def test_forwarded_headers_set_by_gateway(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get("/open/f"))
    assert resp.status == 200
    seen = upstream.last
    assert seen.all("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.all("X-Forwarded-Proto") == ["http"]
    assert seen.all("X-Forwarded-Host") == ["gateway.test"]


async def test_untrusted_client_forwarding_headers_replaced(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get("/open/f", *SPOOFED_FORWARDING))
    assert resp.status == 200
    seen = upstream.last
    assert seen.all("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.all("X-Forwarded-Proto") == ["http"]
    assert seen.all("X-Forwarded-Host") == ["gateway.test"]
    for name in ("X-Forwarded-Port", "X-Real-IP", "Forwarded"):
        assert seen.header(name) is None, name


async def test_trusted_proxy_forwarding_headers_kept_and_appended(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra="trusted_proxies: [127.0.0.0/8]\n")
    resp = await raw_request(port_of(gw), raw_get("/open/f", *SPOOFED_FORWARDING))
    assert resp.status == 200
    seen = upstream.last
    assert seen.all("X-Forwarded-For") == ["6.6.6.6, 127.0.0.1"]
    assert seen.all("X-Forwarded-Proto") == ["https"]
    assert seen.all("X-Forwarded-Host") == ["evil.example"]
    assert seen.header("Forwarded") == "for=6.6.6.6;proto=https;host=evil.example"


async def test_trusted_proxy_multiple_xff_headers_all_kept(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra="trusted_proxies: [127.0.0.0/8]\n")
    resp = await raw_request(
        port_of(gw), raw_get("/open/f", "X-Forwarded-For: 1.1.1.1", "X-Forwarded-For: 2.2.2.2")
    )
    assert resp.status == 200
    assert upstream.last.all("X-Forwarded-For") == ["1.1.1.1, 2.2.2.2, 127.0.0.1"]


# ---------------------------------------------------------------------------------------------
# WebSocket


async def test_websocket_echo_through_gateway(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    async with gw.client.ws_connect("/open/ws?room=1", headers={"X-Auth-Subject": "spoof"}) as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "echo:hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert (await ws.receive(timeout=5)).data == b"\x00\x01binary"
    seen = upstream.last
    assert seen.raw_path == "/open/ws?room=1"
    assert seen.header("X-Auth-Type") == "anonymous"
    assert seen.header("X-Auth-Subject") is None


async def test_websocket_to_dead_upstream_is_502(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(upstream_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.client.ws_connect("/open/ws")
    assert info.value.status == 502


# ---------------------------------------------------------------------------------------------
# upstream faults and limits


async def test_upstream_down_is_502(make_gateway: MakeGateway, upstream: Upstream) -> None:
    port = free_port()
    gw = await make_gateway(upstream_url=f"http://127.0.0.1:{port}")
    resp = await gw.client.get("/open/x")
    assert resp.content_type == "application/json"
    text = await resp.text()
    assert_refusal(resp.status, json.loads(text), 502, "upstream_unavailable")
    # No internals: neither the upstream's address nor an exception's text.
    assert str(port) not in text
    assert "Errno" not in text and "Traceback" not in text


async def test_slow_upstream_is_504(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(routes=ROUTES)
    resp = await gw.client.get("/slow?s=3")
    assert resp.content_type == "application/json"
    assert_refusal(resp.status, await resp.json(), 504, "upstream_timeout")


LIMIT = "limits: {max_body: 1KiB}\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_over_max_body_is_413(make_gateway: MakeGateway, upstream: Upstream, framing: str) -> None:
    gw = await make_gateway(extra=LIMIT)
    if framing == "content-length":
        data = raw_get("/open/big", "Content-Length: 1025", method="POST") + b"b" * 1025
    else:
        chunks = b"".join(b"100\r\n" + b"c" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
        data = raw_get("/open/big", "Transfer-Encoding: chunked", method="POST") + chunks
    resp = await raw_request(port_of(gw), data)
    assert_refusal(resp.status, resp.json(), 413, "body_too_large")
    # Never a completed request at the upstream.
    assert all(s.body_len <= 1024 for s in upstream.seen)
    assert not any(s.raw_path == "/open/big" for s in upstream.seen)


async def test_streamed_body_over_limit_from_client_library(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra=LIMIT)
    try:
        resp = await gw.client.post("/open/big", data=body_of(64 * 1024, block=512))
        assert_refusal(resp.status, await resp.json(), 413, "body_too_large")
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        pass  # the gateway may cut the connection while the client is still sending
    assert not any(s.raw_path == "/open/big" for s in upstream.seen)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_at_max_body_passes(make_gateway: MakeGateway, upstream: Upstream, framing: str) -> None:
    gw = await make_gateway(extra=LIMIT)
    if framing == "content-length":
        data = raw_get("/open/edge", "Content-Length: 1024", method="POST") + b"e" * 1024
    else:
        data = raw_get("/open/edge", "Transfer-Encoding: chunked", method="POST") + (
            b"400\r\n" + b"e" * 1024 + b"\r\n0\r\n\r\n"
        )
    resp = await raw_request(port_of(gw), data)
    assert resp.status == 200
    assert upstream.last.body_len == 1024
