"""nginx (`auth_request`) and Caddy (`forward_auth`), each run from the file we ship, in front of a
real `scopegate serve` and a recording app: the same proofs for both (tests/ops/fronts.py).

Allowed requests reach the app with scopegate's identity headers and never the token; refusals
reach the client with scopegate's status, JSON and WWW-Authenticate and never reach the app;
identity headers a client sends never reach the app; the app's own errors pass untouched.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.conftest import Upstream
from tests.support import WWW_AUTHENTICATE_INVALID_TOKEN

from .conftest import Scopegate
from .fronts import Front, run_caddy, run_nginx


@pytest.fixture(params=["nginx", "caddy"])
def front(
    request: pytest.FixtureRequest, tmp_path: Path, scopegate: Scopegate, upstream: Upstream
) -> Iterator[Front]:
    run = {"nginx": run_nginx, "caddy": run_caddy}[request.param]
    with run(tmp_path / request.param, gateway=scopegate.port, app=upstream.server.port or 0) as started:
        yield started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_anonymous_route_is_allowed_and_carries_no_credential(
    front: Front, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    headers = {**bearer(scopegate.token), "X-Auth-Subject": "root", "X-Auth-Role": "admin"}
    async with http.get(front.url + "/v1/health", headers=headers) as r:
        assert r.status == 200
        assert (await r.json())["path"] == "/v1/health"
    seen = upstream.last
    assert seen.header("X-Auth-Type") == "anonymous"
    assert seen.header("Authorization") is None
    assert seen.header("X-Auth-Subject") is None
    assert seen.header("X-Auth-Role") is None


async def test_token_get_reaches_upstream_with_identity_and_without_its_secret(
    front: Front, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    target = "/v1/playlists/7?a=%2F&b=1"
    async with http.get(URL(front.url + target, encoded=True), headers=bearer(scopegate.token)) as r:
        assert r.status == 200
    seen = upstream.last
    assert seen.raw_path == target
    assert seen.header("X-Auth-Type") == "token"
    assert seen.header("X-Auth-Token-Id") == scopegate.token_id
    assert seen.header("X-Auth-Workspace") == "w"
    assert seen.header("X-Workspace-Id") == "w"
    assert seen.header("X-Auth-Scopes") == "read"
    assert seen.header("X-Auth-Role") == "user"
    assert seen.header("X-Auth-Subject") == "cli"
    assert seen.header("X-Request-Id")
    assert seen.header("Authorization") is None
    assert seen.header("X-Auth-Authorization") is None
    assert all(scopegate.token not in value for _, value in seen.headers)
    # No header scopegate left out reaches the app, not even as Caddy's placeholder text.
    assert seen.header("X-Auth-Project") is None
    assert all("{" not in value for _, value in seen.headers), seen.headers


async def test_token_post_is_refused_403_and_never_reaches_upstream(
    front: Front, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    async with http.post(front.url + "/v1/playlists", headers=bearer(scopegate.token), json={"x": 1}) as r:
        assert r.status == 403
        assert r.content_type == "application/json"
        body = await r.json()
        assert body["error"] == "insufficient_scope"
        assert body["request_id"]
        assert r.headers.getall("WWW-Authenticate") == [
            'Bearer realm="scopegate", error="insufficient_scope", scope="write"'
        ]
    assert upstream.seen == []


async def test_no_credential_is_refused_401_with_www_authenticate(
    front: Front, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    async with http.get(front.url + "/v1/playlists/1") as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_token"
        assert r.headers.getall("WWW-Authenticate") == [WWW_AUTHENTICATE_INVALID_TOKEN]
    assert upstream.seen == []


async def test_jwt_is_allowed_and_forwarded_as_it_came_with_its_body(
    front: Front, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    body = os.urandom(256 * 1024)
    async with http.put(front.url + "/v1/admin/users/3", headers=bearer(scopegate.jwt), data=body) as r:
        assert r.status == 200
        assert (await r.json())["body_len"] == len(body)
    seen = upstream.last
    assert seen.method == "PUT"
    assert seen.body_len == len(body)
    assert seen.all("Authorization") == [f"Bearer {scopegate.jwt}"]
    assert seen.header("X-Auth-Type") == "jwt"
    assert seen.header("X-Auth-Subject") == "alice"
    assert seen.header("X-Auth-Workspace") == "w"
    assert seen.header("X-Auth-Token-Id") is None
    assert seen.header("X-Auth-Authorization") is None


async def test_spoofed_identity_headers_from_the_client_never_reach_the_app(
    front: Front, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    spoof = {
        "X-Auth-Subject": "root",
        "x-auth-role": "admin",
        "X-Auth-Project": "someone-elses",
        "X-Auth-Scopes": "full",
        "X-Workspace-Id": "other",
        "X_Auth_Subject": "root",
        "X_Auth_Role": "admin",
        "X-Auth-Authorization": "Bearer forged",
        "X-HTTP-Method-Override": "DELETE",
        "X-HTTP-Method": "DELETE",
        "X-Method-Override": "DELETE",
        "X-Original-URL": "/v1/admin",
        "X-Rewrite-URL": "/v1/admin",
    }
    async with http.get(front.url + "/v1/playlists/1", headers={**bearer(scopegate.token), **spoof}) as r:
        assert r.status == 200
    seen = upstream.last
    assert seen.all("X-Auth-Subject") == ["cli"]
    assert seen.all("X-Auth-Role") == ["user"]
    assert seen.all("X-Auth-Scopes") == ["read"]
    assert seen.all("X-Workspace-Id") == ["w"]
    assert seen.header("Authorization") is None
    for gone in (
        "X-Auth-Project",
        "X_Auth_Subject",
        "X_Auth_Role",
        "X-Auth-Authorization",
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
        "X-Original-URL",
        "X-Rewrite-URL",
    ):
        assert seen.header(gone) is None, gone


async def test_spoofed_identity_on_a_jwt_request_never_reaches_the_app(
    front: Front, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    spoof = {"X-Auth-Token-Id": "tok_forged", "X-Auth-Project": "p", "X-Auth-Authorization": "Bearer x.y.z"}
    async with http.get(front.url + "/v1/admin/x", headers={**bearer(scopegate.jwt), **spoof}) as r:
        assert r.status == 200
    seen = upstream.last
    assert seen.header("X-Auth-Token-Id") is None
    assert seen.header("X-Auth-Project") is None
    assert seen.header("X-Auth-Authorization") is None
    assert seen.all("Authorization") == [f"Bearer {scopegate.jwt}"]


async def test_a_client_cannot_steer_the_question_with_forwarded_or_original_headers(
    front: Front, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    for lie in (
        {"X-Forwarded-Uri": "/v1/health", "X-Forwarded-Method": "GET"},
        {"X-Original-URI": "/v1/health", "X-Original-Method": "GET"},
    ):
        async with http.post(front.url + "/v1/playlists", headers=lie, data=b"x") as r:
            assert r.status == 401, lie
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("method", "target", "auth", "status", "code"),
    [
        pytest.param("GET", "/v2/nothing", None, 404, "no_route", id="no-route-404"),
        pytest.param("DELETE", "/v1/health", None, 405, "method_not_allowed", id="wrong-method-405"),
        pytest.param("GET", "/v1/playlists;x=1", None, 400, "bad_path", id="bad-path-400"),
        pytest.param("GET", "/v1/playlists/%2e%2e/admin", None, 400, "bad_path", id="encoded-dots-400"),
        pytest.param("GET", "/v1/playlists?_method=DELETE", None, 400, "bad_request", id="method-param-400"),
        pytest.param("GET", "/auth/tokens", None, 400, "bad_request", id="management-mount-400"),
        pytest.param("GET", "/v1/admin", "token", 401, "jwt_required", id="token-on-jwt-only-401"),
    ],
)
async def test_every_refusal_reaches_the_client_with_scopegates_status_and_json(
    front: Front,
    http: aiohttp.ClientSession,
    upstream: Upstream,
    scopegate: Scopegate,
    method: str,
    target: str,
    auth: str | None,
    status: int,
    code: str,
) -> None:
    headers = bearer(scopegate.token) if auth == "token" else {}
    async with http.request(method, URL(front.url + target, encoded=True), headers=headers) as r:
        assert r.status == status
        assert r.content_type == "application/json"
        body = await r.json()
        assert body["error"] == code
        assert set(body) == {"error", "detail", "request_id"}
        if status == 405:
            assert r.headers["Allow"] == "GET, HEAD"
        assert len(r.headers.getall("WWW-Authenticate", [])) == (1 if status == 401 else 0)
    assert upstream.seen == []


@pytest.mark.parametrize("status", [401, 403, 500], ids=["app-401", "app-403", "app-500"])
async def test_the_apps_own_errors_pass_through_untouched(
    front: Front, http: aiohttp.ClientSession, upstream: Upstream, status: int
) -> None:
    async with http.get(front.url + f"/status/{status}") as r:
        assert r.status == status
        assert r.content_type != "application/json"
    assert [s.raw_path for s in upstream.seen] == [f"/status/{status}"]
