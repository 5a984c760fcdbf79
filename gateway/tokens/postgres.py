"""The PostgreSQL token store (asyncpg): one bounded pool per process, one listening connection.

    store: postgresql://user@host:port/db[?sslmode=require][&notify=off]

The password comes from $SCOPEGATE_STORE_PASSWORD, else libpq's PGPASSWORD / ~/.pgpass (asyncpg
reads them); every other libpq URL parameter (sslmode, sslrootcert, ...) is honoured by asyncpg.
Every write is one transaction and returns only after COMMIT. Every driver, server or network
failure (refused, reset, pool exhausted, statement timeout) surfaces as `errors.StoreUnavailable`.

Revocations are pushed: revoke() NOTIFYs in its transaction, and a dedicated connection LISTENs and
hands each revoked hash to the subscribers (the validator) as soon as it commits. The polled feed
keeps running underneath, so a replica whose listening connection is down (it reconnects with
backoff) still learns every revocation within `revocation_poll`. `notify=off` turns the push off
(for a transaction-pooling pgbouncer, which cannot LISTEN).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ..errors import Conflict, StartupError, StoreUnavailable
from . import pg_notices as notices
from .migrations import SchemaTooNew
from .pg_migrations import FEED_LOCK, migrate
from .rows import COLUMNS, list_filter, record_of, values_of
from .store import ExpiryNotice, Status, TokenRecord
from .url import PASSWORD_ENV, redact, split_pg_url

log = logging.getLogger("scopegate.store")

CHANNEL = "scopegate_revocations"
POOL_MAX = 10
CONNECT_TIMEOUT = 3.0
ACQUIRE_TIMEOUT = 3.0
STATEMENT_TIMEOUT = 5.0
LISTEN_BACKOFF = (0.1, 5.0)  # first and longest wait between reconnects of the listener
LISTEN_CHECK = 2.0  # seconds between liveness checks of the listening connection
FEED_PAGE = 10_000
_TARGETS = (
    "COALESCE((SELECT array_agg(ARRAY[g.kind, g.target_id] ORDER BY g.position) FROM targets g "
    "WHERE g.token_id = tokens.id), '{}')"
)
# What "cannot reach or use the store" looks like from asyncpg.
_DOWN = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresTokenStore:
    def __init__(self, url: str, *, pool_max: int = POOL_MAX, statement_timeout: float = STATEMENT_TIMEOUT):
        self.url = url
        self.dsn, self.notify = split_pg_url(url)
        self.pool_max = pool_max
        self.statement_timeout = statement_timeout
        self.migrations_applied = 0
        self.push_connected = False
        self._pool: asyncpg.Pool | None = None
        self._subscribers: list[Callable[[bytes], None]] = []
        self._listener: asyncio.Task[None] | None = None

    def _connect_args(self) -> dict[str, Any]:
        return {
            "dsn": self.dsn,
            # None lets asyncpg fall back to PGPASSWORD and ~/.pgpass, like libpq.
            "password": os.environ.get(PASSWORD_ENV) or None,
            "timeout": CONNECT_TIMEOUT,
            "command_timeout": self.statement_timeout + 1,
            "server_settings": {
                "application_name": "scopegate",
                # SECURITY: a stuck statement ends server-side too, releasing its locks.
                "statement_timeout": str(int(self.statement_timeout * 1000)),
            },
        }

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(min_size=1, max_size=self.pool_max, **self._connect_args())
        except (*_DOWN, ValueError) as e:
            raise StoreUnavailable(f"cannot open token store {redact(self.url)}: {_why(e)}") from e
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                _, self.migrations_applied = await migrate(conn)
        except SchemaTooNew as e:
            await pool.close()
            # Not transient: a newer scopegate owns this database. Refuse to start.
            raise StartupError(str(e)) from None
        except _DOWN as e:
            await pool.close()
            raise StoreUnavailable(f"cannot open token store {redact(self.url)}: {_why(e)}") from e
        self._pool = pool
        if self.notify and self._listener is None:
            self._listener = asyncio.create_task(self._listen_forever())

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except (*_DOWN, RuntimeError):
                pool.terminate()

    def subscribe_revocations(self, callback: Callable[[bytes], None]) -> None:
        self._subscribers.append(callback)

    async def ping(self) -> None:
        # A real read of a real table, not just a round trip.
        async with self._conn() as conn:
            await conn.fetchval("SELECT version FROM scopegate_schema")
            await conn.fetchval("SELECT count(*) FROM (SELECT 1 FROM tokens LIMIT 1) t")

    async def insert(self, record: TokenRecord, token_hash: bytes) -> None:
        async with self._conn() as conn:
            try:
                async with conn.transaction():
                    await _insert(conn, record, token_hash)
            except asyncpg.UniqueViolationError as e:
                raise _conflict(e, record) from None

    async def rotate(
        self, old_id: str, successor: TokenRecord, successor_hash: bytes, revoke_at: float | None
    ) -> bytes | None:
        async with self._conn() as conn:
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
                    row = await conn.fetchrow(
                        "SELECT token_hash, revoke_at FROM tokens WHERE id = $1 AND revoked_at IS NULL "
                        "FOR UPDATE",
                        old_id,
                    )
                    if row is None:
                        return None
                    if row[1] is not None:
                        raise Conflict("this token was already rotated; rotate its successor")
                    old_hash = bytes(row[0])
                    if revoke_at is None:
                        await conn.execute(
                            "UPDATE tokens SET revoked_at = $2 WHERE id = $1", old_id, successor.created_at
                        )
                        await _feed(conn, old_id, old_hash, successor.created_at)
                    else:
                        # SECURITY: as on SQLite: the old token expires at the end of the overlap,
                        # and revoke_due then feeds (and pushes) its revocation to every process.
                        await conn.execute(
                            "UPDATE tokens SET revoke_at = $2, expires_at = LEAST(expires_at, $2) "
                            "WHERE id = $1",
                            old_id,
                            revoke_at,
                        )
                    await _insert(conn, successor, successor_hash)
                    return old_hash
            except asyncpg.UniqueViolationError as e:
                raise _conflict(e, successor) from None

    async def revoke_due(self, now: float) -> builtins.list[tuple[str, bytes]]:
        async with self._conn() as conn:
            due = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE revoked_at IS NULL AND revoke_at <= $1)", now
            )
            if not due:  # the common case: one indexed read, no lock
                return []
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
                rows = await conn.fetch(
                    "UPDATE tokens SET revoked_at = revoke_at WHERE revoked_at IS NULL AND revoke_at <= $1 "
                    "RETURNING id, token_hash, revoke_at",
                    now,
                )
                for token_id, token_hash, at in rows:
                    await _feed(conn, token_id, bytes(token_hash), at)
        return [(r[0], bytes(r[1])) for r in rows]

    async def claim_expiry_notices(
        self, now: float, thresholds: Sequence[int], lease: float, limit: int = 100
    ) -> builtins.list[ExpiryNotice]:
        async with self._conn() as conn:
            return await notices.claim(conn, f"{COLUMNS}, {_TARGETS}", _record, now, thresholds, lease, limit)

    async def finish_expiry_notice(
        self, token_id: str, threshold: int, *, sent: bool, retry_at: float
    ) -> None:
        async with self._conn() as conn:
            await notices.finish(conn, token_id, threshold, sent=sent, at=retry_at)

    async def by_hash(self, token_hash: bytes) -> TokenRecord | None:
        return await self._one("token_hash = $1", token_hash)

    async def by_id(self, token_id: str) -> TokenRecord | None:
        return await self._one("id = $1", token_id)

    async def list(
        self, workspace: str | None, *, project_level_only: bool = False, status: Status = "active"
    ) -> builtins.list[TokenRecord]:
        # Only fixed fragments reach the SQL text; every value is a bound parameter.
        where, params = list_filter(workspace, project_level_only, status, lambda n: f"${n}")
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {COLUMNS}, {_TARGETS} FROM tokens WHERE {where} ORDER BY created_at, id",  # noqa: S608
                *params,
            )
        return [_record(row) for row in rows]

    async def revoke(self, token_id: str, at: float) -> bytes | None:
        async with self._conn() as conn, conn.transaction():
            # Feed writers take turns, so feed positions commit in order and a poller that has
            # read position n can never later see a position below n appear.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
            token_hash = await conn.fetchval(
                "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING token_hash",
                token_id,
                at,
            )
            if token_hash is None:
                return None
            await _feed(conn, token_id, bytes(token_hash), at)
        return bytes(token_hash)

    async def revocations_since(self, seq: int) -> tuple[int, builtins.list[bytes]]:
        """Up to FEED_PAGE hashes revoked after `seq`, and the position to ask from next (as SQLite)."""
        # One snapshot for both reads: otherwise a revocation committing between "nothing after
        # seq" and "the head is h" would be skipped for good.
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(
                "SELECT seq, token_hash FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2",
                min(seq, 2**63 - 1),
                FEED_PAGE,
            )
            if rows:
                return int(rows[-1][0]), [bytes(r[1]) for r in rows]
            head = await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM revocations")
            return int(head), []

    async def touch(self, last_used: dict[str, float]) -> None:
        if not last_used:
            return
        ids = builtins.list(last_used)
        async with self._conn() as conn:
            # One statement for the whole batch, whatever its size.
            await conn.execute(
                "UPDATE tokens SET last_used_at = GREATEST(COALESCE(tokens.last_used_at, 0), u.at) "
                "FROM unnest($1::text[], $2::float8[]) AS u(id, at) WHERE tokens.id = u.id",
                ids,
                [last_used[i] for i in ids],
            )

    async def _one(self, where: str, value: Any) -> TokenRecord | None:
        # `where` is one of two literals (by_hash, by_id); the value is bound.
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {COLUMNS}, {_TARGETS} FROM tokens WHERE {where}", value)  # noqa: S608
        return None if row is None else _record(row)

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[PoolConnectionProxy[Any]]:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("token store is not open")
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                yield conn
        except asyncpg.UniqueViolationError:
            raise
        except _DOWN as e:
            log.warning("token store error: %s", _why(e))
            raise StoreUnavailable(f"token store unavailable: {_why(e)}") from e

    # --- the listening connection ------------------------------------------------------------

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            token_hash = bytes.fromhex(str(payload))
        except ValueError:
            log.warning("ignored a malformed revocation notification")
            return
        for callback in self._subscribers:
            callback(token_hash)

    async def _listen_forever(self) -> None:
        backoff = LISTEN_BACKOFF[0]
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(**self._connect_args())
                await conn.add_listener(CHANNEL, self._notified)
                if not self.push_connected:
                    log.info("revocation push: listening on %s", CHANNEL)
                self.push_connected = True
                backoff = LISTEN_BACKOFF[0]
                while True:
                    await asyncio.sleep(LISTEN_CHECK)
                    # A dead peer (server stopped, network cut) shows up here, not as a callback.
                    await conn.fetchval("SELECT 1", timeout=LISTEN_CHECK)
            except asyncio.CancelledError:
                raise
            except (*_DOWN, RuntimeError) as e:
                if self.push_connected:
                    log.warning("revocation push lost (%s); polling the feed until it is back", _why(e))
                self.push_connected = False
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, LISTEN_BACKOFF[1])


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


async def _insert(conn: Any, record: TokenRecord, token_hash: bytes) -> None:
    await conn.execute(
        f"INSERT INTO tokens ({COLUMNS}, token_hash) "  # noqa: S608 - fixed column list
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        *values_of(record),
        token_hash,
    )
    if record.targets:
        await conn.executemany(
            "INSERT INTO targets (token_id, kind, target_id, position) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            [(record.id, k, t, i) for i, (k, t) in enumerate(record.targets)],
        )


async def _feed(conn: Any, token_id: str, token_hash: bytes, at: float) -> None:
    """The feed row and the notification of a revocation, in the caller's transaction (which holds
    FEED_LOCK): they commit with the revocation, or neither does."""
    await conn.execute(
        "INSERT INTO revocations (token_id, token_hash, revoked_at) VALUES ($1, $2, $3)",
        token_id,
        token_hash,
        at,
    )
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, token_hash.hex())


def _conflict(e: asyncpg.UniqueViolationError, record: TokenRecord) -> Conflict:
    # The unique index decides races between replicas minting the same name.
    if e.constraint_name == "tokens_active_name":
        return Conflict(f"an active token named {record.name!r} already exists in this workspace and project")
    return Conflict("a token with that id or secret already exists")


def _record(row: Sequence[Any]) -> TokenRecord:
    return record_of(row, ((k, t) for k, t in (row[16] or ())))
