"""The SQLite token store (aiosqlite): WAL, synchronous=FULL, one connection per process, plus a
read-only one that answers lookups by hash on the event loop thread (sqlite_reader.py).

Every write is its own IMMEDIATE transaction and returns only after COMMIT. Every sqlite or OS
failure (missing directory, lock held past the busy timeout, corrupt or read-only file, closed
store) surfaces as `errors.StoreUnavailable`, so callers fail closed without knowing the backend.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import Conflict, StoreUnavailable
from . import sqlite_notices as notices
from .migrations import SchemaTooNew, migrate
from .rows import COLUMNS, list_filter, record_of, values_of
from .sqlite_reader import PREFIXED, LoopReader, ReaderBusy, one_token_sql, token_of
from .store import ExpiryNotice, Status, TokenRecord

log = logging.getLogger("scopegate.store")

BUSY_TIMEOUT_MS = 2000
# The nice value of the connection's thread (Linux: a thread's own): its work (the last-used
# batch above all) waits for the event loop's thread, never the other way round.
STORE_THREAD_NICE = 19
SQLITE_HEADER = b"SQLite format 3\x00"
FEED_PAGE = 10_000


class SqliteTokenStore:
    def __init__(self, path: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = path
        self.busy_timeout_ms = int(busy_timeout_ms)
        self._directory = os.path.dirname(os.path.abspath(path))
        self._conn: aiosqlite.Connection | None = None
        self._reader: LoopReader | None = None  # by_hash on the loop thread (sqlite_reader.py)
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._replaced = False  # closed by ping() because the file was replaced; reopen there
        # One connection is shared by every coroutine; the lock keeps one coroutine's statements
        # out of another's transaction.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self._conn is not None:
            return
        if not await asyncio.to_thread(os.path.isdir, self._directory):
            raise StoreUnavailable(f"token store directory does not exist: {self._directory}")
        try:
            conn = await aiosqlite.connect(
                self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000
            )
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(f"cannot open token store {self.path}: {e}") from e
        try:
            await conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            await self._enable_wal(conn)
            # SECURITY: FULL makes a committed revocation survive power loss, not just a crash.
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await migrate(conn)
            await _yield_the_cpu(conn)
        except SchemaTooNew as e:
            await _close_quietly(conn)
            raise StoreUnavailable(str(e)) from e
        except (sqlite3.Error, OSError, ValueError) as e:
            await _close_quietly(conn)
            raise StoreUnavailable(f"cannot open token store {self.path}: {e}") from e
        try:
            st = await asyncio.to_thread(os.stat, self.path)
        except OSError as e:
            await _close_quietly(conn)
            raise StoreUnavailable(f"cannot open token store {self.path}: {e}") from e
        self._identity = (st.st_dev, st.st_ino)
        self._conn = conn
        try:
            self._reader = await asyncio.to_thread(LoopReader.connect, self.path)
        except (sqlite3.Error, OSError) as e:
            # The thread path still answers every lookup, only slower.
            log.warning("token store %s: lookups go through the thread, no reader: %s", self.path, e)

    async def _enable_wal(self, conn: aiosqlite.Connection) -> None:
        # Switching a fresh file to WAL needs it alone for a moment and ignores the busy handler,
        # so concurrent first opens (several workers starting together) retry within the timeout.
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                rows = await _fetchall(conn, "PRAGMA journal_mode = WAL", ())
                break
            except sqlite3.OperationalError as e:
                if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.01)
        if rows and str(rows[0][0]).lower() != "wal":
            log.warning("token store %s runs in journal mode %s, not WAL", self.path, rows[0][0])

    async def close(self) -> None:
        self._replaced = False
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:
                await _close_quietly(conn)

    async def ping(self) -> None:
        """A real read, twice: the live connection reads the tokens table, and the file at `path`
        opens afresh (read-only) and reads it too. A file made unreadable, corrupt, replaced by
        something else or removed under a running gateway fails here, though the live connection
        may still answer from its open descriptor and page cache; a file put back passes again."""
        if self._replaced:
            # Reopen only onto a file that is there and reads: never create an empty store.
            await asyncio.to_thread(self._read_afresh)
            await self.open()
            self._replaced = False
        async with self._reading() as conn:
            await _fetchall(conn, "SELECT 1 FROM tokens LIMIT 1", ())
        identity = await asyncio.to_thread(self._read_afresh)
        if identity != self._identity:
            # A restored file: the live connection still holds the one that was replaced.
            log.warning("token store %s was replaced; reopening it", self.path)
            await self.close()
            self._replaced = True
            await self.open()
            self._replaced = False

    def _read_afresh(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
            # A plain open() first: SQLite reuses a descriptor it still holds for the same file,
            # which would skip the permission check of a file made unreadable meanwhile.
            with open(self.path, "rb") as f:
                if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise sqlite3.DatabaseError("file is not a database")
            uri = Path(os.path.abspath(self.path)).as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_ms / 1000)
            try:
                conn.execute("SELECT 1 FROM tokens LIMIT 1").fetchall()
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(f"token store {self.path} cannot be read: {e}") from e
        return st.st_dev, st.st_ino

    async def insert(self, record: TokenRecord, token_hash: bytes) -> None:
        async with self._writing() as conn:
            await _insert(conn, record, token_hash)

    async def rotate(
        self, old_id: str, successor: TokenRecord, successor_hash: bytes, revoke_at: float | None
    ) -> bytes | None:
        async with self._writing() as conn:
            rows = await _fetchall(
                conn,
                "SELECT token_hash, revoke_at FROM tokens WHERE id = ? AND revoked_at IS NULL",
                (old_id,),
            )
            if not rows:
                return None
            if rows[0][1] is not None:
                raise Conflict("this token was already rotated; rotate its successor")
            if revoke_at is None:
                await _revoke(conn, old_id, bytes(rows[0][0]), successor.created_at)
            else:
                # SECURITY: the old token's expiry moves to the end of the overlap, so any process
                # that reads it from now on refuses it then; revoke_due later feeds the revocation
                # to processes that still hold it in their cache.
                await conn.execute(
                    "UPDATE tokens SET revoke_at = ?, expires_at = MIN(expires_at, ?) WHERE id = ?",
                    (revoke_at, revoke_at, old_id),
                )
            await _insert(conn, successor, successor_hash)
            return bytes(rows[0][0])

    async def revoke_due(self, now: float) -> builtins.list[tuple[str, bytes]]:
        async with self._reading() as conn:
            due = await _fetchall(
                conn,
                "SELECT 1 FROM tokens WHERE revoked_at IS NULL AND revoke_at <= ? LIMIT 1",
                (now,),
            )
        if not due:  # the common case: a read, no write lock
            return []
        async with self._writing() as conn:
            rows = await _fetchall(
                conn,
                "SELECT id, token_hash, revoke_at FROM tokens WHERE revoked_at IS NULL AND revoke_at <= ?",
                (now,),
            )
            for token_id, token_hash, at in rows:
                await _revoke(conn, token_id, bytes(token_hash), at)
            return [(r[0], bytes(r[1])) for r in rows]

    async def claim_expiry_notices(
        self, now: float, thresholds: Sequence[int], lease: float, limit: int = 100
    ) -> builtins.list[ExpiryNotice]:
        async with self._reading() as conn:
            if not await notices.any_due(conn, now, thresholds):
                return []
        async with self._writing() as conn:
            return await notices.claim(conn, PREFIXED, record_of, now, thresholds, lease, limit)

    async def finish_expiry_notice(
        self, token_id: str, threshold: int, *, sent: bool, retry_at: float
    ) -> None:
        async with self._writing() as conn:
            await notices.finish(conn, token_id, threshold, sent=sent, at=retry_at)

    async def by_hash(self, token_hash: bytes) -> TokenRecord | None:
        reader = self._reader
        if reader is not None:
            try:
                return reader.by_hash(token_hash)
            except ReaderBusy:
                pass  # locked against readers: the thread waits up to the busy timeout, or fails
            except (sqlite3.Error, OSError, ValueError) as e:
                # SECURITY: an unreadable store is 503, never "unknown token" or a stale answer.
                raise self._unavailable(e) from e
        return await self._one("t.token_hash = ?", (token_hash,))

    async def by_id(self, token_id: str) -> TokenRecord | None:
        return await self._one("t.id = ?", (token_id,))

    async def list(
        self, workspace: str | None, *, project_level_only: bool = False, status: Status = "active"
    ) -> builtins.list[TokenRecord]:
        # Only fixed fragments reach the SQL text; every value is a bound parameter.
        where, params = list_filter(workspace, project_level_only, status, lambda _: "?")
        async with self._reading() as conn:
            rows = await _fetchall(
                conn,
                f"SELECT {COLUMNS} FROM tokens WHERE {where} ORDER BY created_at, id",  # noqa: S608
                params,
            )
            target_rows = await _fetchall(
                conn,
                "SELECT g.token_id, g.kind, g.target_id FROM targets g "  # noqa: S608
                f"JOIN tokens ON tokens.id = g.token_id WHERE {where} ORDER BY g.rowid",
                params,
            )
        targets: dict[str, builtins.list[tuple[str, str]]] = {}
        for token_id, kind, target in target_rows:
            targets.setdefault(token_id, []).append((kind, target))
        return [record_of(row, targets.get(row[0], ())) for row in rows]

    async def revoke(self, token_id: str, at: float) -> bytes | None:
        async with self._writing() as conn:
            rows = await _fetchall(
                conn, "SELECT token_hash FROM tokens WHERE id = ? AND revoked_at IS NULL", (token_id,)
            )
            if not rows:
                return None
            await _revoke(conn, token_id, bytes(rows[0][0]), at)
            return bytes(rows[0][0])

    async def revocations_since(self, seq: int) -> tuple[int, builtins.list[bytes]]:
        """Up to FEED_PAGE hashes revoked after `seq`, and the position to ask from next.

        With nothing new, the position is the feed head; a head below `seq` means the feed was
        replaced (a restored or different file) and the caller should start over from it.
        """
        async with self._reading() as conn:
            # The head first, then the page up to it: read the other way round, a revocation
            # committing between the two reads would be skipped for good.
            head = await _fetchall(conn, "SELECT COALESCE(MAX(seq), 0) FROM revocations", ())
            rows = await _fetchall(
                conn,
                "SELECT seq, token_hash FROM revocations WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (seq, head[0][0], FEED_PAGE),
            )
            if rows:
                return int(rows[-1][0]), [bytes(r[1]) for r in rows]
            return int(head[0][0]), []

    async def touch(self, last_used: dict[str, float]) -> None:
        if not last_used:
            return
        async with self._writing() as conn:
            await conn.executemany(
                "UPDATE tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
                [(at, token_id) for token_id, at in last_used.items()],
            )

    async def _one(self, where: str, params: Sequence[Any]) -> TokenRecord | None:
        # `where` is one of two literals (by_hash, by_id); values are bound.
        async with self._reading() as conn:
            return token_of(await _fetchall(conn, one_token_sql(where), params))

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            conn = self._live()
            try:
                yield conn
            except (sqlite3.Error, OSError, ValueError) as e:
                raise self._unavailable(e) from e

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            conn = self._live()
            try:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    await _rollback_quietly(conn)
                    raise
                await conn.execute("COMMIT")
            except sqlite3.IntegrityError as e:
                # The name clash is checked above under the write lock; this is an id or hash collision.
                await _rollback_quietly(conn)
                raise Conflict("a token with that id or secret already exists") from e
            except (sqlite3.Error, OSError, ValueError) as e:
                await _rollback_quietly(conn)
                raise self._unavailable(e) from e

    def _live(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreUnavailable("token store is not open")
        return self._conn

    def _unavailable(self, e: BaseException) -> StoreUnavailable:
        log.warning("token store error: %s", e)
        return StoreUnavailable(f"token store unavailable: {e}")


async def _insert(conn: aiosqlite.Connection, record: TokenRecord, token_hash: bytes) -> None:
    clash = await _fetchall(
        conn,
        "SELECT 1 FROM tokens WHERE workspace = ? AND COALESCE(project, '') = COALESCE(?, '') "
        "AND name = ? AND revoked_at IS NULL AND revoke_at IS NULL",
        (record.workspace, record.project, record.name),
    )
    if clash:
        raise Conflict(f"an active token named {record.name!r} already exists in this workspace and project")
    await conn.execute(
        f"INSERT INTO tokens ({COLUMNS}, token_hash) VALUES ({', '.join('?' * 17)})",  # noqa: S608
        (*values_of(record), token_hash),
    )
    await conn.executemany(
        "INSERT OR IGNORE INTO targets (token_id, kind, target_id) VALUES (?, ?, ?)",
        [(record.id, kind, target) for kind, target in record.targets],
    )


async def _revoke(conn: aiosqlite.Connection, token_id: str, token_hash: bytes, at: float) -> None:
    await conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (at, token_id))
    # SECURITY: the feed row commits with the revocation, so every poller sees both or neither.
    await conn.execute(
        "INSERT INTO revocations (token_id, token_hash, revoked_at) VALUES (?, ?, ?)",
        (token_id, token_hash, at),
    )


async def _fetchall(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    async with conn.execute(sql, params) as cur:
        return list(await cur.fetchall())


async def _rollback_quietly(conn: aiosqlite.Connection) -> None:
    try:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
    except (sqlite3.Error, ValueError) as e:
        log.warning("token store rollback failed: %s", e)


async def _yield_the_cpu(conn: aiosqlite.Connection) -> None:
    """Lower the priority of the thread aiosqlite runs this connection on (STORE_THREAD_NICE).

    Woken by the event loop, that thread was placed on the loop's core and held it for
    milliseconds at a time while it wrote the last-used batch (bench/run.py, store miss c1).
    Its other work (mints, revocations, the poll) is a few rows, which it still gets the CPU
    for at once unless other processes saturate the machine. Linux only: aiosqlite does not
    expose the thread, so a SQL function run on it tells its id, and elsewhere setpriority would
    take that number for a process's id."""
    if not sys.platform.startswith("linux"):
        return
    await conn.create_function("scopegate_thread_id", 0, threading.get_native_id)
    rows = await _fetchall(conn, "SELECT scopegate_thread_id()", ())
    try:
        os.setpriority(os.PRIO_PROCESS, int(rows[0][0]), STORE_THREAD_NICE)
    except OSError as e:
        log.warning("token store: cannot lower its thread's priority: %s", e)


async def _close_quietly(conn: aiosqlite.Connection) -> None:
    try:
        await conn.close()
    except (sqlite3.Error, ValueError) as e:
        log.warning("closing token store failed: %s", e)
