"""Section 11: SIGHUP and file-watch reloads of the surface, and the SIGTERM drain, on `serve` processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Upstream
from tests.ops.test_metrics_logs import (
    ROUTES,
    fetch,
    labels,
    poll_until,
    samples,
    scrape,
    serving,
    write_atomically,
)
from tests.support import wait_exit

ADDED = (
    ROUTES
    + """  - id: added
    match: {path: /v2/added}
    class: anonymous
"""
)

# Each breaks on the line after, after a valid route `added` that must not be served.
BROKEN = {
    "unknown-key": (ADDED + "    colour: blue\n", "unknown key 'colour'"),
    "yaml-syntax": (ADDED + "   bad: indent\n", "YAML:"),
}
BROKEN_LINE = ADDED.count("\n") + 1


async def status_of(url: str) -> int:
    with contextlib.suppress(aiohttp.ClientError):
        return (await fetch("GET", url))[0]
    return -1


async def reloads(gw_admin_text: str) -> dict[str, float]:
    found = samples(gw_admin_text, "scopegate_reloads_total")
    return {dict(k)["result"]: v for k, v in found.items()}


async def test_sighup_reload_serves_new_route(tmp_path: Path, upstream: Upstream) -> None:
    async with serving(tmp_path, upstream.url) as gw:
        assert await status_of(gw.url + "/v2/added") == 404
        write_atomically(gw.routes, ADDED)
        gw.proc.send_signal(signal.SIGHUP)

        async def added() -> bool:
            return await status_of(gw.url + "/v2/added") == 200

        assert await poll_until(added, 5.0), gw.log_text()
        assert upstream.last.raw_path == "/v2/added"
        assert await status_of(gw.url + "/v1/health") == 200
        counts = await reloads(await scrape(gw))
        assert counts["ok"] >= 1 and counts["error"] == 0
        assert gw.proc.poll() is None
        assert '"message":"surface reloaded: 4 routes"' in gw.log_text()


@pytest.mark.parametrize("kind", list(BROKEN))
async def test_sighup_broken_surface_keeps_old_routes(tmp_path: Path, upstream: Upstream, kind: str) -> None:
    text, message = BROKEN[kind]
    async with serving(tmp_path, upstream.url) as gw:
        assert samples(await scrape(gw), "scopegate_reloads_total")[labels(result="error")] == 0
        write_atomically(gw.routes, text)
        gw.proc.send_signal(signal.SIGHUP)

        async def counted() -> bool:
            return (await reloads(await scrape(gw)))["error"] >= 1

        assert await poll_until(counted, 5.0), gw.log_text()
        assert await reloads(await scrape(gw)) == {"ok": 0.0, "error": 1.0}
        # The old surface keeps serving; the new file's valid route is not half-applied.
        assert await status_of(gw.url + "/v1/health") == 200
        assert await status_of(gw.url + "/v1/playlists") == 401
        assert await status_of(gw.url + "/v2/added") == 404
        errors = [
            json.loads(line)["message"]
            for line in gw.log_text().splitlines()
            if line.startswith("{") and "reload" in line
        ]
        expected = f"{gw.routes}:{BROKEN_LINE}: "
        assert any(expected in m and message in m for m in errors), errors
        ready = await fetch("GET", gw.admin_url + "/readyz")
        assert ready[0] == 200


async def test_surface_file_change_without_signal_is_picked_up(tmp_path: Path, upstream: Upstream) -> None:
    async with serving(tmp_path, upstream.url) as gw:
        assert await status_of(gw.url + "/v2/added") == 404
        changed = time.monotonic()
        write_atomically(gw.routes, ADDED)

        async def added() -> bool:
            return await status_of(gw.url + "/v2/added") == 200

        assert await poll_until(added, 5.0, 0.1), gw.log_text()
        assert time.monotonic() - changed < 5.0
        assert (await reloads(await scrape(gw)))["ok"] == 1


async def slow_body(
    chunks: int, size: int, pause: float, at: int, fire: asyncio.Event
) -> AsyncIterator[bytes]:
    for i in range(chunks):
        yield b"u" * size
        if i == at:
            fire.set()
        await asyncio.sleep(pause)


async def connection_refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def test_sigterm_stops_accepting_and_drains_in_flight_response(
    tmp_path: Path, upstream: Upstream
) -> None:
    slow = ROUTES + "  - id: slow\n    match: {prefix: /slow}\n    class: anonymous\n"
    async with serving(tmp_path, upstream.url, routes=slow) as gw, aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.get(gw.url + "/slow?s=1.5"))

        async def arrived() -> bool:
            return bool(upstream.seen)

        assert await poll_until(arrived, 3.0)
        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)

        async def refused() -> bool:
            return await connection_refused(gw.port)

        # Draining: the listener is closed at once, while the slow response is still in flight.
        assert await poll_until(refused, 1.0), gw.log_text()
        assert not request.done()
        resp = await asyncio.wait_for(request, 8)
        assert resp.status == 200
        assert json.loads(await resp.read())["path"] == "/slow?s=1.5"
        resp.release()
        assert await wait_exit(gw.proc, 8) == 0, gw.log_text()
        assert time.monotonic() - sent < 5
        assert await connection_refused(gw.port)
        assert await connection_refused(gw.admin)


async def test_sigterm_mid_upload_completes_then_exits(tmp_path: Path, upstream: Upstream) -> None:
    chunks, size = 10, 32 * 1024
    async with (
        serving(tmp_path, upstream.url, drain_timeout="3") as gw,
        aiohttp.ClientSession() as session,
    ):
        fire = asyncio.Event()
        upload = asyncio.ensure_future(
            session.post(gw.url + "/open/upload", data=slow_body(chunks, size, 0.2, 2, fire))
        )
        await asyncio.wait_for(fire.wait(), 5)
        assert not upload.done()
        assert not any(s.complete for s in upstream.seen)  # the upstream is still reading the body
        gw.proc.send_signal(signal.SIGTERM)

        async def refused() -> bool:
            return await connection_refused(gw.port)

        assert await poll_until(refused, 1.0), gw.log_text()
        assert not upload.done(), "the upload ended before the drain began"

        resp = await asyncio.wait_for(upload, 8)
        assert resp.status == 200, await resp.text()
        assert json.loads(await resp.read())["body_len"] == chunks * size
        resp.release()
        assert len(upstream.seen) == 1
        assert upstream.last.method == "POST" and upstream.last.body_len == chunks * size
        assert await wait_exit(gw.proc, 8) == 0, gw.log_text()
        assert await connection_refused(gw.port)
