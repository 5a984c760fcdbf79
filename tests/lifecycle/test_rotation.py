"""Rotation (issue 12, item 1): a successor with the same bounds, the old secret ended after the
overlap on every gateway of the store, self-rotation, and the CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Gateway, MakeGateway, Upstream
from tests.lifecycle.conftest import JWT_EXTRA, ROUTES, bearer, cli_list, make_jwt, serve_config, serving
from tests.lifecycle.test_management_api import call, mint
from tests.support import Running, cli_create, gateway_cli

ADMIN = make_jwt("w1", "admin")
POLL = 0.2
FAST = f"tokens: {{revocation_poll: {POLL}}}\n"
SAME = ("name", "scopes", "workspace", "project", "targets", "allowed_cidrs")


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def status(session: aiohttp.ClientSession, served: Running, token: str) -> int:
    async with session.get(served.url + "/v1/playlists", headers=bearer(token)) as resp:
        await resp.read()
        return resp.status


async def rotate(
    session: aiohttp.ClientSession, served: Running, token_id: str, credential: str, body: Any = None
) -> tuple[int, Any]:
    async with session.post(
        f"{served.url}/auth/tokens/{token_id}/rotate", headers=bearer(credential), json=body or {}
    ) as resp:
        return resp.status, await resp.json()


async def refused_by(session: aiohttp.ClientSession, served: Running, token: str, deadline: float) -> float:
    """Poll until the token is refused; the wall-clock time it was, or inf."""
    while time.time() < deadline:
        got = await status(session, served, token)
        if got == 401:
            return time.time()
        assert got == 200, got
        await asyncio.sleep(0.05)
    return float("inf")


@pytest.mark.slow
async def test_rotation_with_overlap_on_two_gateways(
    tmp_path: Path, upstream: Upstream, store_url: str
) -> None:
    config = serve_config(tmp_path, upstream.url, extra=FAST, store=store_url)
    old = cli_create(config, "--name", "deploy", "--workspace", "w1", "--project", "p1", "--scope", "write")
    async with serving(config, 2) as (a, b), aiohttp.ClientSession() as session:
        for served in (a, b):  # both have the old token cached
            assert await status(session, served, old["token"]) == 200
            assert await status(session, served, old["token"]) == 200
        asked = time.time()
        got, new = await rotate(session, a, old["id"], ADMIN, {"overlap": "4s"})
        assert got == 201, new
        assert {k: new[k] for k in SAME} == {k: old[k] for k in SAME}
        assert (new["rotated_from"], new["expires_at"]) == (old["id"], old["expires_at"])
        assert new["id"] != old["id"] and new["token"] != old["token"]
        async with session.get(b.url + "/auth/tokens", headers=bearer(ADMIN)) as resp:
            listed = {t["id"]: t for t in (await resp.json())["tokens"]}
        overlap_end = ts(listed[old["id"]]["expires_at"])  # as any gateway shows it
        assert asked + 3 - 0.01 <= overlap_end <= time.time() + 4
        # During the overlap both secrets work on both gateways.
        while time.time() < overlap_end - 0.5:
            for served in (a, b):
                for token in (old["token"], new["token"]):
                    assert await status(session, served, token) == 200
            await asyncio.sleep(0.2)
        # Then only the new one: at once where it was rotated, within two polls elsewhere.
        for served in (a, b):
            refused = await refused_by(session, served, old["token"], overlap_end + 5)
            # Two polls (the sweep, then the feed), plus slack for a loaded machine.
            assert overlap_end <= refused <= overlap_end + 2 * POLL + 1.5, (
                served.port,
                refused - overlap_end,
            )
            assert await status(session, served, new["token"]) == 200
        # Any gateway carries out the scheduled revocation: the old token lists as revoked.
        deadline = time.time() + 5
        while time.time() < deadline:
            revoked = {t["id"] for t in cli_list(config, "--status", "revoked")}
            if old["id"] in revoked:
                break
            await asyncio.sleep(0.1)
        assert old["id"] in revoked
        for served in (a, b):
            assert await status(session, served, old["token"]) == 401


@pytest.mark.slow
async def test_rotation_without_overlap_ends_the_old_secret_everywhere(
    tmp_path: Path, upstream: Upstream, store_url: str
) -> None:
    config = serve_config(tmp_path, upstream.url, extra=FAST, store=store_url)
    old = cli_create(config, "--name", "deploy", "--workspace", "w1", "--scope", "read")
    async with serving(config, 2) as (a, b), aiohttp.ClientSession() as session:
        for served in (a, b):
            assert await status(session, served, old["token"]) == 200
        got, new = await rotate(session, a, old["id"], ADMIN)
        assert got == 201, new
        rotated = time.time()
        assert await status(session, a, old["token"]) == 401
        refused = await refused_by(session, b, old["token"], rotated + 5)
        assert refused - rotated <= POLL + 1
        for served in (a, b):
            assert await status(session, served, new["token"]) == 200
    revoked = cli_list(config, "--status", "revoked")
    assert [t["id"] for t in revoked] == [old["id"]]


@pytest.mark.slow
async def test_self_rotation(tmp_path: Path, upstream: Upstream, store_url: str) -> None:
    config = serve_config(tmp_path, upstream.url, extra=FAST, store=store_url)
    ci = cli_create(config, "--name", "ci", "--workspace", "w1", "--project", "p1", "--scope", "read")
    async with serving(config) as (gw,), aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/auth/tokens/self/rotate", headers=bearer(ci["token"])) as resp:
            assert resp.status == 201
            new = await resp.json()
        assert (new["rotated_from"], new["scopes"], new["project"]) == (ci["id"], ["read"], "p1")
        assert await status(session, gw, ci["token"]) == 401
        assert await status(session, gw, new["token"]) == 200
        # The old secret cannot rotate again; a JWT has no "self" to rotate.
        for credential, code in ((ci["token"], 401), (ADMIN, 403)):
            async with session.post(gw.url + "/auth/tokens/self/rotate", headers=bearer(credential)) as resp:
                assert resp.status == code


# --- in process: bounds, refusals, audit ---------------------------------------------------------


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(routes=ROUTES, extra=JWT_EXTRA)


async def test_successor_never_outlives_the_old_token_or_the_rotating_token(gw: Gateway) -> None:
    manager = await mint(gw, ADMIN, name="mgr", scopes=["write", "tokens:manage"], expires_in="1h")
    proj = await mint(gw, manager["token"], name="proj", project="p", scopes=["read"], expires_in="30m")
    status_, new = await call(gw, "POST", f"/auth/tokens/{proj['id']}/rotate", manager["token"], {})
    assert status_ == 201
    assert new["expires_at"] == proj["expires_at"]
    # A longer-lived token rotated by a shorter-lived manager gets the manager's bound.
    long = await mint(gw, ADMIN, name="long", project="p", scopes=["read"], expires_in="30d")
    status_, new = await call(gw, "POST", f"/auth/tokens/{long['id']}/rotate", manager["token"], {})
    assert status_ == 201
    assert ts(new["expires_at"]) <= ts(manager["expires_at"]) < ts(long["expires_at"])
    assert new["scopes"] == ["read"]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        pytest.param({"overlap": "8d"}, 400, "overlap", id="beyond-max"),
        pytest.param({"overlap": -1}, 400, "overlap", id="negative"),
        pytest.param({"overlap": "soon"}, 400, "overlap", id="garbage"),
        pytest.param({"overlap": True}, 400, "overlap", id="bool"),
        pytest.param({"scopes": ["full"]}, 400, "scopes", id="no-widening-field"),
        pytest.param({"expires_in": "365d"}, 400, "expires_in", id="no-expiry-field"),
    ],
)
async def test_bad_rotation_bodies(gw: Gateway, body: dict[str, Any], code: int, field: str) -> None:
    victim = await mint(gw, ADMIN, name="victim")
    got, out = await call(gw, "POST", f"/auth/tokens/{victim['id']}/rotate", ADMIN, body)
    assert (got, out["error"]) == (code, "invalid_request")
    assert out["detail"].startswith(field)
    assert (await call(gw, "GET", "/v1/playlists", victim["token"]))[0] == 200


async def test_a_rotated_token_cannot_be_rotated_again(gw: Gateway) -> None:
    old = await mint(gw, ADMIN, name="old")
    got, new = await call(gw, "POST", f"/auth/tokens/{old['id']}/rotate", ADMIN, {"overlap": "1h"})
    assert got == 201
    got, out = await call(gw, "POST", f"/auth/tokens/{old['id']}/rotate", ADMIN, {"overlap": "1h"})
    assert (got, out["error"]) == (409, "conflict")
    # The successor holds the name; the old one is in its overlap, still working.
    assert (await call(gw, "GET", "/v1/playlists", old["token"]))[0] == 200
    got, again = await call(gw, "POST", f"/auth/tokens/{new['id']}/rotate", ADMIN, {})
    assert got == 201 and again["rotated_from"] == new["id"]
    got, _ = await call(gw, "POST", "/auth/tokens", ADMIN, {"name": "old"})
    assert got == 409  # the name belongs to the live successor


async def test_audit_links_the_two(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    old = await mint(gw, ADMIN, name="old")
    with caplog.at_level(logging.INFO, logger="scopegate.audit"):
        got, new = await call(gw, "POST", f"/auth/tokens/{old['id']}/rotate", ADMIN, {"overlap": 60})
    assert got == 201
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "scopegate.audit"]
    assert (line["event"], line["token_id"], line["rotated_from"]) == ("token.rotate", new["id"], old["id"])
    assert line["actor_kind"] == "jwt"
    assert old["token"] not in caplog.text and new["token"] not in caplog.text


def test_cli_rotate(tmp_path: Path) -> None:
    config = serve_config(tmp_path, "http://127.0.0.1:9")
    old = cli_create(config, "--name", "deploy", "--workspace", "w1", "--scope", "write")
    done = gateway_cli(config, "token", "rotate", old["id"], "--overlap", "1h", "--json")
    assert done.returncode == 0, done.stderr
    new = json.loads(done.stdout)
    assert (new["name"], new["scopes"], new["rotated_from"]) == ("deploy", ["write"], old["id"])
    listed = {t["id"]: t for t in cli_list(config)}
    assert set(listed) == {old["id"], new["id"]}
    assert abs(ts(listed[old["id"]]["expires_at"]) - (time.time() + 3600)) < 5
    again = gateway_cli(config, "token", "rotate", old["id"])
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr.strip() == (
        "scopegate token rotate: conflict: this token was already rotated; rotate its successor"
    )
    bad = gateway_cli(config, "token", "rotate", "tok_nope", "--overlap", "1h")
    assert bad.returncode == 1 and "not_found" in bad.stderr
