"""Which TokenStore a `store:` URL names: sqlite:///path.db or postgresql://user@host:port/db."""

from __future__ import annotations

import os

from .postgres import PostgresTokenStore
from .sqlite import SqliteTokenStore
from .store import TokenStore
from .url import PG_SCHEMES


def store_for(url: str, base_dir: str | None = None) -> TokenStore:
    """The store behind `url`; a relative SQLite path is resolved against `base_dir` (else the cwd)."""
    if url.startswith(PG_SCHEMES):
        return PostgresTokenStore(url)
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path.startswith("/"):
            path = os.path.join(base_dir or os.getcwd(), path)
        return SqliteTokenStore(path)
    raise ValueError(f"expected sqlite:///path.db or postgresql://user@host:port/db, got {url!r}")
