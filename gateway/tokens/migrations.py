"""Versioned schema for the SQLite token store, tracked in `PRAGMA user_version`.

`MIGRATIONS[i]` takes a database from version i to i + 1. Each step runs in one IMMEDIATE
transaction together with the version bump, so a crash leaves the file at a whole version and two
processes opening a fresh file at once apply each step exactly once. Steps are append-only: never
edit a released one, add the next.
"""

from __future__ import annotations

import aiosqlite

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: tokens and their agency targets.
    (
        """
        CREATE TABLE tokens (
            id             TEXT PRIMARY KEY,
            name           TEXT NOT NULL,
            token_hash     BLOB NOT NULL UNIQUE,
            display_prefix TEXT NOT NULL,
            owner          TEXT NOT NULL,
            workspace      TEXT NOT NULL,
            project        TEXT,
            scopes         TEXT NOT NULL,
            created_at     REAL NOT NULL,
            expires_at     REAL NOT NULL,
            revoked_at     REAL,
            last_used_at   REAL,
            created_by     TEXT NOT NULL DEFAULT ''
        )
        """,
        """
        CREATE TABLE targets (
            token_id  TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
            kind      TEXT NOT NULL,
            target_id TEXT NOT NULL,
            PRIMARY KEY (token_id, kind, target_id)
        )
        """,
        # Active names are unique per (workspace, project); a NULL project must still collide,
        # hence COALESCE. Revoked tokens drop out of the index, so their names may be reused.
        """
        CREATE UNIQUE INDEX tokens_active_name
            ON tokens (workspace, COALESCE(project, ''), name) WHERE revoked_at IS NULL
        """,
    ),
    # v2: the revocation feed other processes poll, back-filled with revocations made under v1,
    # and an index for listing a workspace's tokens.
    (
        """
        CREATE TABLE revocations (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            token_id   TEXT NOT NULL,
            token_hash BLOB NOT NULL,
            revoked_at REAL NOT NULL
        )
        """,
        """
        INSERT INTO revocations (token_id, token_hash, revoked_at)
            SELECT id, token_hash, revoked_at FROM tokens
            WHERE revoked_at IS NOT NULL ORDER BY revoked_at, id
        """,
        "CREATE INDEX tokens_workspace ON tokens (workspace, project, created_at)",
    ),
    # v3 (issue 12): network binding, not_before, rotation with an overlap, expiry warnings.
    (
        "ALTER TABLE tokens ADD COLUMN not_before REAL",
        "ALTER TABLE tokens ADD COLUMN allowed_cidrs TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE tokens ADD COLUMN rotated_from TEXT",
        "ALTER TABLE tokens ADD COLUMN revoke_at REAL",
        # A rotated token in its overlap gives its name to the successor: it leaves the index.
        "DROP INDEX tokens_active_name",
        """
        CREATE UNIQUE INDEX tokens_active_name
            ON tokens (workspace, COALESCE(project, ''), name)
            WHERE revoked_at IS NULL AND revoke_at IS NULL
        """,
        "CREATE INDEX tokens_revoke_due ON tokens (revoke_at) WHERE revoked_at IS NULL",
        "CREATE INDEX tokens_expiry ON tokens (expires_at) WHERE revoked_at IS NULL",
        # One row per (token, threshold) warning: claimed by one process at a time, and never
        # sent again once sent_at is set, however many gateways share the store.
        """
        CREATE TABLE expiry_notices (
            token_id      TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
            threshold     INTEGER NOT NULL,
            attempts      INTEGER NOT NULL DEFAULT 0,
            claimed_until REAL NOT NULL DEFAULT 0,
            retry_at      REAL NOT NULL DEFAULT 0,
            sent_at       REAL,
            PRIMARY KEY (token_id, threshold)
        )
        """,
    ),
)

LATEST = len(MIGRATIONS)


class SchemaTooNew(Exception):
    def __init__(self, found: int) -> None:
        super().__init__(
            f"token store schema version {found} is newer than this scopegate supports ({LATEST})"
        )
        self.found = found


async def user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: aiosqlite.Connection, upto: int = LATEST) -> int:
    """Apply every pending step up to version `upto`; return the resulting version.

    The connection must be in autocommit mode (isolation_level=None) so that the transactions
    here are the only ones.
    """
    found = await user_version(conn)
    if found > LATEST:
        raise SchemaTooNew(found)
    while found < upto:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            found = await user_version(conn)
            if found >= upto:
                await conn.execute("ROLLBACK")
                break
            for statement in MIGRATIONS[found]:
                await conn.execute(statement)
            # PRAGMA arguments cannot be bound; `found + 1` is an int we computed.
            await conn.execute(f"PRAGMA user_version = {int(found) + 1}")
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
        found += 1
    return found
