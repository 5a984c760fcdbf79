"""Expiry-warning claims on SQLite (`expiry_notices`, schema v3), used by SqliteTokenStore.

A claim runs inside the store's IMMEDIATE write transaction, so two processes never claim the
same (token, threshold): the second sees the first's `claimed_until` once it gets the lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiosqlite

from .store import ExpiryNotice, TokenRecord

RecordOf = Callable[[Sequence[Any], Iterable[tuple[str, str]]], TokenRecord]

# Live tokens inside the window whose lifetime exceeds the threshold, with no notice yet or an
# unsent one that is neither claimed nor waiting for a retry. `{columns}` is a fixed column list.
_DUE = (
    "SELECT {columns}, n.attempts FROM tokens t "
    "LEFT JOIN expiry_notices n ON n.token_id = t.id AND n.threshold = ? "
    "WHERE t.revoked_at IS NULL AND t.revoke_at IS NULL AND t.expires_at > ? "
    "AND t.expires_at - ? <= ? AND t.expires_at - t.created_at > ? "
    "AND (n.token_id IS NULL OR (n.sent_at IS NULL AND n.claimed_until <= ? AND n.retry_at <= ?)) "
    "ORDER BY t.expires_at LIMIT ?"
)


async def _due(conn: aiosqlite.Connection, columns: str, threshold: int, now: float, limit: int) -> list[Any]:
    sql = _DUE.format(columns=columns)
    async with conn.execute(sql, (threshold, now, threshold, now, threshold, now, now, limit)) as cur:
        return list(await cur.fetchall())


async def any_due(conn: aiosqlite.Connection, now: float, thresholds: Sequence[int]) -> bool:
    """A read, so that a round with nothing to send takes no write lock."""
    for threshold in thresholds:
        if await _due(conn, "t.id", threshold, now, 1):
            return True
    return False


async def claim(
    conn: aiosqlite.Connection,
    columns: str,
    record_of: RecordOf,
    now: float,
    thresholds: Sequence[int],
    lease: float,
    limit: int,
) -> list[ExpiryNotice]:
    out: list[ExpiryNotice] = []
    for threshold in thresholds:
        for row in await _due(conn, columns, threshold, now, limit - len(out)):
            attempt = int(row[-1] or 0) + 1
            await conn.execute(
                "INSERT INTO expiry_notices (token_id, threshold, attempts, claimed_until) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (token_id, threshold) DO UPDATE SET "
                "attempts = excluded.attempts, claimed_until = excluded.claimed_until",
                (row[0], threshold, attempt, now + lease),
            )
            async with conn.execute(
                "SELECT kind, target_id FROM targets WHERE token_id = ? ORDER BY rowid", (row[0],)
            ) as cur:
                targets = [(k, t) for k, t in await cur.fetchall()]
            out.append(ExpiryNotice(record_of(row[:-1], targets), threshold, attempt))
        if len(out) >= limit:
            break
    return out


async def finish(conn: aiosqlite.Connection, token_id: str, threshold: int, *, sent: bool, at: float) -> None:
    # SECURITY (of the once-only promise): a sent notice is never claimable again.
    column = "sent_at" if sent else "retry_at"
    await conn.execute(
        f"UPDATE expiry_notices SET {column} = ?, claimed_until = 0 "  # noqa: S608 (fixed names)
        "WHERE token_id = ? AND threshold = ?",
        (at, token_id, threshold),
    )
