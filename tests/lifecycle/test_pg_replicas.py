"""Many `serve` processes on one PostgreSQL database, end to end: the pushed revocation, workers,
the database stopping under traffic, concurrent migrations, a mint racing a revoke, and kill -9
in the middle of minting. Every process is a real `python -m gateway` on real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.tokens import pg_migrations
from tests.conftest import Upstream
from tests.lifecycle.conftest import bearer, make_jwt, serve_config, serving, status_of
from tests.pg import PgServer, private_cluster
from tests.pgcluster import USER
from tests.support import (
    ROOT,
    cli_create,
    gateway_cli,
    reserved_port,
    spawn_serve,
    stop_async,
    wait_accepting,
    wait_announced,
)

pytestmark = pytest.mark.slow

PUSH_ONLY = "tokens: {revocation_poll: 30}\n"  # a poll this slow cannot explain a refusal within 1 s
ADMIN = make_jwt("w1", "admin", exp_in=3600)


async def listeners(server: PgServer, database: str) -> int:
    rows = await server.fetch(
        database,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    return int(rows[0][0])


# How long processes may take to start listening: generous, as a loaded CI machine is slow to
# start Python processes; what these tests bound is the revocation delay once they listen.
STARTUP = 60.0


async def until(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def post_token(session: aiohttp.ClientSession, base: str, **body: Any) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{base}/auth/tokens", json=body, headers=bearer(ADMIN)) as resp:
        return resp.status, await resp.json()


async def first_refusal(session: aiohttp.ClientSession, base: str, token: str, deadline: float) -> float:
    while time.monotonic() < deadline:
        status = await status_of(session, base + "/v1/playlists", token)
        if status == 401:
            return time.monotonic()
        assert status == 200, status
        await asyncio.sleep(0.02)
    return float("inf")


async def test_revoked_on_one_replica_is_refused_by_the_other_within_a_second(
    tmp_path: Path, upstream: Upstream, pg_server: PgServer, pg_database: str
) -> None:
    config = serve_config(tmp_path, upstream.url, extra=PUSH_ONLY, store=pg_server.url(pg_database))
    # Both start on an empty database at once: they migrate it between them, once.
    async with serving(config, 2) as (a, b), aiohttp.ClientSession() as session:
        await until(lambda: _eq(listeners(pg_server, pg_database), 2), STARTUP, "both replicas LISTEN")
        status, created = await post_token(session, a.url, name="shared", scopes=["read"])
        assert status == 201, created
        for served in (a, b):
            for _ in range(3):  # cached on both
                assert await status_of(session, served.url + "/v1/playlists", created["token"]) == 200
        async with session.delete(f"{a.url}/auth/tokens/{created['id']}", headers=bearer(ADMIN)) as resp:
            assert resp.status == 204
        revoked_at = time.monotonic()
        refused_at = await first_refusal(session, b.url, created["token"], revoked_at + 5)
        assert refused_at - revoked_at < 1.0, refused_at - revoked_at
    rows = await pg_server.fetch(pg_database, "SELECT count(*) FROM scopegate_migrations")
    assert rows[0][0] == pg_migrations.LATEST


async def _gauge(session: aiohttp.ClientSession, metrics: str, expected: float) -> bool:
    async with session.get(metrics) as resp:
        text = await resp.text()
    values = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("scopegate_revocation_push_connected")
    ]
    return values == [expected]


async def _eq(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_four_workers_on_postgresql_all_refuse_a_revoked_token(
    tmp_path: Path, upstream: Upstream, pg_server: PgServer, pg_database: str
) -> None:
    config = serve_config(tmp_path, upstream.url, extra=PUSH_ONLY, store=pg_server.url(pg_database))
    created = cli_create(config, "--name", "w4", "--workspace", "w1")
    held = contextlib.ExitStack()
    port = held.enter_context(reserved_port())  # --workers needs a fixed port: held, joined via SO_REUSEPORT
    log = tmp_path / "workers.log"
    proc = spawn_serve(config, log, "--port", str(port), "--workers", "4")
    try:
        await wait_accepting(port, proc, log)
        await until(lambda: _eq(listeners(pg_server, pg_database), 4), STARTUP, "four workers LISTEN")
        base = f"http://127.0.0.1:{port}"
        connector = aiohttp.TCPConnector(force_close=True)  # a fresh connection: any worker
        async with aiohttp.ClientSession(connector=connector) as session:
            statuses = [await status_of(session, base + "/v1/playlists", created["token"]) for _ in range(40)]
            assert statuses == [200] * 40
            done = await asyncio.to_thread(gateway_cli, config, "token", "revoke", created["id"])
            assert done.returncode == 0, done.stderr
            await asyncio.sleep(1.0)
            statuses = [await status_of(session, base + "/v1/playlists", created["token"]) for _ in range(40)]
            assert statuses == [401] * 40
    finally:
        await stop_async(proc, 15)
        held.close()


async def test_database_stopped_mid_traffic_fails_closed_then_recovers_without_restart(
    tmp_path: Path, upstream: Upstream, pg_server: PgServer
) -> None:
    cluster = await asyncio.to_thread(private_cluster)
    try:
        # The private cluster has the same role and password as the session's ($SCOPEGATE_STORE_PASSWORD).
        store = f"postgresql://{USER}@127.0.0.1:{cluster.port}/postgres"
        config = serve_config(tmp_path, upstream.url, extra="tokens: {revocation_poll: 0.5}\n", store=store)
        text = config.read_text().replace("admin: false", "admin: {host: 127.0.0.1, port: 0}")
        config.write_text(text)
        cached = cli_create(config, "--name", "cached", "--workspace", "w1")
        uncached = cli_create(config, "--name", "uncached", "--workspace", "w1")
        async with serving(config) as (gw,), aiohttp.ClientSession() as session:
            ready = f"http://127.0.0.1:{gw.admin}/readyz"
            assert await status_of(session, gw.url + "/v1/playlists", cached["token"]) == 200
            async with session.get(ready) as resp:
                assert resp.status == 200
            metrics = f"http://127.0.0.1:{gw.admin}/metrics"
            await until(lambda: _gauge(session, metrics, 1.0), 10, "the push never connected")
            await asyncio.to_thread(cluster.halt, "fast")
            # A cached token keeps working; one the gateway cannot check is 503, never a guess.
            assert await status_of(session, gw.url + "/v1/playlists", cached["token"]) == 200
            async with session.get(gw.url + "/v1/playlists", headers=bearer(uncached["token"])) as resp:
                body = await resp.json()
                assert (resp.status, body["error"]) == (503, "store_unavailable"), body
                assert resp.headers["Retry-After"] == "1"
            status, out = await post_token(session, gw.url, name="while-down")
            assert (status, out["error"]) == (503, "store_unavailable")
            async with session.get(ready) as resp:
                report = await resp.json()
                assert resp.status == 503 and any(p.startswith("store:") for p in report["problems"]), report
            # The listening connection is noticed gone: revocations now come from the poll alone.
            await until(lambda: _gauge(session, metrics, 0.0), 10, "the lost push was not noticed")
            async with session.get(gw.url + "/v1/health") as resp:  # anonymous routes are unaffected
                assert resp.status == 200
            await asyncio.to_thread(cluster.boot)

            async def recovered() -> bool:
                return await status_of(session, gw.url + "/v1/playlists", uncached["token"]) == 200

            await until(recovered, 20, "the gateway did not recover when the database came back")
            async with session.get(ready) as resp:
                assert resp.status == 200
            await until(lambda: _gauge(session, metrics, 1.0), 15, "the push did not reconnect")
            status, out = await post_token(session, gw.url, name="after")
            assert status == 201, out
            assert gw.proc.poll() is None  # the same process: no restart
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_started_while_the_database_is_down_it_serves_once_the_database_is_up(
    tmp_path: Path, upstream: Upstream, pg_server: PgServer
) -> None:
    cluster = await asyncio.to_thread(private_cluster)
    try:
        store = f"postgresql://{USER}@127.0.0.1:{cluster.port}/postgres"
        config = serve_config(tmp_path, upstream.url, extra="tokens: {revocation_poll: 0.5}\n", store=store)
        text = config.read_text().replace("admin: false", "admin: {host: 127.0.0.1, port: 0}")
        config.write_text(text)
        created = cli_create(config, "--name", "early", "--workspace", "w1")
        await asyncio.to_thread(cluster.halt, "fast")
        async with serving(config) as (gw,), aiohttp.ClientSession() as session:
            async with session.get(gw.url + "/v1/playlists", headers=bearer(created["token"])) as resp:
                assert (resp.status, (await resp.json())["error"]) == (503, "store_unavailable")
            async with session.get(f"http://127.0.0.1:{gw.admin}/readyz") as resp:
                assert resp.status == 503
            await asyncio.to_thread(cluster.boot)

            async def serving_tokens() -> bool:
                return await status_of(session, gw.url + "/v1/playlists", created["token"]) == 200

            await until(serving_tokens, 20, "the gateway never opened the store")
            metrics = f"http://127.0.0.1:{gw.admin}/metrics"
            await until(lambda: _gauge(session, metrics, 1.0), 15, "the push never connected")
            assert gw.proc.poll() is None
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_three_processes_migrating_at_once_migrate_once(
    tmp_path: Path, upstream: Upstream, pg_server: PgServer, pg_database: str
) -> None:
    config = serve_config(tmp_path, upstream.url, store=pg_server.url(pg_database))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "store", "migrate", "-c", str(config)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [await asyncio.to_thread(p.communicate, timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    applied = [line for out, _ in outputs for line in out.splitlines() if "applied" in line]
    assert len(applied) == 1 and f"applied {pg_migrations.LATEST} migration(s)" in applied[0], outputs
    rows = await pg_server.fetch(pg_database, "SELECT version FROM scopegate_migrations ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, pg_migrations.LATEST + 1))


async def test_a_newer_schema_refuses_to_start_with_one_line(
    tmp_path: Path, upstream: Upstream, pg_server: PgServer, pg_database: str
) -> None:
    config = serve_config(tmp_path, upstream.url, store=pg_server.url(pg_database))
    assert gateway_cli(config, "store", "migrate").returncode == 0
    await pg_server.execute(pg_database, "UPDATE scopegate_schema SET version = 99")
    proc = spawn_serve(config, tmp_path / "serve.log", "--port", "0")
    try:
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in (tmp_path / "serve.log").read_text().splitlines() if line.strip()]
    assert code == 1
    assert lines[-1] == (
        f"scopegate: token store schema version 99 is newer than this scopegate supports "
        f"({pg_migrations.LATEST})"
    ), lines
    assert not any("Traceback" in line for line in lines)


async def test_a_mint_racing_a_revoke_of_the_same_name_leaves_at_most_one_active(
    tmp_path: Path, upstream: Upstream, pg_server: PgServer, pg_database: str
) -> None:
    config = serve_config(tmp_path, upstream.url, store=pg_server.url(pg_database))
    async with serving(config, 2) as (a, b), aiohttp.ClientSession() as session:
        status, current = await post_token(session, a.url, name="dup")
        assert status == 201
        for _ in range(12):
            revoke = session.delete(f"{a.url}/auth/tokens/{current['id']}", headers=bearer(ADMIN))

            async def revoked(request: Any = revoke) -> int:
                async with request as resp:
                    return resp.status

            deleted, (s1, m1), (s2, m2) = await asyncio.gather(
                revoked(), post_token(session, a.url, name="dup"), post_token(session, b.url, name="dup")
            )
            assert deleted == 204
            assert sorted([s1, s2]) in ([201, 409], [409, 409]), (s1, m1, s2, m2)
            for s, m in ((s1, m1), (s2, m2)):
                if s == 409:
                    assert m["error"] == "conflict", m
            active = await pg_server.fetch(
                pg_database, "SELECT id FROM tokens WHERE name = 'dup' AND revoked_at IS NULL"
            )
            winners = [m for s, m in ((s1, m1), (s2, m2)) if s == 201]
            assert [r[0] for r in active] == [w["id"] for w in winners]
            if not winners:
                status, fresh = await post_token(session, b.url, name="dup")
                assert status == 201, fresh
                winners = [fresh]
            # The revoked one is refused on both replicas, the new one admitted.
            for served in (a, b):
                assert await status_of(session, served.url + "/v1/playlists", current["token"]) == 401
            current = winners[0]
            assert await status_of(session, b.url + "/v1/playlists", current["token"]) == 200


async def test_kill_9_mid_minting_loses_no_acknowledged_token_and_leaves_no_half_row(
    tmp_path: Path, upstream: Upstream, pg_server: PgServer, pg_database: str
) -> None:
    config = serve_config(tmp_path, upstream.url, store=pg_server.url(pg_database))
    targets = [{"kind": "playlist", "id": f"p{i}"} for i in range(3)]
    acked: list[dict[str, Any]] = []
    log = tmp_path / "first.log"
    proc = spawn_serve(config, log, "--port", "0")
    port, _ = await wait_announced(proc, log)
    base = f"http://127.0.0.1:{port}"
    names = iter(range(100_000))

    async def minter(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                status, out = await post_token(
                    session, base, name=f"k{next(names)}", scopes=["agency"], targets=targets
                )
            except (TimeoutError, aiohttp.ClientError):
                return
            if status == 201:
                acked.append(out)

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(minter(session)) for _ in range(8)]
        await until(lambda: _true(len(acked) >= 40), 60, "minting did not get going")
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.gather(*tasks)
    proc.wait(timeout=10)
    assert len(acked) >= 40
    # Every row is whole: an agency token always has its three targets.
    rows = await pg_server.fetch(
        pg_database,
        "SELECT t.id, count(g.target_id) FROM tokens t "
        "LEFT JOIN targets g ON g.token_id = t.id GROUP BY t.id",
    )
    counts = {r[0]: r[1] for r in rows}
    assert set(counts.values()) == {3}, counts
    assert {t["id"] for t in acked} <= set(counts)
    # After a restart, every acknowledged token works.
    async with serving(config) as (again,), aiohttp.ClientSession() as session:
        for token in acked:
            path = f"{again.url}/v1/workspaces/w1/playlists/p2"
            assert await status_of(session, path, token["token"]) == 200, token["id"]


async def _true(value: bool) -> bool:
    return value
