"""End-to-end gate tests: real gateways on real sockets, real tokens from the store, real HS256 JWTs.

Helpers live here (imported by the test modules) so every file refuses and mints the same way.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway.config import load_config
from gateway.tokens.store import TokenRecord
from gateway.web.runtime import Runtime
from tests.conftest import EXAMPLE_ROUTES, Gateway, ListenerServer, Upstream, write_config
from tests.support import WWW_AUTHENTICATE_INVALID_TOKEN

SECRET = "gates-hmac-secret-that-is-long-enough-even-for-hs512-signatures-0123"
OTHER_SECRET = "another-hmac-secret-also-long-enough-even-for-hs512-signatures-0123"
ISS = "https://idp.example/"
AUD = "scopegate-api"
ROLES = {"viewer": ["read"], "member": ["read", "write"], "admin": ["*"]}

INVALID_TOKEN = WWW_AUTHENTICATE_INVALID_TOKEN
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

# One concrete path per route kind of EXAMPLE_ROUTES.
PATHS = {
    "public": "/v1/playlists/7",
    "full": "/v1/devices/d1/reboot",
    "fine": "/v1/agents/register",
    "jwt_only": "/v1/admin/users",
    "agency": "/v1/workspaces/w1/playlists/p1",
}

_names = itertools.count()


def jwt_extra(
    *, claims: Mapping[str, str] | None = None, roles: Mapping[str, list[str]] | None = None
) -> str:
    """The `jwt:` config block (one line of flow YAML) for HS256 with SECRET."""
    parts = [
        "algorithms: [HS256]",
        f"secret: {json.dumps(SECRET)}",
        f"issuer: {json.dumps(ISS)}",
        f"audience: {json.dumps(AUD)}",
    ]
    if claims is not None:
        parts.append("claims: " + json.dumps(dict(claims)))
    if roles is not None:
        parts.append("roles: " + json.dumps(dict(roles)))
    return "jwt: {" + ", ".join(parts) + "}\n"


def make_jwt(
    *,
    key: str = SECRET,
    alg: str = "HS256",
    iss: str | None = ISS,
    aud: str | None = AUD,
    exp_in: float | None = 300,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A real HS256 JWT signed with PyJWT; `None` claims are left out."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": "alice", "iat": now}
    if iss is not None:
        payload["iss"] = iss
    if aud is not None:
        payload["aud"] = aud
    if exp_in is not None:
        payload["exp"] = now + int(exp_in)
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def mint(
    gw: Gateway,
    scopes: list[str],
    *,
    workspace: str = "w1",
    project: str | None = "p1",
    targets: list[dict[str, str]] | None = None,
    expires_in: float | str | None = None,
) -> tuple[TokenRecord, str]:
    """A real token through the service (the operator path), straight into the gateway's store."""
    body: dict[str, Any] = {
        "name": f"gate-{next(_names)}",
        "workspace": workspace,
        "scopes": scopes,
    }
    if project is not None:
        body["project"] = project
    if targets is not None:
        body["targets"] = targets
    if expires_in is not None:
        body["expires_in"] = expires_in
    return await gw.runtime.service.create(None, body)


async def send(
    gw: Gateway, method: str, path: str, headers: Mapping[str, str] | list[tuple[str, str]] | None
) -> ClientResponse:
    """The request exactly as written: the path goes on the wire unnormalised (`%31` stays `%31`)."""
    url = URL(f"http://127.0.0.1:{gw.client.port}{path}", encoded=True)
    return await gw.client.session.request(method, url, headers=headers)


async def refused(
    gw: Gateway,
    upstream: Upstream,
    method: str,
    path: str,
    headers: Mapping[str, str] | list[tuple[str, str]] | None,
    status: int,
    code: str,
    *,
    www: str | None = None,
) -> tuple[ClientResponse, dict[str, Any]]:
    """Send one request and assert the whole refusal: status, JSON body, header, never forwarded."""
    before = len(upstream.seen)
    resp = await send(gw, method, path, headers)
    raw = await resp.read()
    assert resp.status == status, (method, path, resp.status, raw[:300])
    assert resp.content_type == "application/json", resp.content_type
    if method == "HEAD":
        # No body on HEAD: the code travels only in the headers; fake the body for the caller.
        body = {"error": code, "request_id": resp.headers.get("X-Request-Id")}
    else:
        body = json.loads(raw)
        assert body["error"] == code, body
        assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("request_id"), str) and body["request_id"], body
    assert resp.headers.get("X-Request-Id") == body["request_id"]
    if status == 401:
        assert resp.headers.get("WWW-Authenticate") == (www or INVALID_TOKEN), resp.headers
    elif www is not None:
        assert resp.headers.get("WWW-Authenticate") == www, resp.headers
    assert len(upstream.seen) == before, f"the upstream saw a refused request: {upstream.seen[before:]}"
    return resp, body


async def allowed(
    gw: Gateway, upstream: Upstream, method: str, path: str, headers: Mapping[str, str] | None = None
) -> ClientResponse:
    """Send one request and assert that the upstream received it, with the method the client used."""
    before = len(upstream.seen)
    resp = await send(gw, method, path, headers)
    raw = await resp.read()
    assert resp.status == 200, (method, path, resp.status, raw[:300])
    assert len(upstream.seen) == before + 1, "the upstream did not see an allowed request"
    assert upstream.last.method == method
    assert upstream.last.raw_path == path
    return resp


def scope_challenge(scope: str) -> str:
    return f'Bearer realm="scopegate", error="insufficient_scope", scope="{scope}"'


BuildGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def build_gateway(tmp_path: Path, upstream: Upstream) -> AsyncIterator[BuildGateway]:
    """Like `make_gateway`, but lets a test rewrite the `store:` line (which `extra` cannot)."""
    clients: list[TestClient[Any, Any]] = []

    async def build(*, store: str, extra: str = "", routes: str = EXAMPLE_ROUTES) -> Gateway:
        folder = tmp_path / f"built{len(clients)}"
        folder.mkdir()
        path = write_config(folder, upstream.url, routes, extra)
        text = path.read_text()
        assert "store: sqlite:///tokens.db\n" in text
        path.write_text(text.replace("store: sqlite:///tokens.db\n", f"store: {store}\n"))
        rt = Runtime(load_config(str(path)))
        client = TestClient(ListenerServer(rt))
        await client.start_server()
        clients.append(client)
        return Gateway(client, rt, folder)

    yield build
    for client in clients:
        await client.close()
