"""/auth/verify as the fronting proxies call it: what each of them needs from the answer."""

from __future__ import annotations

import secrets
import time

import jwt
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import BadRequest
from gateway.web.management import original_request
from tests.conftest import MakeGateway

SECRET = secrets.token_urlsafe(48)
JWT_CONFIG = f'jwt: {{algorithms: [HS256], secret: "{SECRET}"}}\n'


def a_jwt() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "alice", "workspace_id": "w", "iat": now, "exp": now + 600}, SECRET, "HS256")


@pytest.mark.parametrize(
    "asked",
    [
        pytest.param({"X-Original-URI": "/v1/health", "X-Original-Method": "GET"}, id="nginx-names"),
        pytest.param({"X-Forwarded-Uri": "/v1/health", "X-Forwarded-Method": "GET"}, id="traefik-names"),
    ],
)
async def test_either_family_of_names_asks_the_question(
    make_gateway: MakeGateway, asked: dict[str, str]
) -> None:
    gw = await make_gateway()
    r = await gw.client.get("/auth/verify", headers=asked)
    assert r.status == 200
    assert r.headers["X-Auth-Type"] == "anonymous"


async def test_disagreeing_forwarded_and_original_names_are_refused(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    r = await gw.client.get(
        "/auth/verify",
        headers={
            "X-Original-URI": "/v1/playlists/1",  # set by nginx: the real request
            "X-Original-Method": "POST",
            "X-Forwarded-Uri": "/v1/health",  # sent by the client
            "X-Forwarded-Method": "GET",
        },
    )
    assert r.status == 400
    assert (await r.json())["error"] == "bad_request"


U, M, FU, FM = "X-Original-URI", "X-Original-Method", "X-Forwarded-Uri", "X-Forwarded-Method"


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        pytest.param([(U, "/a"), (M, "get")], ("GET", "/a"), id="one-family-method-folded"),
        pytest.param([(FU, "/a"), (FM, "POST")], ("POST", "/a"), id="other-family"),
        pytest.param([(U, "/a"), (U, "/a"), (M, "GET")], ("GET", "/a"), id="same-value-twice"),
        pytest.param([(U, "/a"), (FU, "/a"), (M, "GET"), (FM, "get")], ("GET", "/a"), id="families-agree"),
        pytest.param([(U, ""), (FU, "/a"), (M, "GET")], ("GET", "/a"), id="empty-copy-ignored"),
        pytest.param([(U, "/a"), (U, "/admin"), (M, "GET")], "disagree", id="one-name-twice-differing"),
        pytest.param([(FU, "/a"), (FU, "/admin"), (FM, "GET")], "disagree", id="other-name-twice-differing"),
        pytest.param([(U, "/a"), (M, "GET"), (M, "DELETE")], "disagree", id="method-twice-differing"),
        pytest.param([(FU, "/a"), (FM, "GET"), (FM, "DELETE")], "disagree", id="other-method-twice"),
        pytest.param([(U, "/a"), (FU, "/b"), (M, "GET")], "disagree", id="families-differ"),
        pytest.param([(U, ""), (M, "GET")], "needs X-Forwarded-Uri", id="only-an-empty-uri"),
        pytest.param([(U, "/a")], "needs X-Forwarded-Method", id="no-method"),
        pytest.param([(U, "/a"), (U, "/b")], "needs X-Forwarded-Method", id="no-method-before-disagreeing"),
    ],
)
def test_the_question_is_one_method_and_one_uri(pairs: list[tuple[str, str]], expected: object) -> None:
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    if isinstance(expected, tuple):
        assert original_request(headers) == expected
        return
    with pytest.raises(BadRequest) as refused:
        original_request(headers)
    assert str(expected) in refused.value.detail


async def test_failed_auth_limit_is_per_client_behind_a_trusted_proxy(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(extra="trusted_proxies: [127.0.0.1/32]\nlimits: {failed_auth_per_minute: 2}\n")
    _, good = await gw.runtime.service.create(None, {"name": "t", "workspace": "w", "scopes": ["read"]})
    ask = {"X-Original-URI": "/v1/playlists/1", "X-Original-Method": "GET"}
    bad = "st_" + "A" * 38
    statuses = []
    for _ in range(3):
        r = await gw.client.get(
            "/auth/verify",
            headers={**ask, "Authorization": f"Bearer {bad}", "X-Forwarded-For": "203.0.113.1"},
        )
        statuses.append(r.status)
    assert statuses == [401, 401, 429]
    r = await gw.client.get(
        "/auth/verify",
        headers={**ask, "Authorization": f"Bearer {good}", "X-Forwarded-For": "203.0.113.2"},
    )
    assert r.status == 200


async def test_a_token_is_never_named_as_the_authorization_to_forward(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(extra=JWT_CONFIG)
    _, token = await gw.runtime.service.create(None, {"name": "t", "workspace": "w", "scopes": ["read"]})
    r = await gw.client.get(
        "/auth/verify",
        headers={
            "X-Forwarded-Uri": "/v1/playlists/1",
            "X-Forwarded-Method": "GET",
            "Authorization": f"Bearer {token}",
        },
    )
    assert r.status == 200
    assert "X-Auth-Authorization" not in r.headers
    assert "Authorization" not in r.headers
    assert all(token not in v for v in r.headers.values())


async def test_a_jwt_is_named_in_x_auth_authorization(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(extra=JWT_CONFIG)
    token = a_jwt()
    r = await gw.client.get(
        "/auth/verify",
        headers={
            "X-Forwarded-Uri": "/v1/playlists/1",
            "X-Forwarded-Method": "GET",
            "Authorization": f"Bearer {token}",
        },
    )
    assert r.status == 200
    assert r.headers["X-Auth-Authorization"] == f"Bearer {token}"


async def test_a_jwt_is_also_named_in_authorization_for_traefik(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(extra=JWT_CONFIG)
    token = a_jwt()
    r = await gw.client.get(
        "/auth/verify",
        headers={
            "X-Forwarded-Uri": "/v1/playlists/1",
            "X-Forwarded-Method": "GET",
            "Authorization": f"Bearer {token}",
        },
    )
    assert r.headers.get("Authorization") == f"Bearer {token}"


async def test_envoys_path_prefix_lands_the_original_path_in_an_ignored_query(
    make_gateway: MakeGateway,
) -> None:
    # deploy/envoy/ext_authz.yaml: path_prefix "/auth/verify?envoy_path=" + the original path, the
    # original method, no body, and the original URI again in X-Forwarded-Uri (set by Lua).
    gw = await make_gateway()
    _, token = await gw.runtime.service.create(None, {"name": "t", "workspace": "w", "scopes": ["read"]})
    original = "/v1/playlists/1?a=%2F&b=2"
    asked = {"X-Forwarded-Uri": original, "X-Forwarded-Method": "POST", "Authorization": f"Bearer {token}"}
    r = await gw.client.post("/auth/verify?envoy_path=" + original, headers=asked)
    assert r.status == 403
    assert (await r.json())["error"] == "insufficient_scope"
    r = await gw.client.get(
        "/auth/verify?envoy_path=" + original, headers={**asked, "X-Forwarded-Method": "GET"}
    )
    assert r.status == 200
    assert r.headers["X-Auth-Token-Id"]


@pytest.mark.parametrize(
    "asked",
    [
        pytest.param({"X-Original-URI": "/v1/playlists/1"}, id="nginx-uri-only"),
        pytest.param({"X-Forwarded-Uri": "/v1/playlists/1"}, id="traefik-uri-only"),
        pytest.param({"X-Forwarded-Uri": "/v1/playlists/1", "X-Original-Method": ""}, id="empty-method"),
    ],
)
async def test_no_method_header_is_bad_request_never_a_guessed_get(
    make_gateway: MakeGateway, asked: dict[str, str]
) -> None:
    # Issue 8 item 4: judged as a GET, a read token would pass every write behind such a proxy.
    gw = await make_gateway()
    _, token = await gw.runtime.service.create(None, {"name": "t", "workspace": "w", "scopes": ["read"]})
    for verb in ("GET", "POST"):
        r = await gw.client.request(
            verb, "/auth/verify", headers={**asked, "Authorization": f"Bearer {token}"}
        )
        assert r.status == 400
        body = await r.json()
        assert body["error"] == "bad_request"
        assert "X-Forwarded-Method or X-Original-Method" in body["detail"]
        assert "X-Auth-Token-Id" not in r.headers
