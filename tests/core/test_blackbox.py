"""The gateway as operators run it: `python -m gateway serve` in a subprocess, spoken to over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import EXAMPLE_ROUTES, Upstream
from tests.core.test_proxy import raw_get, raw_request
from tests.support import (
    DECISION_LOG_FIELDS,
    Running,
    eventually,
    reserved_port,
    spawn_serve,
    start_serve,
    stop_async,
    wait_accepting,
    wait_announced,
    wait_exit,
)

ROUTES = (
    EXAMPLE_ROUTES
    + """
  - id: slow
    match: {prefix: /slow}
    class: anonymous
"""
)


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@contextlib.asynccontextmanager
async def running_gateway(config: Path, *args: str, port: int | None = None) -> AsyncIterator[Running]:
    """`python -m gateway serve -c config [args]` on port 0 (the port it announces), or on `port`
    (held by the caller, for --workers); stopped (and reaped) on exit."""
    if port is None:
        gw = await start_serve(config, *args)
        proc = gw.proc
    else:
        log = config.parent / f"gateway-{port}.log"
        proc = spawn_serve(config, log, "--port", str(port), *args)
    try:
        if port is not None:
            await wait_accepting(port, proc, log)
            gw = Running(proc, port, log)  # workers do not announce; their admin port is unused
        yield gw
    finally:
        kids = children_of(proc.pid)
        await stop_async(proc, 10)
        for kid in kids:
            if alive(kid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kid, signal.SIGKILL)


def blackbox_config(folder: Path, upstream: Upstream, admin_port: int = 0, *, routes: str = ROUTES) -> Path:
    (folder / "routes.yaml").write_text(textwrap.dedent(routes))
    config = folder / "config.yaml"
    config.write_text(
        f"""listen: {{host: 127.0.0.1, port: 8080}}
admin: {{host: 127.0.0.1, port: {admin_port}}}
surface: routes.yaml
upstreams:
  default: {{url: "{upstream.url}", connect_timeout: 2, timeout: 5}}
store: sqlite:///tokens.db
log: {{level: info, format: json}}
drain_timeout: 10
"""
    )
    return config


async def get(url: str, **kwargs: object) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.text()


async def test_serve_end_to_end_then_sigterm(tmp_path: Path, upstream: Upstream) -> None:
    config = blackbox_config(tmp_path, upstream)
    async with running_gateway(config) as gw:
        admin = gw.admin
        status, _ = await get(gw.url + "/v1/health", headers={"X-Request-Id": "bb-1"})
        assert status == 200
        assert upstream.last.raw_path == "/v1/health"

        status, text = await get(gw.url + "/v1/playlists")
        assert status == 401
        assert json.loads(text)["error"] == "invalid_token"

        bad = await raw_request(gw.port, raw_get("/open/../v1/admin"))
        assert bad.status == 400
        assert bad.json()["error"] == "bad_path"
        assert len(upstream.seen) == 1

        status, text = await get(f"http://127.0.0.1:{admin}/healthz")
        assert status == 200
        status, _ = await get(f"http://127.0.0.1:{admin}/readyz")
        assert status == 200
        status, text = await get(f"http://127.0.0.1:{admin}/metrics")
        assert status == 200
        assert "scopegate_requests_total" in text
        assert 'reason="invalid_token"' in text
        assert "scopegate_request_duration_seconds" in text

        # The admin endpoints are not on the public port (they would reach the surface: 404).
        status, _ = await get(gw.url + "/metrics")
        assert status == 404

        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        code = await wait_exit(gw.proc, 8)
        assert code == 0, gw.log.read_text()
        assert time.monotonic() - started < 8

    records = []
    for line in gw.log_lines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict) and "request_id" in value:
                records.append(value)
    health = next(r for r in records if r["request_id"] == "bb-1")
    for key in DECISION_LOG_FIELDS:
        assert key in health, key
    assert health["status"] == 200 and health["decision"] == "allow" and health["route"] == "health"
    assert any(r["reason"] == "bad_path" and r["status"] == 400 for r in records)


async def test_sigterm_with_idle_keepalive_connection_exits_promptly(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = blackbox_config(tmp_path, upstream)
    async with running_gateway(config) as gw, aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/v1/health") as resp:
            assert resp.status == 200
            await resp.read()
        # The keep-alive connection is idle in the pool: it must not hold the drain open.
        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        code = await wait_exit(gw.proc, 8)
        assert code == 0
        assert time.monotonic() - started < 5


async def test_sigterm_drains_in_flight_request(tmp_path: Path, upstream: Upstream) -> None:
    config = blackbox_config(tmp_path, upstream)
    async with running_gateway(config) as gw, aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.get(gw.url + "/slow?s=1.5"))
        # In flight once the upstream has it (recorded the moment it starts).
        await eventually(lambda: any(s.raw_path == "/slow?s=1.5" for s in upstream.seen))
        gw.proc.send_signal(signal.SIGTERM)
        resp = await request
        assert resp.status == 200
        assert json.loads(await resp.read())["path"] == "/slow?s=1.5"
        resp.release()
        assert await wait_exit(gw.proc, 8) == 0
        # Stopped accepting: a new connection is refused.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", gw.port)


async def test_workers_two_processes_answer_and_stop(tmp_path: Path, upstream: Upstream) -> None:
    config = blackbox_config(tmp_path, upstream)
    with reserved_port() as port:
        await _workers_answer_and_stop(config, port)


async def _workers_answer_and_stop(config: Path, port: int) -> None:
    async with running_gateway(config, "--workers", "2", port=port) as gw:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(10):
                await asyncio.sleep(0.2)
                if len(children_of(gw.pid)) == 2:
                    break
            statuses = []
            for _ in range(20):
                async with session.get(gw.url + "/v1/health") as resp:
                    statuses.append(resp.status)
                    await resp.read()
        assert statuses == [200] * 20
        kids = children_of(gw.pid)
        assert len(kids) == 2
        for pid in (gw.pid, *kids):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert b"python" in cmdline[0] and b"gateway" in cmdline
        gw.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(gw.proc, 10) == 0, gw.log.read_text()
        for _ in range(50):
            if not any(alive(k) for k in kids):
                break
            await asyncio.sleep(0.1)
        assert not any(alive(k) for k in kids)


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled-head", "trickled-head"])
async def test_slow_request_head_cut_off_after_header_timeout(
    tmp_path: Path, upstream: Upstream, trickle: bool
) -> None:
    config = blackbox_config(tmp_path, upstream)
    config.write_text(config.read_text() + "limits: {header_timeout: 1}\n")
    async with running_gateway(config) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        started = time.monotonic()
        try:
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: g\r\n")
            await writer.drain()

            async def dribble() -> None:
                with contextlib.suppress(OSError):
                    for _ in range(40):
                        await asyncio.sleep(0.2)
                        writer.write(b"X")
                        await writer.drain()

            task = asyncio.ensure_future(dribble()) if trickle else None
            try:
                data = await asyncio.wait_for(reader.read(), 5)
            except (TimeoutError, ConnectionError):
                data = b"" if time.monotonic() - started < 5 else None
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            assert data is not None, "connection still open 5 s after a 1 s header_timeout"
            assert data == b"" or data.startswith(b"HTTP/1.1 408")
            assert time.monotonic() - started < 4
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        assert upstream.seen == []
        # The gateway still serves others.
        status, _ = await get(gw.url + "/v1/health")
        assert status == 200


async def test_installed_console_script_serves(tmp_path: Path, upstream: Upstream) -> None:
    """The `scopegate` entry point that `pip install` writes, not `python -m gateway`: run from a
    folder outside the checkout, with no PYTHONPATH, so it is the installed package that answers."""
    script = Path(sys.executable).parent / "scopegate"
    assert script.is_file(), f"{script} missing: install the package (pip install -e .)"
    config = blackbox_config(tmp_path, upstream)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SCOPEGATE_CONFIG")}
    checked = subprocess.run(
        [str(script), "check", "-c", str(config)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    log = tmp_path / "script.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(script), "serve", "-c", str(config), "--port", "0"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        port, _ = await wait_announced(proc, log)
        status, _ = await get(f"http://127.0.0.1:{port}/v1/health")
        assert status == 200
        assert upstream.last.raw_path == "/v1/health"
        status, text = await get(f"http://127.0.0.1:{port}/v1/playlists")
        assert (status, json.loads(text)["error"]) == (401, "invalid_token")
    finally:
        await stop_async(proc, 10)
    assert proc.returncode == 0, log.read_text()
