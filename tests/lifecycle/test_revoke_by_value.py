"""Revoke by value (issue 12, item 3): whoever holds a leaked secret may kill it, learning nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.tokens.secret import generate
from gateway.web.tokens_api import BY_VALUE_PER_MINUTE
from tests.conftest import Gateway, MakeGateway, Upstream
from tests.lifecycle.conftest import JWT_EXTRA, ROUTES, bearer, cli_list, make_jwt, serve_config, serving
from tests.lifecycle.test_management_api import call, mint
from tests.support import Running, cli_create

ADMIN = make_jwt("w1", "admin")
POLL = 0.2
# The token format the README documents for secret scanners.
TOKEN_RE = re.compile(r"\bst_[0-9A-Za-z]{38}\b")


async def by_value(
    session: aiohttp.ClientSession, served: Running, secrets: list[str]
) -> tuple[int, dict[str, Any], set[str]]:
    async with session.post(served.url + "/auth/tokens/revoke", json={"tokens": secrets}) as resp:
        body = await resp.json()
        return resp.status, body, {h.lower() for h in resp.headers} - {"date", "x-request-id"}


async def playlists(session: aiohttp.ClientSession, served: Running, token: str) -> int:
    async with session.get(served.url + "/v1/playlists", headers=bearer(token)) as resp:
        await resp.read()
        return resp.status


@pytest.mark.slow
async def test_live_unknown_and_revoked_secrets_get_identical_answers(
    tmp_path: Path, upstream: Upstream, store_url: str
) -> None:
    config = serve_config(
        tmp_path, upstream.url, extra=f"tokens: {{revocation_poll: {POLL}}}\n", store=store_url
    )
    leaked = cli_create(config, "--name", "leaked", "--workspace", "w1", "--scope", "write")
    bystander = cli_create(config, "--name", "bystander", "--workspace", "w1")
    assert TOKEN_RE.fullmatch(leaked["token"])
    async with serving(config, 2) as (a, b), aiohttp.ClientSession() as session:
        for served in (a, b):
            assert await playlists(session, served, leaked["token"]) == 200
        answers = [
            await by_value(session, a, [leaked["token"]]),  # live
            await by_value(session, a, [generate("st_")]),  # well-formed, unknown
            await by_value(session, a, [leaked["token"]]),  # already revoked
            await by_value(session, b, ["not a token at all", "xx_" + leaked["token"][3:]]),
        ]
        revoked_at = time.monotonic()
        assert all(answer == (200, {"revoked": "ok"}, answers[0][2]) for answer in answers), answers
        assert await playlists(session, a, leaked["token"]) == 401
        while await playlists(session, b, leaked["token"]) != 401:
            assert time.monotonic() - revoked_at < POLL + 2, "the other gateway still accepts it"
            await asyncio.sleep(0.05)
        for served in (a, b):
            assert await playlists(session, served, bystander["token"]) == 200
    assert [t["id"] for t in cli_list(config, "--status", "revoked")] == [leaked["id"]]


# --- in process ----------------------------------------------------------------------------------


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(routes=ROUTES, extra=JWT_EXTRA)


async def test_anyone_may_revoke_and_it_is_audited_by_value(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    one = await mint(gw, ADMIN, name="one")
    two = await mint(gw, ADMIN, name="two", project="p")
    with caplog.at_level(logging.INFO, logger="scopegate.audit"):
        # No credential at all; several secrets, one of them twice and padded.
        status, out = await call(
            gw,
            "POST",
            "/auth/tokens/revoke",
            None,
            {"tokens": [one["token"], f" {two['token']} ", one["token"]]},
        )
    assert (status, out) == (200, {"revoked": "ok"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "scopegate.audit"]
    assert sorted(line["token_id"] for line in lines) == sorted([one["id"], two["id"]])
    assert all(
        (line["event"], line["by"], line["actor_kind"]) == ("token.revoke", "value", "anonymous")
        for line in lines
    )
    assert one["token"] not in caplog.text and two["token"] not in caplog.text
    for token in (one, two):
        assert (await call(gw, "GET", "/v1/playlists", token["token"]))[0] == 401


async def test_rate_limited_per_client(gw: Gateway) -> None:
    live = await mint(gw, ADMIN, name="live")
    for _ in range(BY_VALUE_PER_MINUTE):
        status, _ = await call(gw, "POST", "/auth/tokens/revoke", None, {"tokens": [generate("st_")]})
        assert status == 200
    status, out = await call(gw, "POST", "/auth/tokens/revoke", None, {"tokens": [live["token"]]})
    assert (status, out["error"]) == (429, "rate_limited")
    assert (await call(gw, "GET", "/v1/playlists", live["token"]))[0] == 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-tokens"),
        pytest.param({"tokens": []}, id="empty"),
        pytest.param({"tokens": "st_x"}, id="not-a-list"),
        pytest.param({"tokens": [7]}, id="not-strings"),
        pytest.param({"tokens": ["st_x"] * 101}, id="too-many"),
    ],
)
async def test_malformed_requests_are_400(gw: Gateway, body: dict[str, Any]) -> None:
    status, out = await call(gw, "POST", "/auth/tokens/revoke", None, body)
    assert (status, out["error"]) == (400, "invalid_request")
    assert out["detail"].startswith("tokens")


async def test_only_post(gw: Gateway) -> None:
    for method in ("GET", "DELETE", "PUT"):
        status, out = await call(gw, method, "/auth/tokens/revoke", ADMIN)
        assert (status, out["error"]) == (405, "method_not_allowed"), method


def test_the_readme_documents_the_format_scanners_need() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert TOKEN_RE.pattern in readme
    for _ in range(200):
        assert TOKEN_RE.fullmatch(generate("st_"))
    token = generate("st_")
    assert not TOKEN_RE.search(token[:-1]) and not TOKEN_RE.search(token + "x")
