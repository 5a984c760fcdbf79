"""Request bodies on the fast door (gateway/web/fastbody.py), against real sockets.

A body framed by its one Content-Length is counted off the bytes after its head, however the
client's packets split it, and goes upstream as it arrives; the bytes after it are the next
request. A refused request's unread body is read and dropped (as aiohttp lingers) before the
next request, within `LINGER` seconds; a client that leaves mid-body never completes the
upstream's request. (Flow control, 50 MB uploads with flat memory, early answers and form
bodies run through this door too: test_pool_edges, test_proxy, test_forward_edges and
test_form_bodies use the real public listener. test_fastdoor compares bodies, forms and
refusals with aiohttp's door byte for byte.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.web import fastdoor
from tests.conftest import Upstream
from tests.core.test_fastdoor import Door, Doors, StartDoor, doors, exchange, normal, req, start_door
from tests.core.test_upstream_client import RawUpstream, fixed, raw_upstream
from tests.support import captured_access_log, eventually

__all__ = ["doors", "start_door"]  # the fixtures, from the fast door's own tests

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    async with raw_upstream(fixed(OK)) as up:
        yield up


@pytest.fixture
async def door_to_raw(start_door: StartDoor, raw: RawUpstream) -> Door:
    return await start_door(upstream_url=f"http://127.0.0.1:{raw.port}")


async def send_in_pieces(port: int, data: bytes, cuts: list[int]) -> bytes:
    """`data` sent in pieces cut at `cuts` (each piece drained, the loop let run between them);
    everything the gateway sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        start = 0
        for cut in [*sorted(c for c in cuts if 0 < c < len(data)), len(data)]:
            writer.write(data[start:cut])
            await writer.drain()
            await asyncio.sleep(0.001)
            start = cut
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3400), max_size=6))
async def test_a_body_split_anywhere_goes_up_whole_and_what_follows_is_the_next_request(
    door_to_raw: Door, raw: RawUpstream, body: bytes, cuts: list[int]
) -> None:
    raw.heads.clear()
    raw.bodies.clear()
    fast, handed = door_to_raw.rt.fast_requests, door_to_raw.rt.handed_off
    # The body may itself look like a request: it is the body all the same.
    data = req("PUT", "/open/up", f"Content-Length: {len(body)}", close=False, body=body) + req(
        "GET", "/open/next"
    )
    reply = await send_in_pieces(door_to_raw.port, data, cuts)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 2 and reply.endswith(b"\r\n\r\nok")
    assert [h.split(b"\r\n")[0] for h in raw.heads] == [b"PUT /open/up HTTP/1.1", b"GET /open/next HTTP/1.1"]
    if body:
        assert raw.bodies == [body, b""]
        assert f"\r\nContent-Length: {len(body)}\r\n".encode() in raw.heads[0]
    else:
        assert b"content-length" not in raw.heads[0].lower()  # as aiohttp's door: no body, no framing
    assert door_to_raw.rt.fast_requests - fast == 2 and door_to_raw.rt.handed_off == handed


async def _refused_upload(
    port: int, size: int, first: int
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST the gate refuses (no credential) announcing `size` bytes, `first` of them sent:
    the answer's head and body, and the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(req("POST", "/v1/playlists", f"Content-Length: {size}", close=False, body=b"b" * first))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await asyncio.wait_for(reader.readexactly(length), 5), reader, writer


async def test_a_refused_upload_is_read_and_dropped_then_the_next_request_is_served(
    doors: Doors, upstream: Upstream
) -> None:
    size, first = 300_000, 1_000
    answers = []
    for door in (doors.plain, doors.fast):
        upstream.seen.clear()
        answer, reader, writer = await _refused_upload(door.port, size, first)
        # Answered before the body is in, on a connection that stays open, as aiohttp's door does.
        assert answer.startswith(b"HTTP/1.1 401 ") and b"\r\nConnection: close" not in answer
        writer.write(b"r" * (size - first) + req("GET", "/open/after"))
        rest = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert rest.startswith(b"HTTP/1.1 200 ") and b'"path": "/open/after"' in rest
        # SECURITY: the refused request and its body never reach the upstream.
        assert [(s.method, s.raw_path, s.body_len) for s in upstream.seen] == [("GET", "/open/after", 0)]
        answers.append(normal(answer + rest))
    assert answers[1] == answers[0]
    assert doors.fast.rt.fast_requests == 2 and doors.fast.rt.handed_off == 0


@pytest.mark.parametrize("fast", [True, False], ids=["fast-door", "aiohttp-door"])
async def test_a_refused_upload_on_a_closing_connection_is_read_before_the_close(
    doors: Doors, upstream: Upstream, fast: bool
) -> None:
    # `Connection: close` with a large body sent at once: closed while the body is still coming,
    # the unread bytes would reset the connection, and the client could lose the answer to it.
    door = doors.fast if fast else doors.plain
    size = 2_000_000
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(req("POST", "/v1/playlists", f"Content-Length: {size}", body=b"c" * size))
    answer, _ = await asyncio.wait_for(asyncio.gather(reader.read(), writer.drain()), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 ") and b"\r\nConnection: close\r\n" in answer
    assert answer.endswith(b"}")  # the whole JSON error, then a clean end of stream
    assert upstream.seen == []


async def test_a_refused_upload_never_finished_is_closed_after_the_linger(
    start_door: StartDoor, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastdoor, "LINGER", 0.5)
    door = await start_door()
    answer, reader, writer = await _refused_upload(door.port, 1_000_000, 10)
    started = time.monotonic()
    try:
        assert answer.startswith(b"HTTP/1.1 401 ")
        writer.write(b"b" * 1000)  # still dropped while it lingers
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.4 <= time.monotonic() - started < 3.0
    finally:
        writer.close()
    assert upstream.seen == []


@pytest.mark.parametrize("fast", [True, False], ids=["fast-door", "aiohttp-door"])
async def test_a_client_gone_mid_upload_never_completes_the_upstream_request(
    doors: Doors, upstream: Upstream, fast: bool, caplog: pytest.LogCaptureFixture
) -> None:
    door = doors.fast if fast else doors.plain
    upload = req("POST", "/open/up", "Content-Type: text/plain", "Content-Length: 1000000", close=False)
    with captured_access_log(json.loads) as lines:
        _, writer = await asyncio.open_connection("127.0.0.1", door.port)
        writer.write(upload + b"u" * 100_000)
        await eventually(lambda: upstream.seen and upstream.seen[0].body_len == 100_000)
        writer.close()
        await eventually(lambda: door.rt.in_flight == 0 and len(lines) == 1)
    await eventually(lambda: not door.rt.upstreams.pools["default"]._idle)
    # The upstream never has the whole request, and its connection is never reused.
    assert upstream.seen[0].body_len == 100_000 and not upstream.seen[0].complete
    # Logged as what it is (nginx's 499), the gate's decision standing; no failure of ours.
    assert (lines[0]["decision"], lines[0]["reason"], lines[0]["status"]) == ("allow", "client_gone", 499)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The door goes on serving.
    assert (await exchange(door.port, req("GET", "/open/next"))).startswith(b"HTTP/1.1 200 ")
