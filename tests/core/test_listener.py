"""The header deadline: a client that trickles its request head is cut off (slowloris)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.config import load_config
from gateway.web.app import build_app
from gateway.web.listener import GuardedSite
from gateway.web.runtime import Runtime
from tests.conftest import Upstream, write_config


@pytest.fixture
async def guarded_port(tmp_path, upstream: Upstream) -> AsyncIterator[int]:
    cfg = load_config(str(write_config(tmp_path, upstream.url, extra="limits: {header_timeout: 0.5}\n")))
    runner = web.AppRunner(build_app(Runtime(cfg)), access_log=None)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, header_timeout=cfg.limits.header_timeout)
    await site.start()
    yield site.port
    await runner.cleanup()


async def _read_all(reader: asyncio.StreamReader, limit: float) -> bytes:
    return await asyncio.wait_for(reader.read(), limit)


async def test_trickled_head_is_closed_after_header_timeout(guarded_port: int, upstream: Upstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded_port)
    started = time.monotonic()
    writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    data = await _read_all(reader, 5)
    elapsed = time.monotonic() - started
    writer.close()
    assert data == b""
    assert 0.4 <= elapsed < 2.0
    assert upstream.seen == []


async def test_complete_heads_are_served_and_keepalive_rearms(guarded_port: int, upstream: Upstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded_port)
    for _ in range(2):
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 200")
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        await asyncio.sleep(0.7)  # idle between requests is not head time
    # A third request that stalls mid-head is cut off again.
    writer.write(b"GET /v1/health HTTP/1.1\r\n")
    await writer.drain()
    assert await _read_all(reader, 5) == b""
    writer.close()
    assert len(upstream.seen) == 2
