"""Revocation latency across processes on one token store, and last_used_at write batching.

    python bench/revocation_latency.py [--store sqlite|postgresql|postgresql-poll] [--pg-dsn DSN]
                                       [--rounds 20] [--requests 10000] [--concurrency 32]

`--store postgresql` runs both on one PostgreSQL database (revocations pushed by LISTEN/NOTIFY);
`postgresql-poll` the same with `?notify=off`, so B learns only from the polled feed. The database
is a fresh one on --pg-dsn / $SCOPEGATE_BENCH_PG_DSN, else on a throwaway local cluster.

Starts two `scopegate serve` processes, A and B, on one token store (tokens.revocation_poll 1,
tokens.last_used_flush 5; A has an admin listener) in front of bench/upstream.py, and mints a
JWT (HS256) and, through it, an API token.

1. Revocation latency, `--rounds` times: mint a fresh token via POST /auth/tokens on A, warm it
   on B (so B serves it from its cache), wait a random 0..revocation_poll (so the DELETE does not
   land in phase with B's poll, which the previous round's refusal has just followed;
   `--no-jitter` shows that worst case), DELETE it on A, then poll B every 10 ms until it answers
   401. Prints the median, min and max milliseconds from sending the DELETE to B's first 401
   (the contract's bound: tokens.revocation_poll, here 1000 ms).
2. Store writes: sends `--requests` requests with one token to A (aiohttp, `--concurrency` at a
   time), waits one flush interval for the last batch, and prints how many last_used_at writes
   A made, read from scopegate_store_writes_total on its /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp
import jwt
from common import free_port, start

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECRET = secrets.token_urlsafe(48)
POLL = 1.0
FLUSH = 5.0
ROUTES = """routes:
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
"""


def write_config(folder: str, name: str, store: str, admin_port: int | None) -> str:
    admin = f"{{host: 127.0.0.1, port: {admin_port}}}" if admin_port else "false"
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        fh.write(f"""listen: {{host: 127.0.0.1, port: 8080}}
admin: {admin}
surface: routes.yaml
upstreams: {{default: "http://127.0.0.1:{UPSTREAM_PORT}"}}
store: {store}
log: {{level: warning}}
tokens: {{revocation_poll: {POLL}, last_used_flush: {FLUSH}}}
jwt:
  algorithms: [HS256]
  secret: {json.dumps(SECRET)}
  roles: {{admin: ["*"]}}
""")
    return path


UPSTREAM_PORT = 0


async def store_writes(session: aiohttp.ClientSession, admin_url: str) -> float:
    async with session.get(admin_url + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("scopegate_store_writes_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def latency_rounds(a: str, b: str, auth: dict[str, str], rounds: int, jitter: bool) -> list[float]:
    out: list[float] = []
    async with aiohttp.ClientSession() as session:
        for i in range(rounds):
            async with session.post(f"{a}/auth/tokens", json={"name": f"round-{i}"}, headers=auth) as resp:
                assert resp.status == 201, await resp.text()
                created = await resp.json()
            token = {"Authorization": f"Bearer {created['token']}"}
            for _ in range(2):
                async with session.get(f"{b}/v1/playlists", headers=token) as resp:
                    assert resp.status == 200, await resp.text()
            if jitter:
                await asyncio.sleep(random.uniform(0, POLL))
            sent = time.perf_counter()
            async with session.delete(f"{a}/auth/tokens/{created['id']}", headers=auth) as resp:
                assert resp.status == 204, await resp.text()
            while True:
                async with session.get(f"{b}/v1/playlists", headers=token) as resp:
                    await resp.read()
                    if resp.status == 401:
                        break
                    assert resp.status == 200, resp.status
                await asyncio.sleep(0.01)
            out.append((time.perf_counter() - sent) * 1000)
    return out


async def write_count(
    a: str, admin_url: str, token: str, requests: int, concurrency: int
) -> tuple[int, float]:
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        before = await store_writes(session, admin_url)
        left = requests
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.get(f"{a}/v1/playlists", headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await asyncio.sleep(FLUSH + 1)  # the last batch
        after = await store_writes(session, admin_url)
    return int(after - before), elapsed


async def run(args: argparse.Namespace, a: str, b: str, admin_url: str) -> None:
    now = int(time.time())
    token_jwt = jwt.encode(
        {"sub": "bench", "workspace_id": "bench", "role": "admin", "iat": now, "exp": now + 3600},
        SECRET,
        algorithm="HS256",
    )
    auth = {"Authorization": f"Bearer {token_jwt}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{a}/auth/tokens", json={"name": "busy"}, headers=auth) as resp,
    ):
        assert resp.status == 201, await resp.text()
        busy = (await resp.json())["token"]

    ms = await latency_rounds(a, b, auth, args.rounds, args.jitter)
    print(
        f"{args.store}: revocation DELETE on A -> first 401 on B over {len(ms)} rounds "
        f"(revocation_poll {POLL:g} s, "
        f"{'random phase' if args.jitter else 'in phase with the poll'}): "
        f"median {statistics.median(ms):.0f} ms, min {min(ms):.0f} ms, max {max(ms):.0f} ms"
    )
    writes, elapsed = await write_count(a, admin_url, busy, args.requests, args.concurrency)
    print(
        f"{args.requests} requests -> {writes} store writes "
        f"(one token, {elapsed:.1f} s at concurrency {args.concurrency}, last_used_flush {FLUSH:g} s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--no-jitter", dest="jitter", action="store_false")
    ap.add_argument("--store", choices=("sqlite", "postgresql", "postgresql-poll"), default="sqlite")
    ap.add_argument("--pg-dsn", help="a PostgreSQL server to create the bench database on")
    args = ap.parse_args()
    if args.store == "sqlite":
        bench(args, None)
        return
    from pgstore import database

    with database(args.pg_dsn) as (url, _):
        bench(args, url + ("?notify=off" if args.store == "postgresql-poll" else ""))


def bench(args: argparse.Namespace, pg_url: str | None) -> None:
    global UPSTREAM_PORT
    folder = tempfile.mkdtemp(prefix="scopegate-bench-revoke-")
    with open(os.path.join(folder, "routes.yaml"), "w") as fh:
        fh.write(ROUTES)
    store = pg_url or "sqlite:///" + os.path.join(folder, "tokens.db")
    UPSTREAM_PORT, port_a, port_b, admin_port = (free_port() for _ in range(4))
    config_a = write_config(folder, "a.yaml", store, admin_port)
    config_b = write_config(folder, "b.yaml", store, None)
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            start([sys.executable, os.path.join(HERE, "upstream.py"), str(UPSTREAM_PORT)], UPSTREAM_PORT)
        )
        for config, port in ((config_a, port_a), (config_b, port_b)):
            cmd = [sys.executable, "-m", "gateway", "serve", "-c", config, "--port", str(port)]
            procs.append(start(cmd, port, cwd=folder, env=env))
        asyncio.run(
            run(
                args,
                f"http://127.0.0.1:{port_a}",
                f"http://127.0.0.1:{port_b}",
                f"http://127.0.0.1:{admin_port}",
            )
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
