"""Hostile clients (THREATS.md): every trick is refused, or neutralised, before the upstream sees it.

Requests go out over raw sockets, byte for byte, so no client library normalises them first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.proxy.headers import IDENTITY
from tests.conftest import EXAMPLE_ROUTES, MakeGateway, Upstream
from tests.core.test_proxy import assert_refusal, port_of, raw_get, raw_request
from tests.support import DECISION_LOG_FIELDS, WWW_AUTHENTICATE_INVALID_TOKEN, captured_access_log

# The identity headers the gateway sets, and the workspace header (its default name) it also owns.
IDENTITY_HEADERS = (*IDENTITY, "X-Workspace-Id")
CATCH_ALL = (
    EXAMPLE_ROUTES
    + """
  - id: everything
    match: {prefix: /}
    class: anonymous
"""
)


# ---------------------------------------------------------------------------------------------
# path confusion


BAD_PATHS = {
    "dotdot": "/open/../v1/admin",
    "dot": "/open/./x",
    "dotdot-last": "/open/x/..",
    "dotdot-trailing": "/open/../",
    "enc-dotdot": "/open/%2e%2e/v1/admin",
    "enc-dotdot-upper": "/open/%2E%2E/v1/admin",
    "half-enc-dotdot": "/open/.%2e/v1/admin",
    "enc-dot": "/open/%2e/x",
    "enc-slash-dotdot": "/open/%2F..",
    "enc-slash-joined": "/open%2fx",
    "enc-slash-upper": "/open/a%2Fb",
    "enc-backslash": "/open/a%5cb",
    "enc-backslash-upper": "/open/a%5Cb",
    "enc-nul": "/open/%00",
    "empty-segment": "/open//x",
    "leading-double-slash": "//open/x",
    "trailing-double-slash": "/open/x//",
    "semicolon": "/open;x=1",
    "semicolon-segment": "/open/x;jsessionid=1",
    "backslash": "/open/\\x",
    "backslash-dotdot": "/open/..\\v1/admin",
    "bad-pct": "/open/%zz",
    "bad-pct-root": "/%zz",
    "lone-pct": "/open/%",
    "short-pct": "/open/%2",
    "enc-del": "/open/%7f",
    "enc-tab": "/open/%09",
    "overlong-utf8-dots": "/open/%c0%ae%c0%ae/v1/admin",
    "invalid-utf8": "/open/%ff",
    "param-enc-slash": "/v1/workspaces/w/playlists/a%2Fb",
}


@pytest.mark.parametrize(
    "target",
    [
        *BAD_PATHS.values(),
        pytest.param("/open/%0a", id="enc-lf"),
        pytest.param("/open/%0d%0aX-Injected:%201", id="enc-crlf-injection"),
        pytest.param("/open/x%0D", id="enc-cr"),
    ],
    ids=[*BAD_PATHS, "enc-lf", "enc-crlf-injection", "enc-cr"],
)
async def test_bad_path_refused_and_not_forwarded(
    make_gateway: MakeGateway, upstream: Upstream, target: str
) -> None:
    gw = await make_gateway(routes=CATCH_ALL)
    resp = await raw_request(port_of(gw), raw_get(target))
    assert_refusal(resp.status, resp.json(), 400, "bad_path")
    assert resp.headers["Content-Type"].startswith("application/json")
    assert upstream.seen == []


@pytest.mark.parametrize(
    "target",
    ["http://evil/v1/admin", "http://evil/open/x", "https://127.0.0.1/open/x", "HTTP://EVIL/open/x"],
    ids=["absolute-admin", "absolute-open", "absolute-https", "absolute-upper"],
)
async def test_absolute_form_target_refused(
    make_gateway: MakeGateway, upstream: Upstream, target: str
) -> None:
    gw = await make_gateway(routes=CATCH_ALL)
    resp = await raw_request(port_of(gw), raw_get(target))
    assert_refusal(resp.status, resp.json(), 400, "bad_path")
    assert upstream.seen == []


@pytest.mark.parametrize("target", ["*", "evil.example:80"], ids=["asterisk", "authority"])
async def test_odd_target_forms_refused_by_the_parser(
    make_gateway: MakeGateway, upstream: Upstream, target: str
) -> None:
    gw = await make_gateway(routes=CATCH_ALL)
    resp = await raw_request(port_of(gw), raw_get(target))
    assert resp.status == 400
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [("OPTIONS", "*", 400), ("CONNECT", "127.0.0.1:80", 405), ("CONNECT", "evil.example:443", 405)],
    ids=["options-asterisk", "connect-ip", "connect-name"],
)
async def test_non_path_targets_get_a_json_refusal(
    make_gateway: MakeGateway, upstream: Upstream, method: str, target: str, status: int
) -> None:
    gw = await make_gateway(routes=CATCH_ALL)
    resp = await raw_request(port_of(gw), raw_get(target, method=method))
    assert resp.status == status
    assert resp.json()["error"] in ("bad_path", "method_not_allowed")
    assert upstream.seen == []


@pytest.mark.parametrize(
    "target",
    ["/v2/x", "/", "/openx", "/OPEN/x", "/v1/playlistsX", "/v1/health/", "/v1/health/x", "/v1/devices/7"],
    ids=[
        "unknown",
        "root",
        "prefix-not-segment",
        "case",
        "prefix-suffix",
        "exact-trailing-slash",
        "exact-longer",
        "param-too-short",
    ],
)
async def test_unmatched_is_404_and_not_forwarded(
    make_gateway: MakeGateway, upstream: Upstream, target: str
) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get(target))
    assert_refusal(resp.status, resp.json(), 404, "no_route")
    assert upstream.seen == []


# ---------------------------------------------------------------------------------------------
# methods


@pytest.mark.parametrize(
    "method",
    ["TRACE", "PROPFIND", "MKCOL", "PURGE", "QUERY", "LOCK", "CONNECT"],
)
async def test_method_outside_config_is_405(
    make_gateway: MakeGateway, upstream: Upstream, method: str
) -> None:
    gw = await make_gateway(routes=CATCH_ALL)
    resp = await raw_request(port_of(gw), raw_get("/open/x", method=method))
    assert_refusal(resp.status, resp.json(), 405, "method_not_allowed")
    allow = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allow == {"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"}
    assert upstream.seen == []


async def test_configured_methods_narrow_the_set(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra="methods: [GET, HEAD]\n")
    resp = await raw_request(port_of(gw), raw_get("/open/x", "Content-Length: 0", method="DELETE"))
    assert_refusal(resp.status, resp.json(), 405, "method_not_allowed")
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == {"GET", "HEAD"}
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("method", "target", "allowed"),
    [
        ("POST", "/v1/health", {"GET", "HEAD"}),
        ("DELETE", "/v1/health", {"GET", "HEAD"}),
        ("GET", "/v1/agents/register", {"POST"}),
        ("DELETE", "/v1/workspaces/w/playlists/p", {"GET", "HEAD", "PUT"}),
    ],
    ids=["post-on-get-path", "delete-on-get-path", "get-on-post-path", "delete-on-agency"],
)
async def test_path_matches_but_method_does_not_is_405(
    make_gateway: MakeGateway, upstream: Upstream, method: str, target: str, allowed: set[str]
) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get(target, "Content-Length: 0", method=method))
    assert_refusal(resp.status, resp.json(), 405, "method_not_allowed")
    allow = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allowed <= allow | {"HEAD"}
    assert method not in allow
    assert upstream.seen == []


@pytest.mark.parametrize(
    "query",
    ["_method=DELETE", "a=1&_method=PUT", "%5Fmethod=DELETE", "%5fmethod=DELETE", "_method", "_method="],
    ids=["plain", "second", "enc-upper", "enc-lower", "bare", "empty"],
)
async def test_method_parameter_refused(make_gateway: MakeGateway, upstream: Upstream, query: str) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get(f"/open/x?{query}", "Content-Length: 0", method="POST"))
    assert_refusal(resp.status, resp.json(), 400, "bad_request")
    assert upstream.seen == []


@pytest.mark.parametrize(
    "query",
    ["_%6Dethod=DELETE", "%5F%6D%65%74%68%6F%64=DELETE", "_m%65thod=DELETE"],
    ids=["enc-m", "all-encoded", "enc-e"],
)
async def test_encoded_method_parameter_refused(
    make_gateway: MakeGateway, upstream: Upstream, query: str
) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get(f"/open/x?{query}", "Content-Length: 0", method="POST"))
    assert resp.status == 400
    assert upstream.seen == []


OVERRIDES = ("X-HTTP-Method-Override", "X-Method-Override", "X-HTTP-Method")


async def test_method_override_headers_removed(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    extra = [f"{h}: DELETE" for h in OVERRIDES] + [f"{h.lower()}: PUT" for h in OVERRIDES]
    resp = await raw_request(port_of(gw), raw_get("/open/x", *extra, "Content-Length: 0", method="POST"))
    assert resp.status == 200
    assert upstream.last.method == "POST"
    for h in OVERRIDES:
        assert upstream.last.header(h) is None, h


@pytest.mark.parametrize("header", OVERRIDES)
async def test_method_override_not_trusted_by_the_gate(
    make_gateway: MakeGateway, upstream: Upstream, header: str
) -> None:
    # POST on a GET-only path stays a POST for the gate, whatever the override says.
    gw = await make_gateway()
    resp = await raw_request(
        port_of(gw), raw_get("/v1/health", f"{header}: GET", "Content-Length: 0", method="POST")
    )
    assert resp.status == 405
    assert upstream.seen == []


@pytest.mark.parametrize(
    "name",
    [
        "X_HTTP_Method_Override",
        "X_Method_Override",
        "X_Original_URL",
        "X_Rewrite_URL",
        "X_Forwarded_For",
        "X_Forwarded_Host",
        "X_Real_IP",
        "X_Auth_Authorization",
        "X_Forwarded_Uri",
        "X_Forwarded_Method",
        "X_Original_URI",
        "X_Original_Method",
        "X_Forwarded_Prefix",
    ],
)
async def test_underscore_twins_of_stripped_headers_removed(
    make_gateway: MakeGateway, upstream: Upstream, name: str
) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get("/open/x", f"{name}: spoofed"))
    assert resp.status == 200
    assert upstream.last.header(name) is None


# ---------------------------------------------------------------------------------------------
# upgrades


@pytest.mark.parametrize(
    "upgrade",
    ["h2c", "foo", "websocket, h2c", "HTTP/2.0", "TLS/1.2"],
    ids=["h2c", "unknown", "websocket-and-h2c", "http2", "tls"],
)
async def test_non_websocket_upgrade_refused_and_connection_closed(
    make_gateway: MakeGateway, upstream: Upstream, upgrade: str
) -> None:
    gw = await make_gateway()
    resp = await raw_request(
        port_of(gw),
        f"GET /open/x HTTP/1.1\r\nHost: g\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {upgrade}\r\n"
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n".encode(),
    )
    assert_refusal(resp.status, resp.json(), 400, "bad_request")
    assert resp.closed
    assert upstream.seen == []


async def test_upgrade_cannot_smuggle_a_pipelined_request(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    smuggled = "GET /v1/admin HTTP/1.1\r\nHost: g\r\n\r\n"
    resp = await raw_request(
        port_of(gw),
        f"GET /open/x HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n{smuggled}".encode(),
    )
    assert resp.status == 400
    assert resp.closed
    assert upstream.seen == []


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_websocket_upgrade_with_body_refused(
    make_gateway: MakeGateway, upstream: Upstream, framing: str
) -> None:
    gw = await make_gateway()
    body_headers = (
        "Content-Length: 5\r\n\r\nhello"
        if framing == "content-length"
        else "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    resp = await raw_request(
        port_of(gw),
        (
            "GET /open/ws HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + body_headers
        ).encode(),
    )
    assert_refusal(resp.status, resp.json(), 400, "bad_request")
    assert resp.closed
    assert upstream.seen == []


async def test_websocket_refused_before_any_101(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.client.ws_connect("/v1/playlists/ws")
    assert info.value.status == 401
    assert upstream.seen == []


# ---------------------------------------------------------------------------------------------
# identity spoofing


@pytest.mark.parametrize("target", ["/open/x", "/v1/playlists"], ids=["anonymous", "public"])
async def test_two_authorization_headers_is_400(
    make_gateway: MakeGateway, upstream: Upstream, target: str
) -> None:
    gw = await make_gateway()
    resp = await raw_request(
        port_of(gw), raw_get(target, "Authorization: Bearer one", "authorization: Bearer two")
    )
    assert_refusal(resp.status, resp.json(), 400, "bad_request")
    assert upstream.seen == []


SPOOFS = (
    *IDENTITY_HEADERS,
    "X_Auth_Subject",
    "X_Auth_Type",
    "X_Auth_Scopes",
    "X_Auth_Workspace",
    "X_Auth_Token_Id",
    "X_Auth_Role",
    "X_Workspace_Id",
    "X-Auth_Subject",
    "x_auth_subject",
    "X-Original-URL",
    "X-Rewrite-URL",
    # Issue 8 item 8: forward-auth's question and answer, which an upstream may trust.
    "X-Auth-Authorization",
    "X-Forwarded-Uri",
    "X-Forwarded-Method",
    "X-Original-URI",
    "X-Original-Method",
    "X-Forwarded-Prefix",
    "Authorization",
)


@pytest.mark.parametrize("name", SPOOFS)
async def test_spoofed_identity_headers_removed_on_anonymous_route(
    make_gateway: MakeGateway, upstream: Upstream, name: str
) -> None:
    gw = await make_gateway()
    value = "Bearer spoofed" if name == "Authorization" else "spoofed"
    resp = await raw_request(port_of(gw), raw_get("/open/x", f"{name}: {value}"))
    assert resp.status == 200
    seen = upstream.last
    assert all(v != value for _, v in seen.headers), seen.headers
    assert seen.all("X-Auth-Type") == ["anonymous"]
    twins = {h.lower() for h in IDENTITY_HEADERS if h != "X-Auth-Type"}
    assert not [k for k, _ in seen.headers if k.lower().replace("_", "-") in twins]


async def test_all_spoofs_at_once_and_custom_workspace_header(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra="headers: {workspace: X-Tenant}\n")
    # With another workspace header configured, X-Workspace-Id is an ordinary header again.
    names = [n for n in SPOOFS[:-1] if n.lower().replace("_", "-") != "x-workspace-id"]
    extra = [f"{name}: spoofed" for name in (*names, "X-Tenant", "X_Tenant", "x-tenant")]
    resp = await raw_request(port_of(gw), raw_get("/open/x", *extra))
    assert resp.status == 200
    assert [k for k, v in upstream.last.headers if v == "spoofed"] == []
    assert upstream.last.all("X-Auth-Type") == ["anonymous"]


# ---------------------------------------------------------------------------------------------
# credential parsing


def assert_401(resp_status: int, headers: CIMultiDict[str], body: bytes) -> None:
    assert resp_status == 401
    assert headers["WWW-Authenticate"] == WWW_AUTHENTICATE_INVALID_TOKEN
    assert headers["Content-Type"].startswith("application/json")
    parsed = json.loads(body)
    assert set(parsed) == {"error", "detail", "request_id"}
    assert_refusal(resp_status, parsed, 401, "invalid_token")


@pytest.mark.parametrize(
    "target",
    [
        "/v1/playlists",
        "/v1/playlists/7",
        "/v1/admin/users",
        "/v1/workspaces/w1/playlists/p1",
        "/v1/devices/d/reboot",
    ],
    ids=["public", "public-sub", "jwt-only", "agency", "public-full"],
)
async def test_missing_credential_is_401(make_gateway: MakeGateway, upstream: Upstream, target: str) -> None:
    gw = await make_gateway()
    method = "POST" if target.endswith("reboot") else "GET"
    resp = await raw_request(port_of(gw), raw_get(target, "Content-Length: 0", method=method))
    assert_401(resp.status, resp.headers, resp.body)
    assert upstream.seen == []


@pytest.mark.parametrize(
    "value",
    [
        "Basic eHh4Onl5eQ==",
        "Basic xxx",
        "Bearer",
        "Bearer ",
        "bearer   x y",
        "Bearer x y",
        "Token abc",
        "Bearer st_notavalidtoken",
        "Bearer st_" + "A" * 38,
        "Bearer a.b.c",
        "Bearer e30.e30.",
        "BearerX abc",
        "Bearer\tabc",
        "Bearer caf\xe9",
    ],
    ids=[
        "basic",
        "basic-short",
        "bearer-empty",
        "bearer-space",
        "bearer-two-words",
        "two-words",
        "token-scheme",
        "bad-token",
        "bad-checksum",
        "jwt-shaped",
        "jwt-unsigned",
        "scheme-glued",
        "tab",
        "non-ascii",
    ],
)
async def test_malformed_credential_is_401(make_gateway: MakeGateway, upstream: Upstream, value: str) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get("/v1/playlists", f"Authorization: {value}"))
    assert_401(resp.status, resp.headers, resp.body)
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("extra", "length"),
    [("", 4097), ("limits: {max_credential: 64}\n", 65), ("", 12000)],
    ids=["default-limit", "configured-limit", "far-over"],
)
async def test_oversized_credential_is_401_and_never_echoed(
    make_gateway: MakeGateway, upstream: Upstream, access_log: list[str], extra: str, length: int
) -> None:
    gw = await make_gateway(extra=extra)
    marker = "st_SECRETzzz"
    value = "Bearer " + marker + "Q" * (length - len("Bearer ") - len(marker))
    assert len(value) == length
    resp = await raw_request(port_of(gw), raw_get("/v1/playlists", f"Authorization: {value}"))
    assert_401(resp.status, resp.headers, resp.body)
    assert marker.encode() not in resp.body and b"QQQQ" not in resp.body
    assert not any(marker in v for v in resp.headers.values())
    assert not any(marker in line or "QQQQ" in line for line in access_log)
    assert upstream.seen == []


async def test_failed_authentication_rate_limited(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra="limits: {failed_auth_per_minute: 3}\n")
    statuses = []
    for i in range(5):
        resp = await raw_request(port_of(gw), raw_get("/v1/playlists", f"Authorization: Bearer st_spray{i}"))
        statuses.append(resp.status)
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3:] == [429, 429]
    assert_refusal(resp.status, resp.json(), 429, "rate_limited")
    assert "Retry-After" in resp.headers
    # Anonymous routes are not blocked by it.
    assert (await raw_request(port_of(gw), raw_get("/open/x"))).status == 200
    assert [s.raw_path for s in upstream.seen] == ["/open/x"]


# ---------------------------------------------------------------------------------------------
# the management mount is never forwarded


@pytest.mark.parametrize(
    "target",
    ["/auth/scopes", "/%61uth/scopes", "/auth/%73copes", "/%61%75%74%68/scopes", "/auth/scopes/"],
    ids=["plain", "enc-a", "enc-s", "all-enc", "trailing-slash"],
)
async def test_management_mount_served_by_gateway(
    make_gateway: MakeGateway, upstream: Upstream, target: str
) -> None:
    gw = await make_gateway(routes=CATCH_ALL)
    resp = await raw_request(port_of(gw), raw_get(target))
    assert resp.status == 200
    scopes = resp.json()["scopes"]
    assert "read" in json.dumps(scopes)
    assert upstream.seen == []


@pytest.mark.parametrize(
    "target",
    ["/%61uth/tokens", "/auth/tokens/abc", "/%61uth/nothing"],
    ids=["tokens-encoded", "token-id", "unknown-endpoint"],
)
async def test_management_refusals_not_forwarded(
    make_gateway: MakeGateway, upstream: Upstream, target: str
) -> None:
    gw = await make_gateway(routes=CATCH_ALL)
    resp = await raw_request(port_of(gw), raw_get(target))
    assert resp.status in (401, 404, 405)
    assert upstream.seen == []


# ---------------------------------------------------------------------------------------------
# logs


@pytest.fixture
def access_log() -> Iterator[list[str]]:
    """The decision log lines, formatted as the JSON formatter writes them."""
    with captured_access_log(str) as lines:
        yield lines


@pytest.mark.parametrize(
    "target",
    [
        pytest.param('/open/%0a{"request_id":"forged","status":200}', id="lf-json"),
        pytest.param("/open/x%0d%0aforged", id="crlf"),
        pytest.param("/open/%1b[31mred", id="ansi-escape"),
    ],
)
async def test_log_injection_path_refused_and_escaped(
    make_gateway: MakeGateway, upstream: Upstream, access_log: list[str], target: str
) -> None:
    gw = await make_gateway()
    quoted = target.replace('"', "%22").replace("{", "%7B").replace("}", "%7D")
    resp = await raw_request(port_of(gw), raw_get(quoted))
    assert resp.status == 400
    assert resp.json()["error"] == "bad_path"
    assert upstream.seen == []
    assert len(access_log) == 1
    line = access_log[0]
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    record = json.loads(line)
    assert record["reason"] == "bad_path" and record["status"] == 400
    assert record["request_id"] != "forged"


@pytest.mark.parametrize(
    "target",
    ["/open/%c2%85next", "/open/%e2%80%a8sep", "/open/caf%c3%a9"],
    ids=["nel", "line-separator", "accent"],
)
async def test_unicode_paths_forwarded_and_logged_on_one_line(
    make_gateway: MakeGateway, upstream: Upstream, access_log: list[str], target: str
) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get(target))
    assert resp.status == 200
    assert upstream.last.raw_path == target
    assert len(access_log) == 1
    assert access_log[0].isascii() and len(access_log[0].splitlines()) == 1
    assert json.loads(access_log[0])["path"] == target


async def test_normal_request_logs_one_parseable_json_line(
    make_gateway: MakeGateway, upstream: Upstream, access_log: list[str]
) -> None:
    gw = await make_gateway()
    resp = await raw_request(
        port_of(gw),
        raw_get("/open/x?access_token=hush", "X-Request-Id: log-1", "Authorization: Bearer st_topsecret"),
    )
    assert resp.status == 200
    assert len(access_log) == 1
    record = json.loads(access_log[0])
    for key in DECISION_LOG_FIELDS:
        assert key in record, key
    assert record["request_id"] == "log-1"
    assert record["method"] == "GET" and record["path"] == "/open/x"
    assert record["route"] == "open" and record["class"] == "anonymous"
    assert record["credential"] == "none" and record["decision"] == "allow" and record["reason"] == "ok"
    assert record["status"] == 200
    assert "hush" not in access_log[0] and "topsecret" not in access_log[0]
