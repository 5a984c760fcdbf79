"""Requests/s on a cache-miss-heavy load: PostgreSQL against SQLite, side by side.

    python bench/store_rps.py [--tokens 100000] [--seconds 10] [--rounds 3] [--connections 32]
                              [--pg-dsn DSN]

Loads `--tokens` distinct API tokens into a SQLite store and into a fresh PostgreSQL database
(bulk-loaded rows, the same ones `scopegate token create` would write), starts one
`scopegate serve` on each (tokens.cache_ttl 1 s) in front of bench/upstream.py, and drives both
with wrk, one after the other in interleaved rounds. Each wrk run walks the token list from a
random offset, one token per request, so nearly every request is a cache miss and a store lookup.
Prints median requests/s per store and the ratio PostgreSQL / SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time

import asyncpg
from common import free_port, median, need_wrk, start, stop
from pgstore import database

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from gateway.tokens.secret import display_prefix, generate, hash_token, new_id  # noqa: E402

ROUTES = """routes:
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
"""
LUA = """
local tokens, i = {}, 0
init = function(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  i = tonumber(args[2]) % #tokens
end
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/v1/playlists/1", {["Authorization"] = "Bearer " .. tokens[i]})
end
"""
COLUMNS = (
    "id", "name", "token_hash", "display_prefix", "owner", "workspace", "project", "scopes",
    "created_at", "expires_at", "revoked_at", "last_used_at", "created_by",
)  # fmt: skip


def write_config(folder: str, store: str, upstream: int) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "routes.yaml"), "w") as fh:
        fh.write(ROUTES)
    path = os.path.join(folder, "config.yaml")
    with open(path, "w") as fh:
        fh.write(f"""listen: {{host: 127.0.0.1, port: 8080}}
admin: false
surface: routes.yaml
upstreams: {{default: "http://127.0.0.1:{upstream}"}}
store: {store}
log: {{level: warning}}
tokens: {{cache_ttl: 1}}
""")
    return path


def rows(n: int) -> tuple[list[str], list[tuple[object, ...]]]:
    now = time.time()
    secrets_, out = [], []
    for i in range(n):
        secret = generate("st_")
        secrets_.append(secret)
        out.append(
            (new_id(), f"b{i}", hash_token(secret), display_prefix(secret), "bench", "bench", None,
             "read", now, now + 86400, None, None, "bench")
        )  # fmt: skip
    return secrets_, out


def migrate(config: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "gateway", "store", "migrate", "-c", config],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )


async def load_pg(dsn: str, records: list[tuple[object, ...]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table("tokens", records=records, columns=COLUMNS)
        await conn.execute("ANALYZE tokens")
    finally:
        await conn.close()


def load_sqlite(path: str, records: list[tuple[object, ...]]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(f"INSERT INTO tokens ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 13)})", records)  # noqa: S608
    conn.close()


def wrk_lua(url: str, script: str, tokens: str, seconds: int, connections: int) -> float:
    cmd = [need_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script, url, "--", tokens]
    out = subprocess.run(
        [*cmd, str(random.randrange(10**9))], capture_output=True, text=True, check=True
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"{url}: refusals during the run\n{out}")
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--pg-dsn")
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="scopegate-bench-store-")
    secrets_, records = rows(args.tokens)
    tokens = os.path.join(folder, "tokens.txt")
    with open(tokens, "w") as fh:
        fh.write("\n".join(secrets_) + "\n")
    script = os.path.join(folder, "walk.lua")
    with open(script, "w") as fh:
        fh.write(LUA)
    upstream, port_lite, port_pg = free_port(), free_port(), free_port()
    with database(args.pg_dsn) as (url, dsn):
        lite = write_config(os.path.join(folder, "lite"), "sqlite:///tokens.db", upstream)
        pg = write_config(os.path.join(folder, "pg"), url, upstream)
        migrate(lite)
        migrate(pg)
        load_sqlite(os.path.join(folder, "lite", "tokens.db"), records)
        asyncio.run(load_pg(dsn, records))
        env = {**os.environ, "PYTHONPATH": ROOT}
        procs = [start([sys.executable, os.path.join(HERE, "upstream.py"), str(upstream)], upstream)]
        try:
            for config, port in ((lite, port_lite), (pg, port_pg)):
                cmd = [sys.executable, "-m", "gateway", "serve", "-c", config, "--port", str(port)]
                procs.append(start(cmd, port, cwd=os.path.dirname(config), env=env))
            cases = {"sqlite": port_lite, "postgresql": port_pg}
            results: dict[str, list[float]] = {name: [] for name in cases}
            for port in cases.values():  # warm-up: connections, pools, page cache
                wrk_lua(f"http://127.0.0.1:{port}/", script, tokens, 2, args.connections)
            for _ in range(args.rounds):
                for name, port in cases.items():
                    results[name].append(
                        wrk_lua(f"http://127.0.0.1:{port}/", script, tokens, args.seconds, args.connections)
                    )
        finally:
            stop(procs)
    ref = median(results["sqlite"])
    print(
        f"{args.tokens} distinct tokens, cache_ttl 1 s, {args.connections} connections, {args.seconds} s runs"
    )
    print(f"{'store':<12} {'median req/s':>12} {'ratio':>7}   rounds")
    for name, values in results.items():
        rounds = " ".join(f"{v:.0f}" for v in values)
        print(f"{name:<12} {median(values):>12.0f} {median(values) / ref:>7.2f}   {rounds}")


if __name__ == "__main__":
    main()
