"""Shared fixtures: a real recording upstream and a real gateway built from files on disk."""

from __future__ import annotations

import asyncio
import gzip
import os
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from gateway.config import load_config
from gateway.serve import public_runner, public_site
from gateway.tokens.url import PASSWORD_ENV
from gateway.web.app import build_app
from gateway.web.runtime import Runtime
from tests.pg import DSN_ENV, PgServer, in_ci, start_server


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body_len: int  # bytes received so far; final once `complete`
    complete: bool = False  # the whole body arrived

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Upstream:
    server: TestServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def last(self) -> Seen:
        return self.seen[-1]


def _upstream_app(seen: list[Seen]) -> web.Application:
    async def record(request: web.Request) -> int:
        # Recorded the moment the request starts, before its body: a forward cut off partway
        # (a body refused after its first bytes went out) still counts as forwarded.
        entry = Seen(request.method, request.raw_path, list(request.headers.items()), 0)
        seen.append(entry)
        async for chunk in request.content.iter_any():
            entry.body_len += len(chunk)
        entry.complete = True
        return entry.body_len

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            seen.append(Seen(request.method, request.raw_path, list(request.headers.items()), 0))
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await ws.send_str("echo:" + msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
            return ws
        total = await record(request)
        path = request.path
        if path.startswith("/slow"):
            await asyncio.sleep(float(request.query.get("s", "2")))
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            return web.Response(status=code, headers={"ETag": '"v1"'} if code == 304 else None)
        if path.startswith("/download/"):
            size = int(path.rsplit("/", 1)[1])
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            block = b"x" * 65536
            left = size
            while left > 0:
                await resp.write(block[: min(left, len(block))])
                left -= min(left, len(block))
            await resp.write_eof()
            return resp
        if path.startswith("/cookies"):
            resp = web.Response(text="cookies")
            resp.headers.add("Set-Cookie", "a=1; Path=/")
            resp.headers.add("Set-Cookie", "b=2; Path=/")
            return resp
        if path.startswith("/gzip"):
            payload = gzip.compress(b"compressed body " * 64)
            return web.Response(
                body=payload, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
            )
        if path.startswith("/respond"):
            resp = web.Response(status=int(request.query.get("status", "200")), text="respond")
            resp.headers.add("X-Up", "1")
            resp.headers.add("X-Multi", "one")
            resp.headers.add("X-Multi", "two")
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["Location"] = "/elsewhere?a=%2F"
            return resp
        if path.startswith("/reset"):
            # Drop the connection without any answer: the gateway must say 502, nothing more.
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(0.1)
            return web.Response(text="never sent")
        if path.startswith("/truncate"):
            # Promise 100000 bytes, send 10, then cut: the client must not see a clean response.
            resp = web.StreamResponse(headers={"Content-Length": "100000"})
            await resp.prepare(request)
            await resp.write(b"0123456789")
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()
            return resp
        if path.startswith("/hop"):
            return web.Response(
                text="hop",
                headers={"Connection": "X-Secret", "X-Secret": "leak", "Keep-Alive": "5", "X-Kept": "yes"},
            )
        return web.json_response({"method": request.method, "path": request.raw_path, "body_len": total})

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    seen: list[Seen] = []
    server = TestServer(_upstream_app(seen), host="127.0.0.1")
    await server.start_server()
    yield Upstream(server, seen)
    await server.close()


EXAMPLE_ROUTES = """
routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: open
    match: {prefix: /open}
    class: anonymous
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
  - id: device-reboot
    match: {path: "/v1/devices/{device_id}/reboot", methods: [POST]}
    class: public
    scope: full
  - id: register-agent
    match: {path: /v1/agents/register, methods: [POST]}
    class: public
    scopes: ["nodes:create"]
  - id: admin
    match: {prefix: /v1/admin}
    class: jwt_only
  - id: agency-playlist
    match: {path: "/v1/workspaces/{workspace_id}/playlists/{playlist_id}", methods: [GET, PUT]}
    class: agency
    target: {param: playlist_id, kind: playlist}
    workspace_param: workspace_id
"""


@dataclass
class Gateway:
    client: TestClient[Any, Any]
    runtime: Runtime
    folder: Path

    @property
    def url(self) -> str:
        return str(self.client.make_url(""))


MakeGateway = Callable[..., Awaitable[Gateway]]


def write_config(
    folder: Path,
    upstream_url: str,
    routes: str = EXAMPLE_ROUTES,
    extra: str = "",
    store: str = "sqlite:///tokens.db",
) -> Path:
    (folder / "routes.yaml").write_text(textwrap.dedent(routes))
    config = folder / "config.yaml"
    config.write_text(
        f"""listen: {{host: 127.0.0.1, port: 0}}
admin: false
surface: routes.yaml
upstreams:
  default: {{url: "{upstream_url}", connect_timeout: 2, timeout: 2}}
store: {store}
log: {{level: error}}
"""
        + textwrap.dedent(extra)
    )
    return config


class ListenerServer(TestServer):
    """The gateway behind its real public listener, as `scopegate serve` runs it: the fast door,
    aiohttp behind it for everything else, the header deadline. (aiohttp's TestServer would
    serve the app on a plain aiohttp site, bypassing the listener.)"""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(build_app(rt), host="127.0.0.1")
        self.rt = rt

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        if self.runner:
            return
        runner = self.runner = public_runner(self.rt, self.app)
        await runner.setup()
        site = public_site(runner, self.rt, self.host, 0)
        await site.start()
        self.port = site.port
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")


@pytest.fixture
async def make_gateway(tmp_path: Path, upstream: Upstream) -> AsyncIterator[MakeGateway]:
    """Build a gateway from a surface (YAML text) and extra config lines, on a real socket."""
    clients: list[TestClient[Any, Any]] = []

    async def make(
        routes: str = EXAMPLE_ROUTES,
        extra: str = "",
        upstream_url: str | None = None,
        store: str = "sqlite:///tokens.db",
    ) -> Gateway:
        folder = tmp_path / f"gw{len(clients)}"
        folder.mkdir()
        cfg = load_config(str(write_config(folder, upstream_url or upstream.url, routes, extra, store)))
        rt = Runtime(cfg)
        client = TestClient(ListenerServer(rt))
        await client.start_server()
        clients.append(client)
        return Gateway(client, rt, folder)

    yield make
    for client in clients:
        await client.close()


# --- the two token stores ----------------------------------------------------------------------

STORES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server of this session; its password is exported as $SCOPEGATE_STORE_PASSWORD."""
    try:
        server = start_server()
    except (RuntimeError, OSError) as exc:
        if in_ci():
            pytest.fail(f"CI=true but no PostgreSQL server: {exc}")
        pytest.skip(f"no PostgreSQL server ({exc}); set {DSN_ENV} or install postgresql")
    before = os.environ.get(PASSWORD_ENV)
    os.environ[PASSWORD_ENV] = server.password
    try:
        yield server
    finally:
        if before is None:
            os.environ.pop(PASSWORD_ENV, None)
        else:
            os.environ[PASSWORD_ENV] = before
        if server.cluster is not None:
            server.cluster.stop()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session server, dropped afterwards."""
    name = pg_server.create_database()
    yield name
    pg_server.drop_database(name)


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest) -> str:
    """`sqlite:///tokens.db` (relative to the config file) or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return "sqlite:///tokens.db"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.url(request.getfixturevalue("pg_database"))
