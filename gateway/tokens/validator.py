"""API token authentication: shape check, cache, store lookup, revocation feed, last-used batching.

    authenticate(credential)
      not our prefix            -> None ("not mine")
      bad shape or checksum     -> InvalidToken, before any store lookup
      hash seen revoked         -> InvalidToken, even with the store down
      cached (cache_ttl)        -> Principal, expiry re-checked on every request
      store: unknown/revoked/expired -> InvalidToken; store down -> StoreUnavailable
      before not_before, or idle past tokens.idle_ttl -> InvalidToken

Revocations made by other processes arrive through the store's revocation feed, polled every
`revocation_poll` seconds, and sooner when the store pushes them (PostgreSQL NOTIFY); a cached
entry never outlives `cache_ttl` either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from ..auth.principal import Principal
from ..config import TokensConfig
from ..errors import InvalidToken, StoreUnavailable
from ..expiring import Expiring
from .fields import networks
from .secret import hash_token, well_formed
from .store import RevocationPush, TokenRecord, TokenStore

log = logging.getLogger("scopegate.tokens")
audit = logging.getLogger("scopegate.audit")

CACHE_SIZE: Final = 100_000
REVOKED_SIZE: Final = 250_000
UNKNOWN_SIZE: Final = 10_000
UNKNOWN_TTL: Final = 5.0
HASH_MEMO = 10_000  # credentials whose SHA-256 is remembered (cleared when full)
TOUCH_CHUNK: Final = 100  # last-used times written in one transaction (see TokenValidator.flush)
TOUCH_PAUSE: Final = 0.05  # seconds at most between two such transactions...
TOUCH_SPREAD: Final = 0.8  # ...and a flush's pauses within this share of tokens.last_used_flush (a use
# then reaches the store within 1.8 x last_used_flush: inside the 2 x that idle_ttl must exceed)
_FEED_HEAD_PROBE: Final = 2**63 - 1


SCOPE_SETS = 1_000  # distinct scope lists shared between cached tokens (cleared when full)
_scope_sets: dict[tuple[str, ...], frozenset[str]] = {}
_NO_TARGETS: Final[frozenset[tuple[str, str]]] = frozenset()


def _scope_set(scopes: tuple[str, ...]) -> frozenset[str]:
    """One frozenset per distinct scope list. Tokens share a handful of lists, and each cached
    token's own sets were 430 bytes and two more objects for every full pass of the cycle
    collector to visit (bench/gcpause.py)."""
    found = _scope_sets.get(scopes)
    if found is None:
        if len(_scope_sets) >= SCOPE_SETS:
            _scope_sets.clear()
        found = _scope_sets[scopes] = frozenset(scopes)
    return found


def principal_for(record: TokenRecord) -> Principal:
    scopes = _scope_set(tuple(record.scopes))
    return Principal(
        kind="token",
        subject=record.owner,
        scopes=scopes,
        mint_scopes=scopes,
        workspace=record.workspace,
        project=record.project,
        # SECURITY: a token never carries a platform role above `user` (contract section 9).
        role="user",
        token_id=record.id,
        expires_at=record.expires_at,
        targets=frozenset(record.targets) if record.targets else _NO_TARGETS,
        allowed_cidrs=networks(record.allowed_cidrs),
    )


@dataclass(frozen=True)
class _Entry:
    """A validated token as cached: who it is, and what the idle and not_before checks need."""

    principal: Principal
    not_before: float | None
    last_used: float  # last_used_at as the store had it (created_at if never used)


class TokenValidator:
    def __init__(
        self,
        store: TokenStore,
        cfg: TokensConfig,
        prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.prefix = prefix
        self.clock = clock
        self.cache_hits = 0
        self.cache_misses = 0
        self.store_writes = 0
        self.last_poll = 0.0  # clock() of the last successful read of the revocation feed
        # Validated tokens by hash, each for cache_ttl seconds.
        self._cache: Expiring[bytes, _Entry] = Expiring(CACHE_SIZE, clock)
        # Uses seen by this process and perhaps not yet in the store (the idle check reads both).
        self._used: Expiring[str, float] = Expiring(CACHE_SIZE, clock)
        # A hash is remembered as revoked until the token would have expired anyway (the feed
        # does not say when, so those entries keep max_ttl). Bounded: under pressure the oldest
        # go first, and such a token is then refused by the store, or with 503 if it is down.
        self._revoked: Expiring[bytes, float] = Expiring(REVOKED_SIZE, clock)
        # Unknown hashes: a hash cannot become known later (nobody can present a secret before it
        # is minted, and an insert commits before the secret is shown), so a short negative cache
        # only refuses what the store would refuse, and never turns a refusal into an admission.
        self._unknown: Expiring[bytes, bool] = Expiring(UNKNOWN_SIZE, clock)
        self._unknown_ttl = min(UNKNOWN_TTL, cfg.cache_ttl)
        self._seq: int | None = None
        self._hashes: dict[str, bytes] = {}
        self._pending: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def authenticate(self, credential: str, requested_workspace: str | None = None) -> Principal | None:
        """A Principal for a good API token; None for a credential without the token prefix;
        raises for one with it that fails. `requested_workspace` is the JWT authenticator's
        concern (an API token carries its own); taken so both share the one signature."""
        if not credential.startswith(self.prefix):
            return None
        token_hash = self._hashes.get(credential)
        if token_hash is None:
            # SECURITY: shape and checksum first, so garbage never costs a store round trip.
            if not well_formed(credential, self.prefix):
                raise InvalidToken("malformed token")
            token_hash = hash_token(credential)
            # Well-formed credentials seen lately, by their hash: a pure function memoised, so a
            # busy token skips the checksum and SHA-256. What the hash grants is decided below.
            if len(self._hashes) >= HASH_MEMO:
                self._hashes.clear()
            self._hashes[credential] = token_hash
        now = self.clock()
        # SECURITY: a hash seen revoked stays refused, whatever the cache or the store says.
        if self._revoked.get(token_hash, now) is not None:
            raise InvalidToken("token revoked")
        entry = self._cache.get(token_hash, now)
        fresh = entry is None
        if entry is None:
            entry = await self._lookup(token_hash)
            now = self.clock()
        else:
            self.cache_hits += 1
        self._check_times(token_hash, entry, now)
        if self.cfg.idle_ttl is not None and self._idle(entry, now):
            # Another process may have used it since this entry was cached: ask the store before
            # refusing, so that only uses not yet flushed anywhere can be missed.
            if not fresh:
                self._drop(token_hash)
                entry = await self._lookup(token_hash)
                # SECURITY: the record just read is the one judged and returned: another
                # process may have moved its expiry earlier (a rotation's overlap).
                now = self.clock()
                self._check_times(token_hash, entry, now)
            if self._idle(entry, now):
                self._drop(token_hash)
                raise InvalidToken("token expired (idle)")
        return entry.principal

    def _check_times(self, token_hash: bytes, entry: _Entry, now: float) -> None:
        # SECURITY: expiry is checked on every request, cached or not.
        expires_at = entry.principal.expires_at
        if expires_at is not None and expires_at <= now:
            self._drop(token_hash)
            raise InvalidToken("token expired")
        if entry.not_before is not None and now < entry.not_before:
            raise InvalidToken("token not yet valid")

    def _idle(self, entry: _Entry, now: float) -> bool:
        assert self.cfg.idle_ttl is not None
        used = self._used.get(entry.principal.token_id or "", now)
        last = entry.last_used if used is None else max(entry.last_used, used)
        return now - last > self.cfg.idle_ttl

    def expires_early(self, token_hash: bytes, expires_at: float) -> None:
        """This process's view of a token whose expiry was moved earlier (a rotation's overlap)."""
        entry = self._cache.get(token_hash)
        if entry is not None:
            principal = dataclasses.replace(entry.principal, expires_at=expires_at)
            self._cache.set(token_hash, dataclasses.replace(entry, principal=principal), self._cached_until())

    async def _lookup(self, token_hash: bytes) -> _Entry:
        if token_hash in self._unknown:
            self.cache_hits += 1
            raise InvalidToken("unknown token")
        self.cache_misses += 1
        # The feed position must be fixed before the first lookup, or a revocation landing
        # between this lookup and the first poll would be skipped.
        await self._ensure_feed_position()
        record = await self.store.by_hash(token_hash)
        if record is None:
            self._unknown.set(token_hash, True, self.clock() + self._unknown_ttl)
            raise InvalidToken("unknown token")
        if record.revoked_at is not None:
            self.revoked_locally(token_hash, record.expires_at)
            raise InvalidToken("token revoked")
        # A poll may have marked it revoked while the lookup was in flight.
        if token_hash in self._revoked:
            raise InvalidToken("token revoked")
        entry = _Entry(
            principal_for(record), record.not_before, max(record.last_used_at or 0.0, record.created_at)
        )
        if record.expires_at > self.clock():
            self._cache.set(token_hash, entry, self._cached_until())
        return entry

    def revoked_locally(self, token_hash: bytes, expires_at: float | None = None) -> None:
        """Refuse this hash from now on and drop it from the cache."""
        entry = self._cache.pop(token_hash)
        if entry is not None and expires_at is None:
            expires_at = entry.principal.expires_at
        if expires_at is None:
            expires_at = self.clock() + self.cfg.max_ttl
        self._revoked.set(token_hash, expires_at, expires_at)

    def note_used(self, token_id: str) -> None:
        """Record a use of an allowed request; written in the next batch, never per request."""
        now = self.clock()
        self._pending[token_id] = now
        if self.cfg.idle_ttl is not None:
            self._used.set(token_id, now, now + self.cfg.idle_ttl)

    async def poll_once(self) -> None:
        """Apply revocations made anywhere on the store since the last poll, after carrying out
        the scheduled ones (rotations' overlaps) that have come due: any process may do that, and
        the revocation then reaches every process through the feed like any other."""
        for token_id, _ in await self.store.revoke_due(self.clock()):
            audit.info(json.dumps({"event": "token.revoke", "by": "rotation", "token_id": token_id}))
        if self._seq is None:
            await self._ensure_feed_position()
            self.last_poll = self.clock()
            return
        while True:
            newest, hashes = await self.store.revocations_since(self._seq)
            for token_hash in hashes:
                self.revoked_locally(token_hash)
            if newest < self._seq:
                # SECURITY: the feed went backwards (a replaced or restored store): trust no cache.
                log.warning(
                    "revocation feed moved back from %d to %d; clearing token cache", self._seq, newest
                )
                self._cache.clear()
            advanced = newest != self._seq
            self._seq = newest
            if not hashes or not advanced:
                self.last_poll = self.clock()
                return

    async def flush(self, pause: float = TOUCH_PAUSE, chunk: int = TOUCH_CHUNK) -> None:
        """Write pending last-used times, `chunk` to a transaction with up to `pause` seconds
        between two, the pauses shortened to fit in TOUCH_SPREAD of the flush interval. A busy
        gateway's batch is thousands of rows on random pages. Written in a burst, even in
        chunks, its thread took the CPU from the event loop's and set the one-connection
        cache-miss p99 (bench/run.py, store miss c1: 2.2 to 2.7 ms, against 0.7 ms with no
        flush); paced over the interval, and with that thread's priority lowered (the SQLite
        store's open), 1.2 to 1.6 ms. On failure, or when cancelled, what is not written is
        kept for the next flush (a chunk written twice is harmless: MAX)."""
        if not self._pending:
            return
        items = list(self._pending.items())
        self._pending = {}
        gaps = (len(items) - 1) // chunk
        if gaps:
            pause = min(pause, TOUCH_SPREAD * self.cfg.last_used_flush / gaps)
        for start in range(0, len(items), chunk):
            try:
                if start:
                    await asyncio.sleep(pause)
                await self.store.touch(dict(items[start : start + chunk]))
            except BaseException:
                for token_id, at in items[start:]:
                    self._pending[token_id] = max(at, self._pending.get(token_id, at))
                raise
        self.store_writes += 1

    async def _ensure_feed_position(self) -> None:
        if self._seq is not None:
            return
        head, _ = await self.store.revocations_since(_FEED_HEAD_PROBE)
        # A store that answers "nothing new" with the asked position gives no head: start at 0.
        self._seq = 0 if head >= _FEED_HEAD_PROBE else head

    def _drop(self, token_hash: bytes) -> None:
        self._cache.pop(token_hash)

    def _cached_until(self) -> float:
        return self.clock() + self.cfg.cache_ttl

    async def start(self) -> None:
        if self._tasks:
            return
        if isinstance(self.store, RevocationPush):
            # SECURITY: a pushed revocation is refused at once; the poll below still runs, so a
            # lost push connection only delays a revocation to the next poll.
            self.store.subscribe_revocations(self.revoked_locally)
        with contextlib.suppress(StoreUnavailable):
            await self._ensure_feed_position()
        self._tasks = [
            asyncio.create_task(self._every("revocation poll", self.cfg.revocation_poll, self.poll_once)),
            asyncio.create_task(self._every("last_used flush", self.cfg.last_used_flush, self.flush)),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.flush(pause=0)
        except StoreUnavailable as e:
            log.warning("final last_used flush failed, %d token(s) not updated: %s", len(self._pending), e)

    async def __aenter__(self) -> TokenValidator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @staticmethod
    async def _every(what: str, interval: float, job: Callable[[], Awaitable[None]]) -> None:
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except StoreUnavailable as e:
                if not failing:
                    log.warning("%s: token store unavailable: %s", what, e)
                failing = True
            except Exception:
                # A bug in one round must not end revocation polling for the life of the process.
                log.exception("%s failed", what)
            else:
                if failing:
                    log.info("%s: token store reachable again", what)
                failing = False
