"""The validator's decisions, in-process (issue 14): what a token grants, expiry and not_before,
idle expiry, a rotation's early expiry, and each refusal's exact reason.

A real SQLite store file (conftest), the real TokenValidator (and TokenService for a rotation),
the hand-driven clock.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from gateway.config import TokensConfig
from gateway.errors import InvalidToken, StoreUnavailable
from gateway.scopes import Catalogue
from gateway.tokens.secret import generate, hash_token
from gateway.tokens.service import TokenService
from gateway.tokens.sqlite import SqliteTokenStore
from gateway.tokens.validator import TokenValidator

from ..conftest import PREFIX, T0, Clock, make_record, mint
from .conftest import IDLE

CATALOGUE = Catalogue.build({"playlists:read": "read playlists"})


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


async def rotated_elsewhere(
    replica: SqliteTokenStore, clock: Clock, token_id: str, overlap_end: float
) -> None:
    """Another replica used the token at +50, then rotated it with an overlap ending at
    `overlap_end`. Nobody has run revoke_due yet: the row is not revoked, only expiring early."""
    await replica.touch({token_id: T0 + 50})
    successor, successor_secret = make_record(clock, name="next")
    assert await replica.rotate(token_id, successor, hash_token(successor_secret), overlap_end) is not None


async def test_the_idle_recheck_returns_what_the_store_says_now(
    store: SqliteTokenStore,
    replica: SqliteTokenStore,
    tokens_cfg: TokensConfig,
    clock: Clock,
) -> None:
    """The idle re-check re-reads the record: the principal returned is the one read, not the
    one cached before (a WebSocket, say, is closed at the principal's expiry)."""
    idle_validator = TokenValidator(store, replace(tokens_cfg, idle_ttl=IDLE, cache_ttl=600.0), PREFIX, clock)
    record, secret = await mint(store, clock)
    assert await idle_validator.authenticate(secret) is not None  # cached: expires at T0 + 3600
    await rotated_elsewhere(replica, clock, record.id, T0 + 110)
    clock.advance(105)  # idle by the cached entry (created T0), not by the store (used T0 + 50)
    principal = await idle_validator.authenticate(secret)
    assert principal is not None and principal.expires_at == T0 + 110
    assert idle_validator.cache_misses == 2


async def test_the_idle_recheck_refuses_a_record_that_expired_meanwhile(
    store: SqliteTokenStore,
    replica: SqliteTokenStore,
    tokens_cfg: TokensConfig,
    clock: Clock,
) -> None:
    """SECURITY: a record re-read by the idle re-check is checked for expiry like any other."""
    idle_validator = TokenValidator(store, replace(tokens_cfg, idle_ttl=IDLE, cache_ttl=600.0), PREFIX, clock)
    record, secret = await mint(store, clock)
    assert await idle_validator.authenticate(secret) is not None
    await rotated_elsewhere(replica, clock, record.id, T0 + 102)
    clock.advance(105)  # idle by the cache; the store's record is not idle but has expired
    with pytest.raises(InvalidToken, match=r"^token expired$"):
        await idle_validator.authenticate(secret)


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
