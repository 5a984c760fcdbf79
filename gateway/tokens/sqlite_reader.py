"""The SQLite store's hot read, a token by its hash, answered on the event loop thread.

Through aiosqlite a lookup was six hops to its thread and back (execute, fetch and close, for the
row and for its targets), each one a wake-up and a wait for the GIL. Here it is one statement on
a read-only connection of this process's own, with the token_hash UNIQUE index under it: a few
tens of microseconds when the pages are in memory, no thread, no asyncio lock.

It never waits on the loop thread. In WAL mode a reader does not wait for a writer (it reads the
last committed snapshot), and the connection's busy timeout is 0: what can still refuse a reader
(another process holding the file in exclusive locking mode, or switching its journal mode, or
the recovery of the WAL index after a crash) answers SQLITE_BUSY at once, `ReaderBusy` here, and
the store then asks its aiosqlite thread, which waits up to the busy timeout and fails closed.
A file not in WAL mode gets no reader at all (a reader there would wait for every writer).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from operator import itemgetter
from pathlib import Path
from typing import Any

from .rows import COLUMNS, record_of
from .store import TokenRecord

log = logging.getLogger("scopegate.store")

PREFIXED = ", ".join("t." + c.strip() for c in COLUMNS.split(","))
_TARGET_COLUMN = len(COLUMNS.split(","))
_WRITTEN = itemgetter(_TARGET_COLUMN + 2)  # a target's rowid: the order its token's were written in


def one_token_sql(where: str) -> str:
    """One token with its targets in one statement, hence in one snapshot: the token's columns
    (COLUMNS), then one target (kind, target_id, rowid) per row, NULLs for a token without
    targets. `where` is a fixed fragment over the tokens table `t`; values are bound.

    No ORDER BY: sorting in SQL built a temporary B-tree on every lookup, a token without
    targets included (about half of a cache miss's lookup on a 1,000,000-token store). The rows
    come in the targets key's order; token_of puts them back in the order they were written."""
    return (
        f"SELECT {PREFIXED}, g.kind, g.target_id, g.rowid FROM tokens t "  # noqa: S608 - fixed fragments
        f"LEFT JOIN targets g ON g.token_id = t.id WHERE {where}"
    )


BY_HASH_SQL = one_token_sql("t.token_hash = ?")


def token_of(rows: list[Any]) -> TokenRecord | None:
    """The record in the rows of a one_token_sql statement, or None when there are none."""
    if not rows:
        return None
    if len(rows) > 1:
        rows = sorted(rows, key=_WRITTEN)
    targets = [(r[_TARGET_COLUMN], r[_TARGET_COLUMN + 1]) for r in rows if r[_TARGET_COLUMN] is not None]
    return record_of(rows[0], targets)


class ReaderBusy(Exception):
    """The file is locked against readers right now; ask the store's thread instead."""


class LoopReader:
    """A read-only connection for `by_hash` on the loop thread (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn: sqlite3.Connection | None = conn

    @classmethod
    def connect(cls, path: str, *, require_wal: bool = True) -> LoopReader | None:
        """Open the reader (blocking: call it off the loop). None when the file is not in WAL
        mode (unless `require_wal` is off, for tests); sqlite3.Error or OSError when it cannot
        be opened."""
        uri = Path(os.path.abspath(path)).as_uri() + "?mode=ro"
        # SECURITY: read-only and query_only: this connection can never write, whatever runs on it.
        # timeout=0: a lock answers SQLITE_BUSY at once, never a wait on the event loop thread.
        conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only = 1")
            mode = conn.execute("PRAGMA journal_mode").fetchall()
            if require_wal and (not mode or str(mode[0][0]).lower() != "wal"):
                conn.close()
                return None
            # Prepared once here (sqlite3's statement cache keeps it), and checked to read at all.
            conn.execute(BY_HASH_SQL, (b"",)).fetchall()
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def by_hash(self, token_hash: bytes) -> TokenRecord | None:
        """The token with this hash; ReaderBusy when locked, sqlite3.Error when unreadable."""
        conn = self._conn
        if conn is None:
            raise sqlite3.ProgrammingError("token store reader is closed")
        try:
            # fetchall() runs the statement to its end, which ends its read transaction: a read
            # never holds a snapshot past this call, so the next one sees every later commit
            # (a revocation included).
            rows = conn.execute(BY_HASH_SQL, (token_hash,)).fetchall()
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                raise ReaderBusy(str(e)) from e
            raise
        return token_of(rows)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as e:
                log.warning("closing token store reader failed: %s", e)
