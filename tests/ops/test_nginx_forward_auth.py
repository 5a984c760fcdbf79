"""A real nginx doing `auth_request` against a real `scopegate serve`, in front of a recording app.

The nginx configuration is deploy/nginx/forward-auth.conf itself, only its three addresses
rewritten, wrapped in a minimal main context whose pid, logs and temp paths live in tmp_path.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.conftest import Upstream
from tests.support import WWW_AUTHENTICATE_INVALID_TOKEN, reserved_port, stop

from .conftest import REPO, Scopegate, nginx_binary, wait_port

SNIPPET = REPO / "deploy" / "nginx" / "forward-auth.conf"


def render(snippet: str, *, listen: int, gateway: int, app: int, folder: Path) -> str:
    for old, new in (
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{gateway};"),
        ("server 127.0.0.1:8081;", f"server 127.0.0.1:{app};"),
        # reuseport: nginx joins the port the test holds (tests.support.reserved_port).
        ("listen 80;", f"listen 127.0.0.1:{listen} reuseport;"),
    ):
        assert snippet.count(old) == 1, f"deploy/nginx/forward-auth.conf: expected one {old!r}"
        snippet = snippet.replace(old, new)
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp}
{snippet}
}}
"""


@dataclass(frozen=True)
class Nginx:
    url: str
    folder: Path


StartNginx = Callable[..., Nginx]


@pytest.fixture
def start_nginx(tmp_path: Path, scopegate: Scopegate, upstream: Upstream) -> Iterator[StartNginx]:
    binary = nginx_binary()
    procs: list[subprocess.Popen[bytes]] = []
    held = contextlib.ExitStack()

    def start(edit: Callable[[str], str] = lambda s: s) -> Nginx:
        folder = tmp_path / f"nginx{len(procs)}"
        folder.mkdir()
        port = held.enter_context(reserved_port())
        conf = folder / "nginx.conf"
        conf.write_text(
            render(
                edit(SNIPPET.read_text()),
                listen=port,
                gateway=scopegate.port,
                app=upstream.server.port or 0,
                folder=folder,
            )
        )
        log = folder / "error.log"
        checked = subprocess.run(
            [binary, "-t", "-p", str(folder), "-e", str(log), "-c", str(conf)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stderr
        proc = subprocess.Popen(
            [binary, "-p", str(folder), "-e", str(log), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        wait_port(port, proc, log)
        return Nginx(f"http://127.0.0.1:{port}", folder)

    try:
        yield start
    finally:
        for proc in procs:
            stop(proc)
        held.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


@pytest.fixture
def nginx(start_nginx: StartNginx) -> Nginx:
    return start_nginx()


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_anonymous_route_is_allowed_and_carries_no_credential(
    nginx: Nginx, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    headers = {**bearer(scopegate.token), "X-Auth-Subject": "root", "X-Auth-Role": "admin"}
    async with http.get(nginx.url + "/v1/health", headers=headers) as r:
        assert r.status == 200
        assert (await r.json())["path"] == "/v1/health"
    seen = upstream.last
    assert seen.header("X-Auth-Type") == "anonymous"
    assert seen.header("Authorization") is None
    assert seen.header("X-Auth-Subject") is None
    assert seen.header("X-Auth-Role") is None


async def test_token_get_reaches_upstream_with_identity_and_without_its_secret(
    nginx: Nginx, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    target = "/v1/playlists/7?a=%2F&b=1"
    async with http.get(URL(nginx.url + target, encoded=True), headers=bearer(scopegate.token)) as r:
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


async def test_token_post_is_refused_403_and_never_reaches_upstream(
    nginx: Nginx, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    async with http.post(nginx.url + "/v1/playlists", headers=bearer(scopegate.token), json={"x": 1}) as r:
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
    nginx: Nginx, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    async with http.get(nginx.url + "/v1/playlists/1") as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_token"
        assert r.headers.getall("WWW-Authenticate") == [WWW_AUTHENTICATE_INVALID_TOKEN]
    assert upstream.seen == []


async def test_jwt_is_allowed_and_forwarded_as_it_came(
    nginx: Nginx, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    async with http.delete(nginx.url + "/v1/admin/users/3", headers=bearer(scopegate.jwt)) as r:
        assert r.status == 200
    seen = upstream.last
    assert seen.method == "DELETE"
    assert seen.header("Authorization") == f"Bearer {scopegate.jwt}"
    assert seen.header("X-Auth-Type") == "jwt"
    assert seen.header("X-Auth-Subject") == "alice"
    assert seen.header("X-Auth-Workspace") == "w"
    assert seen.header("X-Auth-Token-Id") is None
    assert seen.header("X-Auth-Authorization") is None


async def test_spoofed_identity_headers_from_the_client_are_replaced_or_removed(
    nginx: Nginx, http: aiohttp.ClientSession, upstream: Upstream, scopegate: Scopegate
) -> None:
    spoof = {
        "X-Auth-Subject": "root",
        "x-auth-role": "admin",
        "X-Auth-Project": "someone-elses",
        "X-Auth-Scopes": "full",
        "X-Workspace-Id": "other",
        "X_Auth_Subject": "root",
        "X-Auth-Authorization": "Bearer forged",
        "X-HTTP-Method-Override": "DELETE",
        "X-Original-URL": "/v1/admin",
    }
    async with http.get(nginx.url + "/v1/playlists/1", headers={**bearer(scopegate.token), **spoof}) as r:
        assert r.status == 200
    seen = upstream.last
    assert seen.all("X-Auth-Subject") == ["cli"]
    assert seen.all("X-Auth-Role") == ["user"]
    assert seen.all("X-Auth-Scopes") == ["read"]
    assert seen.all("X-Workspace-Id") == ["w"]
    for gone in ("X-Auth-Project", "X_Auth_Subject", "X-Auth-Authorization", "X-HTTP-Method-Override"):
        assert seen.header(gone) is None, gone
    assert seen.header("X-Original-URL") is None


async def test_a_client_cannot_steer_the_question_with_forwarded_uri_headers(
    nginx: Nginx, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    # scopegate prefers X-Forwarded-Uri/-Method (Traefik) over the nginx names; the snippet must
    # blank them, or this unauthenticated POST would be judged as an anonymous GET /v1/health.
    lie = {"X-Forwarded-Uri": "/v1/health", "X-Forwarded-Method": "GET"}
    async with http.post(nginx.url + "/v1/playlists", headers=lie, data=b"x") as r:
        assert r.status == 401
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("method", "target", "auth", "status", "code"),
    [
        pytest.param("GET", "/v2/nothing", None, 404, "no_route", id="no-route-404"),
        pytest.param("DELETE", "/v1/health", None, 405, "method_not_allowed", id="wrong-method-405"),
        pytest.param("GET", "/v1/playlists;x=1", None, 400, "bad_path", id="bad-path-400"),
        pytest.param("GET", "/v1/playlists?_method=DELETE", None, 400, "bad_request", id="method-param-400"),
        pytest.param("GET", "/auth/tokens", None, 400, "bad_request", id="management-mount-400"),
        pytest.param("GET", "/v1/admin", "token", 401, "jwt_required", id="token-on-jwt-only-401"),
    ],
)
async def test_every_refusal_reaches_the_client_with_scopegates_status_and_json(
    nginx: Nginx,
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
    async with http.request(method, URL(nginx.url + target, encoded=True), headers=headers) as r:
        assert r.status == status
        assert r.content_type == "application/json"
        assert (await r.json())["error"] == code
        if status == 405:
            assert r.headers["Allow"] == "GET, HEAD"
        assert len(r.headers.getall("WWW-Authenticate", [])) == (1 if status == 401 else 0)
    assert upstream.seen == []


@pytest.mark.parametrize("status", [403, 500], ids=["app-403", "app-500"])
async def test_the_apps_own_errors_pass_through_untouched(
    nginx: Nginx, http: aiohttp.ClientSession, upstream: Upstream, status: int
) -> None:
    async with http.get(nginx.url + f"/status/{status}") as r:
        assert r.status == status
        assert r.content_type != "application/json"
    assert [s.raw_path for s in upstream.seen] == [f"/status/{status}"]


async def test_without_the_refusal_location_nginx_keeps_401_403_and_turns_the_rest_into_500(
    start_nginx: StartNginx, http: aiohttp.ClientSession, scopegate: Scopegate
) -> None:
    # What the snippet's error_page works around: auth_request's own handling of refusals.
    bare = start_nginx(
        lambda s: s.replace("error_page 403 500 = @", "# ").replace("error_page 401 = @", "# ")
    )
    async with http.get(bare.url + "/v1/playlists/1") as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == WWW_AUTHENTICATE_INVALID_TOKEN
        assert r.content_type == "text/html"
    async with http.post(bare.url + "/v1/playlists", headers=bearer(scopegate.token)) as r:
        assert r.status == 403
        assert r.content_type == "text/html"
    async with http.get(bare.url + "/v2/nothing") as r:
        assert r.status == 500
    assert "auth request unexpected status: 404" in (bare.folder / "error.log").read_text()
