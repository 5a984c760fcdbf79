from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from gateway.config import TokensConfig
from gateway.errors import InvalidToken, StoreUnavailable
from gateway.tokens import postgres as postgres_module
from gateway.tokens import sqlite as sqlite_module
from gateway.tokens import validator as validator_module
from gateway.tokens.secret import checksum, generate, hash_token
from gateway.tokens.store import TokenStore
from gateway.tokens.validator import TokenValidator

from .conftest import PREFIX, Clock, StoreFactory, mint


async def revoke_elsewhere(store_factory: StoreFactory, token_id: str, at: float) -> None:
    """Revoke through a second store on the same database: another worker, replica or the CLI."""
    other = store_factory()
    await other.open()
    try:
        assert await other.revoke(token_id, at)
    finally:
        await other.close()


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param("eyJhbGciOiJIUzI1NiJ9.e30.sig", id="jwt"),
        pytest.param("xx_" + "a" * 38, id="other-prefix"),
        pytest.param("", id="empty"),
        pytest.param("ST_" + "a" * 38, id="prefix-is-case-sensitive"),
    ],
)
async def test_not_mine_returns_none(validator: TokenValidator, credential: str) -> None:
    assert await validator.authenticate(credential) is None
    assert validator.cache_misses == 0


GOOD = generate(PREFIX)


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param(GOOD[:-1] + ("A" if GOOD[-1] != "A" else "B"), id="bad-checksum"),
        pytest.param(GOOD[:-1], id="truncated"),
        pytest.param(GOOD + "0", id="too-long"),
        pytest.param(GOOD[:12] + "\u00e9" + GOOD[13:], id="non-ascii"),
        pytest.param(GOOD[:12] + "/" + GOOD[13:], id="bad-charset"),
        pytest.param(PREFIX + "a" * 31 + checksum(PREFIX + "a" * 31), id="short-valid-checksum"),
    ],
)
async def test_bad_shape_is_refused_before_any_store_lookup(
    store: TokenStore, validator: TokenValidator, credential: str
) -> None:
    # With the store closed, a lookup would raise StoreUnavailable: InvalidToken proves none happened.
    await store.close()
    with pytest.raises(InvalidToken, match="malformed"):
        await validator.authenticate(credential)
    assert validator.cache_misses == 0


async def test_valid_token_gives_its_principal(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    record, secret = await mint(
        store,
        clock,
        owner="svc-deploy",
        project="p1",
        scopes=("agency",),
        targets=(("playlist", "7"),),
    )
    p = await validator.authenticate(secret)
    assert p is not None
    assert (p.kind, p.subject, p.role, p.token_id) == ("token", "svc-deploy", "user", record.id)
    assert (p.workspace, p.project, p.expires_at) == ("ws1", "p1", record.expires_at)
    assert p.scopes == p.mint_scopes == frozenset({"agency"})
    assert p.targets == frozenset({("playlist", "7")})


async def test_cached_tokens_share_their_scope_sets_and_keep_their_own_scopes(
    store: TokenStore, validator: TokenValidator, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each cached token used to hold two frozensets of its own: 430 of its 906 bytes, and two of
    # the five objects a full pass of the cycle collector visits per cached token.
    monkeypatch.setattr(validator_module, "SCOPE_SETS", 2)
    monkeypatch.setattr(validator_module, "_scope_sets", {})
    minted = [
        await mint(store, clock, name=f"t{i}", scopes=scopes)
        for i, scopes in enumerate([("read",), ("read",), ("write",), ("read", "write"), ("read",)])
    ]
    _, agent_secret = await mint(store, clock, name="agent", scopes=("agency",), targets=(("playlist", "7"),))
    got = [await validator.authenticate(secret) for _, secret in minted]
    assert all(p is not None for p in got)
    principals = [p for p in got if p is not None]
    assert [p.scopes for p in principals] == [frozenset(r.scopes) for r, _ in minted]
    assert principals[0].scopes is principals[1].scopes is principals[0].mint_scopes
    assert principals[0].targets is principals[2].targets == frozenset()
    # The third distinct list filled the two-entry table: it starts over, and still answers right.
    assert principals[4].scopes == frozenset({"read"}) and principals[4].scopes is not principals[0].scopes
    p = await validator.authenticate(agent_secret)
    assert p is not None and p.targets == frozenset({("playlist", "7")}) and p.scopes == frozenset({"agency"})


async def test_unknown_token_is_invalid(validator: TokenValidator) -> None:
    with pytest.raises(InvalidToken, match="unknown"):
        await validator.authenticate(generate(PREFIX))


async def test_expired_in_store_is_invalid(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock, expires_at=clock() - 1)
    with pytest.raises(InvalidToken, match="expired"):
        await validator.authenticate(secret)


async def test_revoked_in_store_is_invalid(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    record, secret = await mint(store, clock)
    await store.revoke(record.id, clock())
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)


async def test_cache_serves_while_the_store_is_down_then_fails_closed(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    _, cached = await mint(store, clock, name="cached")
    _, uncached = await mint(store, clock, name="uncached")
    assert await validator.authenticate(cached) is not None
    assert (validator.cache_hits, validator.cache_misses) == (0, 1)
    await store.close()
    clock.advance(59)
    assert await validator.authenticate(cached) is not None
    assert (validator.cache_hits, validator.cache_misses) == (1, 1)
    with pytest.raises(StoreUnavailable):
        await validator.authenticate(uncached)
    clock.advance(2)  # past cache_ttl: the cached entry may no longer vouch for the token
    with pytest.raises(StoreUnavailable):
        await validator.authenticate(cached)


async def test_expiry_is_checked_on_cached_tokens(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    _, secret = await mint(store, clock, expires_at=clock() + 30)
    assert await validator.authenticate(secret) is not None
    await store.close()  # from here on only the cache can answer
    clock.advance(29)
    assert await validator.authenticate(secret) is not None
    clock.advance(1)
    with pytest.raises(InvalidToken, match="expired"):
        await validator.authenticate(secret)


async def test_seen_revoked_stays_refused_when_the_store_is_gone(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    record, secret = await mint(store, clock)
    await store.revoke(record.id, clock())
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)
    await store.close()
    clock.advance(3599)  # far past cache_ttl, just before the token would have expired anyway
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)


async def test_revocation_elsewhere_is_picked_up_by_poll(
    store_factory: StoreFactory, store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    record, secret = await mint(store, clock)
    assert await validator.authenticate(secret) is not None
    await revoke_elsewhere(store_factory, record.id, clock())
    # until the poll, the cache still vouches (bounded by revocation_poll and cache_ttl)
    assert await validator.authenticate(secret) is not None
    await validator.poll_once()
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)
    await store.close()
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)


async def test_feed_position_is_fixed_before_the_first_lookup(
    store_factory: StoreFactory, store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    # Earlier revocations are history: the validator does not replay them...
    old, _ = await mint(store, clock, name="old")
    await store.revoke(old.id, clock())
    record, secret = await mint(store, clock)
    # ...but a revocation after its first lookup and before its first poll must not be lost.
    assert await validator.authenticate(secret) is not None
    await revoke_elsewhere(store_factory, record.id, clock())
    await validator.poll_once()
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)


async def test_cache_ttl_bounds_a_missed_revocation(
    store_factory: StoreFactory, store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    record, secret = await mint(store, clock)
    assert await validator.authenticate(secret) is not None
    await revoke_elsewhere(store_factory, record.id, clock())
    clock.advance(60)  # no poll at all, yet the cache entry is gone after cache_ttl
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)


async def test_poll_pages_through_a_long_feed(
    monkeypatch: pytest.MonkeyPatch, store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    monkeypatch.setattr(sqlite_module, "FEED_PAGE", 2)
    monkeypatch.setattr(postgres_module, "FEED_PAGE", 2)
    await validator.poll_once()  # fixes the feed position
    minted = [await mint(store, clock, name=f"t{i}") for i in range(5)]
    for record, secret in minted:
        assert await validator.authenticate(secret) is not None
        await store.revoke(record.id, clock())
    await validator.poll_once()
    await store.close()
    for _, secret in minted:
        with pytest.raises(InvalidToken, match="revoked"):
            await validator.authenticate(secret)


async def test_revoked_locally_refuses_at_once_even_without_the_store(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    record, secret = await mint(store, clock)
    assert await validator.authenticate(secret) is not None
    validator.revoked_locally(hash_token(secret), record.expires_at)
    await store.close()
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)


async def test_unknown_hashes_are_cached_briefly(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    stranger = generate(PREFIX)
    with pytest.raises(InvalidToken, match="unknown"):
        await validator.authenticate(stranger)
    await store.close()
    with pytest.raises(InvalidToken, match="unknown"):
        await validator.authenticate(stranger)
    assert (validator.cache_hits, validator.cache_misses) == (1, 1)
    clock.advance(6)
    with pytest.raises(StoreUnavailable):
        await validator.authenticate(stranger)


async def test_authenticate_never_marks_use(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    record, secret = await mint(store, clock)
    for _ in range(3):
        await validator.authenticate(secret)
    await validator.flush()
    assert validator.store_writes == 0
    stored = await store.by_id(record.id)
    assert stored is not None and stored.last_used_at is None


async def test_note_used_is_written_in_one_batch(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    a, _ = await mint(store, clock, name="a")
    b, _ = await mint(store, clock, name="b")
    for i in range(10_000):
        clock.advance(0.001)
        validator.note_used(a.id if i % 2 else b.id)
    await validator.flush()
    await validator.flush()  # nothing pending: no write
    assert validator.store_writes == 1
    got_a, got_b = await store.by_id(a.id), await store.by_id(b.id)
    assert got_a is not None and got_a.last_used_at == pytest.approx(clock())
    assert got_b is not None and got_b.last_used_at == pytest.approx(clock() - 0.001)


async def test_failed_flush_keeps_the_batch(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    record, _ = await mint(store, clock)
    await store.close()
    validator.note_used(record.id)
    with pytest.raises(StoreUnavailable):
        await validator.flush()
    await store.open()
    await validator.flush()
    stored = await store.by_id(record.id)
    assert stored is not None and stored.last_used_at == clock()
    assert validator.store_writes == 1


async def test_a_flush_in_chunks_keeps_what_a_failure_left_unwritten(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    # A busy gateway's batch is written a chunk to a transaction, with pauses between: the store
    # going away in a pause loses nothing, and the next flush writes the rest.
    records = [(await mint(store, clock, name=f"t{i}"))[0] for i in range(3)]
    for record in records:
        validator.note_used(record.id)
    flushing = asyncio.create_task(validator.flush(pause=0.5, chunk=1))
    await asyncio.sleep(0.2)  # the first chunk is written; the flush waits to write the second
    await store.close()
    with pytest.raises(StoreUnavailable):
        await flushing
    await store.open()
    first = await store.by_id(records[0].id)
    assert first is not None and first.last_used_at == clock()
    second = await store.by_id(records[1].id)
    assert second is not None and second.last_used_at is None
    await validator.flush(pause=0, chunk=1)
    for record in records:
        stored = await store.by_id(record.id)
        assert stored is not None and stored.last_used_at == clock()


async def test_a_flush_paces_its_chunks_within_the_flush_interval(
    store: TokenStore, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    # Chunks with pauses between, so the batch's thread never holds a core for long; but the
    # pauses of one flush fit in TOUCH_SPREAD of the interval, or a busy gateway's flushes
    # would fall behind its uses.
    validator = TokenValidator(store, replace(tokens_cfg, last_used_flush=0.5), PREFIX, clock)
    records = [(await mint(store, clock, name=f"t{i}"))[0] for i in range(3)]
    for record in records:
        validator.note_used(record.id)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(validator.flush(pause=10, chunk=1), timeout=5)
    took = asyncio.get_running_loop().time() - started
    # Two pauses of TOUCH_SPREAD x 0.5 s / 2 each: paced, and within the interval.
    assert validator_module.TOUCH_SPREAD * 0.5 * 0.9 <= took < 0.5
    for record in records:
        stored = await store.by_id(record.id)
        assert stored is not None and stored.last_used_at == clock()


async def test_a_flush_cancelled_between_chunks_keeps_the_rest(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    records = [(await mint(store, clock, name=f"t{i}"))[0] for i in range(3)]
    for record in records:
        validator.note_used(record.id)
    flushing = asyncio.create_task(validator.flush(pause=0.5, chunk=2))
    await asyncio.sleep(0.2)
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    last = await store.by_id(records[2].id)
    assert last is not None and last.last_used_at is None
    await validator.flush(pause=0)
    for record in records:
        stored = await store.by_id(record.id)
        assert stored is not None and stored.last_used_at == clock()
    assert validator.store_writes == 1


async def test_stop_flushes_pending_use(store: TokenStore, validator: TokenValidator, clock: Clock) -> None:
    record, _ = await mint(store, clock)
    async with validator:
        validator.note_used(record.id)
    stored = await store.by_id(record.id)
    assert stored is not None and stored.last_used_at == clock()
    assert validator.store_writes == 1


async def test_background_poll_refuses_within_the_poll_interval(
    store_factory: StoreFactory, store: TokenStore, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    validator = TokenValidator(store, replace(tokens_cfg, revocation_poll=0.01), PREFIX, clock)
    record, secret = await mint(store, clock)
    async with validator:
        assert await validator.authenticate(secret) is not None
        await revoke_elsewhere(store_factory, record.id, clock())
        for _ in range(200):
            await asyncio.sleep(0.01)
            try:
                await validator.authenticate(secret)
            except InvalidToken:
                break
        else:
            pytest.fail("revocation was not picked up by the background poll")


async def test_background_loops_survive_an_outage(
    store: TokenStore, tokens_cfg: TokensConfig, clock: Clock
) -> None:
    validator = TokenValidator(
        store, replace(tokens_cfg, revocation_poll=0.01, last_used_flush=0.01), PREFIX, clock
    )
    record, _ = await mint(store, clock)
    async with validator:
        await store.close()
        validator.note_used(record.id)
        await asyncio.sleep(0.05)
        await store.open()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if validator.store_writes:
                break
    stored = await store.by_id(record.id)
    assert stored is not None and stored.last_used_at == clock()
