"""Lifecycle tests: JWTs, HTTP helpers, and `python -m gateway` subprocesses on one token store."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from tests.conftest import EXAMPLE_ROUTES
from tests.support import Running, free_port, gateway_cli, spawn_serve, stop_async, wait_accepting

SECRET = "lifecycle-hmac-secret-comfortably-over-32-bytes"
JWT_EXTRA = (
    "jwt:\n"
    "  algorithms: [HS256]\n"
    f'  secret: "{SECRET}"\n'
    "  roles: {viewer: [read], member: [read, write], admin: ['*']}\n"
    "  claims: {workspace: workspace_id, role: role}\n"
)
# The same, with a `scope` claim that narrows the role's cap (a JWT without it holds the cap).
JWT_SCOPED_EXTRA = JWT_EXTRA.replace("role: role}", "role: role, scopes: scope}")
# The example surface: `nodes:create` on a route puts `nodes:create` and `nodes:*` in the catalogue.
ROUTES = EXAMPLE_ROUTES


def make_jwt(
    workspace: str | None = "w1",
    role: str | None = "admin",
    *,
    scope: str | None = None,
    exp_in: float = 3600,
    sub: str = "alice",
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(exp_in), **claims}
    if workspace is not None:
        payload["workspace_id"] = workspace
    if role is not None:
        payload["role"] = role
    if scope is not None:
        payload["scope"] = scope
    return jwt.encode(payload, SECRET, algorithm="HS256")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def cli_list(config: Path, *args: str) -> list[dict[str, Any]]:
    done = gateway_cli(config, "token", "list", *args, "--json")
    assert done.returncode == 0, done.stderr
    listed: list[dict[str, Any]] = json.loads(done.stdout)
    return listed


def serve_config(
    folder: Path, upstream_url: str, extra: str = "", routes: str = ROUTES, store: str = "sqlite:///tokens.db"
) -> Path:
    """A config for `serve` subprocesses: no admin listener (two processes share the store)."""
    (folder / "routes.yaml").write_text(routes)
    config = folder / "config.yaml"
    config.write_text(
        f"""listen: {{host: 127.0.0.1, port: 8080}}
admin: false
surface: routes.yaml
upstreams:
  default: {{url: "{upstream_url}", connect_timeout: 2, timeout: 5}}
store: {store}
log: {{level: warning}}
drain_timeout: 5
"""
        + JWT_EXTRA
        + extra
    )
    return config


@contextlib.asynccontextmanager
async def serving(
    config: Path, count: int = 1, extra_args: Sequence[str] = ()
) -> AsyncIterator[list[Running]]:
    """`count` `python -m gateway serve` processes on one config (and store), each on its own port."""
    started: list[Running] = []
    try:
        for _ in range(count):
            port = free_port()
            log = config.parent / f"serve-{port}.log"
            started.append(Running(spawn_serve(config, log, "--port", str(port), *extra_args), port, log))
        for served in started:
            await wait_accepting(served.port, served.proc, served.log)
        yield started
    finally:
        for served in started:
            # Stop every process, even one that cannot be reaped.
            with contextlib.suppress(subprocess.TimeoutExpired):
                await stop_async(served.proc, 10)


async def status_of(
    session: aiohttp.ClientSession, url: str, credential: str, method: str = "GET", body: Any = None
) -> int:
    async with session.request(method, url, headers=bearer(credential), json=body) as resp:
        await resp.read()
        return resp.status
