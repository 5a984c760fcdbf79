"""Idle expiry (issue 12, item 4): unused for `tokens.idle_ttl` -> 401; an active token never looks
idle, even when it is used on another gateway and its last use is still in a batch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.lifecycle.conftest import bearer, cli_list, make_jwt, serve_config, serving
from tests.support import Running, gateway_cli

ADMIN = make_jwt("w1", "admin")

IDLE = 3.0
CONFIG = f"tokens: {{revocation_poll: 0.2, last_used_flush: 0.5, idle_ttl: {IDLE}}}\n"


async def use(session: aiohttp.ClientSession, served: Running, token: str) -> int:
    async with session.get(served.url + "/v1/playlists", headers=bearer(token)) as resp:
        await resp.read()
        return resp.status


async def mint(session: aiohttp.ClientSession, served: Running, name: str) -> dict[str, Any]:
    async with session.post(served.url + "/auth/tokens", headers=bearer(ADMIN), json={"name": name}) as resp:
        assert resp.status == 201
        created: dict[str, Any] = await resp.json()
        return created


@pytest.mark.slow
async def test_idle_expiry_across_two_gateways(tmp_path: Path, upstream: object, store_url: str) -> None:
    config = serve_config(tmp_path, upstream.url, extra=CONFIG, store=store_url)  # type: ignore[attr-defined]
    async with serving(config, 2) as (a, b), aiohttp.ClientSession() as session:
        busy, idle = [await mint(session, a, name) for name in ("busy", "idle")]
        assert await use(session, b, busy["token"]) == 200  # b caches it with "last used now"
        assert await use(session, b, idle["token"]) == 200
        # Used only on a, for longer than idle_ttl: b's cached view of it goes stale.
        started = time.monotonic()
        while time.monotonic() - started < IDLE + 1.5:
            assert await use(session, a, busy["token"]) == 200
            await asyncio.sleep(0.3)
        # b must not call it idle: it asks the store, which a's batches keep current.
        assert await use(session, b, busy["token"]) == 200
        # The other one was not used for longer than idle_ttl: refused on both.
        for served in (a, b):
            async with session.get(served.url + "/v1/playlists", headers=bearer(idle["token"])) as resp:
                body = await resp.json()
                assert (resp.status, body["error"]) == (401, "invalid_token")
        assert await use(session, a, busy["token"]) == 200
        await asyncio.sleep(0.8)  # the last batch of busy's uses reaches the store
        async with session.get(a.url + "/auth/tokens", headers=bearer(ADMIN)) as resp:
            listed = {t["name"]: t["status"] for t in (await resp.json())["tokens"]}
        assert listed == {"busy": "active", "idle": "expired (idle)"}
    statuses = {t["name"]: t["status"] for t in cli_list(config, "--status", "all")}
    assert statuses["idle"] == "expired (idle)"


def test_idle_ttl_must_exceed_two_flushes(tmp_path: Path) -> None:
    config = serve_config(
        tmp_path, "http://127.0.0.1:9", extra="tokens: {last_used_flush: 5, idle_ttl: 10}\n"
    )
    done = gateway_cli(config, "check")
    assert done.returncode == 1
    line = [x for x in done.stderr.splitlines() if "idle_ttl" in x]
    assert line and line[0].startswith(f"{config}:") and "must exceed 2 x tokens.last_used_flush" in line[0]
