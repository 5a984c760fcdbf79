"""The SQLite store's lookup by hash on the event loop thread (gateway/tokens/sqlite_reader.py).

Real files throughout: the lookup uses the token_hash index, never queues behind a write, never
holds a snapshot (a revocation committed elsewhere is seen by the next lookup), never waits for a
lock on the loop thread, and falls back to the store's thread when readers are locked out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.errors import StoreUnavailable
from gateway.tokens.secret import hash_token
from gateway.tokens.sqlite import STORE_THREAD_NICE, SqliteTokenStore
from gateway.tokens.sqlite_reader import BY_HASH_SQL, LoopReader, ReaderBusy

from .conftest import Clock, mint, raw


def test_the_lookup_searches_the_token_hash_index(db_path: str) -> None:
    asyncio.run(_open_and_close(db_path))
    with raw(db_path) as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + BY_HASH_SQL, (b"x" * 32,))]
    # A SCAN of tokens would read every row: with a million tokens, milliseconds per miss.
    assert any(step.startswith("SEARCH t USING INDEX") and "(token_hash=?)" in step for step in plan), plan
    assert not any(step.startswith("SCAN") for step in plan), plan


async def _open_and_close(path: str) -> None:
    s = SqliteTokenStore(path)
    await s.open()
    await s.close()


async def test_lookups_do_not_queue_behind_a_write_waiting_for_the_lock(
    db_path: str, sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    record, secret = await mint(sqlite_store, clock)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        # The last_used flush now waits for it (up to the 2 s busy timeout) on the store's thread.
        flush = asyncio.create_task(sqlite_store.touch({record.id: clock() + 1}))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        found = await asyncio.wait_for(sqlite_store.by_hash(hash_token(secret)), 1.5)
        assert found == record
        # Answered while that write still waits: token checks never stall behind a flush.
        assert not flush.done()
        assert time.monotonic() - started < 1.0
        blocker.execute("ROLLBACK")
        await asyncio.wait_for(flush, 10)
    finally:
        blocker.close()


async def test_every_lookup_sees_the_latest_commit(
    db_path: str, sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    record, secret = await mint(sqlite_store, clock)
    token_hash = hash_token(secret)
    other = SqliteTokenStore(db_path)  # another process's connection to the same file
    await other.open()
    try:
        for i in range(3):
            found = await sqlite_store.by_hash(token_hash)
            assert found is not None and found.revoked_at is None
            await other.touch({record.id: clock() + i})
        assert await other.revoke(record.id, clock()) == token_hash
        # SECURITY: the reader holds no snapshot between lookups, so the revocation is seen at once.
        found = await sqlite_store.by_hash(token_hash)
        assert found is not None and found.revoked_at == clock()
    finally:
        await other.close()
    # ...and no read transaction is left open: a checkpoint that must wait for every reader
    # completes (busy = 0) and empties the log.
    with raw(db_path) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    assert Path(db_path + "-wal").stat().st_size == 0


async def test_targets_come_back_in_order_with_the_token(
    sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    targets = (("playlist", "9"), ("playlist", "1"), ("device", "x"))
    record, secret = await mint(sqlite_store, clock, scopes=("agency",), targets=targets)
    _, bare = await mint(sqlite_store, clock, name="bare")
    assert await sqlite_store.by_hash(hash_token(secret)) == record
    found = await sqlite_store.by_hash(hash_token(bare))
    assert found is not None and found.targets == ()


def _locked_out_reader(tmp_path: Path) -> tuple[LoopReader, sqlite3.Connection]:
    """A reader opened as the store opens its own, on a rollback-journal file (where readers do
    wait for a writer), and a connection holding that file's exclusive lock."""
    path = str(tmp_path / "locked.db")
    asyncio.run(_open_and_close(path))
    with raw(path) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    reader = LoopReader.connect(path, require_wal=False)
    assert reader is not None
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    return reader, holder


def test_a_locked_file_is_reader_busy_at_once_never_a_wait(tmp_path: Path) -> None:
    reader, holder = _locked_out_reader(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(ReaderBusy, match=r"^database is locked$"):  # SQLite's own words
            reader.by_hash(b"x" * 32)
        # No busy timeout on the loop thread: every request behind this one would stall.
        assert time.monotonic() - started < 0.5
    finally:
        reader.close()
        holder.close()


async def test_a_busy_reader_falls_back_to_the_thread(tmp_path: Path, db_path: str, clock: Clock) -> None:
    store = SqliteTokenStore(db_path)
    await store.open()
    locked, holder = await asyncio.to_thread(_locked_out_reader, tmp_path)
    try:
        record, secret = await mint(store, clock)
        store._reader.close()  # type: ignore[union-attr]
        store._reader = locked  # a reader that is locked out
        # Answered by the store's thread (which may wait for a lock, off the loop), not refused.
        assert await store.by_hash(hash_token(secret)) == record
        assert await store.by_hash(hash_token(secret + "x")) is None
    finally:
        holder.close()
        await store.close()


def test_a_file_not_in_wal_mode_gets_no_reader(tmp_path: Path) -> None:
    path = str(tmp_path / "rollback.db")
    asyncio.run(_open_and_close(path))
    with raw(path) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    # A reader there would wait for every writer: the store keeps to its thread.
    assert LoopReader.connect(path) is None


def test_the_reader_cannot_write(db_path: str) -> None:
    asyncio.run(_open_and_close(db_path))
    reader = LoopReader.connect(db_path)
    assert reader is not None
    try:
        conn = reader._conn
        assert conn is not None
        with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
            conn.execute("DELETE FROM revocations")
    finally:
        reader.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        reader.by_hash(b"x" * 32)


async def test_a_garbled_file_is_store_unavailable_never_unknown(
    db_path: str, sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    _, secret = await mint(sqlite_store, clock)
    assert await sqlite_store.by_hash(hash_token(secret)) is not None
    # The WAL index (-shm) too: while it says nothing changed, a connection trusts its page cache.
    files = [Path(db_path + suffix) for suffix in ("", "-wal", "-shm")]
    originals = {f: f.read_bytes() for f in files}
    try:
        for f in files:
            f.write_bytes(b"\xa5" * len(originals[f]))
        # SECURITY: a store that cannot be read is 503 (fail closed, and said so), not a token
        # the store does not know (a 401 that the negative cache would then remember).
        with pytest.raises(StoreUnavailable):
            await sqlite_store.by_hash(hash_token(secret))
    finally:
        for f, data in originals.items():
            f.write_bytes(data)


def test_the_reader_never_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    # Read-only (`mode=ro`): a read-write open would create an empty file in the store's place.
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        LoopReader.connect(str(path))
    assert not path.exists()


def test_a_closed_reader_says_so(db_path: str) -> None:
    asyncio.run(_open_and_close(db_path))
    reader = LoopReader.connect(db_path)
    assert reader is not None
    reader.close()
    reader.close()  # closing twice is harmless
    with pytest.raises(sqlite3.ProgrammingError, match=r"^token store reader is closed$"):
        reader.by_hash(b"x" * 32)


class _CloseFails(sqlite3.Connection):
    """A real connection whose close() reports an error after closing (as an I/O error would)."""

    def close(self) -> None:
        super().close()
        raise sqlite3.OperationalError("disk I/O error")


def test_a_failing_close_is_logged_never_raised(db_path: str, caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_open_and_close(db_path))
    reader = LoopReader(sqlite3.connect(db_path, factory=_CloseFails))
    with caplog.at_level(logging.WARNING, logger="scopegate.store"):
        reader.close()
    assert [r.getMessage() for r in caplog.records] == ["closing token store reader failed: disk I/O error"]
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        reader.by_hash(b"x" * 32)


def _nice_by_thread() -> dict[int, int]:
    return {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice value is Linux's")
async def test_the_store_thread_gives_way_to_the_event_loop(db_path: str, clock: Clock) -> None:
    # The last-used batch runs on aiosqlite's thread; at the loop's priority it took the loop's
    # core for milliseconds at a time (bench/run.py, store miss c1). That thread alone is niced.
    loop_thread = threading.get_native_id()
    if os.getpriority(os.PRIO_PROCESS, loop_thread) >= STORE_THREAD_NICE:
        pytest.skip("the tests already run at the lowest priority")
    before = _nice_by_thread()
    store = SqliteTokenStore(db_path)
    await store.open()
    try:
        record, _ = await mint(store, clock)
        await store.touch({record.id: clock()})
        after = _nice_by_thread()
    finally:
        await store.close()
    started = [nice for tid, nice in after.items() if tid not in before]
    assert started.count(STORE_THREAD_NICE) == 1  # the connection's thread (to_thread's keep theirs)
    assert {tid: after[tid] for tid in before if tid in after} == before  # the loop's included
