from __future__ import annotations

import asyncio
import sqlite3

import aiosqlite
import pytest

from gateway.errors import Conflict, StoreUnavailable
from gateway.tokens.migrations import LATEST, MIGRATIONS, migrate, user_version
from gateway.tokens.secret import hash_token
from gateway.tokens.sqlite import SqliteTokenStore

from .conftest import Clock, make_record, raw


def file_version(path: str) -> int:
    with raw(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def tables(path: str) -> set[str]:
    with raw(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')").fetchall()
    return {r[0] for r in rows}


async def build_at(path: str, version: int) -> None:
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        assert await migrate(conn, upto=version) == version


V1_ROWS = [
    # id, name, hash, prefix, owner, workspace, project, scopes, created, expires, revoked, last_used, by
    ("tok_active", "ci", b"h" * 32, "st_abcd", "al", "ws1", None, "read write", 1.0, 9e9, None, 5.0, "cli"),
    ("tok_revoked", "old", b"r" * 32, "st_efgh", "bob", "ws1", "p1", "agency", 2.0, 9e9, 3.0, None, "cli"),
]


V1_INSERT = (
    "INSERT INTO tokens (id, name, token_hash, display_prefix, owner, workspace, project, scopes, "
    "created_at, expires_at, revoked_at, last_used_at, created_by) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def seed_v1(path: str) -> None:
    with raw(path) as conn:
        conn.executemany(V1_INSERT, V1_ROWS)
        conn.execute("INSERT INTO targets VALUES ('tok_revoked', 'playlist', '7')")


async def test_latest_has_at_least_two_versions() -> None:
    assert LATEST == len(MIGRATIONS) >= 2


async def test_fresh_file_gets_the_latest_schema(db_path: str) -> None:
    store = SqliteTokenStore(db_path)
    await store.open()
    await store.close()
    assert file_version(db_path) == LATEST
    assert {"tokens", "targets", "revocations", "tokens_active_name", "tokens_workspace"} <= tables(db_path)
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("start", [pytest.param(v, id=f"from-v{v}") for v in range(LATEST)])
async def test_upgrade_from_every_earlier_version(db_path: str, clock: Clock, start: int) -> None:
    await build_at(db_path, start)
    assert file_version(db_path) == start
    if start >= 1:
        seed_v1(db_path)
    store = SqliteTokenStore(db_path)
    await store.open()
    try:
        assert file_version(db_path) == LATEST
        if start >= 1:
            active = await store.by_id("tok_active")
            assert active is not None
            assert (active.scopes, active.last_used_at, active.project) == (("read", "write"), 5.0, None)
            revoked = await store.by_hash(b"r" * 32)
            assert revoked is not None
            assert (revoked.revoked_at, revoked.targets) == (3.0, (("playlist", "7"),))
            # v2 back-fills the feed with revocations made under v1
            _, hashes = await store.revocations_since(0)
            assert hashes == ([b"r" * 32] if start < 2 else [])
            # v3's columns read as "not set" on rows written before it
            assert (active.not_before, active.allowed_cidrs, active.revoke_at) == (None, (), None)
            # the active-name rule still holds on migrated data
            record, secret = make_record(clock, name="ci", workspace="ws1", project=None)
            with pytest.raises(Conflict):
                await store.insert(record, hash_token(secret))
        # and the upgraded store works for new data
        record, secret = make_record(clock, name="fresh")
        await store.insert(record, hash_token(secret))
        assert await store.by_hash(hash_token(secret)) == record
    finally:
        await store.close()


async def test_reopening_is_a_no_op(db_path: str, clock: Clock) -> None:
    for _ in range(2):
        store = SqliteTokenStore(db_path)
        await store.open()
        await store.close()
    assert file_version(db_path) == LATEST


async def test_failed_step_leaves_the_previous_version(db_path: str) -> None:
    await build_at(db_path, 1)
    seed_v1(db_path)
    # a table in the way makes step 2 fail half-way; the whole step must roll back
    with raw(db_path) as conn:
        conn.execute("CREATE TABLE revocations (x)")
    store = SqliteTokenStore(db_path)
    with pytest.raises(StoreUnavailable):
        await store.open()
    assert file_version(db_path) == 1
    assert "tokens_workspace" not in tables(db_path)


async def test_schema_newer_than_code_is_refused(db_path: str) -> None:
    await build_at(db_path, LATEST)
    with raw(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    store = SqliteTokenStore(db_path)
    with pytest.raises(StoreUnavailable, match="newer"):
        await store.open()


async def test_concurrent_first_opens_migrate_once(db_path: str) -> None:
    stores = [SqliteTokenStore(db_path) for _ in range(4)]
    results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
    for s in stores:
        await s.close()
    assert results == [None] * len(stores)
    assert file_version(db_path) == LATEST


async def test_user_version_reads_the_pragma(db_path: str) -> None:
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        assert await user_version(conn) == 0
        await migrate(conn, upto=1)
        assert await user_version(conn) == 1


@pytest.mark.parametrize(
    ("project", "revoked", "clash"),
    [
        pytest.param(None, None, True, id="null-project-collides"),
        pytest.param("p1", None, True, id="same-project-collides"),
        pytest.param(None, 5.0, False, id="revoked-does-not-hold-the-name"),
        pytest.param(None, "rotating", False, id="rotated-in-overlap-does-not-hold-the-name"),
    ],
)
async def test_unique_index_backs_the_name_rule(
    db_path: str, project: str | None, revoked: float | str | None, clash: bool
) -> None:
    # The store checks names inside its write transaction; the index holds even for other writers.
    await build_at(db_path, LATEST)
    rotating = revoked == "rotating"
    if rotating:
        revoked = None
    row = ("tok_a", "ci", b"a" * 32, "st_a", "al", "ws1", project, "read", 1.0, 9e9, revoked, None, "x")
    dup = ("tok_b", "ci", b"b" * 32, "st_b", "al", "ws1", project, "read", 1.0, 9e9, None, None, "x")
    with raw(db_path) as conn:
        conn.execute(V1_INSERT, row)
        if rotating:  # a rotated token in its overlap: its revocation is scheduled
            conn.execute("UPDATE tokens SET revoke_at = 99.0 WHERE id = 'tok_a'")
    if clash:
        with pytest.raises(sqlite3.IntegrityError), raw(db_path) as conn:
            conn.execute(V1_INSERT, dup)
    else:
        with raw(db_path) as conn:
            conn.execute(V1_INSERT, dup)
