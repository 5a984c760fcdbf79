"""The agency gate end to end (contract sections 4, 6 and 10): only an agency token, only its
allowlisted targets, only in its own workspace; and an agency token is confined to agency routes."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway, MakeGateway, Upstream

from .conftest import PATHS, allowed, bearer, jwt_extra, make_jwt, mint, refused, scope_challenge

P1 = [{"kind": "playlist", "id": "p1"}]
AGENCY_REFUSAL = scope_challenge("agency")


async def agency_gateway(
    make_gateway: MakeGateway, targets: list[dict[str, str]] = P1
) -> tuple[Gateway, str]:
    gw = await make_gateway(extra=jwt_extra())
    _, token = await mint(gw, ["agency"], targets=targets)
    return gw, token


async def refused_on_agency_route(gw: Gateway, upstream: Upstream, token: str) -> None:
    """GET and PUT on the agency route: 403 insufficient_scope, asking for `agency`."""
    for method in ("GET", "PUT"):
        await refused(
            gw,
            upstream,
            method,
            PATHS["agency"],
            bearer(token),
            403,
            "insufficient_scope",
            www=AGENCY_REFUSAL,
        )


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT"])
async def test_agency_token_reaches_its_target(
    make_gateway: MakeGateway, upstream: Upstream, method: str
) -> None:
    gw, token = await agency_gateway(make_gateway)
    await allowed(gw, upstream, method, "/v1/workspaces/w1/playlists/p1", bearer(token))
    assert upstream.last.header("X-Auth-Scopes") == "agency"
    assert upstream.last.header("Authorization") is None


@pytest.mark.parametrize(
    "path",
    [
        "/v1/workspaces/w1/playlists/p2",
        "/v1/workspaces/w1/playlists/P1",
        "/v1/workspaces/w1/playlists/p10",
        "/v1/workspaces/w2/playlists/p1",
        "/v1/workspaces/W1/playlists/p1",
        "/v1/workspaces/w1x/playlists/p1",
    ],
    ids=[
        "other-target",
        "case-variant",
        "prefix-of-target",
        "other-workspace",
        "workspace-case",
        "workspace-prefix",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_agency_token_elsewhere_is_target_denied(
    make_gateway: MakeGateway, upstream: Upstream, path: str, method: str
) -> None:
    gw, token = await agency_gateway(make_gateway)
    await refused(gw, upstream, method, path, bearer(token), 403, "target_denied")


async def test_several_targets(make_gateway: MakeGateway, upstream: Upstream) -> None:
    targets = [
        {"kind": "playlist", "id": "p1"},
        {"kind": "playlist", "id": "p3"},
        {"kind": "device", "id": "p2"},
    ]
    gw, token = await agency_gateway(make_gateway, targets)
    await allowed(gw, upstream, "GET", "/v1/workspaces/w1/playlists/p1", bearer(token))
    await allowed(gw, upstream, "PUT", "/v1/workspaces/w1/playlists/p3", bearer(token))
    # The kind is part of the target: device p2 is not playlist p2.
    await refused(gw, upstream, "GET", "/v1/workspaces/w1/playlists/p2", bearer(token), 403, "target_denied")


async def test_agency_token_of_another_workspace(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    _, token = await mint(gw, ["agency"], workspace="w2", targets=P1)
    await refused(gw, upstream, "GET", "/v1/workspaces/w1/playlists/p1", bearer(token), 403, "target_denied")
    await allowed(gw, upstream, "GET", "/v1/workspaces/w2/playlists/p1", bearer(token))


@pytest.mark.parametrize("scopes", [["full"], ["write"], ["read"], ["tokens:manage"], ["nodes:*"]], ids=str)
async def test_non_agency_token_on_agency_route(
    make_gateway: MakeGateway, upstream: Upstream, scopes: list[str]
) -> None:
    gw = await make_gateway()
    _, token = await mint(gw, scopes)
    await refused_on_agency_route(gw, upstream, token)


@pytest.mark.parametrize(
    ("extra", "claims"),
    [
        pytest.param(jwt_extra(), {"workspace_id": "w1"}, id="jwt-holding-full"),
        pytest.param(
            jwt_extra(claims={"scopes": "scope"}),
            {"scope": "agency", "workspace_id": "w1"},
            id="jwt-scope-agency",
        ),
        pytest.param(
            jwt_extra(roles={"admin": ["*"]}), {"role": "admin", "workspace_id": "w1"}, id="jwt-role-star"
        ),
    ],
)
async def test_jwt_on_agency_route(
    make_gateway: MakeGateway, upstream: Upstream, extra: str, claims: dict[str, str]
) -> None:
    gw = await make_gateway(extra=extra)
    token = make_jwt(**claims)
    await refused_on_agency_route(gw, upstream, token)


@pytest.mark.parametrize(
    ("method", "route", "status", "code"),
    [
        ("GET", "public", 403, "insufficient_scope"),
        ("HEAD", "public", 403, "insufficient_scope"),
        ("POST", "public", 403, "insufficient_scope"),
        ("DELETE", "public", 403, "insufficient_scope"),
        ("POST", "full", 403, "insufficient_scope"),
        ("POST", "fine", 403, "insufficient_scope"),
        ("GET", "jwt_only", 401, "jwt_required"),
    ],
)
async def test_agency_token_is_confined_to_agency_routes(
    make_gateway: MakeGateway, upstream: Upstream, method: str, route: str, status: int, code: str
) -> None:
    gw, token = await agency_gateway(make_gateway)
    await refused(gw, upstream, method, PATHS[route], bearer(token), status, code)
    # The playlists prefix also covers /v1/playlists/p1 itself: the target id does not help there.
    await refused(gw, upstream, "GET", "/v1/playlists/p1", bearer(token), 403, "insufficient_scope")


@pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_on_agency_path_are_405(
    make_gateway: MakeGateway, upstream: Upstream, method: str
) -> None:
    gw, token = await agency_gateway(make_gateway)
    resp, _ = await refused(gw, upstream, method, PATHS["agency"], bearer(token), 405, "method_not_allowed")
    allow = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert {"GET", "PUT"} <= allow
    assert method not in allow


async def test_agency_token_may_not_manage_tokens(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw, token = await agency_gateway(make_gateway)
    resp = await gw.client.get("/auth/tokens", headers=bearer(token))
    assert resp.status == 403
    assert (await resp.json())["error"] == "insufficient_scope"
    resp = await gw.client.post(
        "/auth/tokens",
        json={"name": "x", "project": "p", "scopes": ["agency"], "targets": P1},
        headers=bearer(token),
    )
    assert resp.status == 403
    assert upstream.seen == []


async def test_revoked_agency_token(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    record, token = await mint(gw, ["agency"], targets=P1)
    await allowed(gw, upstream, "GET", PATHS["agency"], bearer(token))
    await gw.runtime.service.revoke(None, record.id)
    await refused(gw, upstream, "GET", PATHS["agency"], bearer(token), 401, "invalid_token")


async def test_encoded_target_is_judged_decoded_and_forwarded_raw(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw, token = await agency_gateway(make_gateway)
    # %31 is "1": the gate judges p1 and the upstream, decoding the same bytes, serves p1.
    await allowed(gw, upstream, "GET", "/v1/workspaces/w1/playlists/p%31", bearer(token))
    await refused(
        gw, upstream, "GET", "/v1/workspaces/w1/playlists/p%32", bearer(token), 403, "target_denied"
    )
    await refused(
        gw, upstream, "GET", "/v1/workspaces/w%32/playlists/p1", bearer(token), 403, "target_denied"
    )
    for path in (
        "/v1/workspaces/w1/playlists/p1%2F..%2Fp2",
        "/v1/workspaces/w1/playlists/p1;p2",
        "/v1/workspaces/w1/playlists/../playlists/p2",
    ):
        await refused(gw, upstream, "GET", path, bearer(token), 400, "bad_path")
    await refused(gw, upstream, "GET", "/v1/workspaces/w1/playlists/p1/", bearer(token), 404, "no_route")
