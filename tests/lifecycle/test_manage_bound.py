"""Management is bounded by what the caller could mint (issue 8, items 3 and 5; issue 9, items 5, 6).

End to end against `scopegate serve` for the issue's two reproductions, in process for the rest.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway, MakeGateway, Upstream
from tests.lifecycle.conftest import JWT_EXTRA, ROUTES, bearer, cli_list, make_jwt, serve_config, serving
from tests.lifecycle.test_management_api import call, mint
from tests.support import cli_create

ADMIN = make_jwt("w1", "admin")
MEMBER = make_jwt("w1", "member")
ROLELESS = make_jwt("w1", "ghost")  # a role jwt.roles does not name: it holds nothing
NO_ROLE = make_jwt("w1", None)


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def answer(
    session: aiohttp.ClientSession, method: str, url: str, credential: str, body: Any = None
) -> tuple[int, Any]:
    async with session.request(method, url, headers=bearer(credential), json=body) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


# --- the two reproductions, against `scopegate serve` ---------------------------------


@pytest.mark.slow
async def test_roleless_jwt_neither_lists_nor_revokes(
    tmp_path: Path, upstream: Upstream, store_url: str
) -> None:
    config = serve_config(tmp_path, upstream.url, store=store_url)
    write = cli_create(config, "--name", "writer", "--workspace", "w1", "--scope", "write")
    async with serving(config) as (gw,), aiohttp.ClientSession() as session:
        for credential in (ROLELESS, NO_ROLE):
            status, out = await answer(session, "GET", gw.url + "/auth/tokens", credential)
            assert (status, out["error"]) == (403, "insufficient_scope"), out
            status, out = await answer(session, "DELETE", f"{gw.url}/auth/tokens/{write['id']}", credential)
            assert (status, out["error"]) == (403, "insufficient_scope"), out
            status, out = await answer(
                session, "POST", f"{gw.url}/auth/tokens/{write['id']}/rotate", credential, {}
            )
            assert (status, out["error"]) == (403, "insufficient_scope"), out
        # The write token still works: nothing was revoked.
        async with session.post(gw.url + "/v1/playlists", headers=bearer(write["token"])) as resp:
            assert resp.status == 200
    assert [t["id"] for t in cli_list(config)] == [write["id"]]


@pytest.mark.slow
async def test_read_manager_cannot_revoke_a_full_project_token(
    tmp_path: Path, upstream: Upstream, store_url: str
) -> None:
    config = serve_config(tmp_path, upstream.url, store=store_url)
    manager = cli_create(
        config, "--name", "mgr", "--workspace", "w1", "--scope", "read", "--scope", "tokens:manage"
    )
    full = cli_create(config, "--name", "full", "--workspace", "w1", "--project", "p1", "--scope", "full")
    reader = cli_create(config, "--name", "reader", "--workspace", "w1", "--project", "p1", "--scope", "read")
    async with serving(config) as (gw,), aiohttp.ClientSession() as session:
        # The full token is not in the manager's list; the read one is.
        status, out = await answer(session, "GET", gw.url + "/auth/tokens", manager["token"])
        assert status == 200
        assert [t["id"] for t in out["tokens"]] == [reader["id"]]
        # Revoking or rotating it is a 404, exactly like an unknown id.
        unknown = await answer(
            session, "DELETE", gw.url + "/auth/tokens/tok_0000000000000000", manager["token"]
        )
        status, out = await answer(session, "DELETE", f"{gw.url}/auth/tokens/{full['id']}", manager["token"])
        assert (status, out["error"], out["detail"]) == (404, "not_found", unknown[1]["detail"])
        status, out = await answer(
            session, "POST", f"{gw.url}/auth/tokens/{full['id']}/rotate", manager["token"], {}
        )
        assert (status, out["error"]) == (404, "not_found")
        async with session.post(gw.url + "/v1/devices/d1/reboot", headers=bearer(full["token"])) as resp:
            assert resp.status == 200  # still alive
        # What it could have minted, it may revoke.
        status, _ = await answer(session, "DELETE", f"{gw.url}/auth/tokens/{reader['id']}", manager["token"])
        assert status == 204


# --- the rule, in process ------------------------------------------------------------------------


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(routes=ROUTES, extra=JWT_EXTRA)


async def test_member_jwt_manages_only_what_it_could_mint(gw: Gateway) -> None:
    full = await mint(gw, ADMIN, name="full", scopes=["full"])
    agent = await mint(gw, ADMIN, name="agent", scopes=["agency"], targets=[{"kind": "playlist", "id": "1"}])
    nodes = await mint(gw, ADMIN, name="nodes", scopes=["nodes:create"])
    writer = await mint(gw, MEMBER, name="writer", scopes=["write"])
    status, out = await call(gw, "GET", "/auth/tokens", MEMBER)
    assert [t["id"] for t in out["tokens"]] == [writer["id"]]
    for hidden in (full, agent, nodes):
        status, out = await call(gw, "DELETE", f"/auth/tokens/{hidden['id']}", MEMBER)
        assert (status, out["error"]) == (404, "not_found"), hidden["name"]
    status, out = await call(gw, "GET", "/auth/tokens", ADMIN)
    assert {t["id"] for t in out["tokens"]} == {full["id"], agent["id"], nodes["id"], writer["id"]}


async def test_manager_token_never_sees_agency_or_wider_tokens(gw: Gateway) -> None:
    manager = await mint(gw, ADMIN, name="mgr", scopes=["write", "nodes:*", "tokens:manage"])
    agent = await mint(
        gw, ADMIN, name="agent", project="p", scopes=["agency"], targets=[{"kind": "playlist", "id": "1"}]
    )
    wider = await mint(gw, ADMIN, name="wider", project="p", scopes=["full"])
    fine = await mint(gw, manager["token"], name="fine", project="p", scopes=["nodes:create", "read"])
    status, out = await call(gw, "GET", "/auth/tokens?status=all", manager["token"])
    assert [t["id"] for t in out["tokens"]] == [fine["id"]]
    for hidden in (agent, wider):
        status, _ = await call(gw, "DELETE", f"/auth/tokens/{hidden['id']}", manager["token"])
        assert status == 404


# --- issue 8, item 5: never a traceback ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        pytest.param("/auth/tokens", b"[" * 20_000, "body", id="nested-brackets"),
        pytest.param("/auth/tokens", b'{"a":' * 20_000, "body", id="nested-objects"),
        pytest.param(
            "/auth/tokens", b'{"name":"t","expires_in":1' + b"0" * 400 + b"}", "expires_in", id="huge-int"
        ),
        pytest.param("/auth/tokens", b'{"name":"t","expires_in":1e400}', "expires_in", id="float-inf"),
        pytest.param(
            "/auth/tokens", b'{"name":"t","not_before":1' + b"0" * 400 + b"}", "not_before", id="huge-nbf"
        ),
        pytest.param("/auth/tokens/revoke", b"[" * 20_000, "body", id="by-value-nested"),
        pytest.param("/auth/tokens/self/rotate", b"[" * 20_000, "body", id="self-rotate-nested"),
    ],
)
async def test_hostile_bodies_are_400_invalid_request(gw: Gateway, path: str, raw: bytes, field: str) -> None:
    own = await mint(gw, ADMIN, name="own")
    who = own["token"] if path.endswith("/self/rotate") else ADMIN
    status, out = await call(gw, "POST", path, who, data=raw, headers={"Content-Type": "application/json"})
    assert (status, out["error"]) == (400, "invalid_request"), out
    assert out["detail"].startswith(field), out
    assert set(out) == {"error", "detail", "request_id"}


async def test_huge_overlap_is_400(gw: Gateway) -> None:
    victim = await mint(gw, ADMIN, name="victim")
    raw = b'{"overlap":1' + b"0" * 400 + b"}"
    status, out = await call(
        gw,
        "POST",
        f"/auth/tokens/{victim['id']}/rotate",
        ADMIN,
        data=raw,
        headers={"Content-Type": "application/json"},
    )
    assert (status, out["error"]) == (400, "invalid_request")
    assert out["detail"].startswith("overlap")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ("name", "scopes", "project", "workspace", "expires_in", "targets", "allowed_cidrs", "not_before")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5) | JSON)
async def test_generated_bodies_never_fail_with_500(gw: Gateway, body: Any) -> None:
    for path in ("/auth/tokens", "/auth/tokens/revoke"):
        status, out = await call(
            gw, "POST", path, ADMIN, data=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        assert status < 500, out
        if status >= 400:
            assert set(out) == {"error", "detail", "request_id"}, out


# --- issue 9, item 6: every workspace mismatch is 403 target_denied ------------------------------


@pytest.mark.parametrize(
    ("credential", "body", "headers"),
    [
        pytest.param("jwt", {"name": "x", "workspace": "w2"}, {}, id="jwt-mints-into-another"),
        pytest.param(
            "token", {"name": "x", "project": "p", "workspace": "w2"}, {}, id="token-mints-into-another"
        ),
        pytest.param(
            "member-list",
            {"name": "x", "workspace": "w9"},
            {"X-Workspace-Id": "w1"},
            id="listed-jwt-mints-outside",
        ),
        pytest.param("jwt", {"name": "x"}, {"X-Workspace-Id": "w2"}, id="jwt-header-names-another"),
        pytest.param("member-list", {"name": "x"}, {"X-Workspace-Id": "w9"}, id="listed-jwt-header-outside"),
    ],
)
async def test_every_workspace_mismatch_is_target_denied(
    gw: Gateway, credential: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    if credential == "jwt":
        who = ADMIN
    elif credential == "member-list":
        who = make_jwt(None, "admin", workspaces=["w1", "w2"])
    else:
        who = (await mint(gw, ADMIN, name="mgr", scopes=["read", "tokens:manage"]))["token"]
    status, out = await call(gw, "POST", "/auth/tokens", who, body, headers=headers)
    assert (status, out["error"]) == (403, "target_denied"), out


async def test_agency_route_in_another_workspace_is_target_denied(gw: Gateway) -> None:
    agent = await mint(gw, ADMIN, name="agent", scopes=["agency"], targets=[{"kind": "playlist", "id": "7"}])
    status, _ = await call(gw, "GET", "/v1/workspaces/w1/playlists/7", agent["token"])
    assert status == 200
    status, out = await call(gw, "GET", "/v1/workspaces/w2/playlists/7", agent["token"])
    assert (status, out["error"]) == (403, "target_denied")


# --- issue 9, item 5: refused from the instant shown ---------------------------------------------


@pytest.mark.slow
async def test_refused_from_the_second_the_api_and_cli_show(tmp_path: Path, upstream: Upstream) -> None:
    config = serve_config(tmp_path, upstream.url)
    async with serving(config) as (gw,), aiohttp.ClientSession() as session:
        minted_at = time.time()
        status, created = await answer(
            session, "POST", gw.url + "/auth/tokens", ADMIN, {"name": "short", "expires_in": 2}
        )
        assert status == 201
        shown = ts(created["expires_at"])
        assert shown == int(shown)
        (listed,) = [t for t in cli_list(config) if t["id"] == created["id"]]
        assert listed["expires_at"] == created["expires_at"]
        refused = None
        while time.time() < minted_at + 4:
            sent = time.time()
            async with session.get(gw.url + "/v1/playlists", headers=bearer(created["token"])) as resp:
                await resp.read()
                if resp.status == 401:
                    refused = time.time()
                    break
                assert resp.status == 200
            # SECURITY: every admission happened before the instant shown.
            assert sent < shown, (sent, shown)
        assert refused is not None and refused >= shown
