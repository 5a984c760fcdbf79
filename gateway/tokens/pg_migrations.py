"""Versioned schema for the PostgreSQL token store, step for step the same as SQLite's.

`MIGRATIONS[i]` takes a database from version i to i + 1, exactly like `migrations.MIGRATIONS`
(the same tables, columns and indexes in PostgreSQL's types; a test keeps the two lists the same
length, so a step added for one engine must be added for the other). The version lives in
`scopegate_schema`; every applied step is also recorded in `scopegate_migrations`.

Replicas starting together serialise on a session advisory lock: the first applies the pending
steps, each in one transaction with its version bump; the others wait, re-read the version and
find nothing to do. Steps are append-only: never edit a released one, add the next.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import asyncpg

from .migrations import SchemaTooNew

# pg_advisory_lock keys (any constant bigint; these spell "sgmigr" and "sgfeed").
MIGRATION_LOCK = 0x7367_6D69_6772
FEED_LOCK = 0x7367_6665_6564

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: tokens and their agency targets (`position` keeps the order they were given in).
    (
        """
        CREATE TABLE tokens (
            id             TEXT PRIMARY KEY,
            name           TEXT NOT NULL,
            token_hash     BYTEA NOT NULL UNIQUE,
            display_prefix TEXT NOT NULL,
            owner          TEXT NOT NULL,
            workspace      TEXT NOT NULL,
            project        TEXT,
            scopes         TEXT NOT NULL,
            created_at     DOUBLE PRECISION NOT NULL,
            expires_at     DOUBLE PRECISION NOT NULL,
            revoked_at     DOUBLE PRECISION,
            last_used_at   DOUBLE PRECISION,
            created_by     TEXT NOT NULL DEFAULT ''
        )
        """,
        """
        CREATE TABLE targets (
            token_id  TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
            kind      TEXT NOT NULL,
            target_id TEXT NOT NULL,
            position  INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (token_id, kind, target_id)
        )
        """,
        # Active names are unique per (workspace, project), NULL project included (COALESCE).
        """
        CREATE UNIQUE INDEX tokens_active_name
            ON tokens (workspace, COALESCE(project, ''), name) WHERE revoked_at IS NULL
        """,
    ),
    # v2: the revocation feed, back-filled, and an index for listing a workspace's tokens.
    (
        """
        CREATE TABLE revocations (
            seq        BIGSERIAL PRIMARY KEY,
            token_id   TEXT NOT NULL,
            token_hash BYTEA NOT NULL,
            revoked_at DOUBLE PRECISION NOT NULL
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
        "ALTER TABLE tokens ADD COLUMN not_before DOUBLE PRECISION",
        "ALTER TABLE tokens ADD COLUMN allowed_cidrs TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE tokens ADD COLUMN rotated_from TEXT",
        "ALTER TABLE tokens ADD COLUMN revoke_at DOUBLE PRECISION",
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
            threshold     BIGINT NOT NULL,
            attempts      INTEGER NOT NULL DEFAULT 0,
            claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0,
            retry_at      DOUBLE PRECISION NOT NULL DEFAULT 0,
            sent_at       DOUBLE PRECISION,
            PRIMARY KEY (token_id, threshold)
        )
        """,
    ),
)

LATEST = len(MIGRATIONS)
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

_BOOKKEEPING = (
    "CREATE TABLE IF NOT EXISTS scopegate_schema (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), "
    "version INTEGER NOT NULL)",
    "INSERT INTO scopegate_schema (version) VALUES (0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS scopegate_migrations (version INTEGER NOT NULL, "
    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_by TEXT NOT NULL)",
)


async def schema_version(conn: Conn) -> int:
    exists = await conn.fetchval("SELECT to_regclass('scopegate_schema') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT version FROM scopegate_schema") or 0)


async def migrate(conn: Conn, upto: int = LATEST) -> tuple[int, int]:
    """Apply every pending step up to `upto` under the migration lock.

    Returns (version now, steps this call applied). Raises SchemaTooNew, before touching
    anything, when the database is ahead of this code.
    """
    found = await schema_version(conn)
    if found > LATEST:
        raise SchemaTooNew(found)
    if found >= upto:
        return found, 0
    applied = 0
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        async with conn.transaction():
            for statement in _BOOKKEEPING:
                await conn.execute(statement)
        # Re-read under the lock: another replica may have migrated while we waited.
        found = await schema_version(conn)
        if found > LATEST:
            raise SchemaTooNew(found)
        who = f"{socket.gethostname()}:{os.getpid()}"
        while found < upto:
            async with conn.transaction():
                for statement in MIGRATIONS[found]:
                    await conn.execute(statement)
                await conn.execute("UPDATE scopegate_schema SET version = $1", found + 1)
                await conn.execute(
                    "INSERT INTO scopegate_migrations (version, applied_by) VALUES ($1, $2)", found + 1, who
                )
            found += 1
            applied += 1
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return found, applied
