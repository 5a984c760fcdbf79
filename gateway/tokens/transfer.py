"""`scopegate store migrate` and `scopegate store copy --from sqlite:///… --to postgresql://…`.

The copy moves rows as they are: ids, names, SHA-256 hashes (never a secret, which no store has),
targets in their order, revocations in feed order. Every token keeps working; nothing is
re-issued. It runs in one PostgreSQL transaction and refuses a destination that already holds
tokens, so a second run or a partial one never mixes two stores.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import aiosqlite

from .postgres import PostgresTokenStore
from .sqlite import SqliteTokenStore
from .stores import store_for
from .url import PG_SCHEMES, check_store_url


@dataclass(frozen=True)
class Copied:
    tokens: int
    active: int
    targets: int
    revocations: int


async def migrate_store(url: str, base_dir: str | None = None) -> str:
    """Apply pending migrations; one line saying what was done."""
    store = store_for(url, base_dir)
    await store.open()
    await store.close()
    if isinstance(store, PostgresTokenStore):
        n = store.migrations_applied
        return f"applied {n} migration(s)" if n else "schema already up to date"
    return "schema up to date"


def _sqlite_path(url: str) -> str:
    path = url[len("sqlite:///") :]
    return path if os.path.isabs(path) else os.path.abspath(path)


async def copy_store(source: str, destination: str) -> Copied:
    for flag, url in (("--from", source), ("--to", destination)):
        problem = check_store_url(url)
        if problem is not None:
            raise ValueError(f"{flag}: {problem}")
    if not source.startswith("sqlite:///"):
        raise ValueError("--from: must be a sqlite:/// store")
    if not destination.startswith(PG_SCHEMES):
        raise ValueError("--to: must be a postgresql:// store")
    path = _sqlite_path(source)
    if not await asyncio.to_thread(os.path.isfile, path):
        raise ValueError(f"--from: no such file: {path}")
    # Opening brings the source up to the latest schema first, so its columns are the known ones.
    lite = SqliteTokenStore(path)
    await lite.open()
    await lite.close()
    async with aiosqlite.connect(path) as conn:
        tokens = list(
            await conn.execute_fetchall(
                "SELECT id, name, token_hash, display_prefix, owner, workspace, project, scopes, created_at, "
                "expires_at, revoked_at, last_used_at, created_by, not_before, allowed_cidrs, rotated_from, "
                "revoke_at FROM tokens ORDER BY created_at, id"
            )
        )
        targets = list(
            await conn.execute_fetchall("SELECT token_id, kind, target_id, rowid FROM targets ORDER BY rowid")
        )
        feed = list(
            await conn.execute_fetchall(
                "SELECT token_id, token_hash, revoked_at FROM revocations ORDER BY seq"
            )
        )
        # Warnings already sent stay sent: a move to PostgreSQL must not send them again.
        notices = list(
            await conn.execute_fetchall(
                "SELECT token_id, threshold, attempts, sent_at FROM expiry_notices WHERE sent_at IS NOT NULL"
            )
        )
    pg = PostgresTokenStore(destination)
    await pg.open()
    try:
        async with pg._conn() as pconn, pconn.transaction():
            if await pconn.fetchval("SELECT EXISTS (SELECT 1 FROM tokens)"):
                raise ValueError("--to: the destination already holds tokens; copy into an empty database")
            await pconn.executemany(
                "INSERT INTO tokens (id, name, token_hash, display_prefix, owner, workspace, project, "
                "scopes, created_at, expires_at, revoked_at, last_used_at, created_by, not_before, "
                "allowed_cidrs, rotated_from, revoke_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
                [(*row[:2], bytes(row[2]), *row[3:]) for row in tokens],
            )
            await pconn.executemany(
                "INSERT INTO targets (token_id, kind, target_id, position) VALUES ($1, $2, $3, $4)",
                [tuple(row) for row in targets],
            )
            await pconn.executemany(
                "INSERT INTO revocations (token_id, token_hash, revoked_at) VALUES ($1, $2, $3)",
                [(row[0], bytes(row[1]), row[2]) for row in feed],
            )
            await pconn.executemany(
                "INSERT INTO expiry_notices (token_id, threshold, attempts, sent_at) VALUES ($1, $2, $3, $4)",
                [tuple(row) for row in notices],
            )
    finally:
        await pg.close()
    active = sum(1 for row in tokens if row[10] is None)
    return Copied(len(tokens), active, len(targets), len(feed))
