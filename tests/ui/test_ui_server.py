"""The page's files, its session endpoint, and cookie sign-in on the management API (real sockets)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway.config import UiConfig, load_config
from gateway.errors import ConfigError
from gateway.web.ui import CSRF_HEADER, FILES, STATIC
from tests.conftest import Gateway, MakeGateway
from tests.lifecycle.conftest import JWT_EXTRA, ROUTES, bearer, make_jwt
from tests.support import ROOT

COOKIE = "sg_session"
UI = JWT_EXTRA + f"management: {{ui: {{cookie: {COOKIE}}}}}\n"
ADMIN = make_jwt("w1", "admin")
VIEWER = make_jwt("w1", "viewer")


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(routes=ROUTES, extra=UI)


def cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"other=1; {COOKIE}={value}"}


async def call(
    gw: Gateway, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, Any]:
    async with gw.client.request(method, path, headers=headers, json=body) as resp:
        out = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, out


async def names(gw: Gateway, status: str = "all") -> list[str]:
    code, out = await call(gw, "GET", f"/auth/tokens?status={status}", bearer(ADMIN))
    assert code == 200
    return [t["name"] for t in out["tokens"]]


# ---------------------------------------------------------------------------------------------
# The files


async def test_page_and_assets_carry_a_strict_policy(gw: Gateway) -> None:
    for sub, (_, content_type) in FILES.items():
        async with gw.client.get("/auth/ui/" + "/".join(sub)) as resp:
            assert resp.status == 200, sub
            assert resp.content_type == content_type
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "style-src 'self'" in csp
            assert "default-src 'none'" in csp and "frame-ancestors 'self'" in csp
            assert "unsafe" not in csp and "http" not in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"
            assert resp.headers["Referrer-Policy"] == "no-referrer"


def test_the_page_has_no_inline_script_or_style_and_nothing_from_elsewhere() -> None:
    html = (STATIC / "index.html").read_text("utf-8")
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="app.js">']
    assert re.search(r"<script[^>]*>(?!</script>)", html) is None  # no script body
    assert "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+\s*=", html) is None  # no inline event handlers
    for name in sorted(name for name, _ in FILES.values() if not name.endswith(".json")):
        text = (STATIC / name).read_text("utf-8")
        assert re.search(r"https?://", text) is None, f"{name} refers to another origin"
        assert "@import" not in text and "innerHTML" not in text and "eval(" not in text


def test_every_page_file_ships_as_package_data() -> None:
    """pyproject's package-data globs cover every file the page is made of."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    globs = re.search(r"gateway = \[(.*?)\]", pyproject, re.S)
    assert globs is not None
    patterns = re.findall(r'"([^"]+)"', globs.group(1))
    package = ROOT / "gateway"
    shipped = {p.resolve() for pattern in patterns for p in package.glob(pattern)}
    on_disk = {p.resolve() for p in STATIC.rglob("*") if p.is_file()}
    assert on_disk and on_disk <= shipped, sorted(str(p) for p in on_disk - shipped)
    assert {(STATIC / name).resolve() for name, _ in FILES.values()} == on_disk


async def test_the_page_without_its_slash_redirects(gw: Gateway) -> None:
    async with gw.client.get("/auth/ui", allow_redirects=False) as resp:
        assert resp.status == 308
        assert resp.headers["Location"] == "/auth/ui/"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/auth/ui/config.yaml", 404, "not_found"),
        ("GET", "/auth/ui/i18n/xx.json", 404, "not_found"),
        ("GET", "/auth/ui/i18n", 404, "not_found"),
        ("GET", "/auth/ui/ui.py", 404, "not_found"),
        ("GET", "/auth/ui/app.js/x", 404, "not_found"),
        ("GET", "/auth/ui/..%2fui.py", 400, "bad_path"),
        ("POST", "/auth/ui/", 405, "method_not_allowed"),
        ("DELETE", "/auth/ui/app.js", 405, "method_not_allowed"),
        ("POST", "/auth/ui/session", 405, "method_not_allowed"),
    ],
)
async def test_nothing_but_the_page_files(
    gw: Gateway, method: str, path: str, status: int, code: str
) -> None:
    got, out = await call(gw, method, path, {})
    assert (got, out["error"]) == (status, code)


async def test_the_page_follows_the_mount(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(
        routes=ROUTES, extra=JWT_EXTRA + f"management: {{mount: /manage, ui: {{cookie: {COOKIE}}}}}\n"
    )
    async with gw.client.get("/manage/ui", allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == (308, "/manage/ui/")
    got, _ = await call(gw, "GET", "/manage/ui/", {})
    assert got == 200
    got, out = await call(gw, "GET", "/manage/ui/session", cookie(ADMIN))
    assert (got, out["workspace"]) == (200, "w1")
    got, _ = await call(gw, "GET", "/auth/ui/", {})
    assert got == 404


async def test_ui_false_turns_page_session_and_cookie_off(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(routes=ROUTES, extra=JWT_EXTRA + "management: {ui: false}\n")
    assert gw.runtime.cfg.ui == UiConfig(enabled=False)
    for path in ("/auth/ui/", "/auth/ui/app.js", "/auth/ui/session"):
        got, out = await call(gw, "GET", path, bearer(ADMIN))
        assert (got, out["error"]) == (404, "not_found")
    # The API itself is untouched.
    got, _ = await call(gw, "GET", "/auth/tokens", bearer(ADMIN))
    assert got == 200


# ---------------------------------------------------------------------------------------------
# Cookie sign-in on the management API


async def test_cookie_signs_in_for_reading(gw: Gateway) -> None:
    got, out = await call(gw, "GET", "/auth/tokens", cookie(ADMIN))
    assert (got, out) == (200, {"tokens": []})


async def test_cookie_post_without_the_custom_header_is_refused(gw: Gateway) -> None:
    got, out = await call(gw, "POST", "/auth/tokens", cookie(ADMIN), {"name": "forged", "scopes": ["full"]})
    assert (got, out["error"]) == (400, "bad_request")
    assert CSRF_HEADER in out["detail"]
    assert await names(gw) == []
    got, out = await call(
        gw, "POST", "/auth/tokens", {**cookie(ADMIN), CSRF_HEADER: "1"}, {"name": "mine", "scopes": ["read"]}
    )
    assert got == 201, out
    assert out["display_prefix"] and out["token"].startswith(out["display_prefix"])
    assert await names(gw) == ["mine"]


async def test_cookie_delete_without_the_custom_header_is_refused(gw: Gateway) -> None:
    _, created = await call(gw, "POST", "/auth/tokens", bearer(ADMIN), {"name": "keep"})
    got, out = await call(gw, "DELETE", f"/auth/tokens/{created['id']}", cookie(ADMIN))
    assert (got, out["error"]) == (400, "bad_request")
    assert await names(gw, "active") == ["keep"]
    got, _ = await call(gw, "DELETE", f"/auth/tokens/{created['id']}", {**cookie(ADMIN), CSRF_HEADER: "1"})
    assert got == 204
    assert await names(gw, "active") == []


async def test_a_bearer_header_needs_no_custom_header_and_beats_the_cookie(gw: Gateway) -> None:
    headers = {**bearer(VIEWER), **cookie(ADMIN)}
    got, out = await call(gw, "POST", "/auth/tokens", headers, {"name": "w", "scopes": ["write"]})
    # Judged as the viewer of the Authorization header, not the admin of the cookie.
    assert (got, out["error"]) == (403, "insufficient_scope")
    got, _ = await call(gw, "POST", "/auth/tokens", headers, {"name": "r", "scopes": ["read"]})
    assert got == 201


async def test_an_api_token_in_the_cookie_is_refused(gw: Gateway) -> None:
    _, manager = await call(
        gw, "POST", "/auth/tokens", bearer(ADMIN), {"name": "mgr", "scopes": ["write", "tokens:manage"]}
    )
    got, out = await call(gw, "GET", "/auth/tokens", cookie(manager["token"]))
    assert (got, out["error"]) == (401, "invalid_token")
    assert "JWT" in out["detail"]
    got, out = await call(gw, "GET", "/auth/ui/session", cookie(manager["token"]))
    assert (got, out["error"]) == (401, "invalid_token")


@pytest.mark.parametrize(
    "value",
    [make_jwt(exp_in=-3600), ADMIN[:-4] + "AAAA", "garbage", ""],
    ids=["expired", "bad-signature", "garbage", "empty"],
)
async def test_a_bad_cookie_is_401(gw: Gateway, value: str) -> None:
    got, out = await call(gw, "GET", "/auth/ui/session", cookie(value))
    assert (got, out["error"]) == (401, "invalid_token")


async def test_without_a_configured_cookie_no_cookie_is_read(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(routes=ROUTES, extra=JWT_EXTRA)
    got, out = await call(gw, "GET", "/auth/tokens", cookie(ADMIN))
    assert (got, out["error"]) == (401, "invalid_token")
    got, _ = await call(gw, "GET", "/auth/ui/", {})
    assert got == 200  # the page is on by default; sign-in is then by fragment hand-over


async def test_the_cookie_never_signs_in_a_proxied_route(gw: Gateway) -> None:
    got, _ = await call(gw, "GET", "/v1/playlists", cookie(ADMIN))
    assert got == 401


# ---------------------------------------------------------------------------------------------
# What the page may offer


async def test_session_for_an_admin_jwt(gw: Gateway) -> None:
    got, out = await call(gw, "GET", "/auth/ui/session", cookie(ADMIN))
    assert got == 200
    assert out["kind"] == "jwt" and out["subject"] == "alice" and out["workspace"] == "w1"
    assert [s["name"] for s in out["scopes"]] == [
        "read",
        "write",
        "full",
        "agency",
        "tokens:manage",
        "nodes:*",
        "nodes:create",
    ]
    assert out["agency"] is True and out["project_required"] is False
    cfg = gw.runtime.cfg.tokens
    assert (out["max_ttl"], out["default_ttl"]) == (int(cfg.max_ttl), int(cfg.default_ttl))
    assert out["max_rotation_overlap"] == int(cfg.max_rotation_overlap) == 7 * 86400
    assert out["csrf_header"] == CSRF_HEADER


async def test_session_for_a_viewer_offers_read_only(gw: Gateway) -> None:
    got, out = await call(gw, "GET", "/auth/ui/session", bearer(VIEWER))
    assert got == 200
    assert [s["name"] for s in out["scopes"]] == ["read"]
    assert out["agency"] is False


async def test_session_for_a_token_manager(gw: Gateway) -> None:
    _, manager = await call(
        gw,
        "POST",
        "/auth/tokens",
        bearer(ADMIN),
        {"name": "mgr", "scopes": ["write", "tokens:manage"], "expires_in": "10d"},
    )
    got, out = await call(gw, "GET", "/auth/ui/session", bearer(manager["token"]))
    assert got == 200
    assert out["kind"] == "token" and out["project_required"] is True
    assert [s["name"] for s in out["scopes"]] == ["read", "write", "tokens:manage"]
    assert out["agency"] is False
    assert 10 * 86400 - 60 < out["max_ttl"] <= 10 * 86400
    assert out["default_ttl"] <= out["max_ttl"]
    # What it offers is what the API accepts: the longest expiry offered works, one more fails.
    body = {"name": "p", "project": "web", "scopes": ["write"], "expires_in": out["max_ttl"] - 5}
    got, _ = await call(gw, "POST", "/auth/tokens", bearer(manager["token"]), body)
    assert got == 201
    body = {**body, "name": "q", "expires_in": out["max_ttl"] + 120}
    got, _ = await call(gw, "POST", "/auth/tokens", bearer(manager["token"]), body)
    assert got == 403


@pytest.mark.parametrize("scope", ["read", "write", "full", "tokens:manage", "nodes:create"])
async def test_every_scope_offered_to_an_admin_can_be_minted(gw: Gateway, scope: str) -> None:
    _, out = await call(gw, "GET", "/auth/ui/session", cookie(ADMIN))
    assert scope in [s["name"] for s in out["scopes"]]
    got, _ = await call(gw, "POST", "/auth/tokens", bearer(ADMIN), {"name": "t", "scopes": [scope]})
    assert got == 201


async def test_session_needs_a_credential(gw: Gateway) -> None:
    got, out = await call(gw, "GET", "/auth/ui/session", {})
    assert (got, out["error"]) == (401, "invalid_token")
    got, out = await call(gw, "GET", "/auth/ui/session", bearer(make_jwt(workspace=None)))
    assert (got, out["error"]) == (403, "insufficient_scope")


async def test_listing_carries_the_display_prefix(gw: Gateway) -> None:
    _, created = await call(gw, "POST", "/auth/tokens", bearer(ADMIN), {"name": "p"})
    _, out = await call(gw, "GET", "/auth/tokens", bearer(ADMIN))
    (listed,) = out["tokens"]
    assert listed["display_prefix"] == created["display_prefix"]
    assert created["token"].startswith(listed["display_prefix"]) and len(listed["display_prefix"]) == 7
    assert created["token"] not in str(out)


# ---------------------------------------------------------------------------------------------
# Config


def _config(tmp_path: Path, management: str) -> Path:
    (tmp_path / "routes.yaml").write_text("routes: []\n")
    path = tmp_path / "config.yaml"
    path.write_text(f"surface: routes.yaml\nmanagement:\n{management}")
    return path


@pytest.mark.parametrize(
    ("management", "expected"),
    [
        ("  mount: /auth\n", UiConfig()),
        ("  ui: true\n", UiConfig()),
        ("  ui: false\n", UiConfig(enabled=False)),
        ("  ui: {cookie: session}\n", UiConfig(cookie="session")),
        ("  ui:\n    cookie: __Host-jwt\n", UiConfig(cookie="__Host-jwt")),
    ],
)
def test_ui_config_values(tmp_path: Path, management: str, expected: UiConfig) -> None:
    assert load_config(str(_config(tmp_path, management))).ui == expected


NOT_UI = "management.ui: expected true, false or a mapping such as {cookie: session}"


@pytest.mark.parametrize(
    ("management", "line", "message"),
    [
        ("  ui: {cookie: 'two words'}\n", 3, "management.ui.cookie: expected a cookie name"),
        ("  ui: {cookie: 'a;b'}\n", 3, "management.ui.cookie: expected a cookie name"),
        ("  ui: {cookie: 5}\n", 3, "management.ui.cookie: expected a cookie name"),
        ('  ui: {cookie: "session\\n"}\n', 3, "management.ui.cookie: expected a cookie name"),
        ("  ui:\n    cokie: x\n", 4, "management.ui: unknown key 'cokie'"),
        (
            "  ui: yes please\n",
            3,
            "management.ui: expected true, false or a mapping such as {cookie: session}",
        ),
        ("  ui: [x]\n", 3, "management.ui: expected true, false or a mapping such as {cookie: session}"),
        ("  uii: false\n", 3, "management: unknown key 'uii'"),
    ],
)
def test_ui_config_errors_name_file_and_line(
    tmp_path: Path, management: str, line: int, message: str
) -> None:
    path = _config(tmp_path, management)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    (problem,) = [str(p) for p in info.value.problems]
    assert problem.startswith(f"{path}:{line}: {message}"), problem
