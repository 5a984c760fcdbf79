"""Expiry-warning claims on PostgreSQL (`expiry_notices`, schema v3), used by PostgresTokenStore.

The claim is one conditional upsert per (token, threshold): of two replicas racing for the same
warning, the second finds the first's `claimed_until` (after waiting for its commit) and gets no
row back, so it never sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .store import ExpiryNotice, TokenRecord

RecordOf = Callable[[Sequence[Any]], TokenRecord]

# Live tokens inside the window whose lifetime exceeds the threshold, with no notice yet or an
# unsent one that is neither claimed nor waiting for a retry. `{columns}` is a fixed column list.
_DUE = (
    "SELECT {columns} FROM tokens "
    "LEFT JOIN expiry_notices n ON n.token_id = tokens.id AND n.threshold = $1 "
    "WHERE tokens.revoked_at IS NULL AND tokens.revoke_at IS NULL AND tokens.expires_at > $2 "
    "AND tokens.expires_at - $1 <= $2 AND tokens.expires_at - tokens.created_at > $1 "
    "AND (n.token_id IS NULL OR (n.sent_at IS NULL AND n.claimed_until <= $2 AND n.retry_at <= $2)) "
    "ORDER BY tokens.expires_at LIMIT $3"
)
_CLAIM = (
    "INSERT INTO expiry_notices (token_id, threshold, attempts, claimed_until) VALUES ($1, $2, 1, $3) "
    "ON CONFLICT (token_id, threshold) DO UPDATE SET attempts = expiry_notices.attempts + 1, "
    "claimed_until = EXCLUDED.claimed_until WHERE expiry_notices.sent_at IS NULL "
    "AND expiry_notices.claimed_until <= $4 AND expiry_notices.retry_at <= $4 RETURNING attempts"
)


async def claim(
    conn: Any,
    columns: str,
    record_of: RecordOf,
    now: float,
    thresholds: Sequence[int],
    lease: float,
    limit: int,
) -> list[ExpiryNotice]:
    out: list[ExpiryNotice] = []
    for threshold in thresholds:
        rows = await conn.fetch(_DUE.format(columns=columns), threshold, now, limit - len(out))
        for row in rows:
            attempt = await conn.fetchval(_CLAIM, row[0], threshold, now + lease, now)
            if attempt is not None:
                out.append(ExpiryNotice(record_of(row), threshold, int(attempt)))
        if len(out) >= limit:
            break
    return out


async def finish(conn: Any, token_id: str, threshold: int, *, sent: bool, at: float) -> None:
    # A sent notice is never claimable again: that is the once-only promise.
    column = "sent_at" if sent else "retry_at"
    await conn.execute(
        f"UPDATE expiry_notices SET {column} = $3, claimed_until = 0 "  # noqa: S608 - fixed names
        "WHERE token_id = $1 AND threshold = $2",
        token_id,
        threshold,
        at,
    )
