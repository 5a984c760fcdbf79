"""A real Express 4 app (tests/express/server.js) as the upstream, with `scopegate serve` in front.

Express, with its default routing (case-insensitive, trailing slash optional) and the
method-override recipe, is the judge of what "the same route" means to a real framework.
`npm ci --prefix tests/express` installs it from package-lock.json (.ci/run does; the fixture
does it once if node_modules is missing).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.ops.conftest import wait_port
from tests.support import cli_create, free_port, spawn_serve, stop

HERE = Path(__file__).resolve().parent

ROUTES = """routes:
  - id: devices
    match: {prefix: /v1/devices}
    class: anonymous
  - id: device-reboot
    match: {path: "/v1/devices/{device_id}/reboot", methods: [POST]}
    class: public
    scope: full
  - id: reports
    match: {prefix: /reports}
    class: public
  - id: items-list
    match: {path: /v1/items, methods: [GET]}
    class: public
  - id: items-create
    match: {path: /v1/items, methods: [POST]}
    class: public
    scopes: ["items:create"]
  - id: items-delete
    match: {path: /v1/items, methods: [DELETE]}
    class: public
    scopes: ["items:delete"]
  - id: uploads
    match: {path: /v1/uploads, methods: [POST]}
    class: public
    scopes: ["items:create"]
  - id: rest
    match: {prefix: /}
    class: anonymous
"""


@dataclass(frozen=True)
class Express:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def hits(self) -> list[dict[str, Any]]:
        """The handlers that ran since the last reset, asked of Express directly."""
        async with aiohttp.ClientSession() as session, session.get(self.url + "/__hits") as r:
            found: list[dict[str, Any]] = await r.json()
            return found

    async def reset(self) -> None:
        async with aiohttp.ClientSession() as session, session.delete(self.url + "/__hits") as r:
            assert r.status == 204


@dataclass(frozen=True)
class Front:
    """scopegate serve in front of Express, with tokens minted by the CLI."""

    port: int
    tokens: dict[str, str]  # scope -> secret

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _installed() -> None:
    if (HERE / "node_modules" / "express" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed for the Express upstream (Debian: apt-get install nodejs npm)")
    subprocess.run(
        [npm, "ci", "--prefix", str(HERE), "--no-audit", "--no-fund", "--loglevel=error"],
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def express() -> Iterator[Express]:
    _installed()
    proc = subprocess.Popen(
        ["node", str(HERE / "server.js"), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=HERE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("listening "):
            raise AssertionError(f"Express did not start: {line}{proc.stdout.read().decode()}")
        yield Express(int(line.split()[1]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="session")
def front(express: Express, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    folder = tmp_path_factory.mktemp("express-front")
    port = free_port()
    (folder / "routes.yaml").write_text(ROUTES)
    config = folder / "config.yaml"
    config.write_text(
        f"""listen: {{host: 127.0.0.1, port: {port}}}
admin: false
surface: routes.yaml
upstreams: {{default: "{express.url}"}}
store: sqlite:///tokens.db
log: {{level: error}}
"""
    )
    tokens = {}
    for scope in ("full", "read", "items:create", "items:delete"):
        name = scope.replace(":", "-")
        tokens[scope] = cli_create(config, "--name", name, "--workspace", "w", "--scope", scope)["token"]
    log = folder / "scopegate.log"
    proc = spawn_serve(config, log)
    try:
        wait_port(port, proc, log)
        yield Front(port, tokens)
    finally:
        stop(proc)
