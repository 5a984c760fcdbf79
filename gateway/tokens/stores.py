"""Which TokenStore a `store:` URL names: sqlite:///path.db or postgresql://user@host:port/db.

Each store's module is imported when its URL is first met: a gateway on SQLite never loads
asyncpg (about 4 MB of a worker's memory), one on PostgreSQL never loads aiosqlite."""

from __future__ import annotations

import os

from .store import TokenStore
from .url import PG_SCHEMES


def store_for(url: str, base_dir: str | None = None) -> TokenStore:
    """The store behind `url`; a relative SQLite path is resolved against `base_dir` (else the cwd)."""
    if url.startswith(PG_SCHEMES):
        from .postgres import PostgresTokenStore

        return PostgresTokenStore(url)
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path.startswith("/"):
            path = os.path.join(base_dir or os.getcwd(), path)
        from .sqlite import SqliteTokenStore

        return SqliteTokenStore(path)
    raise ValueError(f"expected sqlite:///path.db or postgresql://user@host:port/db, got {url!r}")
