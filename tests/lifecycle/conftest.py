"""Lifecycle tests: JWTs, HTTP helpers, and `python -m gateway` subprocesses on one token store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from tests.conftest import EXAMPLE_ROUTES

ROOT = Path(__file__).resolve().parents[2]
SECRET = "lifecycle-hmac-secret-comfortably-over-32-bytes"
JWT_EXTRA = (
    "jwt:\n"
    "  algorithms: [HS256]\n"
    f'  secret: "{SECRET}"\n'
    "  roles: {viewer: [read], member: [read, write], admin: ['*']}\n"
    "  claims: {workspace: workspace_id, role: role}\n"
)
# The same, with a `scope` claim that intersects with the role's cap (a JWT without it holds nothing).
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway <args> -c config`, run to completion."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SCOPEGATE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "-c", str(config)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def cli_create(config: Path, *args: str) -> dict[str, Any]:
    done = gateway_cli(config, "token", "create", *args, "--json")
    assert done.returncode == 0, done.stderr
    created: dict[str, Any] = json.loads(done.stdout)
    return created


def cli_list(config: Path, *args: str) -> list[dict[str, Any]]:
    done = gateway_cli(config, "token", "list", *args, "--json")
    assert done.returncode == 0, done.stderr
    listed: list[dict[str, Any]] = json.loads(done.stdout)
    return listed


def serve_config(folder: Path, upstream_url: str, extra: str = "", routes: str = ROUTES) -> Path:
    """A config for `serve` subprocesses: no admin listener (two processes share the file)."""
    (folder / "routes.yaml").write_text(routes)
    config = folder / "config.yaml"
    config.write_text(
        f"""listen: {{host: 127.0.0.1, port: 8080}}
admin: false
surface: routes.yaml
upstreams:
  default: {{url: "{upstream_url}", connect_timeout: 2, timeout: 5}}
store: sqlite:///tokens.db
log: {{level: warning}}
drain_timeout: 5
"""
        + JWT_EXTRA
        + extra
    )
    return config


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _wait_accepting(served: Served, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            raise AssertionError(f"serve exited with {served.proc.returncode}:\n{served.log.read_text()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"serve did not accept on {served.port}:\n{served.log.read_text()}")


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.returncode
        await asyncio.sleep(0.05)
    return proc.poll()


async def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        if await wait_exit(proc, 10) is None:
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextlib.asynccontextmanager
async def serving(
    config: Path, count: int = 1, extra_args: Sequence[str] = ()
) -> AsyncIterator[list[Served]]:
    """`count` `python -m gateway serve` processes on one config (and store), each on its own port."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("SCOPEGATE_CONFIG", None)
    started: list[Served] = []
    try:
        for _ in range(count):
            port = free_port()
            log = config.parent / f"serve-{port}.log"
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gateway",
                        "serve",
                        "-c",
                        str(config),
                        "--port",
                        str(port),
                        *extra_args,
                    ],
                    cwd=config.parent,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            started.append(Served(proc, port, log))
        for served in started:
            await _wait_accepting(served)
        yield started
    finally:
        for served in started:
            await _stop(served.proc)


async def status_of(
    session: aiohttp.ClientSession, url: str, credential: str, method: str = "GET", body: Any = None
) -> int:
    async with session.request(method, url, headers=bearer(credential), json=body) as resp:
        await resp.read()
        return resp.status
