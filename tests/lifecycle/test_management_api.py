"""The management API over HTTP (contract sections 6 and 8), against an in-process gateway."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import Gateway, MakeGateway, Upstream
from tests.lifecycle.conftest import JWT_EXTRA, JWT_SCOPED_EXTRA, ROUTES, bearer, make_jwt

ADMIN = make_jwt("w1", "admin")
ADMIN_W2 = make_jwt("w2", "admin", sub="bob")
MEMBER = make_jwt("w1", "member")
VIEWER = make_jwt("w1", "viewer")


@pytest.fixture
async def gw(make_gateway: MakeGateway, store_url: str) -> Gateway:
    """On both stores: SQLite and PostgreSQL."""
    return await make_gateway(routes=ROUTES, extra=JWT_EXTRA, store=store_url)


async def call(
    gw: Gateway,
    method: str,
    path: str,
    credential: str | None = None,
    body: Any = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    headers = dict(kwargs.pop("headers", {}))
    if credential is not None:
        headers.update(bearer(credential))
    if body is not None:
        kwargs["json"] = body
    async with gw.client.request(method, path, headers=headers, **kwargs) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text


async def mint(gw: Gateway, credential: str, **body: Any) -> dict[str, Any]:
    status, out = await call(gw, "POST", "/auth/tokens", credential, body)
    assert status == 201, out
    result: dict[str, Any] = out
    return result


async def refused(gw: Gateway, credential: str, body: Any, status: int, error: str) -> dict[str, Any]:
    got, out = await call(gw, "POST", "/auth/tokens", credential, body)
    assert (got, out["error"]) == (status, error), out
    result: dict[str, Any] = out
    return result


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- the chain of delegation -------------------------------------------------------------------


async def test_delegation_chain_end_to_end(gw: Gateway, upstream: Upstream) -> None:
    # 1. A JWT of w1 mints a workspace-level token that may manage tokens.
    ws = await mint(gw, ADMIN, name="ci manager", scopes=["write", "tokens:manage"])
    assert (ws["workspace"], ws["project"]) == ("w1", None)
    assert ws["scopes"] == ["write", "tokens:manage"]
    # A wider request at step 1 is refused: a member JWT may mint at most read+write.
    await refused(gw, MEMBER, {"name": "x", "scopes": ["full"]}, 403, "insufficient_scope")
    await refused(gw, MEMBER, {"name": "x", "scopes": ["tokens:manage"]}, 403, "insufficient_scope")

    # 2. The workspace token mints a project-level token.
    proj = await mint(gw, ws["token"], name="deploy", project="p1", scopes=["read", "write"])
    assert (proj["workspace"], proj["project"], proj["scopes"]) == ("w1", "p1", ["read", "write"])
    # A wider request at step 2 is refused.
    for scopes in (["full"], ["nodes:create"], ["write", "nodes:*"]):
        out = await refused(
            gw, ws["token"], {"name": "wide", "project": "p1", "scopes": scopes}, 403, "insufficient_scope"
        )
        assert "scope" in out["detail"]
    await refused(gw, ws["token"], {"name": "wide", "project": "p1", "workspace": "w2"}, 403, "target_denied")
    await refused(gw, ws["token"], {"name": "no-project"}, 403, "insufficient_scope")

    # 3. The project token works on its project's (public) routes, bound to w1/p1 ...
    status, _ = await call(gw, "GET", "/v1/playlists/7", proj["token"])
    assert status == 200
    assert upstream.last.header("X-Auth-Workspace") == "w1"
    assert upstream.last.header("X-Auth-Project") == "p1"
    assert upstream.last.header("X-Auth-Token-Id") == proj["id"]
    assert upstream.last.header("Authorization") is None
    status, _ = await call(gw, "POST", "/v1/playlists", proj["token"], {"a": 1})
    assert status == 200
    # ... but not beyond its scopes ...
    status, out = await call(gw, "POST", "/v1/devices/d1/reboot", proj["token"])
    assert (status, out["error"]) == (403, "insufficient_scope")
    # ... and is refused on every management call, even for a narrower child.
    await refused(gw, proj["token"], {"name": "child", "project": "p1"}, 403, "insufficient_scope")
    status, out = await call(gw, "GET", "/auth/tokens", proj["token"])
    assert (status, out["error"]) == (403, "insufficient_scope")
    status, out = await call(gw, "DELETE", f"/auth/tokens/{proj['id']}", proj["token"])
    assert (status, out["error"]) == (403, "insufficient_scope")

    # The workspace token sees the project token; the JWT sees both.
    status, out = await call(gw, "GET", "/auth/tokens", ws["token"])
    assert status == 200
    assert [t["id"] for t in out["tokens"]] == [proj["id"]]
    status, out = await call(gw, "GET", "/auth/tokens", ADMIN)
    assert {t["id"] for t in out["tokens"]} == {ws["id"], proj["id"]}
    assert len(upstream.seen) == 2


# --- response shapes ---------------------------------------------------------------------------


async def test_created_and_listed_shapes(gw: Gateway) -> None:
    before = time.time()
    created = await mint(gw, ADMIN, name="shape", expires_in="12h")
    assert set(created) >= {
        "id",
        "name",
        "token",
        "scopes",
        "workspace",
        "project",
        "targets",
        "created_at",
        "expires_at",
    }
    assert created["token"].startswith("st_")
    assert created["name"] == "shape"
    assert created["scopes"] == ["read"]  # no `scopes` field: read
    assert created["targets"] == []
    assert created["workspace"] == "w1"
    assert created["project"] is None
    assert abs(ts(created["created_at"]) - before) < 5
    assert abs(ts(created["expires_at"]) - ts(created["created_at"]) - 12 * 3600) < 2

    status, out = await call(gw, "GET", "/auth/tokens", ADMIN)
    assert status == 200
    (listed,) = out["tokens"]
    assert "token" not in listed
    assert created["token"] not in json.dumps(out)
    assert listed["last_used_at"] is None
    assert listed["revoked_at"] is None
    for key in ("id", "name", "scopes", "workspace", "project", "targets", "created_at", "expires_at"):
        assert listed[key] == created[key]


async def test_list_status_filter(gw: Gateway) -> None:
    keep = await mint(gw, ADMIN, name="keep")
    gone = await mint(gw, ADMIN, name="gone")
    status, _ = await call(gw, "DELETE", f"/auth/tokens/{gone['id']}", ADMIN)
    assert status == 204

    async def ids(query: str) -> list[str]:
        status, out = await call(gw, "GET", "/auth/tokens" + query, ADMIN)
        assert status == 200, out
        return [t["id"] for t in out["tokens"]]

    assert await ids("") == [keep["id"]]
    assert await ids("?status=active") == [keep["id"]]
    assert await ids("?status=revoked") == [gone["id"]]
    assert sorted(await ids("?status=all")) == sorted([keep["id"], gone["id"]])
    status, out = await call(gw, "GET", "/auth/tokens?status=revoked", ADMIN)
    assert out["tokens"][0]["revoked_at"] is not None
    for bad in ("?status=bogus", "?status=", "?status=ACTIVE"):
        status, out = await call(gw, "GET", "/auth/tokens" + bad, ADMIN)
        assert (status, out["error"]) == (400, "invalid_request"), bad
        assert "status" in out["detail"]


# --- validation --------------------------------------------------------------------------------

INVALID_BODIES = [
    ({"scopes": ["read"]}, "name"),
    ({"name": ""}, "name"),
    ({"name": "bad/name"}, "name"),
    ({"name": "tab\tname"}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": 7}, "name"),
    ({"name": "t", "expires_in": 0}, "expires_in"),
    ({"name": "t", "expires_in": "0s"}, "expires_in"),
    ({"name": "t", "expires_in": -5}, "expires_in"),
    ({"name": "t", "expires_in": "366d"}, "expires_in"),
    ({"name": "t", "expires_in": 365 * 86400 + 1}, "expires_in"),
    ({"name": "t", "expires_in": "garbage"}, "expires_in"),
    ({"name": "t", "expires_in": True}, "expires_in"),
    ({"name": "t", "expires_in": [30]}, "expires_in"),
    ({"name": "t", "scopes": ["bogus:thing"]}, "bogus:thing"),
    ({"name": "t", "scopes": ["read", "admin"]}, "admin"),
    ({"name": "t", "scopes": []}, "scopes"),
    ({"name": "t", "scopes": "read"}, "scopes"),
    ({"name": "t", "scopes": ["agency"]}, "targets"),
    ({"name": "t", "scopes": ["read"], "targets": [{"kind": "playlist", "id": "1"}]}, "targets"),
    ({"name": "t", "targets": [{"kind": "playlist", "id": "1"}]}, "targets"),
    ({"name": "t", "scopes": ["agency", "read"], "targets": [{"kind": "playlist", "id": "1"}]}, "scopes"),
    ({"name": "t", "scopes": ["agency"], "targets": [{"kind": "playlist"}]}, "targets"),
    ({"name": "t", "project": "has space"}, "project"),
    ({"name": "t", "surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(
    ("body", "field"), INVALID_BODIES, ids=[f"{i}-{f}" for i, (_, f) in enumerate(INVALID_BODIES)]
)
async def test_invalid_body_is_400_naming_the_field(gw: Gateway, body: dict[str, Any], field: str) -> None:
    out = await refused(gw, ADMIN, body, 400, "invalid_request")
    assert field in out["detail"], out
    assert "request_id" in out


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"name": "t"', "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe{", "application/json"),
        (b'{"name": "t"}', "text/plain"),
        (b'{"name": "t"}', "application/x-www-form-urlencoded"),
        (b'["name", "t"]', "application/json"),
        (b'"name"', "application/json"),
        (b"null", "application/json"),
        (b'{"name": "t", "pad": "' + b"x" * (64 * 1024) + b'"}', "application/json"),
    ],
    ids=["truncated", "empty", "not-utf8", "text-plain", "form", "array", "string", "null", "over-64KiB"],
)
async def test_malformed_bodies_are_400_body(gw: Gateway, raw: bytes, content_type: str) -> None:
    headers = {**bearer(ADMIN), "Content-Type": content_type}
    async with gw.client.post("/auth/tokens", data=raw, headers=headers) as resp:
        out = await resp.json()
        assert (resp.status, out["error"]) == (400, "invalid_request"), out
        assert "body" in out["detail"]
    status, listed = await call(gw, "GET", "/auth/tokens?status=all", ADMIN)
    assert (status, listed["tokens"]) == (200, [])


async def test_missing_content_type_is_400(gw: Gateway) -> None:
    async with gw.client.post("/auth/tokens", data=b'{"name": "t"}', headers=bearer(ADMIN)) as resp:
        out = await resp.json()
        assert (resp.status, out["error"]) == (400, "invalid_request")
        assert "body" in out["detail"]


async def test_json_with_charset_is_accepted(gw: Gateway) -> None:
    headers = {**bearer(ADMIN), "Content-Type": "application/json; charset=utf-8"}
    async with gw.client.post("/auth/tokens", data=b'{"name": "t"}', headers=headers) as resp:
        assert resp.status == 201, await resp.text()


async def test_small_body_split_across_packets_is_read_whole(gw: Gateway) -> None:
    """A valid 60-byte body sent in two TCP writes is one body, not two."""
    body = json.dumps({"name": "split", "scopes": ["read", "write"]}).encode()
    port = gw.client.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /auth/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body[:20])
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.write(body[20:])
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line = response.split(b"\r\n", 1)[0]
    assert b" 201 " in status_line, response.decode(errors="replace")


async def test_name_unique_among_active_tokens(gw: Gateway) -> None:
    first = await mint(gw, ADMIN, name="dup")
    out = await refused(gw, ADMIN, {"name": "dup", "scopes": ["write"]}, 409, "conflict")
    assert "dup" in out["detail"]
    # The same name in another project, or another workspace, is a different token.
    await mint(gw, ADMIN, name="dup", project="p1")
    await mint(gw, ADMIN_W2, name="dup")
    # Once revoked, the name may be used again.
    status, _ = await call(gw, "DELETE", f"/auth/tokens/{first['id']}", ADMIN)
    assert status == 204
    again = await mint(gw, ADMIN, name="dup")
    assert again["id"] != first["id"]


async def test_concurrent_creates_with_one_name_yield_one_token(gw: Gateway) -> None:
    results = await asyncio.gather(
        *(call(gw, "POST", "/auth/tokens", ADMIN, {"name": "race"}) for _ in range(8))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 7, results


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [(b"", "application/json"), (b"{", "application/json"), (b'{"name": "t"}', "text/plain")],
    ids=["empty", "truncated", "text-plain"],
)
async def test_non_manager_gets_403_whatever_the_body(gw: Gateway, raw: bytes, content_type: str) -> None:
    plain = await mint(gw, ADMIN, name="plain", scopes=["full"])
    headers = {**bearer(plain["token"]), "Content-Type": content_type}
    async with gw.client.post("/auth/tokens", data=raw, headers=headers) as resp:
        out = await resp.json()
        assert (resp.status, out["error"]) == (403, "insufficient_scope"), out


async def test_scopes_deduplicated_in_canonical_order(gw: Gateway) -> None:
    created = await mint(
        gw,
        ADMIN,
        name="canon",
        scopes=["nodes:create", "write", "tokens:manage", "read", "write", "nodes:create"],
    )
    assert created["scopes"] == ["read", "write", "tokens:manage", "nodes:create"]
    status, out = await call(gw, "GET", "/auth/tokens", ADMIN)
    assert (status, out["tokens"][0]["scopes"]) == (200, created["scopes"])


async def test_agency_token_by_jwt(gw: Gateway) -> None:
    created = await mint(
        gw,
        ADMIN,
        name="agent",
        scopes=["agency"],
        targets=[{"kind": "playlist", "id": "9"}, {"kind": "playlist", "id": 9}],
    )
    assert created["scopes"] == ["agency"]
    assert created["targets"] == [{"kind": "playlist", "id": "9"}]
    status, _ = await call(gw, "GET", "/v1/workspaces/w1/playlists/9", created["token"])
    assert status == 200
    status, out = await call(gw, "GET", "/v1/workspaces/w1/playlists/8", created["token"])
    assert (status, out["error"]) == (403, "target_denied")


# --- minting never escalates -------------------------------------------------------------------


async def test_escalations_are_403_insufficient_scope(gw: Gateway) -> None:
    # A write minter (JWT role member, and a write token) asks for full.
    await refused(gw, MEMBER, {"name": "x", "scopes": ["full"]}, 403, "insufficient_scope")
    writer = await mint(gw, ADMIN, name="writer-mgr", scopes=["write", "tokens:manage"])
    await refused(
        gw, writer["token"], {"name": "x", "project": "p", "scopes": ["full"]}, 403, "insufficient_scope"
    )
    # ... but may mint read, along the ladder.
    child = await mint(gw, writer["token"], name="reader", project="p", scopes=["read"])
    assert child["scopes"] == ["read"]
    # A viewer cannot mint write; a JWT scope claim narrower than its role bounds minting too.
    await refused(gw, VIEWER, {"name": "x", "scopes": ["write"]}, 403, "insufficient_scope")
    assert (await mint(gw, VIEWER, name="viewer-read"))["scopes"] == ["read"]
    # A role outside jwt.roles holds nothing.
    await refused(gw, make_jwt("w1", "intern"), {"name": "x"}, 403, "insufficient_scope")
    # A JWT of another workspace may not pick w1.
    await refused(gw, ADMIN_W2, {"name": "x", "workspace": "w1"}, 403, "target_denied")

    # A token without tokens:manage: create, list and revoke all refused.
    plain = await mint(gw, ADMIN, name="plain-full", scopes=["full"])
    await refused(gw, plain["token"], {"name": "x", "project": "p"}, 403, "insufficient_scope")
    status, out = await call(gw, "GET", "/auth/tokens", plain["token"])
    assert (status, out["error"]) == (403, "insufficient_scope")
    status, out = await call(gw, "DELETE", f"/auth/tokens/{child['id']}", plain["token"])
    assert (status, out["error"]) == (403, "insufficient_scope")

    # A project-level token, even one holding tokens:manage: create, list and revoke refused.
    proj_mgr = await mint(gw, ADMIN, name="proj-mgr", project="p", scopes=["write", "tokens:manage"])
    await refused(gw, proj_mgr["token"], {"name": "x", "project": "p"}, 403, "insufficient_scope")
    status, out = await call(gw, "GET", "/auth/tokens", proj_mgr["token"])
    assert (status, out["error"]) == (403, "insufficient_scope")
    status, out = await call(gw, "DELETE", f"/auth/tokens/{child['id']}", proj_mgr["token"])
    assert (status, out["error"]) == (403, "insufficient_scope")

    # A workspace-level token creating without a project.
    await refused(gw, writer["token"], {"name": "x", "scopes": ["read"]}, 403, "insufficient_scope")

    # Only a JWT may mint agency: not even a token holding full and tokens:manage.
    boss = await mint(gw, ADMIN, name="boss", scopes=["full", "tokens:manage"])
    agency = {"name": "x", "project": "p", "scopes": ["agency"], "targets": [{"kind": "playlist", "id": "1"}]}
    await refused(gw, boss["token"], agency, 403, "insufficient_scope")
    # A member JWT does not hold agency either; an admin ("*") does.
    await refused(gw, MEMBER, {**agency, "project": None}, 403, "insufficient_scope")
    await mint(gw, ADMIN, **agency)

    status, out = await call(gw, "GET", "/auth/tokens?status=all", ADMIN)
    assert {t["name"] for t in out["tokens"]} == {
        "writer-mgr",
        "reader",
        "viewer-read",
        "plain-full",
        "proj-mgr",
        "boss",
        "x",
    }


async def test_jwt_scope_claim_bounds_minting(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(routes=ROUTES, extra=JWT_SCOPED_EXTRA)
    # An admin role with a `scope` claim of read: the two intersect.
    narrow = make_jwt("w1", "admin", scope="read")
    await refused(gw, narrow, {"name": "x", "scopes": ["write"]}, 403, "insufficient_scope")
    assert (await mint(gw, narrow, name="r"))["scopes"] == ["read"]
    # A member role claiming full holds only what the role allows.
    await refused(
        gw,
        make_jwt("w1", "member", scope="full"),
        {"name": "x", "scopes": ["full"]},
        403,
        "insufficient_scope",
    )
    # With the claim configured but absent from the JWT (a user session), the role bounds alone.
    assert (await mint(gw, make_jwt("w1", "member"), name="s", scopes=["write"]))["scopes"] == ["write"]
    await refused(gw, make_jwt("w1", "member"), {"name": "x", "scopes": ["full"]}, 403, "insufficient_scope")


async def test_token_child_expiry_bounded_by_minter(gw: Gateway) -> None:
    mgr = await mint(gw, ADMIN, name="short-mgr", scopes=["write", "tokens:manage"], expires_in=3600)
    mgr_exp = ts(mgr["expires_at"])
    # Asking to outlive the minter: 403.
    await refused(
        gw, mgr["token"], {"name": "long", "project": "p", "expires_in": "2h"}, 403, "insufficient_scope"
    )
    # Omitted expires_in: the default (90d) is clamped to the minter's expiry.
    clamped = await mint(gw, mgr["token"], name="clamped", project="p")
    assert abs(ts(clamped["expires_at"]) - mgr_exp) <= 1
    # Within the minter's lifetime: as asked.
    fine = await mint(gw, mgr["token"], name="fine", project="p", expires_in=600)
    assert abs(ts(fine["expires_at"]) - ts(fine["created_at"]) - 600) <= 1


async def test_jwt_short_exp_does_not_bound_minted_token(gw: Gateway) -> None:
    short = make_jwt("w1", "admin", exp_in=60)
    default = await mint(gw, short, name="default-ttl")
    assert ts(default["expires_at"]) - time.time() > 89 * 86400
    long = await mint(gw, short, name="thirty-days", expires_in="30d")
    assert abs(ts(long["expires_at"]) - ts(long["created_at"]) - 30 * 86400) <= 1


# --- revoke: 204, then 404; invisible ids are 404, never 403 -----------------------------------


async def test_revoke_and_404_for_what_the_caller_cannot_see(gw: Gateway) -> None:
    mgr = await mint(gw, ADMIN, name="mgr", scopes=["write", "tokens:manage"])
    other_ws = await mint(gw, ADMIN, name="other-ws-level")
    proj = await mint(gw, mgr["token"], name="proj", project="p")
    foreign = await mint(gw, ADMIN_W2, name="foreign")
    foreign_mgr = await mint(gw, ADMIN_W2, name="foreign-mgr", scopes=["read", "tokens:manage"])
    foreign_proj = await mint(gw, foreign_mgr["token"], name="foreign-proj", project="p")

    async def delete(credential: str, token_id: str) -> tuple[int, Any]:
        return await call(gw, "DELETE", f"/auth/tokens/{token_id}", credential)

    # A JWT of w1 cannot see w2's tokens: 404 not_found, exactly like an unknown id.
    for token_id in (foreign["id"], foreign_proj["id"], "tok_doesnotexist", "x" * 300):
        status, out = await delete(ADMIN, token_id)
        assert (status, out["error"]) == (404, "not_found"), token_id
    unknown_detail = (await delete(ADMIN, "tok_doesnotexist"))[1]["detail"]
    assert (await delete(ADMIN, foreign["id"]))[1]["detail"] == unknown_detail
    # A workspace token cannot see workspace-level tokens (itself included) nor other workspaces'.
    for token_id in (mgr["id"], other_ws["id"], foreign_proj["id"]):
        status, out = await delete(mgr["token"], token_id)
        assert (status, out["error"]) == (404, "not_found"), token_id

    # It can revoke its workspace's project tokens: 204, then 404.
    status, body = await delete(mgr["token"], proj["id"])
    assert (status, body) == (204, None)
    status, out = await delete(mgr["token"], proj["id"])
    assert (status, out["error"]) == (404, "not_found")
    status, out = await delete(ADMIN, proj["id"])
    assert (status, out["error"]) == (404, "not_found")
    # The revoked token is refused at once on this gateway.
    status, out = await call(gw, "GET", "/v1/playlists", proj["token"])
    assert (status, out["error"]) == (401, "invalid_token")

    # Nothing foreign was touched.
    status, out = await call(gw, "GET", "/auth/tokens", ADMIN_W2)
    assert {t["id"] for t in out["tokens"]} == {foreign["id"], foreign_mgr["id"], foreign_proj["id"]}
    # The JWT revokes a workspace-level token of its own workspace.
    status, _ = await delete(ADMIN, other_ws["id"])
    assert status == 204


async def test_listing_visibility(gw: Gateway) -> None:
    mgr = await mint(gw, ADMIN, name="mgr", scopes=["read", "tokens:manage"])
    ws_level = await mint(gw, ADMIN, name="ws-level")
    proj = await mint(gw, mgr["token"], name="proj", project="p")
    await mint(gw, ADMIN_W2, name="foreign", project="p")
    status, out = await call(gw, "GET", "/auth/tokens", mgr["token"])
    assert [t["id"] for t in out["tokens"]] == [proj["id"]]
    status, out = await call(gw, "GET", "/auth/tokens", ADMIN)
    assert status == 200
    assert {t["id"] for t in out["tokens"]} == {mgr["id"], ws_level["id"], proj["id"]}


# --- anonymous catalogue, unknown paths, methods, never forwarded ------------------------------


async def test_scope_catalogue_is_anonymous(gw: Gateway) -> None:
    status, out = await call(gw, "GET", "/auth/scopes")
    assert status == 200
    by_name = {s["name"]: s["description"] for s in out["scopes"]}
    for name in ("read", "write", "full", "agency", "tokens:manage", "nodes:create", "nodes:*"):
        assert by_name.get(name), name
    assert [s["name"] for s in out["scopes"]][:5] == ["read", "write", "full", "agency", "tokens:manage"]
    assert by_name["nodes:*"] != ""


async def test_management_requires_a_credential(gw: Gateway) -> None:
    for method, path in (("GET", "/auth/tokens"), ("POST", "/auth/tokens"), ("DELETE", "/auth/tokens/x")):
        status, out = await call(gw, method, path, body={"name": "t"} if method == "POST" else None)
        assert (status, out["error"]) == (401, "invalid_token"), (method, path)
    status, out = await call(gw, "GET", "/auth/tokens", "st_notavalidtoken")
    assert (status, out["error"]) == (401, "invalid_token")


async def test_unknown_paths_and_wrong_methods(gw: Gateway) -> None:
    for path in ("/auth", "/auth/", "/auth/nope", "/auth/tokens/a/b", "/auth/scopes/x"):
        status, out = await call(gw, "GET", path, ADMIN)
        assert (status, out["error"]) == (404, "not_found"), path
    for method, path, cred in (
        ("POST", "/auth/scopes", None),
        ("DELETE", "/auth/scopes", None),
        ("PUT", "/auth/tokens", ADMIN),
        ("DELETE", "/auth/tokens", ADMIN),
        ("GET", "/auth/tokens/someid", ADMIN),
        ("POST", "/auth/tokens/someid", ADMIN),
        ("PATCH", "/auth/tokens/someid", ADMIN),
    ):
        async with gw.client.request(method, path, headers=bearer(cred) if cred else {}) as resp:
            out = await resp.json()
            assert (resp.status, out["error"]) == (405, "method_not_allowed"), (method, path)
            assert resp.headers.get("Allow"), (method, path)


CATCH_ALL = (
    ROUTES
    + """
  - id: everything
    match: {prefix: /}
    class: anonymous
"""
)


async def test_management_never_forwarded(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(routes=CATCH_ALL, extra=JWT_EXTRA)
    status, _ = await call(gw, "GET", "/anything/else")
    assert status == 200
    assert len(upstream.seen) == 1
    upstream.seen.clear()
    created = await mint(gw, ADMIN, name="t")
    probes: list[tuple[str, str, str | None]] = [
        ("GET", "/auth/scopes", None),
        ("GET", "/auth/tokens", ADMIN),
        ("GET", "/auth/tokens", None),
        ("GET", "/auth/nope", None),
        ("GET", "/auth", None),
        ("GET", "/auth/tokens/x/y", ADMIN),
        ("PUT", "/auth/tokens", ADMIN),
        ("DELETE", f"/auth/tokens/{created['id']}", ADMIN),
        ("DELETE", f"/auth/tokens/{created['id']}", ADMIN),
        ("GET", "/auth/verify", None),
        ("GET", "/AUTH/../auth/tokens", None),
    ]
    for method, path, cred in probes:
        async with gw.client.request(method, path, headers=bearer(cred) if cred else {}) as resp:
            await resp.read()
            assert resp.status != 200 or path == "/auth/scopes" or (method, cred) == ("GET", ADMIN), path
    assert [s.raw_path for s in upstream.seen] == []
