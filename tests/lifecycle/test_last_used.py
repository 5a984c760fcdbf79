"""last_used_at: written in batches, never for a refused request, flushed when serve stops."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Gateway, MakeGateway, Upstream
from tests.lifecycle.conftest import (
    JWT_EXTRA,
    ROUTES,
    bearer,
    cli_list,
    make_jwt,
    serve_config,
    serving,
    status_of,
)
from tests.support import cli_create, wait_exit

FLUSH = 0.5
ADMIN = make_jwt("w1", "admin")


@pytest.fixture
async def gw(make_gateway: MakeGateway, store_url: str) -> Gateway:
    """On both stores: SQLite and PostgreSQL."""
    return await make_gateway(
        routes=ROUTES, extra=JWT_EXTRA + f"tokens: {{last_used_flush: {FLUSH}}}\n", store=store_url
    )


async def mint(gw: Gateway, credential: str = ADMIN, **body: Any) -> dict[str, Any]:
    async with gw.client.post("/auth/tokens", json=body, headers=bearer(credential)) as resp:
        out: dict[str, Any] = await resp.json()
        assert resp.status == 201, out
        return out


async def listed(gw: Gateway) -> dict[str, dict[str, Any]]:
    async with gw.client.get("/auth/tokens?status=all", headers=bearer(ADMIN)) as resp:
        assert resp.status == 200
        return {t["name"]: t for t in (await resp.json())["tokens"]}


async def test_many_requests_few_writes(gw: Gateway) -> None:
    token = (await mint(gw, name="busy"))["token"]
    validator = gw.runtime.validator
    writes_before = validator.store_writes
    started = time.monotonic()

    async def worker(n: int) -> None:
        for _ in range(n):
            async with gw.client.get("/v1/playlists", headers=bearer(token)) as resp:
                await resp.read()
                assert resp.status == 200

    await asyncio.gather(*(worker(20) for _ in range(10)))  # 200 requests
    elapsed = time.monotonic() - started
    writes = validator.store_writes - writes_before
    assert writes <= elapsed / FLUSH + 2, (writes, elapsed)

    # The batch lands within about a second.
    deadline = time.monotonic() + 1.5
    while (await listed(gw))["busy"]["last_used_at"] is None:
        assert time.monotonic() < deadline, "last_used_at not written within ~1 s"
        await asyncio.sleep(0.05)
    assert validator.store_writes - writes_before <= (time.monotonic() - started) / FLUSH + 2


async def test_refused_requests_never_set_last_used(gw: Gateway, upstream: Upstream) -> None:
    reader = await mint(gw, name="reader")
    agent = await mint(gw, name="agent", scopes=["agency"], targets=[{"kind": "playlist", "id": "1"}])
    refusals = [
        ("POST", "/v1/playlists", reader, 403),  # read token, write needed
        ("POST", "/v1/devices/d/reboot", reader, 403),  # full needed
        ("POST", "/v1/agents/register", reader, 403),  # nodes:create needed
        ("GET", "/v1/admin/x", reader, 401),  # jwt_only
        ("GET", "/v1/workspaces/w1/playlists/1", reader, 403),  # agency route
        ("POST", "/auth/tokens", reader, 403),  # management without tokens:manage
        ("GET", "/auth/tokens", reader, 403),
        ("GET", "/v1/playlists", agent, 403),  # agency token on a public route
        ("GET", "/v1/workspaces/w1/playlists/2", agent, 403),  # target not on the allowlist
        ("GET", "/v1/workspaces/w2/playlists/1", agent, 403),  # another workspace
    ]
    async with aiohttp.ClientSession() as session:
        for method, path, who, expected in refusals:
            url = gw.url.rstrip("/") + path
            body = {"name": "child", "project": "p"} if method == "POST" else None
            assert await status_of(session, url, who["token"], method, body) == expected, path
    assert upstream.seen == []
    await asyncio.sleep(FLUSH * 3)
    tokens = await listed(gw)
    assert tokens["reader"]["last_used_at"] is None
    assert tokens["agent"]["last_used_at"] is None


async def test_allowed_management_call_sets_last_used(gw: Gateway) -> None:
    manager = await mint(gw, name="manager", scopes=["read", "tokens:manage"])
    await mint(gw, manager["token"], name="child", project="p")
    await asyncio.sleep(FLUSH * 3)
    assert (await listed(gw))["manager"]["last_used_at"] is not None


@pytest.mark.slow
async def test_sigterm_flushes_pending_last_used(tmp_path: Path, upstream: Upstream, store_url: str) -> None:
    config = serve_config(tmp_path, upstream.url, extra="tokens: {last_used_flush: 60}\n", store=store_url)
    created = cli_create(config, "--name", "flushed", "--workspace", "w1")
    async with serving(config) as (served,), aiohttp.ClientSession() as session:
        assert await status_of(session, served.url + "/v1/playlists", created["token"]) == 200
        # Batched: not written per request (the next flush is a minute away).
        await asyncio.sleep(0.3)
        (before,) = await asyncio.to_thread(cli_list, config)
        assert before["last_used_at"] is None
        used_at = time.time()
        served.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(served.proc, 10) == 0, served.log.read_text()
    (after,) = await asyncio.to_thread(cli_list, config)
    assert after["id"] == created["id"]
    assert after["last_used_at"] is not None
    from datetime import datetime

    at = datetime.fromisoformat(after["last_used_at"].replace("Z", "+00:00")).timestamp()
    assert abs(at - used_at) < 5
