"""Network binding (`allowed_cidrs`) and `not_before` (issue 12, item 2)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.auth.principal import Principal
from gateway.authz import network_gate
from gateway.errors import TargetDenied
from tests.conftest import Gateway, MakeGateway, Upstream
from tests.lifecycle.conftest import JWT_EXTRA, ROUTES, bearer, cli_list, make_jwt, serve_config, serving
from tests.lifecycle.test_management_api import call, mint
from tests.support import Running, cli_create

ADMIN = make_jwt("w1", "admin")


def verbose(config: Path, extra: str = "") -> Path:
    """Decision lines on (level info), plus `extra` config lines."""
    config.write_text(config.read_text().replace("level: warning", "level: info") + extra)
    return config


async def get(
    session: aiohttp.ClientSession,
    served: Running,
    token: str,
    xff: str | None = None,
    path: str = "/v1/playlists",
) -> tuple[int, Any]:
    headers = bearer(token)
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    async with session.get(served.url + path, headers=headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text.startswith("{") else text


def decision_lines(served: Running) -> list[dict[str, Any]]:
    return [json.loads(line) for line in served.log_lines() if line.startswith('{"request_id"')]


@pytest.mark.slow
async def test_cidr_binding_behind_a_trusted_proxy(
    tmp_path: Path, upstream: Upstream, store_url: str
) -> None:
    config = verbose(
        serve_config(tmp_path, upstream.url, store=store_url), 'trusted_proxies: ["127.0.0.1/32"]\n'
    )
    local = cli_create(config, "--name", "local", "--workspace", "w1", "--allow-cidr", "127.0.0.0/8")
    office = cli_create(
        config, "--name", "office", "--workspace", "w1", "--allow-cidr", "10.0.0.0/8",
        "--allow-cidr", "2001:db8::/32",
    )  # fmt: skip
    assert office["allowed_cidrs"] == ["10.0.0.0/8", "2001:db8::/32"]
    async with serving(config) as (gw,), aiohttp.ClientSession() as session:
        cases = [
            (local, None, 200),
            (local, "10.1.2.3", 403),  # behind the trusted proxy, the client is 10.1.2.3
            (office, None, 403),
            (office, "10.1.2.3", 200),
            (office, "192.0.2.1", 403),
            (office, "2001:db8::5", 200),
            (office, "2001:db9::1", 403),
            (office, "10.1.2.3, 192.0.2.9", 403),  # the nearest untrusted hop decides
            (office, "192.0.2.9, 10.1.2.3", 200),
            (office, "not-an-address", 403),
        ]
        for token, xff, expected in cases:
            got, body = await get(session, gw, token["token"], xff)
            assert got == expected, (token["name"], xff, body)
            if got == 403:
                assert body["error"] == "target_denied"
        # The refusal names the token in the decision line.
        await asyncio.sleep(0.2)
        refusals = [d for d in decision_lines(gw) if d["reason"] == "target_denied"]
        assert refusals and all(d["token_id"] in (local["id"], office["id"]) for d in refusals)
        assert {d["token_id"] for d in refusals} == {local["id"], office["id"]}
        # A bound manager token manages nothing from elsewhere either.
        async with session.post(
            gw.url + "/auth/tokens",
            headers=bearer(ADMIN),
            json={"name": "mgr", "scopes": ["read", "tokens:manage"], "allowed_cidrs": ["10.0.0.0/8"]},
        ) as resp:
            manager = await resp.json()
        got, body = await get(session, gw, manager["token"], None, "/auth/tokens")
        assert (got, body["error"]) == (403, "target_denied")
        got, body = await get(session, gw, manager["token"], "10.9.9.9", "/auth/tokens")
        assert got == 200
    listed = {t["name"]: t for t in cli_list(config)}
    assert listed["office"]["allowed_cidrs"] == ["10.0.0.0/8", "2001:db8::/32"]


@pytest.mark.slow
async def test_forwarded_for_from_an_untrusted_peer_is_not_believed(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = verbose(serve_config(tmp_path, upstream.url))
    office = cli_create(config, "--name", "office", "--workspace", "w1", "--allow-cidr", "10.0.0.0/8")
    local = cli_create(config, "--name", "local", "--workspace", "w1", "--allow-cidr", "127.0.0.1/32")
    async with serving(config) as (gw,), aiohttp.ClientSession() as session:
        got, body = await get(session, gw, office["token"], "10.1.2.3")
        assert (got, body["error"]) == (403, "target_denied")
        assert (await get(session, gw, local["token"], "10.1.2.3"))[0] == 200


@pytest.mark.slow
async def test_not_before(tmp_path: Path, upstream: Upstream) -> None:
    config = serve_config(tmp_path, upstream.url)
    start = int(time.time()) + 20  # the CLI runs twice and serve starts before then, even on a busy machine
    later = cli_create(config, "--name", "later", "--workspace", "w1", "--not-before", str(start))
    assert later["not_before"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    (listed,) = cli_list(config)
    assert (listed["not_before"], listed["status"]) == (later["not_before"], "not yet valid")
    async with serving(config) as (gw,), aiohttp.ClientSession() as session:
        while True:
            sent = time.time()
            got, body = await get(session, gw, later["token"])
            if got == 200:
                assert sent >= start - 0.05  # never admitted before not_before
                break
            assert (got, body["error"]) == (401, "invalid_token")
            assert time.time() < start + 3, "still refused well after not_before"
            await asyncio.sleep(0.1)
    (listed,) = cli_list(config)
    assert listed["status"] == "active"


# --- in process ----------------------------------------------------------------------------------


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(routes=ROUTES, extra=JWT_EXTRA)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"allowed_cidrs": []}, "allowed_cidrs", id="empty"),
        pytest.param({"allowed_cidrs": "10.0.0.0/8"}, "allowed_cidrs", id="not-a-list"),
        pytest.param({"allowed_cidrs": ["10.0.0.0/33"]}, "allowed_cidrs[0]", id="bad-prefix"),
        pytest.param({"allowed_cidrs": ["10.0.0.0/8", "example.com"]}, "allowed_cidrs[1]", id="name"),
        pytest.param({"allowed_cidrs": [7]}, "allowed_cidrs[0]", id="number"),
        pytest.param({"allowed_cidrs": ["10.0.0.0/8"] * 101}, "allowed_cidrs", id="too-many"),
        pytest.param({"not_before": "tomorrow"}, "not_before", id="nbf-garbage"),
        pytest.param({"not_before": "2030-01-01T00:00:00"}, "not_before", id="nbf-no-zone"),
        pytest.param({"not_before": True}, "not_before", id="nbf-bool"),
        pytest.param({"not_before": -5}, "not_before", id="nbf-negative"),
        pytest.param({"not_before": 4102444800, "expires_in": "1d"}, "not_before", id="nbf-after-expiry"),
    ],
)
async def test_bad_binding_fields_are_400(gw: Gateway, body: dict[str, Any], field: str) -> None:
    got, out = await call(gw, "POST", "/auth/tokens", ADMIN, {"name": "t", **body})
    assert (got, out["error"]) == (400, "invalid_request"), out
    assert out["detail"].startswith(field), out


async def test_binding_is_listed_and_normalised(gw: Gateway) -> None:
    created = await mint(
        gw, ADMIN, name="t", allowed_cidrs=["10.1.2.3/8", "2001:DB8::1/32", "10.0.0.0/8"],
        not_before="2026-01-01T00:00:00.7Z",
    )  # fmt: skip
    assert created["allowed_cidrs"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert created["not_before"] == "2026-01-01T00:00:00Z"
    _, out = await call(gw, "GET", "/auth/tokens", ADMIN)
    (listed,) = out["tokens"]
    assert (listed["allowed_cidrs"], listed["not_before"]) == (
        created["allowed_cidrs"],
        created["not_before"],
    )


def bound(*cidrs: str) -> Principal:
    return Principal(
        kind="token", subject="s", scopes=frozenset({"read"}),
        allowed_cidrs=tuple(ipaddress.ip_network(c) for c in cidrs),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("client", "allowed"),
    [
        ("10.0.0.1", True),
        ("::ffff:10.0.0.1", True),  # a dual-stack listener's view of an IPv4 client
        ("11.0.0.1", False),
        ("2001:db8::1", True),
        ("fe80::1%eth0", False),
        (None, False),
        ("", False),
        ("10.0.0.1\x00", False),
    ],
)
def test_network_gate(client: str | None, allowed: bool) -> None:
    principal = bound("10.0.0.0/8", "2001:db8::/32")
    if allowed:
        network_gate(principal, client)
    else:
        with pytest.raises(TargetDenied):
            network_gate(principal, client)
    network_gate(bound(), client)  # an unbound token is allowed from anywhere


async def test_forward_auth_applies_the_binding(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(routes=ROUTES, extra=JWT_EXTRA + 'trusted_proxies: ["127.0.0.1/32"]\n')
    office = await mint(gw, ADMIN, name="office", allowed_cidrs=["10.0.0.0/8"])
    asked = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1/playlists"}
    for client, expected in (("10.2.3.4", 200), ("192.0.2.7", 403)):
        headers = {**asked, **bearer(office["token"]), "X-Forwarded-For": client}
        async with gw.client.get("/auth/verify", headers=headers) as resp:
            assert resp.status == expected, client
            if expected == 200:
                assert resp.headers["X-Auth-Token-Id"] == office["id"]
            else:
                assert (await resp.json())["error"] == "target_denied"
