"""The validator's decisions that only the `serve` tests covered, in-process (issue 14).

A real SQLite store file, the real TokenValidator (and TokenService for a rotation), the
hand-driven clock: idle expiry, a rotation's early expiry, the revocation feed, not_before,
network binding, local revocation's lifetime, and the background loops.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import AsyncIterator
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

from .conftest import PREFIX, T0, Clock, mint
from .test_pg_store import opened, wait_for

IDLE = 100.0
CATALOGUE = Catalogue.build({"playlists:read": "read playlists"})


@pytest.fixture
async def store(db_path: str) -> AsyncIterator[SqliteTokenStore]:
    s = SqliteTokenStore(db_path)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def validator(store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock) -> TokenValidator:
    return TokenValidator(store, tokens_cfg, PREFIX, clock)


@pytest.fixture
def idle_validator(store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock) -> TokenValidator:
    return TokenValidator(store, replace(tokens_cfg, idle_ttl=IDLE), PREFIX, clock)


# --- what a token grants -----------------------------------------------------------------


async def test_principal_carries_every_field_of_the_record(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    record, secret = await mint(
        store,
        clock,
        owner="svc",
        project="p9",
        scopes=("read", "write"),
        allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"),
    )
    p = await validator.authenticate(secret)
    assert p is not None
    assert p.kind == "token" and p.subject == "svc" and p.role == "user"
    assert p.scopes == p.mint_scopes == frozenset({"read", "write"})
    assert (p.workspace, p.project, p.token_id, p.expires_at) == ("ws1", "p9", record.id, record.expires_at)
    assert p.targets == frozenset()
    # SECURITY: the network binding reaches the principal, parsed, in order.
    assert p.allowed_cidrs == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    # The cached answer is the same principal.
    assert await validator.authenticate(secret) == p
    assert (validator.cache_hits, validator.cache_misses) == (1, 1)


# --- expiry and not_before -----------------------------------------------------------------


async def test_expiry_is_exact_to_the_second(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock, expires_at=clock() + 10)
    clock.advance(9.5)
    assert await validator.authenticate(secret) is not None
    clock.advance(0.5)  # expires_at == now: expired
    with pytest.raises(InvalidToken, match="expired"):
        await validator.authenticate(secret)


async def test_an_expired_record_is_never_cached(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock, expires_at=clock())
    for misses in (1, 2):
        with pytest.raises(InvalidToken, match="expired"):
            await validator.authenticate(secret)
        assert (validator.cache_hits, validator.cache_misses) == (0, misses)


async def test_not_before_is_refused_until_it_comes(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock, not_before=clock() + 30)
    with pytest.raises(InvalidToken, match="not yet valid"):
        await validator.authenticate(secret)
    clock.advance(29.5)
    # Now from the cache (the record was cached by the first lookup): still refused.
    with pytest.raises(InvalidToken, match="not yet valid"):
        await validator.authenticate(secret)
    assert validator.cache_hits == 1
    clock.advance(0.5)  # now == not_before: valid
    assert await validator.authenticate(secret) is not None


# --- idle expiry (tokens.idle_ttl) ----------------------------------------------------------


async def test_idle_token_is_refused_just_past_idle_ttl(
    store: SqliteTokenStore, idle_validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock)  # never used: idle counts from created_at
    clock.advance(IDLE)  # exactly idle_ttl: still allowed
    assert await idle_validator.authenticate(secret) is not None
    clock.advance(0.5)
    with pytest.raises(InvalidToken, match="idle"):
        await idle_validator.authenticate(secret)
    # dropped from the cache: the store is asked again, and says the same
    with pytest.raises(InvalidToken, match="idle"):
        await idle_validator.authenticate(secret)
    # the refused entry was dropped: the third request is a miss, not a hit
    assert (idle_validator.cache_hits, idle_validator.cache_misses) == (1, 3)


async def test_without_idle_ttl_an_unused_token_stays_valid(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock)
    clock.advance(3000)
    assert await validator.authenticate(secret) is not None


async def test_idle_counts_from_the_last_use_in_the_store(
    store: SqliteTokenStore, idle_validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock, last_used_at=T0 + 80)
    clock.advance(170)  # 90 s after the last use, 170 s after creation
    assert await idle_validator.authenticate(secret) is not None
    clock.advance(10.5)
    with pytest.raises(InvalidToken, match="idle"):
        await idle_validator.authenticate(secret)


async def test_a_use_noted_here_keeps_the_token_alive(
    store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    cfg = replace(tokens_cfg, idle_ttl=IDLE, cache_ttl=600.0)
    idle_validator = TokenValidator(store, cfg, PREFIX, clock)
    record, secret = await mint(store, clock)
    assert await idle_validator.authenticate(secret) is not None
    clock.advance(90)
    idle_validator.note_used(record.id)  # not flushed: only this process knows
    clock.advance(50)  # 140 s after creation, 50 s after the use
    await store.close()  # the cache must decide, with this process's own use
    assert await idle_validator.authenticate(secret) is not None
    assert idle_validator.cache_misses == 1
    await store.open()
    clock.advance(50.5)
    with pytest.raises(InvalidToken, match="idle"):
        await idle_validator.authenticate(secret)


async def test_a_use_by_another_process_is_found_before_refusing(
    store: SqliteTokenStore,
    replica: SqliteTokenStore,
    idle_validator: TokenValidator,
    clock: Clock,
) -> None:
    record, secret = await mint(store, clock)
    assert await idle_validator.authenticate(secret) is not None  # cached, last used: created_at
    # Another replica used the token at +50 and flushed it to the shared store.
    await replica.touch({record.id: T0 + 50})
    clock.advance(120)  # idle by the cached entry, not by the store
    assert await idle_validator.authenticate(secret) is not None
    assert idle_validator.cache_misses == 2  # the store was asked before refusing
    clock.advance(31)
    with pytest.raises(InvalidToken, match="idle"):
        await idle_validator.authenticate(secret)


@pytest.fixture
async def replica(db_path: str, store: SqliteTokenStore) -> AsyncIterator[SqliteTokenStore]:
    """A second store on the same file: another replica."""
    s = SqliteTokenStore(db_path)
    await s.open()
    yield s
    await s.close()


async def test_noted_uses_of_other_tokens_do_not_count(
    store: SqliteTokenStore, idle_validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock, name="idle")
    other, _ = await mint(store, clock, name="busy")
    clock.advance(150)
    idle_validator.note_used(other.id)
    with pytest.raises(InvalidToken, match="idle"):
        await idle_validator.authenticate(secret)


# --- a rotation's overlap (expires_early) ----------------------------------------------------


async def test_rotation_overlap_moves_a_cached_tokens_expiry_earlier(
    store: SqliteTokenStore, validator: TokenValidator, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    service = TokenService(store, validator, tokens_cfg, lambda: CATALOGUE, clock)
    old, secret = await mint(store, clock, not_before=T0)
    assert await validator.authenticate(secret) is not None  # cached with the old expiry
    successor, new_secret = await service.rotate(None, old.id, {"overlap": 30})
    await store.close()  # only the cache can answer from here
    clock.advance(29.5)
    p = await validator.authenticate(secret)
    assert p is not None and p.expires_at == T0 + 30 and p.token_id == old.id
    assert validator.cache_hits == 1
    clock.advance(0.5)
    # SECURITY: the overlap's end is enforced from the cache, with no poll and no store.
    with pytest.raises(InvalidToken, match="expired"):
        await validator.authenticate(secret)
    await store.open()
    p2 = await validator.authenticate(new_secret)
    assert p2 is not None and p2.token_id == successor.id


async def test_expires_early_keeps_the_cached_entrys_other_checks(
    store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    cfg = replace(tokens_cfg, idle_ttl=IDLE, cache_ttl=600.0)
    idle_validator = TokenValidator(store, cfg, PREFIX, clock)
    _, secret = await mint(store, clock, not_before=T0 + 5)
    clock.advance(5)
    assert await idle_validator.authenticate(secret) is not None
    idle_validator.expires_early(hash_token(secret), T0 + 500)
    await store.close()
    clock.advance(95)  # idle_ttl after the cached last use, which expires_early kept
    p = await idle_validator.authenticate(secret)
    assert p is not None and p.expires_at == T0 + 500
    clock.advance(1)
    with pytest.raises(StoreUnavailable):  # idle by the cache: the store must be asked
        await idle_validator.authenticate(secret)


async def test_expires_early_on_an_uncached_token_caches_nothing(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock)
    validator.expires_early(hash_token(secret), T0 + 10)
    p = await validator.authenticate(secret)
    assert p is not None and p.expires_at == T0 + 3600
    assert validator.cache_misses == 1


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


# --- each refusal says exactly why (the detail a client sees) ------------------------------------


async def refusal(validator: TokenValidator, credential: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await validator.authenticate(credential)
    return str(caught.value)


async def test_each_refusal_says_exactly_why(
    store: SqliteTokenStore, idle_validator: TokenValidator, clock: Clock
) -> None:
    v = idle_validator
    good = generate(PREFIX)
    assert await refusal(v, good[:-1]) == "malformed token"
    stranger = generate(PREFIX)
    assert [await refusal(v, stranger) for _ in range(2)] == ["unknown token"] * 2
    assert (v.cache_hits, v.cache_misses) == (1, 1)  # the second from the negative cache
    another = generate(PREFIX)
    assert [await refusal(v, another) for _ in range(2)] == ["unknown token"] * 2
    assert (v.cache_hits, v.cache_misses) == (2, 2)
    revoked, revoked_secret = await mint(store, clock, name="revoked")
    await store.revoke(revoked.id, clock())
    assert [await refusal(v, revoked_secret) for _ in range(2)] == ["token revoked"] * 2
    _, expired = await mint(store, clock, name="expired", expires_at=clock())
    assert await refusal(v, expired) == "token expired"
    _, early = await mint(store, clock, name="early", not_before=clock() + 1)
    assert await refusal(v, early) == "token not yet valid"
    _, idle = await mint(store, clock, name="idle", created_at=clock() - IDLE - 1)
    assert await refusal(v, idle) == "token expired (idle)"


async def test_a_store_revocation_is_remembered_until_the_token_would_expire(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    record, secret = await mint(store, clock, expires_at=T0 + 600)
    await store.revoke(record.id, clock())
    assert await refusal(validator, secret) == "token revoked"
    await store.close()
    clock.advance(599)
    assert await refusal(validator, secret) == "token revoked"
    clock.advance(1)  # the mark lasts exactly as long as the token would have
    with pytest.raises(StoreUnavailable):
        await validator.authenticate(secret)


async def test_counters_count(store: SqliteTokenStore, validator: TokenValidator, clock: Clock) -> None:
    assert (validator.last_poll, validator.cache_hits, validator.cache_misses, validator.store_writes) == (
        0.0,
        0,
        0,
        0,
    )
    record, secret = await mint(store, clock)
    for _ in range(3):
        assert await validator.authenticate(secret) is not None
    assert (validator.cache_hits, validator.cache_misses) == (2, 1)
    assert validator._hashes == {secret: hash_token(secret)}
    for _ in range(2):
        validator.note_used(record.id)
        await validator.flush()
    assert validator.store_writes == 2
    await validator.stop()  # never started: nothing to cancel, nothing pending


async def test_an_expired_token_is_dropped_from_the_cache(
    store: SqliteTokenStore, validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock, expires_at=T0 + 10)
    assert await validator.authenticate(secret) is not None
    clock.advance(10)
    for _ in range(2):
        assert await refusal(validator, secret) == "token expired"
    assert (validator.cache_hits, validator.cache_misses) == (1, 2)


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


async def test_an_idle_cached_entry_is_dropped_even_when_the_store_cannot_answer(
    store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    v = TokenValidator(store, replace(tokens_cfg, idle_ttl=IDLE, cache_ttl=600.0), PREFIX, clock)
    _, secret = await mint(store, clock)
    assert await v.authenticate(secret) is not None
    clock.advance(IDLE + 1)
    await store.close()
    with pytest.raises(StoreUnavailable):  # idle by the cache: the store must be asked
        await v.authenticate(secret)
    await store.open()
    assert await refusal(v, secret) == "token expired (idle)"
    # the idle entry did not outlive the failed re-check: the last request was a miss
    assert (v.cache_hits, v.cache_misses) == (1, 3)


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
