"""`scopegate demo`: the gateway on embedded defaults, an echo upstream, and a minted token."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from importlib import resources
from typing import Any

import jwt as pyjwt
from aiohttp import ClientSession, web

from ..config import load_config
from ..errors import StartupError
from ..observe import setup_logging
from ..serve import serve
from ..tokens.service import TokenService
from ..web.runtime import Runtime

DEMO_WORKSPACE = "demo"


def echo_app() -> web.Application:
    """An upstream that answers every request with what it received, as JSON."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": {
                    k: v for k, v in request.headers.items() if k.lower().startswith(("x-", "authorization"))
                },
                "body_bytes": len(body),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def _write_config(folder: str, upstream_port: int, port: int, secret: str) -> str:
    policy = os.path.join(folder, "example.yaml")
    with resources.as_file(resources.files("gateway.demo") / "example.yaml") as src:
        shutil.copyfile(src, policy)
    path = os.path.join(folder, "config.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"""listen: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: 0}}
surface: example.yaml
upstreams:
  default: http://127.0.0.1:{upstream_port}
store: sqlite:///demo.db
jwt:
  algorithms: [HS256]
  secret: {json.dumps(secret)}
  issuer: scopegate-demo
  audience: demo-api
log: {{level: warning, format: text}}
""")
    return path


async def _mint(service: TokenService) -> str:
    _, secret = await service.create(
        None,
        {
            "name": "demo",
            "workspace": DEMO_WORKSPACE,
            "scopes": ["read"],
            "owner": "demo-user",
            "expires_in": "1d",
        },
    )
    return secret


# (what it shows, method, path, credential: "token" | "jwt" | None, expected status)
WALKTHROUGH: tuple[tuple[str, str, str, str | None, int], ...] = (
    ("an allowed read with the demo token (scope read)", "GET", "/v1/playlists/7", "token", 200),
    (
        "a refused write: read does not grant POST (403 insufficient_scope)",
        "POST",
        "/v1/playlists",
        "token",
        403,
    ),
    ("a refused JWT-only route: API tokens get 401 jwt_required", "GET", "/v1/admin/users", "token", 401),
    ("the same JWT-only route with a JWT", "GET", "/v1/admin/users", "jwt", 200),
    ("an allowed anonymous route", "GET", "/v1/health", None, 200),
    ("no credential on a public route (401 invalid_token)", "GET", "/v1/playlists", None, 401),
    ("the scope catalogue", "GET", "/auth/scopes", None, 200),
)


def _curl(base: str, method: str, path: str, credential: str | None) -> str:
    line = "curl -s" + (f" -X {method}" if method != "GET" else "") + f" {base}{path}"
    return line + (f" -H 'Authorization: Bearer {credential}'" if credential else "")


async def _self_check(base: str, credentials: dict[str, str]) -> bool:
    ok = True
    async with ClientSession() as session:
        for what, method, path, cred, expected in WALKTHROUGH:
            headers = {"Authorization": f"Bearer {credentials[cred]}"} if cred else {}
            async with session.request(method, base + path, headers=headers) as resp:
                good = resp.status == expected
                ok = ok and good
                print(f"{'ok ' if good else 'BAD'} {resp.status} {method} {path}  ({what})", flush=True)
    return ok


async def _demo(port: int, check: bool) -> int:
    folder = tempfile.mkdtemp(prefix="scopegate-demo-")
    upstream = web.AppRunner(echo_app(), access_log=None)
    await upstream.setup()
    site = web.TCPSite(upstream, "127.0.0.1", 0)
    await site.start()
    upstream_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    secret = secrets.token_urlsafe(32)
    cfg = load_config(_write_config(folder, upstream_port, port, secret))
    setup_logging(cfg.log.level, cfg.log.format)
    rt = Runtime(cfg)
    await rt.store.open()
    try:
        token = await _mint(rt.service)
    finally:
        await rt.store.close()
    now = int(time.time())
    jwt_token = pyjwt.encode(
        {
            "sub": "demo-admin",
            "workspace_id": DEMO_WORKSPACE,
            "iss": "scopegate-demo",
            "aud": "demo-api",
            "iat": now,
            "exp": now + 86400,
        },
        secret,
        algorithm="HS256",
    )
    credentials = {"token": token, "jwt": jwt_token}
    stop = asyncio.Event()
    result: dict[str, Any] = {"ok": True}

    async def ready(bound: list[tuple[str, int]]) -> None:
        base = f"http://127.0.0.1:{bound[0][1]}"
        if check:
            result["ok"] = await _self_check(base, credentials)
            stop.set()
            return
        print(f"\nscopegate demo: gateway on {base}, echo upstream on 127.0.0.1:{upstream_port}")
        print(f"admin (healthz, readyz, metrics) on http://127.0.0.1:{bound[1][1]}" if len(bound) > 1 else "")
        print(f"demo token (scope read, workspace {DEMO_WORKSPACE}): {token}\n")
        for what, method, path, cred, status in WALKTHROUGH:
            print(f"# {what} -> {status}\n{_curl(base, method, path, credentials.get(cred or ''))}\n")
        print("Ctrl-C stops the demo.", flush=True)

    try:
        await serve(cfg, "127.0.0.1", port, ready=ready, stop=stop)
    except StartupError as exc:
        print(f"scopegate demo: {exc}; try --port", file=sys.stderr)
        return 1
    finally:
        await upstream.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if result["ok"] else 1


def run_demo(port: int, check: bool = False) -> int:
    return asyncio.run(_demo(port, check))
