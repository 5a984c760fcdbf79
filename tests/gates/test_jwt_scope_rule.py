"""The JWT scope rule (contract, section 6): the role bounds; the scope claim narrows where present.

Every combination of {roles configured or not} x {scope claim not configured, configured and
carried, configured and absent}, judged end to end: what the JWT may do on the proxy door and what
it may mint through the management API, on a real gateway with real HS256 JWTs.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.conftest import Gateway, MakeGateway, Upstream

from .conftest import PATHS, ROLES, allowed, bearer, jwt_extra, make_jwt, refused

RUNGS = ("read", "write", "full")
_names = itertools.count()

# (roles configured, scope claim configured, claims the JWT carries, the ladder rung it holds)
CASES = [
    pytest.param(False, False, {"role": "member"}, "full", id="no-roles-no-claim-configured-full"),
    pytest.param(False, True, {"scope": "read"}, "read", id="no-roles-claim-present-its-scopes"),
    pytest.param(False, True, {"role": "admin"}, None, id="no-roles-claim-absent-nothing"),
    pytest.param(True, False, {"role": "member"}, "write", id="roles-no-claim-configured-role-cap"),
    pytest.param(
        True, True, {"role": "viewer", "scope": "read write"}, "read", id="roles-claim-present-within-cap"
    ),
    pytest.param(True, True, {"role": "member"}, "write", id="roles-claim-absent-role-cap"),
]


def _holds(rung: str | None, need: str) -> bool:
    return rung is not None and RUNGS.index(rung) >= RUNGS.index(need)


async def _gateway(make_gateway: MakeGateway, roles: bool, claim: bool) -> Gateway:
    return await make_gateway(
        extra=jwt_extra(claims={"scopes": "scope"} if claim else None, roles=ROLES if roles else None)
    )


@pytest.mark.parametrize(("roles", "claim", "claims", "rung"), CASES)
async def test_jwt_authorization_follows_the_scope_rule(
    make_gateway: MakeGateway,
    upstream: Upstream,
    roles: bool,
    claim: bool,
    claims: dict[str, Any],
    rung: str | None,
) -> None:
    gw = await _gateway(make_gateway, roles, claim)
    headers = bearer(make_jwt(workspace_id="w1", **claims))
    for method, path, need in (
        ("GET", PATHS["public"], "read"),
        ("POST", PATHS["public"], "write"),
        ("POST", PATHS["full"], "full"),
    ):
        if _holds(rung, need):
            await allowed(gw, upstream, method, path, headers)
        else:
            await refused(gw, upstream, method, path, headers, 403, "insufficient_scope")


@pytest.mark.parametrize(("roles", "claim", "claims", "rung"), CASES)
async def test_jwt_minting_follows_the_scope_rule(
    make_gateway: MakeGateway,
    roles: bool,
    claim: bool,
    claims: dict[str, Any],
    rung: str | None,
) -> None:
    gw = await _gateway(make_gateway, roles, claim)
    headers = bearer(make_jwt(workspace_id="w1", **claims))
    for want in RUNGS:
        body = {"name": f"rule-{next(_names)}", "scopes": [want]}
        resp = await gw.client.post("/auth/tokens", json=body, headers=headers)
        answer = await resp.json()
        if _holds(rung, want):
            assert resp.status == 201, (want, answer)
            assert answer["scopes"] == [want] and answer["workspace"] == "w1"
        else:
            assert resp.status == 403, (want, answer)
            assert answer["error"] == "insufficient_scope", answer


@pytest.mark.parametrize(("roles", "claim"), [(True, True), (True, False), (False, True), (False, False)])
async def test_empty_role_claim_is_401(
    make_gateway: MakeGateway, upstream: Upstream, roles: bool, claim: bool
) -> None:
    # An empty role is a malformed claim, not "no role": refused, whatever else the JWT carries.
    gw = await _gateway(make_gateway, roles, claim)
    headers = bearer(make_jwt(workspace_id="w1", role="", scope="read"))
    await refused(gw, upstream, "GET", PATHS["public"], headers, 401, "invalid_token")
    resp = await gw.client.post("/auth/tokens", json={"name": "empty-role"}, headers=headers)
    assert resp.status == 401 and (await resp.json())["error"] == "invalid_token"
