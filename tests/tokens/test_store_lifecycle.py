"""The store methods of schema v3: rotate, scheduled revocation, and expiry-notice claims, with
two store connections on one database standing in for two gateways. Each test runs on SQLite and
on PostgreSQL (the `store` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.errors import Conflict
from gateway.tokens.secret import hash_token
from gateway.tokens.store import TokenStore
from tests.tokens.conftest import T0, Clock, StoreFactory, make_record, mint

DAY = 86400.0


@pytest.fixture
async def other(store_factory: StoreFactory, store: TokenStore) -> AsyncIterator[TokenStore]:
    """A second connection to the same database (another gateway)."""
    s = store_factory()
    await s.open()
    yield s
    await s.close()


async def test_rotate_without_overlap_revokes_through_the_feed(store: TokenStore, clock: Clock) -> None:
    old, old_secret = await mint(store, clock)
    head, _ = await store.revocations_since(0)
    successor, secret = make_record(clock, name=old.name, rotated_from=old.id)
    assert await store.rotate(old.id, successor, hash_token(secret), None) == hash_token(old_secret)
    _, hashes = await store.revocations_since(head)
    assert hashes == [hash_token(old_secret)]
    assert (await store.by_id(old.id)).revoked_at is not None  # type: ignore[union-attr]
    assert await store.by_hash(hash_token(secret)) == successor


async def test_rotate_with_overlap_schedules_and_any_process_carries_it_out(
    store: TokenStore, other: TokenStore, clock: Clock
) -> None:
    old, old_secret = await mint(store, clock, expires_at=T0 + DAY)
    successor, secret = make_record(clock, name=old.name, rotated_from=old.id)
    await store.rotate(old.id, successor, hash_token(secret), T0 + 60)
    ended = await store.by_id(old.id)
    assert ended is not None
    assert (ended.revoke_at, ended.expires_at, ended.revoked_at) == (T0 + 60, T0 + 60, None)
    # The name now belongs to the successor; a second rotation of the old token is a conflict.
    with pytest.raises(Conflict):
        await store.rotate(old.id, make_record(clock, name="x")[0], b"y" * 32, T0 + 60)
    assert await other.revoke_due(T0 + 59) == []
    head, _ = await store.revocations_since(0)
    assert await other.revoke_due(T0 + 60) == [(old.id, hash_token(old_secret))]
    assert await store.revoke_due(T0 + 61) == []  # once, whichever process came first
    _, hashes = await store.revocations_since(head)
    assert hashes == [hash_token(old_secret)]


async def test_rotate_of_unknown_or_revoked_is_none(store: TokenStore, clock: Clock) -> None:
    record, _ = await mint(store, clock)
    await store.revoke(record.id, T0)
    successor, secret = make_record(clock)
    assert await store.rotate(record.id, successor, hash_token(secret), None) is None
    assert await store.rotate("tok_unknown", successor, hash_token(secret), None) is None
    assert await store.by_id(successor.id) is None  # nothing inserted


async def test_expiry_notices_are_claimed_once_across_processes(
    store: TokenStore, other: TokenStore, clock: Clock
) -> None:
    due, _ = await mint(store, clock, name="due", created_at=T0 - 10 * DAY, expires_at=T0 + 5 * DAY)
    await mint(store, clock, name="later", expires_at=T0 + 30 * DAY)
    await mint(store, clock, name="short-lived", created_at=T0, expires_at=T0 + 3600)  # life < 1d
    revoked, _ = await mint(store, clock, name="revoked", created_at=T0 - 10 * DAY, expires_at=T0 + 5 * DAY)
    await store.revoke(revoked.id, T0)
    thresholds = (int(7 * DAY), int(DAY))
    first, second = await asyncio.gather(
        store.claim_expiry_notices(T0, thresholds, 60), other.claim_expiry_notices(T0, thresholds, 60)
    )
    claimed = [(n.record.id, n.threshold, n.attempt) for n in first + second]
    assert claimed == [(due.id, int(7 * DAY), 1)]
    assert (first + second)[0].record == due
    # A failure waits for its retry time; a success is never claimed again.
    await store.finish_expiry_notice(due.id, int(7 * DAY), sent=False, retry_at=T0 + 10)
    assert await other.claim_expiry_notices(T0 + 5, thresholds, 60) == []
    (retry,) = await other.claim_expiry_notices(T0 + 10, thresholds, 60)
    assert (retry.record.id, retry.attempt) == (due.id, 2)
    await other.finish_expiry_notice(due.id, int(7 * DAY), sent=True, retry_at=T0 + 11)
    assert await store.claim_expiry_notices(T0 + 100, thresholds, 60) == []
    # A lapsed claim (its holder died) is claimable again after the lease.
    clock.now = T0 + 4 * DAY + 1
    (one_day,) = await store.claim_expiry_notices(clock.now, thresholds, 60)
    assert one_day.threshold == int(DAY)
    assert await other.claim_expiry_notices(clock.now + 59, thresholds, 60) == []
    (again,) = await other.claim_expiry_notices(clock.now + 60, thresholds, 60)
    assert (again.record.id, again.threshold, again.attempt) == (due.id, int(DAY), 2)


async def test_v3_fields_round_trip(store: TokenStore, clock: Clock) -> None:
    record, secret = make_record(clock)
    record = replace(
        record, not_before=T0 + 5, allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"), rotated_from="tok_x"
    )
    await store.insert(record, hash_token(secret))
    assert await store.by_hash(hash_token(secret)) == record
    assert await store.list("ws1") == [record]
