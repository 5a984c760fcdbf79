"""What only the PostgreSQL store has: migrations under an advisory lock, the password's paths,
the statement timeout, the revocation push, and feed order under concurrent revokers.

The behaviour both stores share runs on both in test_sqlite_store.py, test_validator.py and
test_service.py (their `store` fixture is parametrised).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest

from gateway.errors import StartupError, StoreUnavailable
from gateway.tokens import migrations as sqlite_migrations
from gateway.tokens import pg_migrations
from gateway.tokens.postgres import PostgresTokenStore
from gateway.tokens.secret import hash_token
from gateway.tokens.sqlite import SqliteTokenStore
from gateway.tokens.url import PASSWORD_ENV
from tests.pg import PgServer

from .conftest import Clock, mint


@pytest.fixture
def url(pg_server: PgServer, pg_database: str) -> str:
    return pg_server.url(pg_database)


async def opened(url: str, **kw: float) -> PostgresTokenStore:
    s = PostgresTokenStore(url, **kw)  # type: ignore[arg-type]
    await s.open()
    return s


# --- migrations --------------------------------------------------------------------------------


async def test_fresh_database_gets_the_latest_schema_once(
    pg_server: PgServer, pg_database: str, url: str
) -> None:
    s = await opened(url)
    assert s.migrations_applied == pg_migrations.LATEST
    await s.close()
    again = await opened(url)
    assert again.migrations_applied == 0
    await again.close()
    rows = await pg_server.fetch(pg_database, "SELECT version FROM scopegate_migrations ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, pg_migrations.LATEST + 1))
    assert await pg_server.fetch(pg_database, "SELECT version FROM scopegate_schema") == [
        (pg_migrations.LATEST,)
    ]


async def test_ten_replicas_starting_at_once_migrate_exactly_once(
    pg_server: PgServer, pg_database: str, url: str
) -> None:
    stores = [PostgresTokenStore(url) for _ in range(10)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert sum(s.migrations_applied for s in stores) == pg_migrations.LATEST
        rows = await pg_server.fetch(pg_database, "SELECT version FROM scopegate_migrations ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, pg_migrations.LATEST + 1))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_newer_schema_refuses_to_start_with_one_line(
    pg_server: PgServer, pg_database: str, url: str
) -> None:
    await (await opened(url)).close()
    await pg_server.execute(pg_database, "UPDATE scopegate_schema SET version = $1", pg_migrations.LATEST + 1)
    with pytest.raises(StartupError) as caught:
        await opened(url)
    message = str(caught.value)
    assert "\n" not in message
    assert f"version {pg_migrations.LATEST + 1} is newer than this scopegate supports" in message


async def test_both_engines_have_the_same_versions_tables_and_columns(tmp_path: Path, url: str) -> None:
    # token-life and later work add steps to both lists; a step for one engine only fails here.
    assert len(pg_migrations.MIGRATIONS) == len(sqlite_migrations.MIGRATIONS), (
        "add the new migration step to both gateway/tokens/migrations.py and pg_migrations.py"
    )
    lite = SqliteTokenStore(str(tmp_path / "t.db"))
    await lite.open()
    await lite.close()
    conn = sqlite3.connect(tmp_path / "t.db")
    try:
        lite_columns = {
            (table, col[1])
            for table in ("tokens", "targets", "revocations")
            for col in conn.execute(f"PRAGMA table_info({table})")
        }
        lite_indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()
    s = await opened(url)
    await s.close()
    pg = await asyncpg.connect(url, password=_password())
    try:
        pg_columns = {
            (r["table_name"], r["column_name"])
            for r in await pg.fetch(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name IN ('tokens', 'targets', 'revocations')"
            )
        }
        pg_indexes = {
            r[0] for r in await pg.fetch("SELECT indexname FROM pg_indexes WHERE schemaname='public'")
        }
    finally:
        await pg.close()
    # PostgreSQL keeps target order in a column where SQLite has the rowid.
    assert pg_columns - {("targets", "position")} == lite_columns
    named = {i for i in lite_indexes if not i.startswith("sqlite_autoindex")}
    assert named <= pg_indexes


# --- the password -------------------------------------------------------------------------------


def _password() -> str:
    import os

    return os.environ[PASSWORD_ENV]


async def test_wrong_or_missing_password_is_store_unavailable_without_echoing_it(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    with pytest.raises(StoreUnavailable) as caught:
        await opened(url)
    assert "not-the-password" not in str(caught.value.detail)
    assert "password" in caught.value.detail.lower()
    monkeypatch.delenv(PASSWORD_ENV)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(StoreUnavailable):
        await opened(url)


async def test_password_from_pgpassword_and_pgpass(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_server: PgServer
) -> None:
    password = _password()
    monkeypatch.delenv(PASSWORD_ENV)
    monkeypatch.setenv("PGPASSWORD", password)
    await (await opened(url)).close()
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:*:{password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    await (await opened(url)).close()


async def test_sslmode_is_honoured(url: str) -> None:
    # The test server has no TLS: `require` must refuse rather than fall back to plain text.
    with pytest.raises(StoreUnavailable):
        await opened(url + "?sslmode=require")
    await (await opened(url + "?sslmode=disable")).close()


# --- faults -------------------------------------------------------------------------------------


async def test_statement_timeout_is_store_unavailable_then_the_store_recovers(
    pg_server: PgServer, pg_database: str, url: str, clock: Clock
) -> None:
    s = await opened(url, statement_timeout=0.3)
    try:
        record, _ = await mint(s, clock)
        blocker = await asyncpg.connect(pg_server.dsn(pg_database))
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("SELECT 1 FROM tokens WHERE id = $1 FOR UPDATE", record.id)
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"QueryCanceled|statement timeout"):
                await s.revoke(record.id, clock())
            assert time.monotonic() - started < 3
            await tx.rollback()
        finally:
            await blocker.close()
        assert await s.revoke(record.id, clock()) is not None
    finally:
        await s.close()


async def test_an_exhausted_pool_is_store_unavailable_not_a_hang(
    monkeypatch: pytest.MonkeyPatch, url: str, clock: Clock
) -> None:
    from gateway.tokens import postgres

    monkeypatch.setattr(postgres, "ACQUIRE_TIMEOUT", 0.3)
    s = await opened(url, pool_max=1)
    try:
        assert s._pool is not None
        held = await s._pool.acquire()
        try:
            with pytest.raises(StoreUnavailable):
                await s.by_id("tok_x")
        finally:
            await s._pool.release(held)
        assert await s.by_id("tok_x") is None
    finally:
        await s.close()


# --- the revocation push and the feed -----------------------------------------------------------


async def wait_for(predicate: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_revocation_is_pushed_to_every_subscriber(url: str, clock: Clock) -> None:
    a, b = await opened(url), await opened(url)
    got: list[bytes] = []
    b.subscribe_revocations(got.append)
    try:
        await wait_for(lambda: b.push_connected)
        record, secret = await mint(a, clock)
        await a.revoke(record.id, clock())
        await wait_for(lambda: got == [hash_token(secret)], 5)
    finally:
        await a.close()
        await b.close()


async def test_notify_off_does_not_listen(url: str) -> None:
    s = await opened(url + "?notify=off")
    try:
        await asyncio.sleep(0.3)
        assert not s.push_connected and s._listener is None
    finally:
        await s.close()


async def test_the_listener_reconnects_after_losing_its_connection(
    pg_server: PgServer, pg_database: str, url: str, clock: Clock
) -> None:
    a, b = await opened(url), await opened(url)
    got: list[bytes] = []
    b.subscribe_revocations(got.append)
    try:
        await wait_for(lambda: b.push_connected)
        await pg_server.execute(
            pg_database,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'",
        )
        await wait_for(lambda: not b.push_connected)
        await wait_for(lambda: b.push_connected)
        record, secret = await mint(a, clock)
        await a.revoke(record.id, clock())
        await wait_for(lambda: got == [hash_token(secret)], 5)
    finally:
        await a.close()
        await b.close()


async def test_concurrent_revokers_never_leave_a_gap_behind_a_poller(url: str, clock: Clock) -> None:
    """Feed positions commit in order, so a poller advancing past n never misses one below n."""
    writers = [await opened(url) for _ in range(3)]
    reader = await opened(url + "?notify=off")
    try:
        minted = [await mint(writers[0], clock, name=f"t{i}") for i in range(60)]
        seen: set[bytes] = set()
        position = (await reader.revocations_since(0))[0]
        done = asyncio.Event()

        async def poll() -> None:
            nonlocal position
            while True:
                # Only a poll that began after every revoke committed may end the loop: one begun
                # earlier reads an older snapshot and can come back empty with a revocation still
                # to commit (the flake CI hit at stop 16).
                last = done.is_set()
                position, hashes = await reader.revocations_since(position)
                seen.update(hashes)
                if last and not hashes:
                    return

        poller = asyncio.create_task(poll())
        await asyncio.gather(
            *(writers[i % 3].revoke(record.id, clock()) for i, (record, _) in enumerate(minted))
        )
        done.set()
        await poller
        assert seen == {hash_token(secret) for _, secret in minted}
    finally:
        for s in [*writers, reader]:
            await s.close()


async def test_touch_writes_a_large_batch_in_one_statement(url: str, clock: Clock) -> None:
    s = await opened(url)
    try:
        records = [(await mint(s, clock, name=f"n{i}"))[0] for i in range(30)]
        await s.touch({r.id: 1000.0 + i for i, r in enumerate(records)} | {"tok_gone": 5.0})
        await s.touch({records[0].id: 1.0})  # never goes back
        listed = {r.id: r.last_used_at for r in await s.list("ws1")}
        assert listed == {r.id: 1000.0 + i for i, r in enumerate(records)}
    finally:
        await s.close()


async def test_a_malformed_notification_is_ignored_and_the_listener_keeps_going(
    pg_server: PgServer, pg_database: str, url: str, clock: Clock
) -> None:
    a, b = await opened(url), await opened(url)
    got: list[bytes] = []
    b.subscribe_revocations(got.append)
    try:
        await wait_for(lambda: b.push_connected)
        await pg_server.execute(
            pg_database, "SELECT pg_notify('scopegate_revocations', 'not hex; DROP TABLE')"
        )
        record, secret = await mint(a, clock)
        await a.revoke(record.id, clock())
        await wait_for(lambda: got == [hash_token(secret)], 5)
        assert b.push_connected
    finally:
        await a.close()
        await b.close()
