"""Section 11: /metrics label sets and counts, the admin listener, and the one-line decision log.

Also the home of the small `scopegate serve` subprocess helpers the other tests/ops files reuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.tokens.secret import generate
from tests.conftest import MakeGateway, Upstream
from tests.support import (
    DECISION_LOG_FIELDS,
    refusing_port,
    spawn_serve,
    stop,
    stop_async,
    wait_announced_sync,
)

ROUTES = """routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: open
    match: {prefix: /open}
    class: anonymous
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
"""

REQUEST_FIELDS = {*DECISION_LOG_FIELDS, "worker"}


# ---------------------------------------------------------------------------------------------
# helpers shared with test_reload_drain.py and test_shadow_openapi.py


def write_atomically(path: Path, text: str) -> None:
    """Replace a file in one step, so the 2 s file watcher never reads half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(textwrap.dedent(text))
    os.replace(tmp, path)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    admin: int
    folder: Path
    config: Path
    routes: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def serve_config(
    folder: Path,
    upstream_url: str,
    *,
    routes: str = ROUTES,
    log_format: str = "json",
    store: str = "sqlite:///tokens.db",
    drain_timeout: str = "10",
    extra: str = "",
) -> Path:
    (folder / "routes.yaml").write_text(textwrap.dedent(routes))
    config = folder / "config.yaml"
    config.write_text(
        f"""listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0}}
surface: routes.yaml
upstreams:
  default: {{url: "{upstream_url}", connect_timeout: 2, timeout: 5}}
store: {store}
log: {{level: info, format: {log_format}}}
drain_timeout: {drain_timeout}
"""
        + textwrap.dedent(extra)
    )
    return config


def start_serve(folder: Path, upstream_url: str, **kwargs: str) -> Served:
    """`serve` on port 0 for both listeners, once it has announced the ports it bound."""
    config = serve_config(folder, upstream_url, **kwargs)
    log = folder / "stderr.log"
    proc = spawn_serve(config, log, stdout=False)
    try:
        port, admin = wait_announced_sync(proc, log)
    except BaseException:
        stop(proc)
        raise
    assert admin is not None
    return Served(proc, port, admin, folder, config, folder / "routes.yaml", log)


def wait_ready_sync(gw: Served, timeout: float = 15.0) -> None:
    """An HTTP answer from the admin port: by then the signal handlers are installed too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {gw.proc.returncode}:\n{gw.log_text()}")
        with contextlib.suppress(OSError):
            status, _ = http_sync("GET", gw.admin, "/healthz")
            if status == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"gateway not ready after {timeout}s:\n{gw.log_text()}")


async def wait_ready(gw: Served, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if gw.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {gw.proc.returncode}:\n{gw.log_text()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(gw.admin_url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError(f"gateway not ready after {timeout}s:\n{gw.log_text()}")


@contextlib.asynccontextmanager
async def serving(folder: Path, upstream_url: str, **kwargs: str) -> AsyncIterator[Served]:
    gw = start_serve(folder, upstream_url, **kwargs)
    try:
        await wait_ready(gw)
        yield gw
    finally:
        await stop_async(gw.proc, 12)


@contextlib.contextmanager
def serving_sync(folder: Path, upstream_url: str, **kwargs: str) -> Iterator[Served]:
    """`serving` for module-scoped fixtures and plain tests, outside any event loop."""
    gw = start_serve(folder, upstream_url, **kwargs)
    try:
        wait_ready_sync(gw)
        yield gw
    finally:
        stop(gw.proc, 12)


async def poll_until(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


async def fetch(method: str, url: str, **kwargs: object) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, **kwargs) as resp,  # type: ignore[arg-type]
    ):
        return resp.status, await resp.text()


def http_sync(
    method: str, port: int, target: str, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> tuple[int, bytes]:
    """One request over a fresh socket, the target sent byte for byte; (status, body)."""
    head = f"{method} {target} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    data = (raw if raw is not None else head.encode("latin-1")) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            got = s.recv(65536)
            if not got:
                break
            chunks.append(got)
    reply = b"".join(chunks)
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


async def http_raw(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    return await asyncio.to_thread(http_sync, "GET", port, target, headers)


def samples(text: str | bytes, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample called `name` in a Prometheus exposition, keyed by its exact label set."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[frozenset(sample.labels.items())] = sample.value
    return out


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset((k.rstrip("_"), v) for k, v in kv.items())


async def scrape(gw: Served) -> str:
    status, text = await fetch("GET", gw.admin_url + "/metrics")
    assert status == 200
    return text


def request_lines(log_text: str, rid: str) -> list[dict[str, object]]:
    out = []
    for line in log_text.splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict) and value.get("request_id") == rid:
                out.append(value)
    return out


class _Echo(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        payload = json.dumps({"path": self.path, "body_len": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@contextlib.contextmanager
def thread_upstream() -> Iterator[str]:
    """A plain upstream in a thread, for module-scoped gateways that outlive one event loop."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# scopegate_requests_total and the duration histogram, in process


PUBLIC_401 = labels(
    route="playlists", class_="public", decision="deny", reason="invalid_token", status="401", worker="0"
)
REQUEST_CASES = [
    pytest.param(
        "/v1/health",
        {},
        200,
        labels(route="health", class_="anonymous", decision="allow", reason="ok", status="200", worker="0"),
        id="allow-anonymous",
    ),
    pytest.param(
        "/nowhere",
        {},
        404,
        labels(route="", class_="", decision="deny", reason="no_route", status="404", worker="0"),
        id="no-route-404",
    ),
    pytest.param(
        "/open/../v1/playlists",
        {},
        400,
        labels(route="", class_="", decision="deny", reason="bad_path", status="400", worker="0"),
        id="bad-path-400",
    ),
    pytest.param("/v1/playlists", {}, 401, PUBLIC_401, id="public-no-credential-401"),
    pytest.param(
        "/v1/playlists/7",
        {"Authorization": "Bearer not-a-token"},
        401,
        PUBLIC_401,
        id="public-garbage-credential-401",
    ),
]


@pytest.mark.parametrize(("target", "headers", "status", "expected"), REQUEST_CASES)
async def test_requests_total_exact_label_set_and_count(
    make_gateway: MakeGateway,
    upstream: Upstream,
    target: str,
    headers: dict[str, str],
    status: int,
    expected: frozenset[tuple[str, str]],
) -> None:
    gw = await make_gateway(routes=ROUTES)
    got, _ = await http_raw(gw.client.port, target, headers)
    assert got == status
    text = gw.runtime.metrics.exposition()
    assert samples(text, "scopegate_requests_total") == {expected: 1.0}
    # A second identical request counts on the same series.
    got, _ = await http_raw(gw.client.port, target, headers)
    assert samples(gw.runtime.metrics.exposition(), "scopegate_requests_total") == {expected: 2.0}
    assert len(upstream.seen) == (2 if status == 200 else 0)


async def test_request_duration_histogram_buckets(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(routes=ROUTES)
    for target in ("/v1/health", "/v1/health", "/nowhere"):
        await http_raw(gw.client.port, target)
    text = gw.runtime.metrics.exposition()
    buckets = samples(text, "scopegate_request_duration_seconds_bucket")
    counts = samples(text, "scopegate_request_duration_seconds_count")
    sums = samples(text, "scopegate_request_duration_seconds_sum")
    assert sum(counts.values()) == 3
    assert sum(sums.values()) > 0
    by_series: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
    for key, value in buckets.items():
        le = dict(key)["le"]
        rest = frozenset(kv for kv in key if kv[0] != "le")
        by_series.setdefault(rest, []).append((float(le), value))
    assert by_series, text
    for rest, points in by_series.items():
        points.sort()
        assert len(points) >= 5, points
        assert points[-1][0] == float("inf")
        values = [v for _, v in points]
        assert values == sorted(values), f"buckets not cumulative: {points}"
        assert values[-1] == counts[rest]


@pytest.mark.parametrize("when", ["never-listening", "stopped-after-use"])
async def test_upstream_errors_total_when_upstream_down(
    make_gateway: MakeGateway, upstream: Upstream, when: str
) -> None:
    if when == "never-listening":
        with refusing_port() as port:
            gw = await make_gateway(routes=ROUTES, upstream_url=f"http://127.0.0.1:{port}")
            status, body = await http_raw(gw.client.port, "/v1/health")
    else:
        gw = await make_gateway(routes=ROUTES)
        assert (await http_raw(gw.client.port, "/v1/health"))[0] == 200
        await upstream.server.close()
        status, body = await http_raw(gw.client.port, "/v1/health")
    assert status == 502
    assert json.loads(body)["error"] == "upstream_unavailable"
    text = gw.runtime.metrics.exposition()
    assert samples(text, "scopegate_upstream_errors_total") == {
        labels(upstream="default", kind="upstream_unavailable"): 1.0
    }
    requests = samples(text, "scopegate_requests_total")
    refused = [dict(k) for k in requests if dict(k)["status"] == "502"]
    assert len(refused) == 1
    assert refused[0]["reason"] == "upstream_unavailable" and refused[0]["route"] == "health"


async def test_token_cache_hit_and_miss(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(routes=ROUTES)
    text = gw.runtime.metrics.exposition()
    assert samples(text, "scopegate_token_cache_total") == {
        labels(result="hit"): 0.0,
        labels(result="miss"): 0.0,
    }
    _, secret = await gw.runtime.service.create(None, {"name": "m", "workspace": "w", "scopes": ["read"]})
    for _ in range(2):
        status, _ = await http_raw(gw.client.port, "/v1/playlists", {"Authorization": f"Bearer {secret}"})
        assert status == 200
    text = gw.runtime.metrics.exposition()
    assert samples(text, "scopegate_token_cache_total") == {
        labels(result="hit"): 1.0,
        labels(result="miss"): 1.0,
    }
    # An unknown (well-formed) token is a miss too, and never a 200.
    status, _ = await http_raw(
        gw.client.port, "/v1/playlists", {"Authorization": f"Bearer {generate('st_')}"}
    )
    assert status == 401
    cache = samples(gw.runtime.metrics.exposition(), "scopegate_token_cache_total")
    assert cache[labels(result="miss")] == 2.0
    assert len(upstream.seen) == 2


async def test_reloads_total_ok_and_error(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(routes=ROUTES)
    reloads = samples(gw.runtime.metrics.exposition(), "scopegate_reloads_total")
    assert reloads == {labels(result="ok"): 0.0, labels(result="error"): 0.0}
    write_atomically(
        gw.folder / "routes.yaml", ROUTES + "  - id: more\n    match: {prefix: /more}\n    class: anonymous\n"
    )
    assert gw.runtime.reload() is True
    write_atomically(gw.folder / "routes.yaml", "routes: [\n")
    assert gw.runtime.reload() is False
    reloads = samples(gw.runtime.metrics.exposition(), "scopegate_reloads_total")
    assert reloads == {labels(result="ok"): 1.0, labels(result="error"): 1.0}


# ---------------------------------------------------------------------------------------------
# the admin listener, over a real `serve` subprocess


@pytest.mark.parametrize(
    ("store", "ready"),
    [("sqlite:///tokens.db", True), ("sqlite:///no/such/dir/tokens.db", False)],
    ids=["store-ok", "store-dir-missing"],
)
async def test_admin_healthz_readyz_metrics(
    tmp_path: Path, upstream: Upstream, store: str, ready: bool
) -> None:
    async with serving(tmp_path, upstream.url, store=store) as gw:
        status, text = await fetch("GET", gw.admin_url + "/healthz")
        assert status == 200
        assert json.loads(text)["status"] == "ok"
        status, text = await fetch("GET", gw.admin_url + "/readyz")
        body = json.loads(text)
        if ready:
            assert status == 200 and body["status"] == "ready", text
        else:
            assert status == 503, text
            assert any(p.startswith("store") for p in body["problems"]), text
            # Anonymous routes keep working without the store.
            assert (await fetch("GET", gw.url + "/v1/health"))[0] == 200
        async with aiohttp.ClientSession() as session, session.get(gw.admin_url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            assert "scopegate_reloads_total" in await resp.text()
        # The admin endpoints are not on the public port.
        assert (await fetch("GET", gw.url + "/healthz"))[0] == 404


async def test_readyz_recovers_when_store_directory_appears(tmp_path: Path, upstream: Upstream) -> None:
    async with serving(tmp_path, upstream.url, store="sqlite:///later/tokens.db") as gw:
        assert (await fetch("GET", gw.admin_url + "/readyz"))[0] == 503
        (tmp_path / "later").mkdir()

        async def ready() -> bool:
            return (await fetch("GET", gw.admin_url + "/readyz"))[0] == 200

        assert await poll_until(ready, 2.0, 0.1), gw.log_text()


# ---------------------------------------------------------------------------------------------
# the decision log: one JSON line per request (module-scoped `serve`, its stderr in a file)


API_SECRET = generate("st_")
JWT_SECRET = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2VjcmV0LXNpZ25hdHVyZS1kby1ub3QtbG9n"


@pytest.fixture(scope="module")
def json_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("jsonlog")
    with thread_upstream() as up, serving_sync(folder, up) as gw:
        yield gw


def wait_log_line(gw: Served, rid: str, timeout: float = 3.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        found = request_lines(gw.log_text(), rid)
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.02)


PLAYLISTS_INVALID_TOKEN = {
    "status": 401,
    "decision": "deny",
    "reason": "invalid_token",
    "route": "playlists",
    "class": "public",
}
BAD_PATH = {"status": 400, "decision": "deny", "reason": "bad_path", "route": None, "class": None}
LOG_CASES = [
    pytest.param(
        "/v1/health",
        {},
        {"status": 200, "decision": "allow", "reason": "ok", "route": "health", "class": "anonymous"},
        id="allow",
    ),
    pytest.param(
        "/nowhere",
        {},
        {"status": 404, "decision": "deny", "reason": "no_route", "route": None, "class": None},
        id="no-route",
    ),
    pytest.param(
        "/v1/playlists",
        {"Authorization": f"Bearer {API_SECRET}"},
        PLAYLISTS_INVALID_TOKEN,
        id="unknown-api-token",
    ),
    pytest.param(
        "/v1/playlists",
        {"Authorization": f"Bearer {JWT_SECRET}"},
        PLAYLISTS_INVALID_TOKEN,
        id="bad-jwt",
    ),
    pytest.param(
        "/open/x%0a{%22request_id%22:%22forged%22,%22status%22:200}",
        {},
        BAD_PATH,
        id="encoded-lf-json",
    ),
    pytest.param("/open/x%0d%0aforged", {}, BAD_PATH, id="encoded-crlf"),
    pytest.param("/open/%1b[31mred", {}, BAD_PATH, id="encoded-ansi-escape"),
    pytest.param("/open/x%00y", {}, BAD_PATH, id="encoded-nul"),
]


@pytest.mark.parametrize(("target", "headers", "expected"), LOG_CASES)
def test_decision_log_one_json_line_per_request(
    json_gateway: Served, request: pytest.FixtureRequest, target: str, headers: dict, expected: dict
) -> None:
    rid = "rid-" + request.node.callspec.id
    status, body = http_sync("GET", json_gateway.port, target, {**headers, "X-Request-Id": rid})
    assert status == expected["status"]
    if status >= 400:
        assert json.loads(body)["request_id"] == rid
    lines = wait_log_line(json_gateway, rid)
    assert len(lines) == 1, lines
    record = lines[0]
    assert set(record) >= REQUEST_FIELDS, sorted(REQUEST_FIELDS - set(record))
    for key, value in expected.items():
        assert record[key] == value, (key, record)
    assert record["method"] == "GET"
    assert record["credential"] == "none"
    assert record["token_id"] is None
    assert record["worker"] == "0"
    assert isinstance(record["total_ms"], int | float) and record["total_ms"] >= 0
    assert isinstance(record["upstream_ms"], int | float)
    assert (record["upstream_ms"] > 0) == (status == 200)
    assert isinstance(record["ts"], str) and record["ts"].endswith("Z")
    path = record["path"]
    assert isinstance(path, str) and path.startswith("/")
    assert all(" " <= ch != "\x7f" for ch in path), path
    # The whole log: every line one JSON object, no forged record, no credential.
    text = json_gateway.log_text()
    for line in text.splitlines():
        assert isinstance(json.loads(line), dict), line
    assert request_lines(text, "forged") == []
    for secret in (API_SECRET, API_SECRET[3:], JWT_SECRET, JWT_SECRET.rsplit(".", 1)[1]):
        assert secret not in text


@pytest.fixture(scope="module")
def raw_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Its own process: the raw-byte cases must not spoil the JSON-only log the others check."""
    folder = tmp_path_factory.mktemp("rawlog")
    with thread_upstream() as up, serving_sync(folder, up) as gw:
        yield gw


@pytest.mark.parametrize("raw", [b"\x1b[31m", b"\x7f", b"\xff"], ids=["raw-esc", "raw-del", "raw-0xff"])
def test_raw_control_byte_in_target_keeps_log_json(raw_gateway: Served, raw: bytes) -> None:
    request = b"GET /open/" + raw + b"x HTTP/1.1\r\nHost: g\r\nConnection: close\r\n"
    status, body = http_sync("GET", raw_gateway.port, "", raw=request)
    assert status == 400
    text = raw_gateway.log_text()
    for line in text.splitlines():
        assert isinstance(json.loads(line), dict), text
    # The head was never parsed, so the request id is the gateway's own: found through the answer.
    refusal = json.loads(body)
    assert refusal["error"] == "bad_path", refusal
    lines = wait_log_line(raw_gateway, refusal["request_id"], timeout=0.5)
    assert len(lines) == 1 and lines[0]["reason"] == "bad_path" and lines[0]["status"] == 400


def test_text_log_one_human_line_per_request(tmp_path: Path) -> None:
    with thread_upstream() as up, serving_sync(tmp_path, up, log_format="text") as gw:
        sent = [
            ("/v1/health", {}, 200, "allow", "route=health"),
            ("/v1/playlists", {"Authorization": f"Bearer {API_SECRET}"}, 401, "deny", "route=playlists"),
            ("/open/%0aforged", {}, 400, "deny", "route=None"),
        ]
        for i, (target, headers, status, _, _) in enumerate(sent):
            got, _ = http_sync("GET", gw.port, target, {**headers, "X-Request-Id": f"text-{i}"})
            assert got == status

        def lines_for(i: int) -> list[str]:
            return [line for line in gw.log_text().splitlines() if line.endswith(f"rid=text-{i}")]

        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not lines_for(len(sent) - 1):
            time.sleep(0.02)
        for i, (target, _, status, decision, route) in enumerate(sent):
            found = lines_for(i)
            assert len(found) == 1, gw.log_text()
            line = found[0]
            assert f" {status} {decision}" in line and f" GET {target} " in line and route in line
            with pytest.raises(ValueError):
                json.loads(line)
        text = gw.log_text()
        assert API_SECRET not in text
        assert "forged" not in "".join(line for line in text.splitlines() if not line.endswith("rid=text-2"))
