"""A real Caddy (`forward_auth`) in front of a real `scopegate serve` and a recording app.

The Caddyfile is deploy/caddy/Caddyfile itself, only its three addresses and its storage folder
rewritten. Caddy runs unprivileged on loopback: no admin endpoint, no automatic HTTPS, port 0,
its storage, config and home in tmp_path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.conftest import Upstream
from tests.support import WWW_AUTHENTICATE_INVALID_TOKEN, stop

from .conftest import REPO, Scopegate
from .port0 import wait_listening

CADDYFILE = REPO / "deploy" / "caddy" / "Caddyfile"


def caddy_binary() -> str:
    found = shutil.which("caddy")
    if found is None:
        pytest.skip("caddy is not installed (Debian: apt-get install caddy)")
    return found


def render(caddyfile: str, *, gateway: int, app: int, folder: Path) -> str:
    for old, new in (
        ("\n:80 {", "\nhttp://127.0.0.1:0 {"),
        ("forward_auth 127.0.0.1:8080 {", f"forward_auth 127.0.0.1:{gateway} {{"),
        ("reverse_proxy 127.0.0.1:8081\n", f"reverse_proxy 127.0.0.1:{app}\n"),
        ("storage file_system /var/lib/caddy\n", f"storage file_system {folder / 'data'}\n"),
    ):
        assert caddyfile.count(old) == 1, f"deploy/caddy/Caddyfile: expected one {old!r}"
        caddyfile = caddyfile.replace(old, new)
    return caddyfile


@dataclass(frozen=True)
class Caddy:
    url: str
    folder: Path


@pytest.fixture
def caddy(tmp_path: Path, scopegate: Scopegate, upstream: Upstream) -> Iterator[Caddy]:
    binary = caddy_binary()
    folder = tmp_path / "caddy"
    folder.mkdir()
    conf = folder / "Caddyfile"
    conf.write_text(
        render(CADDYFILE.read_text(), gateway=scopegate.port, app=upstream.server.port or 0, folder=folder)
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "XDG_CONFIG_HOME": str(folder / "config"),
        "XDG_DATA_HOME": str(folder / "data"),
    }
    checked = subprocess.run(
        [binary, "validate", "--adapter", "caddyfile", "--config", str(conf)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = folder / "caddy.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [binary, "run", "--adapter", "caddyfile", "--config", str(conf)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        (port,) = wait_listening(proc, log, 1)
        yield Caddy(f"http://127.0.0.1:{port}", folder)
    finally:
        stop(proc)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_the_shipped_caddyfile_is_formatted_and_valid(tmp_path: Path) -> None:
    binary = caddy_binary()
    formatted = subprocess.run(
        [binary, "fmt", str(CADDYFILE)], capture_output=True, text=True, timeout=60, check=True
    )
    assert formatted.stdout == CADDYFILE.read_text()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    checked = subprocess.run(
        [binary, "adapt", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert '"disabled":true' in checked.stdout.replace(" ", "")  # admin off


async def test_anonymous_route_is_allowed_and_carries_no_credential(
    caddy: Caddy, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    headers = {**bearer(scopegate.token), "X-Auth-Subject": "root", "X-Auth-Role": "admin"}
    async with http.get(caddy.url + "/v1/health", headers=headers) as r:
        assert r.status == 200
        assert (await r.json())["path"] == "/v1/health"
    seen = upstream.last
    assert seen.header("X-Auth-Type") == "anonymous"
    assert seen.header("Authorization") is None
    assert seen.header("X-Auth-Subject") is None
    assert seen.header("X-Auth-Role") is None


async def test_token_get_reaches_upstream_with_identity_and_without_its_secret(
    caddy: Caddy, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    target = "/v1/playlists/7?a=%2F&b=1"
    async with http.get(URL(caddy.url + target, encoded=True), headers=bearer(scopegate.token)) as r:
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
    caddy: Caddy, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    async with http.post(caddy.url + "/v1/playlists", headers=bearer(scopegate.token), json={"x": 1}) as r:
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
    caddy: Caddy, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    async with http.get(caddy.url + "/v1/playlists/1") as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_token"
        assert r.headers.getall("WWW-Authenticate") == [WWW_AUTHENTICATE_INVALID_TOKEN]
    assert upstream.seen == []


async def test_jwt_is_allowed_and_forwarded_as_it_came_with_its_body(
    caddy: Caddy, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    body = os.urandom(256 * 1024)
    async with http.put(caddy.url + "/v1/admin/users/3", headers=bearer(scopegate.jwt), data=body) as r:
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
    caddy: Caddy, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
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
    async with http.get(caddy.url + "/v1/playlists/1", headers={**bearer(scopegate.token), **spoof}) as r:
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
    caddy: Caddy, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    spoof = {"X-Auth-Token-Id": "tok_forged", "X-Auth-Project": "p", "X-Auth-Authorization": "Bearer x.y.z"}
    async with http.get(caddy.url + "/v1/admin/x", headers={**bearer(scopegate.jwt), **spoof}) as r:
        assert r.status == 200
    seen = upstream.last
    assert seen.header("X-Auth-Token-Id") is None
    assert seen.header("X-Auth-Project") is None
    assert seen.header("X-Auth-Authorization") is None
    assert seen.all("Authorization") == [f"Bearer {scopegate.jwt}"]


async def test_a_client_cannot_steer_the_question_with_forwarded_or_original_headers(
    caddy: Caddy, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    for lie in (
        {"X-Forwarded-Uri": "/v1/health", "X-Forwarded-Method": "GET"},
        {"X-Original-URI": "/v1/health", "X-Original-Method": "GET"},
    ):
        async with http.post(caddy.url + "/v1/playlists", headers=lie, data=b"x") as r:
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
    caddy: Caddy,
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
    async with http.request(method, URL(caddy.url + target, encoded=True), headers=headers) as r:
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
    caddy: Caddy, http: aiohttp.ClientSession, upstream: Upstream, status: int
) -> None:
    async with http.get(caddy.url + f"/status/{status}") as r:
        assert r.status == status
        assert r.content_type != "application/json"
    assert [s.raw_path for s in upstream.seen] == [f"/status/{status}"]
