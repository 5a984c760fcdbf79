"""The validator's moving parts, in-process (issue 14): the revocation feed, local revocation's
lifetime, the credential memo, the last-used flush and the background loops.

A real SQLite store file (conftest), the real TokenValidator, the hand-driven clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

import pytest

from gateway.config import TokensConfig
from gateway.errors import InvalidToken, StoreUnavailable
from gateway.scopes import Catalogue
from gateway.tokens.secret import generate, hash_token
from gateway.tokens.service import TokenService
from gateway.tokens.sqlite import SqliteTokenStore
from gateway.tokens.validator import TokenValidator
from tests.pg import PgServer

from ..conftest import PREFIX, T0, Clock, mint
from ..test_pg_store import opened, wait_for

CATALOGUE = Catalogue.build({"playlists:read": "read playlists"})


# --- the revocation feed (poll_once) -----------------------------------------------------------


async def test_first_poll_fixes_the_position_without_replaying_history(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    old, old_secret = await mint(store, clock, name="old")
    _, secret = await mint(store, clock, name="live")
    assert await validator.authenticate(secret) is not None
    await store.revoke(old.id, clock())
    clock.advance(3)
    await validator.poll_once()
    assert validator.last_poll == clock()
    clock.advance(2)
    await validator.poll_once()
    assert validator.last_poll == clock()
    await store.close()
    # the live token is still served from the cache: the feed did not clear it
    assert await validator.authenticate(secret) is not None
    # the old one was revoked after the position was fixed, so the feed delivered it
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(old_secret)


async def test_a_poll_with_nothing_new_keeps_the_cache(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    others = [await mint(store, clock, name=f"o{i}") for i in range(2)]
    for other, _ in others:
        await store.revoke(other.id, clock())
    _, secret = await mint(store, clock)
    assert await validator.authenticate(secret) is not None  # fixes the position at head 2
    for _ in range(3):
        await validator.poll_once()
    assert await validator.authenticate(secret) is not None
    assert validator.cache_hits == 1


async def test_each_revocation_is_applied_once_as_the_position_advances(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    a, a_secret = await mint(store, clock, name="a")
    b, b_secret = await mint(store, clock, name="b")
    await validator.poll_once()
    assert await validator.authenticate(b_secret) is not None
    await store.revoke(a.id, clock())
    await validator.poll_once()
    assert await validator.authenticate(b_secret) is not None
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(a_secret)
    await store.revoke(b.id, clock())
    await validator.poll_once()
    await store.close()
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(b_secret)


async def test_a_rotation_overlap_that_came_due_is_revoked_by_the_poll(
    store: SqliteTokenStore,
    validator: TokenValidator,
    tokens_cfg: TokensConfig,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = TokenService(store, validator, tokens_cfg, lambda: CATALOGUE, clock)
    old, secret = await mint(store, clock)
    await validator.poll_once()
    await service.rotate(None, old.id, {"overlap": 30})
    clock.advance(30)
    with caplog.at_level(logging.INFO, logger="scopegate.audit"):
        await validator.poll_once()
    lines = [r.getMessage() for r in caplog.records if r.name == "scopegate.audit"]
    assert {"event": "token.revoke", "by": "rotation", "token_id": old.id} in [json.loads(m) for m in lines]
    stored = await store.by_id(old.id)
    assert stored is not None and stored.revoked_at == clock()
    await store.close()
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)


# --- local revocation's lifetime -------------------------------------------------------------


async def test_a_local_revocation_lasts_until_the_cached_tokens_expiry(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock, expires_at=T0 + 600)
    assert await validator.authenticate(secret) is not None
    validator.revoked_locally(hash_token(secret))  # no expiry given: the cached one is used
    await store.close()
    clock.advance(599)
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)
    clock.advance(1)  # the token would have expired: the mark is gone, the store is asked
    with pytest.raises(StoreUnavailable):
        await validator.authenticate(secret)


async def test_a_local_revocation_of_an_unseen_hash_lasts_max_ttl(
    store: SqliteTokenStore, validator: TokenValidator, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    secret = generate(PREFIX)
    validator.revoked_locally(hash_token(secret))
    await store.close()
    clock.advance(tokens_cfg.max_ttl - 1)
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)
    clock.advance(1)
    with pytest.raises(StoreUnavailable):
        await validator.authenticate(secret)


# --- the credential memo ---------------------------------------------------------------------


async def test_the_hash_memo_is_cleared_when_full_and_still_judges(
    monkeypatch: pytest.MonkeyPatch, store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    from gateway.tokens import validator as validator_module

    monkeypatch.setattr(validator_module, "HASH_MEMO", 2)
    minted = [await mint(store, clock, name=f"t{i}") for i in range(3)]
    for _, secret in minted:
        assert await validator.authenticate(secret) is not None
    assert len(validator._hashes) == 1  # cleared at the third, which is then remembered
    for _, secret in minted:
        assert await validator.authenticate(secret) is not None
    # a malformed credential is never remembered, and stays refused
    bad = minted[0][1][:-1] + ("A" if minted[0][1][-1] != "A" else "B")
    for _ in range(2):
        with pytest.raises(InvalidToken, match="malformed"):
            await validator.authenticate(bad)
    assert bad not in validator._hashes


# --- flush, start, stop, and the background loops ----------------------------------------------


async def test_a_failed_flush_keeps_the_batch_and_later_uses_win(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    a, _ = await mint(store, clock, name="a")
    b, _ = await mint(store, clock, name="b")
    validator.note_used(a.id)
    clock.advance(1)
    validator.note_used(b.id)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await validator.flush()
    assert validator.store_writes == 0
    await store.open()
    clock.advance(1)
    validator.note_used(a.id)
    await validator.flush()
    got_a, got_b = await store.by_id(a.id), await store.by_id(b.id)
    assert got_a is not None and got_a.last_used_at == T0 + 2
    assert got_b is not None and got_b.last_used_at == T0 + 1
    assert validator.store_writes == 1


async def test_stop_logs_a_final_flush_that_failed(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = await mint(store, clock, name="a")
    await validator.start()
    validator.note_used(a.id)
    await store.close()
    with caplog.at_level(logging.WARNING, logger="scopegate.tokens"):
        await validator.stop()  # does not raise
    assert [r.getMessage() for r in caplog.records if r.name == "scopegate.tokens"] == [
        "final last_used flush failed, 1 token(s) not updated: token store is not open"
    ]
    await validator.stop()  # a second stop is harmless


async def test_start_twice_runs_one_pair_of_loops_and_survives_a_down_store(
    store: SqliteTokenStore, validator: TokenValidator
) -> None:
    await store.close()
    await validator.start()  # the store is down: start anyway, fix the position later
    try:
        tasks = list(validator._tasks)
        assert len(tasks) == 2
        await validator.start()
        assert validator._tasks == tasks
    finally:
        await validator.stop()
    assert all(t.cancelled() for t in tasks)
    assert validator._tasks == []


async def test_start_fixes_the_feed_position(
    store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    old, _ = await mint(store, clock, name="old")
    await store.revoke(old.id, clock())  # history, before start
    # Long intervals: only start() itself can fix the position in this test.
    validator = TokenValidator(store, replace(tokens_cfg, revocation_poll=3600.0), PREFIX, clock)
    live, secret = await mint(store, clock, name="live")
    async with validator:
        await store.revoke(live.id, clock())  # after start: the next poll must deliver it
        await validator.poll_once()
        await store.close()
        with pytest.raises(InvalidToken, match="revoked"):
            await validator.authenticate(secret)
        await store.open()


async def test_the_background_loop_logs_an_outage_once_and_survives_bugs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: list[BaseException | None] = [
        StoreUnavailable("down"),
        StoreUnavailable("down"),
        None,
        RuntimeError("bug"),
        None,
        StoreUnavailable("down"),
        None,
    ]
    calls = 0
    done = asyncio.Event()

    async def job() -> None:
        nonlocal calls
        calls += 1
        if calls >= len(outcomes):
            done.set()
            return
        outcome = outcomes[calls - 1]
        if outcome is not None:
            raise outcome

    with caplog.at_level(logging.INFO, logger="scopegate.tokens"):
        task = asyncio.create_task(TokenValidator._every("probe", 0.001, job))
        await asyncio.wait_for(done.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "scopegate.tokens"]
    assert messages == [
        (logging.WARNING, "probe: token store unavailable: down"),
        (logging.INFO, "probe: token store reachable again"),
        (logging.ERROR, "probe failed"),
        (logging.WARNING, "probe: token store unavailable: down"),
        (logging.INFO, "probe: token store reachable again"),
    ]


async def test_each_background_loop_names_itself_in_the_log(
    store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = replace(tokens_cfg, revocation_poll=0.01, last_used_flush=0.01)
    validator = TokenValidator(store, cfg, PREFIX, clock)
    record, _ = await mint(store, clock)
    with caplog.at_level(logging.INFO, logger="scopegate.tokens"):
        async with validator:
            await store.close()
            validator.note_used(record.id)
            wanted = {
                "revocation poll: token store unavailable: token store is not open",
                "last_used flush: token store unavailable: token store is not open",
            }
            for _ in range(500):
                await asyncio.sleep(0.01)
                if wanted <= {r.getMessage() for r in caplog.records}:
                    break
            else:
                pytest.fail(f"missing loop warnings: {wanted - {r.getMessage() for r in caplog.records}}")
            await store.open()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_first_poll_records_its_time(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    clock.advance(7)
    await validator.poll_once()  # the very first: it only fixes the feed position
    assert validator.last_poll == T0 + 7


class PausedTouch(SqliteTokenStore):
    """The real SQLite store; each touch waits at a gate first, so uses can land meanwhile."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def touch(self, last_used: dict[str, float]) -> None:
        self.started.set()
        await self.gate.wait()
        await super().touch(last_used)


async def test_uses_noted_during_a_failed_flush_are_not_overwritten_by_older_ones(
    db_path: str, store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    a, _ = await mint(store, clock, name="a")
    paused = PausedTouch(db_path)
    await paused.open()
    validator = TokenValidator(paused, tokens_cfg, PREFIX, clock)
    validator.note_used(a.id)  # T0, in the batch being written
    flushing = asyncio.create_task(validator.flush())
    await asyncio.wait_for(paused.started.wait(), 10)
    clock.advance(1)
    validator.note_used(a.id)  # T0 + 1, while that write is in flight
    await paused.close()
    paused.gate.set()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(flushing, 10)
    await paused.open()
    try:
        paused.started.clear()
        await validator.flush()
    finally:
        await paused.close()
    got = await store.by_id(a.id)
    assert got is not None and got.last_used_at == T0 + 1  # the later use, not the failed batch's


async def test_start_subscribes_to_pushed_revocations(
    pg_server: PgServer, pg_database: str, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    """PostgreSQL pushes revocations (NOTIFY): a started validator refuses at once, no poll needed."""
    url = pg_server.url(pg_database)
    other, mine = await opened(url), await opened(url)
    # A poll an hour away and a frozen clock: only the push can end the cached admission.
    validator = TokenValidator(mine, replace(tokens_cfg, revocation_poll=3600.0), PREFIX, clock)
    try:
        async with validator:
            await wait_for(lambda: mine.push_connected)
            record, secret = await mint(other, clock)
            assert await validator.authenticate(secret) is not None
            await other.revoke(record.id, clock())
            for _ in range(250):
                try:
                    await validator.authenticate(secret)
                except InvalidToken as e:
                    assert str(e) == "token revoked"
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the pushed revocation was not applied")
    finally:
        await other.close()
        await mine.close()
