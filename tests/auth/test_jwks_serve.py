"""JWKS rotation and outage against `scopegate serve`, with a real key-set server on loopback.

Small `jwks_cache`, `jwks_refetch_interval` and `jwks_max_stale` values keep these in seconds.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import EXAMPLE_ROUTES, Upstream
from tests.core.test_fastdoor import exchange, req
from tests.support import Running, start_serve, stop_async

from .conftest import Keys
from .jwtkit import AUD, ISS, Clock, JwksServer, Signer

CACHE = 2.0
REFETCH = 1.0
MAX_STALE = 3.0
DEADLINE = 30.0  # generous: the machine is shared; a fixed bound is asserted separately
PATH = "/v1/playlists/7"


def _config(folder: Path, upstream: Upstream, jwks: JwksServer, admin: int) -> Path:
    (folder / "routes.yaml").write_text(EXAMPLE_ROUTES)
    config = folder / "config.yaml"
    config.write_text(
        f"""listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: {admin}}}
surface: routes.yaml
upstreams:
  default: {{url: "{upstream.url}", connect_timeout: 2, timeout: 5}}
store: sqlite:///tokens.db
log: {{level: warning}}
drain_timeout: 2
jwt:
  algorithms: [RS256]
  jwks_url: "{jwks.url}"
  issuer: "{ISS}"
  audience: "{AUD}"
  jwks_cache: {CACHE}
  jwks_refetch_interval: {REFETCH}
  jwks_max_stale: {MAX_STALE}
"""
    )
    return config


@pytest.fixture
async def served(tmp_path: Path, upstream: Upstream, jwks: JwksServer) -> AsyncIterator[tuple[Running, int]]:
    config = _config(tmp_path, upstream, jwks, 0)
    gw = await start_serve(config)
    proc = gw.proc
    try:
        assert gw.admin is not None
        yield gw, gw.admin
    finally:
        await stop_async(proc, 10)


def _signer(key: object, kid: str) -> Signer:
    return Signer("RS256", key, kid, Clock(time.time()))


async def _get(session: aiohttp.ClientSession, gw: Running, token: str) -> tuple[int, str | None]:
    async with session.get(gw.url + PATH, headers={"Authorization": f"Bearer {token}"}) as resp:
        body = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, body.get("error")


async def _jwks_age(session: aiohttp.ClientSession, admin: int) -> float:
    async with session.get(f"http://127.0.0.1:{admin}/metrics") as resp:
        text = await resp.text()
    found = re.search(r"^scopegate_jwks_age_seconds(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert found, "scopegate_jwks_age_seconds missing from /metrics"
    return float(found.group(1))


async def test_withdrawn_key_is_refused_while_in_use(
    served: tuple[Running, int], jwks: JwksServer, keys: Keys
) -> None:
    gw, _ = served
    jwks.publish(keys.rsa, "a", "RS256")
    token = _signer(keys.rsa, "a").token(exp=int(time.time()) + 600)
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            assert await _get(session, gw, token) == (200, None)
            await asyncio.sleep(1)
        # Rotate: the key set holds only B now. Keep using the JWT signed with A every second.
        jwks.keys.clear()
        jwks.publish(keys.rsa_other, "b", "RS256")
        rotated = time.monotonic()
        while True:
            status, code = await _get(session, gw, token)
            if status != 200:
                break
            assert time.monotonic() - rotated < DEADLINE, "a withdrawn key kept working"
            await asyncio.sleep(1)
        took = time.monotonic() - rotated
        assert (status, code) == (401, "invalid_token")
        # Bounded by the key set's cache, plus the one-second step and a shared machine's slack.
        assert took <= CACHE + REFETCH + 1 + 5, took
        # It stays refused, and a JWT signed with B works.
        assert await _get(session, gw, token) == (401, "invalid_token")
        fresh = _signer(keys.rsa_other, "b").token(exp=int(time.time()) + 600)
        assert await _get(session, gw, fresh) == (200, None)


async def test_jwks_outage_is_bounded_by_max_stale(
    served: tuple[Running, int], jwks: JwksServer, keys: Keys
) -> None:
    gw, admin = served
    jwks.publish(keys.rsa, "a", "RS256")
    token = _signer(keys.rsa, "a").token(exp=int(time.time()) + 600)
    async with aiohttp.ClientSession() as session:
        assert await _jwks_age(session, admin) == float("inf")
        assert await _get(session, gw, token) == (200, None)
        assert await _jwks_age(session, admin) < CACHE + 1
        jwks.status = 503
        down = time.monotonic()
        while True:
            status, code = await _get(session, gw, token)
            if status != 200:
                break
            assert time.monotonic() - down < DEADLINE, "the last good key set served for ever"
            await asyncio.sleep(0.25)
        assert (status, code) == (503, "jwks_unavailable")
        assert time.monotonic() - down <= MAX_STALE + 5
        assert await _jwks_age(session, admin) >= MAX_STALE
        # Back by itself once the endpoint answers again.
        jwks.status = 200
        while (await _get(session, gw, token))[0] != 200:
            assert time.monotonic() - down < 2 * DEADLINE, "did not recover"
            await asyncio.sleep(0.25)
        assert await _jwks_age(session, admin) < MAX_STALE


def _verify(token: str | None, *, uri: str = PATH, close: bool = False) -> bytes:
    """Forward-auth's question as nginx asks it (deploy/nginx/forward-auth.conf)."""
    credential = () if token is None else (f"Authorization: Bearer {token}",)
    return req(
        "GET", "/auth/verify", f"X-Original-URI: {uri}", "X-Original-Method: GET", *credential, close=close
    )


def _answers(raw: bytes) -> list[tuple[int, str]]:
    """Each response's status and X-Auth-Type, in order (the answers to /auth/verify)."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        raw = raw[int(fields.get(b"Content-Length", b"0")) :]
        out.append((status, fields.get(b"X-Auth-Type", b"").decode()))
    return out


async def test_forward_auth_that_waits_for_the_key_set_keeps_its_place(
    served: tuple[Running, int], jwks: JwksServer, keys: Keys
) -> None:
    # The first JWT fetches the key set (nothing is fetched at start), so its answer waits; the
    # questions pipelined behind it are answered after it, in order. (A fast door that answered
    # forward-auth without a task failed here: aiohttp's client timeout needs a current task.)
    gw, admin = served
    jwks.publish(keys.rsa, "a", "RS256")
    token = _signer(keys.rsa, "a").token(exp=int(time.time()) + 600)
    async with aiohttp.ClientSession() as session:
        assert await _jwks_age(session, admin) == float("inf")
    asked = (
        _verify(token)
        + _verify(None, uri="/v1/health")
        + _verify(token)
        + _verify("st_" + "A" * 38, close=True)
    )
    raw = await exchange(gw.port, asked, timeout=DEADLINE)
    assert _answers(raw) == [(200, "jwt"), (200, "anonymous"), (200, "jwt"), (401, "")]
