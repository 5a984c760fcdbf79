"""What a client and an operator read of each decision: the refusal's exact JSON, and the decision
log line's fields for allowed, refused and shadow requests.

Clients branch on `error` and show `detail`; operators grep the log for `credential`, `token_id`
and `upstream`. Both are pinned here through a real gateway on a real socket, real tokens from
its store and real signed JWTs; the log line is the JSON formatter's output, parsed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from aiohttp import ClientResponse

from tests.conftest import EXAMPLE_ROUTES, MakeGateway, Upstream
from tests.ops.test_metrics_logs import labels, samples
from tests.support import DECISION_LOG_FIELDS, captured_access_log

from .conftest import bearer, jwt_extra, make_jwt, mint, send

JWT = jwt_extra(claims={"scopes": "scope"})
ALL_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
# Every decision line carries these keys; an allowed one also names its upstream.
REFUSED_KEYS = {*DECISION_LOG_FIELDS, "worker"}
ALLOWED_KEYS = {*REFUSED_KEYS, "upstream"}
# A route in shadow mode next to the example surface.
SHADOW_ROUTES = (
    EXAMPLE_ROUTES
    + """
  - id: beta
    match: {prefix: /v1/beta}
    class: public
    mode: shadow
"""
)


@pytest.fixture
def access_log() -> Iterator[list[dict[str, Any]]]:
    with captured_access_log(json.loads) as records:
        yield records


def line_of(log: list[dict[str, Any]], rid: str) -> dict[str, Any]:
    """The one decision line of request `rid`, without the fields that vary from run to run."""
    [line] = [r for r in log if r.get("request_id") == rid]
    assert isinstance(line.pop("ts"), str)
    for timing in ("upstream_ms", "total_ms"):
        assert isinstance(line.pop(timing), int | float)
    return line


async def body_of(resp: ClientResponse) -> dict[str, Any]:
    assert resp.content_type == "application/json"
    body = json.loads(await resp.read())
    assert body["request_id"] == resp.headers["X-Request-Id"]
    return {k: v for k, v in body.items() if k != "request_id"}


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request written byte for byte (an upgrade the client library would not send as is)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split(" ")[1]), headers, json.loads(body)


# ---------------------------------------------------------------------------------------------
# the refusals the pipeline raises itself: the exact JSON a client reads


REFUSALS = [
    pytest.param(
        "TRACE",
        "/v1/health",
        {},
        405,
        "method_not_allowed",
        "method TRACE is not allowed",
        id="method-outside-config",
    ),
    pytest.param(
        "DELETE",
        "/v1/health",
        {},
        405,
        "method_not_allowed",
        "method DELETE is not allowed on this path",
        id="method-outside-rule",
    ),
    pytest.param("GET", "/nowhere", {}, 404, "no_route", "no route matches this path", id="no-rule"),
    pytest.param(
        "GET",
        "/v1/Health",
        {},
        404,
        "no_route",
        "this path matches a more specific rule with letter case ignored",
        id="case-variant-of-a-rule",
    ),
    pytest.param(
        "GET",
        "/v1/health",
        [("Authorization", "Bearer a"), ("Authorization", "Bearer b")],
        400,
        "bad_request",
        "more than one Authorization header",
        id="two-authorization-on-anonymous-route",
    ),
    pytest.param(
        "GET",
        "/v1/playlists/7?_method=DELETE",
        {},
        400,
        "bad_request",
        "the _method parameter is not accepted",
        id="method-parameter",
    ),
    pytest.param(
        "GET",
        "/v1/health",
        {"Upgrade": "h2c", "Connection": "Upgrade"},
        400,
        "bad_request",
        "only websocket upgrades are accepted",
        id="upgrade-not-websocket",
    ),
    pytest.param(
        "GET", "/v1/playlists/7", {}, 401, "invalid_token", "missing bearer credential", id="no-credential"
    ),
]


@pytest.mark.parametrize(("method", "path", "headers", "status", "error", "detail"), REFUSALS)
async def test_refusal_json_is_exact(
    make_gateway: MakeGateway,
    upstream: Upstream,
    method: str,
    path: str,
    headers: Mapping[str, str] | list[tuple[str, str]],
    status: int,
    error: str,
    detail: str,
) -> None:
    gw = await make_gateway()
    resp = await send(gw, method, path, headers)
    assert resp.status == status
    assert await body_of(resp) == {"error": error, "detail": detail}
    if status == 405:
        assert resp.headers["Allow"] == (ALL_METHODS if method == "TRACE" else "GET, HEAD")
    assert upstream.seen == []


@pytest.mark.parametrize(
    "body_header", ["Content-Length: 5", "Transfer-Encoding: chunked"], ids=["content-length", "chunked"]
)
async def test_websocket_upgrade_with_a_body_json_is_exact(
    make_gateway: MakeGateway, upstream: Upstream, body_header: str
) -> None:
    gw = await make_gateway()
    body = b"hello" if "Length" in body_header else b"5\r\nhello\r\n0\r\n\r\n"
    request = (
        "GET /v1/health HTTP/1.1\r\nHost: gateway.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"{body_header}\r\n\r\n"
    ).encode() + body
    port = gw.client.port
    assert port is not None
    status, _, got = await raw_exchange(port, request)
    assert status == 400
    assert {k: v for k, v in got.items() if k != "request_id"} == {
        "error": "bad_request",
        "detail": "an upgrade request cannot carry a body",
    }
    assert upstream.seen == []


async def test_rate_limited_json_is_exact(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra="limits: {failed_auth_per_minute: 1}\n")
    resp = await send(gw, "GET", "/v1/playlists/7", bearer("garbage"))
    assert resp.status == 401
    resp = await send(gw, "GET", "/v1/playlists/7", bearer("garbage"))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "60"
    assert await body_of(resp) == {
        "error": "rate_limited",
        "detail": "too many failed authentications from this address",
    }
    assert upstream.seen == []


# ---------------------------------------------------------------------------------------------
# the rate limiter counts failures against the client's address


TRUSTING_LOOPBACK = "trusted_proxies: [127.0.0.1/32]\nlimits: {failed_auth_per_minute: 2}\n"


async def test_failed_authentications_count_per_client_address(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """Behind a trusted proxy every client shares the proxy's socket: one client's failures must
    not lock out another (nor should its fresh address reset them)."""
    gw = await make_gateway(extra=TRUSTING_LOOPBACK)
    _, token = await mint(gw, ["read"])
    mallory = {"X-Forwarded-For": "198.51.100.7"}
    alice = {"X-Forwarded-For": "198.51.100.8"}
    for _ in range(2):
        resp = await send(gw, "GET", "/v1/playlists/7", {**mallory, **bearer("garbage")})
        assert resp.status == 401
    resp = await send(gw, "GET", "/v1/playlists/7", {**mallory, **bearer(token)})
    assert resp.status == 429
    # Another client behind the same proxy is judged on its own record.
    resp = await send(gw, "GET", "/v1/playlists/7", {**alice, **bearer(token)})
    assert resp.status == 200
    assert len(upstream.seen) == 1
    resp = await send(gw, "GET", "/v1/playlists/7", {**alice, **bearer("garbage")})
    assert resp.status == 401


# ---------------------------------------------------------------------------------------------
# the client address reaches the network gate; the workspace header reaches the authenticators


async def test_network_bound_token_is_judged_on_the_client_address(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra="trusted_proxies: [127.0.0.1/32]\n")
    record, token = await gw.runtime.service.create(
        None, {"name": "ci", "workspace": "w1", "scopes": ["read"], "allowed_cidrs": ["127.0.0.0/8"]}
    )
    resp = await send(gw, "GET", "/v1/playlists/7", bearer(token))
    assert resp.status == 200
    assert upstream.last.header("X-Auth-Token-Id") == record.id
    resp = await send(gw, "GET", "/v1/playlists/7", {**bearer(token), "X-Forwarded-For": "203.0.113.9"})
    assert resp.status == 403
    assert await body_of(resp) == {
        "error": "target_denied",
        "detail": "this token may not be used from this address",
    }
    assert len(upstream.seen) == 1


async def test_configured_workspace_header_chooses_the_jwt_workspace(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra=JWT + "headers: {workspace: X-Tenant}\n")
    token = make_jwt(scope="read", workspaces=["a", "b"])
    resp = await send(gw, "GET", "/v1/playlists/7", {**bearer(token), "X-Tenant": "b"})
    assert resp.status == 200
    assert upstream.last.all("X-Tenant") == ["b"] and upstream.last.all("X-Auth-Workspace") == ["b"]
    resp = await send(gw, "GET", "/v1/playlists/7", {**bearer(token), "X-Tenant": "c"})
    assert resp.status == 403
    assert (await body_of(resp))["error"] == "target_denied"
    # The default name means nothing once another is configured.
    resp = await send(gw, "GET", "/v1/playlists/7", {**bearer(token), "X-Workspace-Id": "b"})
    assert resp.status == 200
    assert upstream.last.all("X-Tenant") == [] and upstream.last.all("X-Auth-Workspace") == []


# ---------------------------------------------------------------------------------------------
# the decision log line


def expected_line(
    rid: str, method: str, path: str, route: str | None, cls: str | None, **fields: Any
) -> dict[str, Any]:
    base = {"request_id": rid, "method": method, "path": path, "route": route, "class": cls, "worker": "0"}
    return base | fields


async def test_log_lines_of_allowed_requests(
    make_gateway: MakeGateway, upstream: Upstream, access_log: list[dict[str, Any]]
) -> None:
    gw = await make_gateway(extra=JWT)
    record, token = await mint(gw, ["read"])
    cases = [
        ("allow-token", "/v1/playlists/7", bearer(token), "playlists", "public", "token", record.id),
        ("allow-jwt", "/v1/playlists/7", bearer(make_jwt(scope="read")), "playlists", "public", "jwt", None),
        ("allow-anonymous", "/v1/health", {}, "health", "anonymous", "none", None),
    ]
    for rid, path, headers, route, cls, credential, token_id in cases:
        resp = await send(gw, "GET", path, {**headers, "X-Request-Id": rid})
        assert resp.status == 200
        line = line_of(access_log, rid)
        assert set(line) | {"ts", "upstream_ms", "total_ms"} == ALLOWED_KEYS
        assert line == expected_line(
            rid,
            "GET",
            path,
            route,
            cls,
            credential=credential,
            token_id=token_id,
            upstream="default",
            decision="allow",
            reason="ok",
            status=200,
        )
    # The line's upstream is the label of the upstream's latency.
    text = gw.runtime.metrics.exposition()
    assert samples(text, "scopegate_upstream_duration_seconds_count") == {labels(upstream="default"): 3.0}


async def test_log_lines_of_refused_requests(
    make_gateway: MakeGateway, upstream: Upstream, access_log: list[dict[str, Any]]
) -> None:
    gw = await make_gateway(extra=JWT)
    record, token = await mint(gw, ["read"])
    cases = [
        # A refusal by an identified credential names it; one without a credential names none.
        (
            "deny-token",
            "POST",
            "/v1/playlists/7",
            bearer(token),
            403,
            "insufficient_scope",
            "token",
            record.id,
        ),
        (
            "deny-jwt",
            "POST",
            "/v1/playlists/7",
            bearer(make_jwt(scope="read")),
            403,
            "insufficient_scope",
            "jwt",
            None,
        ),
        ("deny-none", "GET", "/v1/playlists/7", {}, 401, "invalid_token", "none", None),
        ("deny-garbage", "GET", "/v1/playlists/7", bearer("garbage"), 401, "invalid_token", "none", None),
        ("deny-jwt-only", "GET", "/v1/admin/users", bearer(token), 401, "jwt_required", "token", record.id),
    ]
    for rid, method, path, headers, status, reason, credential, token_id in cases:
        resp = await send(gw, method, path, {**headers, "X-Request-Id": rid})
        assert resp.status == status
        line = line_of(access_log, rid)
        assert set(line) | {"ts", "upstream_ms", "total_ms"} == REFUSED_KEYS
        route, cls = ("admin", "jwt_only") if path.startswith("/v1/admin") else ("playlists", "public")
        assert line == expected_line(
            rid,
            method,
            path,
            route,
            cls,
            credential=credential,
            token_id=token_id,
            decision="deny",
            reason=reason,
            status=status,
        )
    # Refused before a route: no route, no class, no credential named.
    resp = await send(gw, "GET", "/nowhere", {**bearer(token), "X-Request-Id": "deny-no-route"})
    assert resp.status == 404
    assert line_of(access_log, "deny-no-route") == expected_line(
        "deny-no-route",
        "GET",
        "/nowhere",
        None,
        None,
        credential="none",
        token_id=None,
        decision="deny",
        reason="no_route",
        status=404,
    )
    assert upstream.seen == []


async def test_log_lines_of_shadow_decisions(
    make_gateway: MakeGateway, upstream: Upstream, access_log: list[dict[str, Any]]
) -> None:
    gw = await make_gateway(routes=SHADOW_ROUTES, extra=JWT)
    record, token = await mint(gw, ["read"])
    cases = [
        # Forwarded as far as it got: the identified credential, or none.
        ("shadow-token", "POST", bearer(token), "insufficient_scope", "token", record.id),
        ("shadow-jwt", "POST", bearer(make_jwt(scope="read")), "insufficient_scope", "jwt", None),
        ("shadow-none", "GET", {}, "invalid_token", "none", None),
        ("shadow-ok", "GET", bearer(token), "ok", "token", record.id),
    ]
    for rid, method, headers, reason, credential, token_id in cases:
        resp = await send(gw, method, "/v1/beta/items", {**headers, "X-Request-Id": rid})
        assert resp.status == 200
        assert upstream.last.method == method and upstream.last.raw_path == "/v1/beta/items"
        line = line_of(access_log, rid)
        assert line == expected_line(
            rid,
            method,
            "/v1/beta/items",
            "beta",
            "public",
            credential=credential,
            token_id=token_id,
            upstream="default",
            decision="allow" if reason == "ok" else "shadow",
            reason=reason,
            status=200,
        )
    assert len(upstream.seen) == len(cases)
