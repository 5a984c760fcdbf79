from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.errors import Conflict, StoreUnavailable
from gateway.tokens.secret import hash_token
from gateway.tokens.sqlite import SqliteTokenStore
from gateway.tokens.store import TokenRecord, TokenStore

from .conftest import Clock, StoreFactory, make_record, mint, raw


async def test_insert_then_read_back_by_hash_and_id(store: TokenStore, clock: Clock) -> None:
    record, secret = await mint(
        store,
        clock,
        project="p1",
        scopes=("agency",),
        targets=(("playlist", "9"), ("playlist", "1"), ("device", "x")),
        last_used_at=None,
    )
    assert await store.by_hash(hash_token(secret)) == record
    assert await store.by_id(record.id) == record
    assert await store.by_hash(hash_token(secret + "x")) is None
    assert await store.by_id("tok_nope") is None


async def test_secret_never_reaches_the_file(
    db_path: str, sqlite_store: SqliteTokenStore, clock: Clock
) -> None:
    _, secret = await mint(sqlite_store, clock, name="findme")
    await sqlite_store.close()
    blob = b"".join(p.read_bytes() for p in Path(db_path).parent.iterdir() if p.name.startswith("tokens.db"))
    assert b"findme" in blob and hash_token(secret) in blob  # we are looking at the right bytes
    assert secret.encode() not in blob
    assert secret[3:35].encode() not in blob


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        pytest.param(("ws1", None), ("ws1", None), True, id="workspace-level-null-project-collides"),
        pytest.param(("ws1", "p1"), ("ws1", "p1"), True, id="same-project-collides"),
        pytest.param(("ws1", "p1"), ("ws1", "p2"), False, id="other-project"),
        pytest.param(("ws1", None), ("ws1", "p1"), False, id="workspace-vs-project"),
        pytest.param(("ws1", "p1"), ("ws2", "p1"), False, id="other-workspace"),
    ],
)
async def test_active_name_uniqueness(
    store: TokenStore,
    clock: Clock,
    first: tuple[str, str | None],
    second: tuple[str, str | None],
    clash: bool,
) -> None:
    await mint(store, clock, name="deploy", workspace=first[0], project=first[1])
    record, secret = make_record(clock, name="deploy", workspace=second[0], project=second[1])
    if clash:
        with pytest.raises(Conflict, match="active token named 'deploy' already exists"):
            await store.insert(record, hash_token(secret))
        assert await store.by_id(record.id) is None
    else:
        await store.insert(record, hash_token(secret))
        assert await store.by_id(record.id) == record


async def test_revoked_name_may_be_reused(store: TokenStore, clock: Clock) -> None:
    old, _ = await mint(store, clock, name="deploy")
    assert await store.revoke(old.id, clock())
    new, _ = await mint(store, clock, name="deploy")
    assert (await store.by_id(new.id)) == new


async def test_name_race_between_two_processes(store_factory: StoreFactory, clock: Clock) -> None:
    a, b = store_factory(), store_factory()
    await a.open()
    await b.open()
    try:
        records = [make_record(clock, name="same") for _ in range(2)]
        results = await asyncio.gather(
            a.insert(records[0][0], hash_token(records[0][1])),
            b.insert(records[1][0], hash_token(records[1][1])),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["Conflict", "NoneType"]
        assert len(await a.list("ws1")) == 1
    finally:
        await a.close()
        await b.close()


async def test_list_filters(store: TokenStore, clock: Clock) -> None:
    ws_level, _ = await mint(store, clock, name="a")
    clock.advance(1)
    proj, _ = await mint(store, clock, name="b", project="p1")
    clock.advance(1)
    gone, _ = await mint(store, clock, name="c", project="p1")
    clock.advance(1)
    other, _ = await mint(store, clock, name="d", workspace="ws2")
    await store.revoke(gone.id, clock())
    gone = (await store.by_id(gone.id)) or gone

    ids = lambda records: [r.id for r in records]  # noqa: E731
    assert ids(await store.list("ws1")) == [ws_level.id, proj.id]
    assert ids(await store.list("ws1", status="revoked")) == [gone.id]
    assert ids(await store.list("ws1", status="all")) == [ws_level.id, proj.id, gone.id]
    assert ids(await store.list("ws1", project_level_only=True, status="all")) == [proj.id, gone.id]
    assert ids(await store.list(None)) == [ws_level.id, proj.id, other.id]
    assert await store.list("ws3") == []


async def test_list_carries_targets(store: TokenStore, clock: Clock) -> None:
    a, _ = await mint(
        store, clock, name="a", scopes=("agency",), targets=(("playlist", "2"), ("playlist", "1"))
    )
    clock.advance(1)
    b, _ = await mint(store, clock, name="b")
    assert await store.list("ws1") == [a, b]


async def test_revoke_writes_the_feed_once(store: TokenStore, clock: Clock) -> None:
    record, secret = await mint(store, clock)
    head, hashes = await store.revocations_since(0)
    assert (head, hashes) == (0, [])
    assert await store.revoke(record.id, clock() + 5) == hash_token(secret)
    assert await store.revoke(record.id, clock() + 9) is None
    assert await store.revoke("tok_unknown", clock()) is None
    seq, hashes = await store.revocations_since(0)
    assert hashes == [hash_token(secret)]
    assert await store.revocations_since(seq) == (seq, [])
    stored = await store.by_id(record.id)
    assert stored is not None and stored.revoked_at == clock() + 5


async def test_second_instance_sees_revocation(
    store_factory: StoreFactory, store: TokenStore, clock: Clock
) -> None:
    record, secret = await mint(store, clock)
    other = store_factory()
    await other.open()
    try:
        assert await other.revoke(record.id, clock())
    finally:
        await other.close()
    _, hashes = await store.revocations_since(0)
    assert hashes == [hash_token(secret)]


async def test_touch_batches_and_never_goes_back(store: TokenStore, clock: Clock) -> None:
    a, _ = await mint(store, clock, name="a")
    b, _ = await mint(store, clock, name="b")
    await store.touch({a.id: 100.0, b.id: 200.0, "tok_gone": 1.0})
    await store.touch({a.id: 50.0})
    got_a, got_b = await store.by_id(a.id), await store.by_id(b.id)
    assert got_a is not None and got_a.last_used_at == 100.0
    assert got_b is not None and got_b.last_used_at == 200.0


async def test_wal_and_ping(db_path: str, sqlite_store: SqliteTokenStore) -> None:
    await sqlite_store.ping()
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_missing_directory_is_store_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "tokens.db"
    with pytest.raises(StoreUnavailable, match="directory does not exist"):
        await SqliteTokenStore(str(missing)).open()
    assert not missing.parent.exists()


async def test_corrupt_file_is_store_unavailable(db_path: str) -> None:
    Path(db_path).write_bytes(b"this is not a sqlite database at all" * 200)
    with pytest.raises(StoreUnavailable, match="cannot open"):
        await SqliteTokenStore(db_path).open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_read_only_file_is_store_unavailable(db_path: str, clock: Clock) -> None:
    s = SqliteTokenStore(db_path)
    await s.open()
    await s.close()
    Path(db_path).chmod(0o444)
    Path(db_path).parent.chmod(0o555)
    try:
        s = SqliteTokenStore(db_path)
        with pytest.raises(StoreUnavailable):
            await s.open()
            record, secret = make_record(clock)
            await s.insert(record, hash_token(secret))
        await s.close()
    finally:
        Path(db_path).parent.chmod(0o755)


OPS: list[tuple[str, Callable[[TokenStore, TokenRecord], Awaitable[object]]]] = [
    ("ping", lambda s, r: s.ping()),
    ("insert", lambda s, r: s.insert(replace(r, id=r.id + "2", name="other"), b"x" * 32)),
    ("by_hash", lambda s, r: s.by_hash(b"x" * 32)),
    ("by_id", lambda s, r: s.by_id(r.id)),
    ("list", lambda s, r: s.list("ws1")),
    ("revoke", lambda s, r: s.revoke(r.id, 1.0)),
    ("revocations_since", lambda s, r: s.revocations_since(0)),
    ("touch", lambda s, r: s.touch({r.id: 1.0})),
]


@pytest.mark.parametrize("op", [pytest.param(fn, id=name) for name, fn in OPS])
async def test_closed_store_is_store_unavailable(
    store_factory: StoreFactory, clock: Clock, op: Callable[[TokenStore, TokenRecord], Awaitable[object]]
) -> None:
    s = store_factory()
    with pytest.raises(StoreUnavailable, match="not open"):
        await op(s, make_record(clock)[0])
    await s.open()
    await s.close()
    with pytest.raises(StoreUnavailable, match="not open"):
        await op(s, make_record(clock)[0])


@pytest.mark.parametrize(
    "op", [pytest.param(fn, id=name) for name, fn in OPS if name in {"insert", "revoke", "touch"}]
)
async def test_write_lock_held_elsewhere_is_store_unavailable_then_recovers(
    db_path: str, clock: Clock, op: Callable[[TokenStore, TokenRecord], Awaitable[object]]
) -> None:
    s = SqliteTokenStore(db_path, busy_timeout_ms=50)
    await s.open()
    try:
        record, _ = await mint(s, clock, name="victim")
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="locked"):
                await op(s, record)
            # reads still work in WAL mode while a writer holds the lock
            assert await s.by_id(record.id) == record
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        # the failed write left no transaction open: the same store writes again
        await op(s, record)
        new, secret = make_record(clock, name="after")
        await s.insert(new, hash_token(secret))
    finally:
        await s.close()


async def test_reopen_after_close(store_factory: StoreFactory, clock: Clock) -> None:
    s = store_factory()
    await s.open()
    record, _ = await mint(s, clock)
    await s.close()
    await s.open()
    try:
        assert await s.by_id(record.id) == record
    finally:
        await s.close()
