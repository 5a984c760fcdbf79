"""The SQLite store's edges that only the `serve` tests reached, in process on real files (issue 14):
ping() on a file corrupted, removed, replaced or restored under an open store, and the revocation
feed's paging.
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.errors import Conflict, StoreUnavailable
from gateway.tokens.migrations import LATEST
from gateway.tokens.secret import hash_token
from gateway.tokens.sqlite import FEED_PAGE, SqliteTokenStore

from .conftest import Clock, make_record, mint, raw


def _copy_of(db_path: str, dest: Path, user_version: int | None = None) -> None:
    """A consistent copy of the store's file (sqlite3's online backup), as an operator takes one."""
    src, dst = sqlite3.connect(db_path), sqlite3.connect(dest)
    try:
        src.backup(dst)
        if user_version is not None:
            dst.execute(f"PRAGMA user_version = {user_version}")
    finally:
        src.close()
        dst.close()


async def test_a_healthy_ping_keeps_its_connection_and_warns_of_nothing(
    sqlite_store: SqliteTokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    conn, reader = sqlite_store._conn, sqlite_store._reader
    assert conn is not None and reader is not None
    with caplog.at_level(logging.WARNING, logger="scopegate.store"):
        await sqlite_store.ping()
        await sqlite_store.ping()
    assert caplog.records == []
    assert sqlite_store._conn is conn and sqlite_store._reader is reader


async def test_a_file_garbled_in_place_fails_ping_until_repaired(
    db_path: str, sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    await mint(sqlite_store, clock)
    await sqlite_store.ping()
    files = [Path(db_path), Path(db_path + "-wal")]
    originals = {f: f.read_bytes() for f in files}
    for f in files:
        f.write_bytes((b"no database here" * (len(originals[f]) // 16 + 1))[: len(originals[f])])
    with pytest.raises(StoreUnavailable, match="cannot be read: file is not a database"):
        await sqlite_store.ping()
    for f, data in originals.items():
        f.write_bytes(data)
    await sqlite_store.ping()


async def test_a_file_replaced_by_a_directory_fails_ping(
    tmp_path: Path, db_path: str, sqlite_store: SqliteTokenStore
) -> None:
    db = Path(db_path)
    db.rename(tmp_path / "aside.db")
    db.mkdir()
    try:
        with pytest.raises(StoreUnavailable, match=re.escape(f"token store {db_path} cannot be read")):
            await sqlite_store.ping()
    finally:
        db.rmdir()
        (tmp_path / "aside.db").rename(db)
    await sqlite_store.ping()


async def test_a_removed_file_restored_from_a_copy_is_read_again(
    tmp_path: Path,
    db_path: str,
    sqlite_store: SqliteTokenStore,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before, before_secret = await mint(sqlite_store, clock, name="before")
    backup = tmp_path / "backup.db"
    _copy_of(db_path, backup)
    Path(db_path).unlink()
    with pytest.raises(StoreUnavailable, match="cannot be read"):
        await sqlite_store.ping()
    # The gateway must not create an empty store in the missing file's place.
    assert not Path(db_path).exists()
    shutil.copyfile(backup, db_path)
    with caplog.at_level(logging.WARNING, logger="scopegate.store"):
        await sqlite_store.ping()
    assert [r.getMessage() for r in caplog.records] == [f"token store {db_path} was replaced; reopening it"]
    # Another process writes into the restored file: this store reads that file now.
    other = SqliteTokenStore(db_path)
    await other.open()
    try:
        after, after_secret = await mint(other, clock, name="after")
        assert await other.revoke(before.id, clock() + 1) == hash_token(before_secret)
    finally:
        await other.close()
    assert await sqlite_store.by_hash(hash_token(after_secret)) == after
    assert await sqlite_store.by_id(after.id) == after
    revoked = await sqlite_store.by_hash(hash_token(before_secret))
    assert revoked is not None and revoked.revoked_at == clock() + 1
    assert (await sqlite_store.revocations_since(0))[1] == [hash_token(before_secret)]
    # The reopened store is open for good: the next ping reads it without reopening again.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scopegate.store"):
        await sqlite_store.ping()
    assert caplog.records == []


async def test_a_replacement_that_cannot_be_opened_stays_down_until_a_good_file_returns(
    tmp_path: Path, db_path: str, sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    good = tmp_path / "good.db"
    _copy_of(db_path, good)
    other = SqliteTokenStore(str(good))
    await other.open()
    try:
        minted, secret = await mint(other, clock, name="in-the-good-copy")
    finally:
        await other.close()
    newer = tmp_path / "newer.db"
    _copy_of(db_path, newer, user_version=LATEST + 1)
    # A file this code cannot run (a newer schema) is put in place: reopening it fails. (The
    # live log is emptied first: SQLite would replay a stale `-wal` onto the new file.)
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    Path(db_path).unlink()
    shutil.copyfile(newer, db_path)
    with pytest.raises(StoreUnavailable, match="newer"):
        await sqlite_store.ping()
    with pytest.raises(StoreUnavailable, match="newer"):
        await sqlite_store.ping()  # still down, and still for that reason
    # While it is down, the file is removed: no ping may create an empty store in its place.
    Path(db_path).unlink()
    with pytest.raises(StoreUnavailable, match="cannot be read"):
        await sqlite_store.ping()
    assert not Path(db_path).exists()
    # A good file put back is opened by the next ping, and read.
    shutil.copyfile(good, db_path)
    await sqlite_store.ping()
    assert await sqlite_store.by_hash(hash_token(secret)) == minted


async def test_the_feed_comes_in_pages_and_misses_nothing(
    db_path: str, sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    record, _ = await mint(sqlite_store, clock)
    hashes = [i.to_bytes(32, "big") for i in range(FEED_PAGE + 2)]
    with raw(db_path) as conn:
        conn.executemany(
            "INSERT INTO revocations (token_id, token_hash, revoked_at) VALUES (?, ?, ?)",
            [(record.id, h, clock()) for h in hashes],
        )
        first_seq = conn.execute("SELECT MIN(seq) FROM revocations").fetchone()[0]
    pos, page = await sqlite_store.revocations_since(0)
    assert page == hashes[:FEED_PAGE]
    assert pos == first_seq + FEED_PAGE - 1
    pos, page = await sqlite_store.revocations_since(pos)
    assert page == hashes[FEED_PAGE:]
    assert pos == first_seq + FEED_PAGE + 1
    assert await sqlite_store.revocations_since(pos) == (pos, [])


async def test_a_path_that_is_a_directory_cannot_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    path.mkdir()
    store = SqliteTokenStore(str(path))
    expected = re.escape(f"cannot open token store {path}: unable to open database file")
    with pytest.raises(StoreUnavailable, match="^" + expected + "$"):
        await store.open()
    assert store._conn is None


async def test_a_log_that_cannot_be_created_fails_at_once_not_after_the_busy_timeout(db_path: str) -> None:
    Path(db_path + "-wal").mkdir()  # something in the way of the write-ahead log
    store = SqliteTokenStore(db_path, busy_timeout_ms=30_000)
    started = time.monotonic()
    expected = re.escape(f"cannot open token store {db_path}: disk I/O error")
    with pytest.raises(StoreUnavailable, match="^" + expected + "$"):
        await store.open()
    # Switching to WAL retries only SQLITE_BUSY (other workers opening the same file); any other
    # error is final, so it fails now rather than after the 30 s busy timeout.
    assert time.monotonic() - started < 10
    assert store._conn is None


async def test_a_corrupt_file_cannot_be_opened(db_path: str) -> None:
    Path(db_path).write_bytes(b"this is not a sqlite database at all" * 200)
    store = SqliteTokenStore(db_path)
    expected = re.escape(f"cannot open token store {db_path}: file is not a database")
    with pytest.raises(StoreUnavailable, match="^" + expected + "$"):
        await store.open()
    assert store._conn is None


async def test_a_store_that_cannot_run_in_wal_mode_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # An in-memory database has no WAL ("memory" journal) and no file: warned, then refused.
    store = SqliteTokenStore(":memory:")
    with (
        caplog.at_level(logging.WARNING, logger="scopegate.store"),
        pytest.raises(StoreUnavailable, match=r"^cannot open token store :memory:"),
    ):
        await store.open()
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["token store :memory: runs in journal mode memory, not WAL"]


async def test_a_healthy_open_warns_of_nothing(db_path: str, caplog: pytest.LogCaptureFixture) -> None:
    store = SqliteTokenStore(db_path)
    with caplog.at_level(logging.WARNING, logger="scopegate.store"):
        await store.open()
        await store.open()  # a second open of an open store is a no-op
        conn = store._conn
        await store.open()
        assert store._conn is conn
    await store.close()
    assert caplog.records == []


@pytest.mark.parametrize("collides", ["id", "secret"])
async def test_an_id_or_secret_collision_is_a_conflict_and_writes_nothing(
    db_path: str, sqlite_store: SqliteTokenStore, clock: Clock, collides: str
) -> None:
    first, secret = await mint(sqlite_store, clock, name="first")
    second, other_secret = make_record(clock, name="second")
    if collides == "id":
        second = replace(second, id=first.id)
    token_hash = hash_token(secret if collides == "secret" else other_secret)
    with pytest.raises(Conflict, match=r"^a token with that id or secret already exists$"):
        await sqlite_store.insert(second, token_hash)
    assert [r.id for r in await sqlite_store.list("ws1")] == [first.id]
    # Rolled back: no transaction is left open on the connection, and the write lock is free.
    assert sqlite_store._conn is not None and not sqlite_store._conn.in_transaction
    with raw(db_path) as conn:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("BEGIN IMMEDIATE")
    third, third_secret = await mint(sqlite_store, clock, name="third")
    assert await sqlite_store.by_hash(hash_token(third_secret)) == third


async def test_a_refused_write_leaves_no_transaction_open(
    db_path: str, sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    await mint(sqlite_store, clock, name="deploy")
    clash, secret = make_record(clock, name="deploy")
    with pytest.raises(Conflict, match="already exists"):
        await sqlite_store.insert(clash, hash_token(secret))
    assert sqlite_store._conn is not None and not sqlite_store._conn.in_transaction
    # Another process can take the write lock at once: the refused write let it go.
    with raw(db_path) as conn:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("BEGIN IMMEDIATE")


async def test_a_second_rotation_of_the_old_token_is_refused_with_the_reason(
    sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    old, _ = await mint(sqlite_store, clock, expires_at=clock() + 86400)
    successor, secret = make_record(clock, name=old.name, rotated_from=old.id)
    await sqlite_store.rotate(old.id, successor, hash_token(secret), clock() + 60)
    again, again_secret = make_record(clock, name="again", rotated_from=old.id)
    with pytest.raises(Conflict, match=r"^this token was already rotated; rotate its successor$"):
        await sqlite_store.rotate(old.id, again, hash_token(again_secret), clock() + 60)
    assert await sqlite_store.by_id(again.id) is None


async def test_an_unreadable_store_is_unavailable_with_its_cause_logged(
    db_path: str, sqlite_store: SqliteTokenStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    _, secret = await mint(sqlite_store, clock)
    files = [Path(db_path + suffix) for suffix in ("", "-wal", "-shm")]
    originals = {f: f.read_bytes() for f in files}
    try:
        for f in files:
            f.write_bytes(b"\xa5" * len(originals[f]))
        with (
            caplog.at_level(logging.WARNING, logger="scopegate.store"),
            pytest.raises(StoreUnavailable, match=r"^token store unavailable: file is not a database$"),
        ):
            await sqlite_store.by_hash(hash_token(secret))
    finally:
        for f, data in originals.items():
            f.write_bytes(data)
    assert [r.getMessage() for r in caplog.records] == ["token store error: file is not a database"]


async def test_a_store_never_opened_or_closed_says_it_is_not_open(db_path: str) -> None:
    store = SqliteTokenStore(db_path)
    with pytest.raises(StoreUnavailable, match=r"^token store is not open$"):
        await store.by_id("tok_x")


async def test_close_releases_the_file_whole(tmp_path: Path, db_path: str, clock: Clock) -> None:
    store = SqliteTokenStore(db_path)
    await store.open()
    _, secret = await mint(store, clock)
    assert await store.by_hash(hash_token(secret)) is not None  # the loop reader has read it
    await store.close()
    # Both connections (the store's and its loop reader) are closed: the last one checkpointed
    # the log into the file and removed it, so tokens.db alone is the whole store.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.db"]
    await store.close()  # closing twice is harmless


async def test_expiry_notices_are_claimed_a_hundred_at_a_time(
    sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    day = 86400.0
    for i in range(101):
        await mint(sqlite_store, clock, name=f"t{i}", created_at=clock() - 10 * day, expires_at=clock() + day)
    first = await sqlite_store.claim_expiry_notices(clock(), (int(2 * day),), 60)
    assert len(first) == 100
    rest = await sqlite_store.claim_expiry_notices(clock(), (int(2 * day),), 60)
    assert len(rest) == 1
    assert len({n.record.id for n in first + rest}) == 101
