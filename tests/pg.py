"""The PostgreSQL half of the test suite: one server per session, one fresh database per test.

The server is $SCOPEGATE_TEST_PG_DSN (`.ci/run` starts a throwaway cluster and exports it), or,
when that is unset, a cluster this session starts itself (tests/pgcluster.py). With neither
possible the PostgreSQL tests skip on a developer's machine but FAIL under CI=true.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.pgcluster import Cluster

T = TypeVar("T")
DSN_ENV = "SCOPEGATE_TEST_PG_DSN"
_names = itertools.count()


def in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a loop of its own (fixtures run outside, and sometimes inside, a loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result(timeout=120)  # type: ignore[arg-type]


@dataclass
class PgServer:
    admin_dsn: str  # with the password: for the tests' own connections only
    cluster: Cluster | None = None
    _free: list[str] = field(default_factory=list)

    @property
    def password(self) -> str:
        return urlsplit(self.admin_dsn).password or ""

    def url(self, database: str, query: str = "") -> str:
        """The `store:` URL for a database: no password in it (that travels in the environment)."""
        parts = urlsplit(self.admin_dsn)
        netloc = f"{parts.username}@{parts.hostname}:{parts.port or 5432}"
        return urlunsplit(("postgresql", netloc, f"/{database}", query, ""))

    def dsn(self, database: str) -> str:
        return urlunsplit(urlsplit(self.admin_dsn)._replace(path=f"/{database}"))

    def create_database(self) -> str:
        """An empty database for one test. Databases are reused (CREATE DATABASE costs about a
        second on a loaded machine), but each is handed out with a fresh, empty public schema and
        no other session connected, so no test sees another's rows."""
        if self._free:
            name = self._free.pop()
        else:
            name = f"sg_{os.getpid()}_{next(_names)}"
            in_thread(lambda: self._admin(f'CREATE DATABASE "{name}"'))
        in_thread(lambda: self._reset(name))
        return name

    def drop_database(self, name: str) -> None:
        """Give the database back (it is emptied when next handed out)."""
        self._free.append(name)

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def _reset(self, name: str) -> None:
        conn = await asyncpg.connect(self.dsn(name))
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()

    async def fetch(self, database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn(database))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def execute(self, database: str, sql: str, *args: Any) -> None:
        conn = await asyncpg.connect(self.dsn(database))
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()


def start_server() -> PgServer:
    dsn = os.environ.get(DSN_ENV)
    if dsn:
        return PgServer(dsn)
    cluster = Cluster.start(Path(tempfile.mkdtemp(prefix="scopegate-pg-")))
    return PgServer(cluster.dsn(), cluster)


def private_cluster() -> Cluster:
    """A cluster of the test's own, for tests that stop and start the server."""
    return Cluster.start(Path(tempfile.mkdtemp(prefix="scopegate-pg-own-")))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
