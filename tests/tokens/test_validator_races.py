"""The validator's two guards against stale answers, made deterministic.

- A revocation that the feed delivers while a store lookup is in flight: the lookup read the
  token as live, but the validator must re-check after it and refuse.
- A revocation feed that goes backwards (the store was restored from a backup): nothing cached
  before it can be trusted, so the cache is cleared and the next request asks the store.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from gateway.config import TokensConfig
from gateway.errors import InvalidToken
from gateway.tokens.sqlite import SqliteTokenStore
from gateway.tokens.store import TokenRecord
from gateway.tokens.validator import TokenValidator

from .conftest import PREFIX, Clock, mint
from .test_validator import revoke_elsewhere


class PausedLookups(SqliteTokenStore):
    """The real SQLite store; each by_hash reads the row, then waits at a gate before answering,
    so a test can act between the read and the validator's use of it."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.read_done = asyncio.Event()
        self.gate = asyncio.Event()

    async def by_hash(self, token_hash: bytes) -> TokenRecord | None:
        record = await super().by_hash(token_hash)
        self.read_done.set()
        await self.gate.wait()
        return record


async def test_a_revocation_polled_during_the_lookup_is_not_let_through(
    db_path: str, sqlite_store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    store = sqlite_store
    record, secret = await mint(store, clock)
    paused = PausedLookups(db_path)
    await paused.open()
    try:
        validator = TokenValidator(paused, tokens_cfg, PREFIX, clock)
        await validator.poll_once()  # the feed position, before anything is revoked
        attempt = asyncio.create_task(validator.authenticate(secret))
        await asyncio.wait_for(paused.read_done.wait(), 10)
        # The lookup has read the row as live. Now the token is revoked elsewhere and the poll
        # delivers it, while that lookup is still in flight.
        await revoke_elsewhere(lambda: SqliteTokenStore(db_path), record.id, clock())
        await validator.poll_once()
        paused.gate.set()
        # SECURITY: the answer of a lookup that began before the revocation must not admit.
        with pytest.raises(InvalidToken, match=r"^token revoked$"):
            await asyncio.wait_for(attempt, 10)
        # ...nor be left in the cache for the next request.
        with pytest.raises(InvalidToken, match="revoked"):
            await validator.authenticate(secret)
        assert validator.cache_hits == 0
    finally:
        paused.gate.set()
        await paused.close()


async def test_a_restored_store_clears_the_token_cache(
    tmp_path: Path,
    db_path: str,
    sqlite_store: SqliteTokenStore,
    tokens_cfg: TokensConfig,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = sqlite_store
    kept, secret = await mint(store, clock, name="kept")
    others = [await mint(store, clock, name=f"other{i}") for i in range(3)]
    # A backup taken now, before any revocation; in it, `kept` is later revoked (feed head 1).
    backup = str(tmp_path / "backup.db")
    with sqlite3.connect(db_path) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    live.close()
    copy.close()
    await revoke_elsewhere(lambda: SqliteTokenStore(backup), kept.id, clock())
    # The live store moves on: three revocations (feed head 3); `kept` is validated and cached.
    for other, _ in others:
        await store.revoke(other.id, clock())
    validator = TokenValidator(store, tokens_cfg, PREFIX, clock)
    await validator.poll_once()
    assert await validator.authenticate(secret) is not None
    assert await validator.authenticate(secret) is not None
    assert validator.cache_hits == 1
    # The operator restores the backup over the live file (sqlite's online backup, as `.restore`
    # does): the feed head drops from 3 to 1, and `kept`'s revocation sits at a position the
    # validator has already passed, so the feed alone never delivers it.
    with sqlite3.connect(backup) as source, sqlite3.connect(db_path) as target:
        source.backup(target)
    source.close()
    target.close()
    with caplog.at_level(logging.WARNING, logger="scopegate.tokens"):
        await validator.poll_once()
    assert [r.getMessage() for r in caplog.records if r.name == "scopegate.tokens"] == [
        "revocation feed moved back from 3 to 1; clearing token cache"
    ]
    # SECURITY: the cache was cleared, so the store (now saying revoked) is asked.
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)
    assert validator.cache_hits == 1
