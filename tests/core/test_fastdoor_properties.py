"""Generated request heads through both doors of the public listener.

Hypothesis builds heads from the pieces hostile clients use (header names that frame, upgrade or
identify; values with spaces, tabs, control bytes and obs-text; bare CR and bare LF line endings;
duplicates; odd targets, methods and versions), sends each to the gateway with the fast door and
to the same gateway with aiohttp's door alone, and requires the same answer and the same requests
at the upstream (method, target, body size and every header). Example counts are modest: the
machine is shared.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Upstream
from tests.core.test_fastdoor import Doors, doors, exchange, normal, start_door
from tests.core.test_fastdoor_hostile import upstream_view

__all__ = ["doors", "start_door"]  # the fixtures, from the fast door's own tests

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

NAMES = [
    "Host",
    "host",
    "Content-Length",
    "content-length",
    "Transfer-Encoding",
    "Transfer_Encoding",
    "TE",
    "Expect",
    "Upgrade",
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Authorization",
    "X-Auth-Subject",
    "X_Auth_Subject",
    "X-Auth-Scopes",
    "X-Workspace-Id",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "Forwarded",
    "X-Real-IP",
    "X-Original-URL",
    "X-HTTP-Method-Override",
    "X-Request-Id",
    "Content-Type",
    "User-Agent",
    "Sec-WebSocket-Key1",
    "X-A",
    "x-a",
    "X A",
    "X-A ",
    "X\tA",
    "",
    "X-\xe9",
    "X-\x00",
]
VALUE_PARTS = [
    "0",
    "1",
    "-1",
    "+1",
    " 0",
    "0x0",
    "chunked",
    "identity",
    "close",
    "keep-alive",
    "upgrade",
    "websocket",
    "h2c",
    "100-continue",
    "X-Auth-Subject",
    "Bearer x",
    "root",
    ",",
    " ",
    "\t",
    "\x00",
    "\x01",
    "\x7f",
    "\xe9",
    "\r",
    "\n",
    "a",
    "gw.test",
]
ENDINGS = ["\r\n"] * 12 + ["\n", "\r", "\r\n ", "\r\n\t"]
TARGETS = [
    "/open/x",
    "/open/x?a=1",
    "/v1/admin",
    "/v1/playlists/1",
    "/v1/health",
    "/open/../v1/admin",
    "/open/%2e%2e/v1/admin",
    "//v1/admin",
    "/open#/../v1/admin",
    "/auth/verify",
    "/auth/tokens",
    "/AUTH/tokens",
    "/auth/./tokens",
    "http://gw.test/open/x",
    "*",
    "gw.test:80",
    "/open/\xe9",
    "/open/\x00",
]
METHODS = [
    "GET",
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "OPTIONS",
    "PATCH",
    "CONNECT",
    "TRACE",
    "get",
    "BREW",
]
VERSIONS = ["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0", "http/1.1", "HTTP/1.10"]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(TARGETS))
    version = draw(st.sampled_from(VERSIONS))
    lines = [f"{method} {target} {version}"]
    if draw(st.integers(0, 5)):  # mostly a Host: heads the fast door might serve
        lines.append("Host: gw.test")
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(NAMES))
        value = "".join(draw(st.lists(st.sampled_from(VALUE_PARTS), max_size=3)))
        sep = draw(st.sampled_from([": ", ":", " : ", ":\t"]))
        lines.append(f"{name}{sep}{value}")
    lines.append("Connection: close")
    order = draw(st.permutations(lines[1:]))
    text = lines[0]
    for line in order:
        text += draw(st.sampled_from(ENDINGS)) + line
    text += "\r\n\r\n"
    return text.encode("latin-1")


async def _agree(doors: Doors, upstream: Upstream, data: bytes) -> None:
    upstream.seen.clear()
    before = normal(await exchange(doors.plain.port, data, timeout=5))
    seen = upstream_view(upstream)
    upstream.seen.clear()
    after = normal(await exchange(doors.fast.port, data, timeout=5))
    assert after == before, data
    assert upstream_view(upstream) == seen, data


@SETTINGS
@given(data=heads())
async def test_generated_heads_get_the_same_answer_from_both_doors(
    doors: Doors, upstream: Upstream, data: bytes
) -> None:
    await _agree(doors, upstream, data)


async def _one_then_other(port: int, first: bytes, second: bytes) -> bytes:
    """`first`, its answer (until the gateway is quiet), then `second` on the same connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        writer.write(first)
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 0.3):
                got += chunk
            return got  # closed after the first
        except TimeoutError:
            pass
        writer.write(second)
        return got + await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


@SETTINGS
@given(first=heads(), second=heads())
async def test_generated_pipelines_are_answered_as_one_request_after_the_other(
    doors: Doors, upstream: Upstream, first: bytes, second: bytes
) -> None:
    # The first head keeps the connection open (its `Connection: close` dropped), so whatever
    # follows it is read as the next request by whichever door holds the connection.
    first = first.replace(b"Connection: close", b"X-Keep: 1")
    upstream.seen.clear()
    served_fast = doors.fast.rt.fast_requests
    after = normal(await exchange(doors.fast.port, first + second, timeout=5))
    seen = upstream_view(upstream)
    upstream.seen.clear()
    if doors.fast.rt.fast_requests > served_fast:
        # The fast door answered the first on its own: as aiohttp answers it when the second
        # request arrives only after the first's answer (aiohttp reading both in one packet
        # refuses both when the second is malformed; see test_fastdoor_hostile).
        before = normal(await _one_then_other(doors.plain.port, first, second))
    else:
        before = normal(await exchange(doors.plain.port, first + second, timeout=5))
    assert after == before, (first, second)
    assert upstream_view(upstream) == seen, (first, second)


@pytest.mark.parametrize("split", [1, 2, 3, 7, 64])
async def test_a_head_split_into_segments_is_read_as_one(
    doors: Doors, upstream: Upstream, split: int
) -> None:
    # The same plain head sent in `split`-byte pieces: answered as if sent in one piece.
    data = b"GET /open/x?a=1 HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\r\nConnection: close\r\n\r\n"
    whole = normal(await exchange(doors.fast.port, data))
    reader, writer = await asyncio.open_connection("127.0.0.1", doors.fast.port)
    try:
        for i in range(0, len(data), split):
            writer.write(data[i : i + split])
            await writer.drain()
            await asyncio.sleep(0)
        pieces = normal(await asyncio.wait_for(reader.read(), 10))
    finally:
        writer.close()
    assert pieces == whole
    assert doors.fast.rt.fast_requests == 2 and doors.fast.rt.handed_off == 0
