"""The scope gate end to end: every method x credential scope x route kind, for API tokens and JWTs.

Each cell is one real request through a real gateway; an allowed cell must reach the upstream
with the client's method, a refused one must not reach it at all (contract sections 6 and 10).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Gateway, MakeGateway, Upstream

from .conftest import (
    INVALID_TOKEN,
    METHODS,
    PATHS,
    ROLES,
    SAFE,
    bearer,
    jwt_extra,
    make_jwt,
    mint,
    scope_challenge,
)

SCOPES = ("read", "write", "full", "nodes:create", "nodes:*", "agency", "tokens:manage")
ROUTE_METHODS = {
    "public": frozenset(METHODS),
    "full": frozenset({"POST"}),
    "fine": frozenset({"POST"}),
    "jwt_only": frozenset(METHODS),
    "agency": frozenset({"GET", "HEAD", "PUT"}),  # methods: [GET, PUT]; GET admits HEAD
}
RANK = {"read": 0, "write": 1, "full": 2}

Expected = tuple[int, str | None, str | None]  # status, error code, WWW-Authenticate (None: absent)


def expected(kind: str, scope: str, route: str, method: str) -> Expected:
    """The contract's answer for one cell (sections 4, 6 and 10)."""
    if method not in ROUTE_METHODS[route]:
        return 405, "method_not_allowed", None
    if route == "jwt_only" and kind == "token":
        return 401, "jwt_required", INVALID_TOKEN
    if route == "agency":
        if kind == "token" and scope == "agency":
            return 200, None, None
        return 403, "insufficient_scope", scope_challenge("agency")
    if route == "fine":
        if scope in ("nodes:create", "nodes:*", "full"):
            return 200, None, None
        return 403, "insufficient_scope", scope_challenge("nodes:create")
    rung = "full" if route == "full" else ("read" if method in SAFE else "write")
    if scope in RANK and RANK[scope] >= RANK[rung]:
        return 200, None, None
    return 403, "insufficient_scope", scope_challenge(rung)


async def check_cell(
    gw: Gateway, upstream: Upstream, method: str, path: str, auth: dict[str, str], want: Expected
) -> str | None:
    """One request; a description of what went wrong, or None."""
    status, code, www = want
    before = len(upstream.seen)
    resp = await gw.client.request(method, path, headers=auth)
    raw = await resp.read()
    got = f"{method} {path}: got {resp.status} {raw[:200]!r}, want {status} {code}"
    if resp.status != status:
        return got
    if status == 200:
        if len(upstream.seen) != before + 1 or upstream.last.method != method:
            return f"{method} {path}: allowed but the upstream did not see it as {method}"
        return None
    if len(upstream.seen) != before:
        return f"{method} {path}: refused with {status} but forwarded anyway"
    if method != "HEAD":
        body: dict[str, Any] = json.loads(raw)
        if body.get("error") != code or not body.get("request_id"):
            return got
    if resp.headers.get("WWW-Authenticate") != www:
        return f"{method} {path}: WWW-Authenticate {resp.headers.get('WWW-Authenticate')!r}, want {www!r}"
    if status == 405 and not resp.headers.get("Allow"):
        return f"{method} {path}: 405 without Allow"
    return None


CELLS = [
    pytest.param(kind, scope, route, id=f"{kind}-{scope}-{route}")
    for kind in ("token", "jwt")
    for scope in SCOPES
    for route in PATHS
]


@pytest.mark.parametrize(("kind", "scope", "route"), CELLS)
async def test_scope_matrix(
    make_gateway: MakeGateway, upstream: Upstream, kind: str, scope: str, route: str
) -> None:
    gw = await make_gateway(extra=jwt_extra(claims={"scopes": "scope"}))
    if kind == "token":
        targets = [{"kind": "playlist", "id": "p1"}] if scope == "agency" else None
        _, credential = await mint(gw, [scope], targets=targets)
    else:
        credential = make_jwt(scope=scope, workspace_id="w1")
    problems = [
        problem
        for method in METHODS
        if (
            problem := await check_cell(
                gw, upstream, method, PATHS[route], bearer(credential), expected(kind, scope, route, method)
            )
        )
    ]
    assert not problems, "\n".join(problems)


# --- JWT role caps (jwt.roles) with and without the scope claim -------------------------------

ROLE_CASES = [
    # claim scopes, role, route, method, expected status
    pytest.param(
        "read write full", "member", "public", "POST", 200, id="member-caps-full-to-write-allows-post"
    ),
    pytest.param("read write full", "member", "full", "POST", 403, id="member-cap-drops-full"),
    pytest.param("write", "viewer", "public", "GET", 403, id="viewer-cap-drops-write-holds-nothing"),
    pytest.param("read write", "viewer", "public", "GET", 200, id="viewer-keeps-read"),
    pytest.param("read write", "viewer", "public", "PUT", 403, id="viewer-cap-refuses-put"),
    pytest.param("full", "admin", "full", "POST", 200, id="admin-star-keeps-full"),
    pytest.param("read", "admin", "public", "DELETE", 403, id="admin-star-cannot-widen-claim"),
    pytest.param("nodes:create", "member", "fine", "POST", 403, id="member-cap-drops-fine-grained"),
    pytest.param("nodes:create", "admin", "fine", "POST", 200, id="admin-keeps-fine-grained"),
    pytest.param("full", "ghost", "public", "GET", 403, id="role-missing-from-roles-holds-nothing"),
    pytest.param("full", None, "public", "GET", 403, id="no-role-claim-holds-nothing"),
]


@pytest.mark.parametrize(("claim", "role", "route", "method", "status"), ROLE_CASES)
async def test_jwt_role_cap_intersects_scope_claim(
    make_gateway: MakeGateway,
    upstream: Upstream,
    claim: str,
    role: str | None,
    route: str,
    method: str,
    status: int,
) -> None:
    gw = await make_gateway(extra=jwt_extra(claims={"scopes": "scope"}, roles=ROLES))
    token = make_jwt(scope=claim, role=role)
    before = len(upstream.seen)
    resp = await gw.client.request(method, PATHS[route], headers=bearer(token))
    body = await resp.read()
    assert resp.status == status, body
    if status == 403:
        assert json.loads(body)["error"] == "insufficient_scope"
        assert resp.headers["WWW-Authenticate"].startswith(
            'Bearer realm="scopegate", error="insufficient_scope", scope='
        )
        assert len(upstream.seen) == before
    else:
        assert len(upstream.seen) == before + 1


async def test_jwt_role_cap_is_what_upstream_sees_as_scopes(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra=jwt_extra(claims={"scopes": "scope"}, roles=ROLES))
    resp = await gw.client.get(
        PATHS["public"], headers=bearer(make_jwt(scope="read write full", role="member"))
    )
    assert resp.status == 200
    assert upstream.last.header("X-Auth-Scopes") == "read write"
    assert upstream.last.header("X-Auth-Role") == "member"


ROLE_ONLY_CASES = [
    pytest.param("member", "public", "PATCH", 200, id="member-writes"),
    pytest.param("member", "full", "POST", 403, id="member-not-full"),
    pytest.param("viewer", "public", "POST", 403, id="viewer-reads-only"),
    pytest.param("viewer", "public", "HEAD", 200, id="viewer-head"),
    pytest.param("admin", "full", "POST", 200, id="admin-star-full"),
    pytest.param("admin", "fine", "POST", 200, id="admin-star-fine"),
    pytest.param("admin", "agency", "GET", 403, id="admin-star-not-agency"),
    pytest.param("ghost", "public", "GET", 403, id="unknown-role-nothing"),
    pytest.param(None, "public", "GET", 403, id="no-role-nothing"),
]


@pytest.mark.parametrize(("role", "route", "method", "status"), ROLE_ONLY_CASES)
async def test_jwt_roles_without_scope_claim(
    make_gateway: MakeGateway, upstream: Upstream, role: str | None, route: str, method: str, status: int
) -> None:
    gw = await make_gateway(extra=jwt_extra(roles=ROLES))
    before = len(upstream.seen)
    resp = await gw.client.request(
        method, PATHS[route], headers=bearer(make_jwt(role=role, workspace_id="w1"))
    )
    await resp.read()
    assert resp.status == status
    assert len(upstream.seen) == before + (1 if status == 200 else 0)


NEITHER_CASES = [
    pytest.param(route, method, id=f"{route}-{method}")
    for route, method in (
        ("public", "GET"),
        ("public", "DELETE"),
        ("full", "POST"),
        ("fine", "POST"),
        ("jwt_only", "PUT"),
    )
]


@pytest.mark.parametrize(("route", "method"), NEITHER_CASES)
async def test_jwt_with_neither_claim_nor_roles_holds_full(
    make_gateway: MakeGateway, upstream: Upstream, route: str, method: str
) -> None:
    gw = await make_gateway(extra=jwt_extra())
    # A scope claim in the token is ignored when the config names no scope claim.
    resp = await gw.client.request(method, PATHS[route], headers=bearer(make_jwt(scope="read")))
    assert resp.status == 200, await resp.text()
    assert upstream.last.method == method
    assert upstream.last.header("X-Auth-Scopes") == "full"


async def test_jwt_holding_full_is_still_refused_on_agency_route(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra=jwt_extra())
    resp = await gw.client.get(PATHS["agency"], headers=bearer(make_jwt(workspace_id="w1")))
    assert resp.status == 403
    assert (await resp.json())["error"] == "insufficient_scope"
    assert upstream.seen == []


async def test_jwt_scope_claim_configured_but_absent_holds_nothing(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra=jwt_extra(claims={"scopes": "scope"}))
    resp = await gw.client.get(PATHS["public"], headers=bearer(make_jwt()))
    assert resp.status == 403
    assert upstream.seen == []


async def test_scp_list_claim(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=jwt_extra(claims={"scopes": "scp"}))
    resp = await gw.client.post(PATHS["fine"], headers=bearer(make_jwt(scp=["read", "nodes:*"])))
    assert resp.status == 200
    resp = await gw.client.post(PATHS["public"], headers=bearer(make_jwt(scp=["read", "nodes:*"])))
    assert resp.status == 403
    assert len(upstream.seen) == 1
