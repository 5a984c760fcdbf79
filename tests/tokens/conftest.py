"""Shared fixtures for the token tests: a real store per test (a SQLite file, or a fresh PostgreSQL
database: `store` runs each test on both) and a hand-driven clock."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from gateway.config import TokensConfig
from gateway.tokens.secret import display_prefix, generate, hash_token, new_id
from gateway.tokens.sqlite import SqliteTokenStore
from gateway.tokens.store import TokenRecord, TokenStore
from gateway.tokens.stores import store_for
from gateway.tokens.url import PASSWORD_ENV
from gateway.tokens.validator import TokenValidator

PREFIX = "st_"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def raw(path: str) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection (committed on success), closed on exit."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "tokens.db")


StoreFactory = Callable[[], TokenStore]


@pytest.fixture
def store_factory(store_url: str, tmp_path: Path) -> StoreFactory:
    """New, unopened stores on this test's database (SQLite tokens.db in tmp_path, or PostgreSQL)."""
    return lambda: store_for(store_url, str(tmp_path))


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[TokenStore]:
    s = store_factory()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def sqlite_store(db_path: str) -> AsyncIterator[SqliteTokenStore]:
    """For what only SQLite has: a file, a journal mode, a write lock."""
    s = SqliteTokenStore(db_path)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def tokens_cfg() -> TokensConfig:
    return TokensConfig(prefix=PREFIX, cache_ttl=60.0, revocation_poll=1.0, last_used_flush=5.0)


@pytest.fixture
def validator(store: TokenStore, tokens_cfg: TokensConfig, clock: Clock) -> TokenValidator:
    return TokenValidator(store, tokens_cfg, PREFIX, clock)


def make_record(clock: Clock, **overrides: object) -> tuple[TokenRecord, str]:
    """A record and its secret, as the service would build them (bypassing its rules)."""
    secret = generate(PREFIX)
    record = TokenRecord(
        id=new_id(),
        name="ci",
        display_prefix=display_prefix(secret),
        owner="alice",
        workspace="ws1",
        project=None,
        scopes=("read",),
        targets=(),
        created_at=clock(),
        expires_at=clock() + 3600,
        created_by="test",
    )
    return replace(record, **overrides), secret  # type: ignore[arg-type]


async def mint(store: TokenStore, clock: Clock, **overrides: object) -> tuple[TokenRecord, str]:
    record, secret = make_record(clock, **overrides)
    await store.insert(record, hash_token(secret))
    return record, secret


async def stored_bytes(store_url: str, folder: Path) -> bytes:
    """Everything the store holds, as bytes: the SQLite files, or every PostgreSQL row and bytea."""
    if store_url.startswith("sqlite:"):
        return b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith("tokens.db"))
    conn = await asyncpg.connect(store_url, password=os.environ[PASSWORD_ENV])
    try:
        out = []
        for table in ("tokens", "targets", "revocations"):
            for row in await conn.fetch(f"SELECT * FROM {table}"):  # noqa: S608 - fixed names
                out.extend(v if isinstance(v, bytes) else str(v).encode() for v in row.values())
        return b"\0".join(out)
    finally:
        await conn.close()
