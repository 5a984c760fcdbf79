"""A PostgreSQL database for a benchmark: $SCOPEGATE_BENCH_PG_DSN (or --pg-dsn), else a throwaway
cluster started like the tests' (tests/pgcluster.py). Each run gets a fresh database, dropped at
the end; the gateway's store URL carries no password (it goes in $SCOPEGATE_STORE_PASSWORD)."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.pgcluster import Cluster  # noqa: E402


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def database(dsn: str | None) -> Iterator[tuple[str, str]]:
    """(store URL without password, DSN with it) of a fresh database; sets the password env."""
    cluster = None
    dsn = dsn or os.environ.get("SCOPEGATE_BENCH_PG_DSN")
    if not dsn:
        cluster = Cluster.start(Path(tempfile.mkdtemp(prefix="scopegate-bench-pg-")))
        dsn = cluster.dsn()
    name = f"bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(dsn, f'CREATE DATABASE "{name}"'))
    parts = urlsplit(dsn)
    os.environ["SCOPEGATE_STORE_PASSWORD"] = parts.password or ""
    url = urlunsplit(
        ("postgresql", f"{parts.username}@{parts.hostname}:{parts.port or 5432}", f"/{name}", "", "")
    )
    try:
        yield url, urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        try:
            asyncio.run(_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            if cluster is not None:
                cluster.stop()
