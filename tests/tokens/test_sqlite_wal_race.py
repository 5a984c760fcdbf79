"""Two first opens racing to switch a fresh file to WAL (issue 14, `_enable_wal`'s survivors).

SQLite answers `PRAGMA journal_mode = WAL` with SQLITE_BUSY at once, without its busy handler,
while another connection holds the file's RESERVED lock (what a second worker's migration holds).
A real second connection holds that lock here, so the store's own retry is what is tested.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from gateway.errors import StoreUnavailable
from gateway.tokens.sqlite import SqliteTokenStore


@contextmanager
def reserved(path: str) -> Iterator[sqlite3.Connection]:
    """Another process's write transaction on the (fresh, rollback-journal) file."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


def _journal_mode(path: str) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def test_the_lock_answers_busy_without_the_busy_handler(db_path: str) -> None:
    # The premise of the tests below: a busy handler (timeout) does not wait this out.
    with reserved(db_path):
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=5)
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError) as err:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.close()
    assert err.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
    assert time.monotonic() - started < 1


async def test_a_first_open_retries_until_the_other_opener_lets_go(db_path: str) -> None:
    with reserved(db_path) as other:
        asyncio.get_running_loop().call_later(0.2, other.execute, "ROLLBACK")
        store = SqliteTokenStore(db_path, busy_timeout_ms=5000)
        started = time.monotonic()
        await asyncio.wait_for(store.open(), 10)
        elapsed = time.monotonic() - started
    try:
        assert _journal_mode(db_path) == "wal"
        assert await store.by_hash(bytes(32)) is None  # migrated and answering
    finally:
        await store.close()
    assert 0.19 <= elapsed < 0.9  # retried every few milliseconds, not once a second


async def test_a_lock_held_past_the_busy_timeout_fails_the_open_at_that_timeout(db_path: str) -> None:
    with reserved(db_path):
        store = SqliteTokenStore(db_path, busy_timeout_ms=300)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"cannot open token store .*: database is locked"):
            await asyncio.wait_for(store.open(), 10)
        elapsed = time.monotonic() - started
    assert store._conn is None
    assert 0.3 <= elapsed < 5  # retried for the whole busy timeout, then failed closed
