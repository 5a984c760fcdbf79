"""The token store interface: SQLite (aiosqlite, sqlite.py) and PostgreSQL (asyncpg, postgres.py).

Every method raises `errors.StoreUnavailable` when the backing store cannot be reached or read,
so callers fail closed without knowing which store they talk to.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Status = Literal["active", "revoked", "all"]


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    display_prefix: str
    owner: str
    workspace: str
    project: str | None
    scopes: tuple[str, ...]
    targets: tuple[tuple[str, str], ...]
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    last_used_at: float | None = None
    created_by: str = ""
    # Added by schema v3 (issue 12): network binding, a start time, and rotation.
    not_before: float | None = None
    allowed_cidrs: tuple[str, ...] = ()
    rotated_from: str | None = None  # the token this one succeeded
    revoke_at: float | None = None  # a rotated token's scheduled revocation (end of its overlap)


@dataclass(frozen=True)
class ExpiryNotice:
    """One claimed expiry warning: the token, which threshold (seconds before expiry), the try."""

    record: TokenRecord
    threshold: int
    attempt: int


class TokenStore(Protocol):
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers a real read of the tokens table
        (what /readyz means); never answered from a cache or a connection's memory."""

    async def insert(self, record: TokenRecord, token_hash: bytes) -> None:
        """Persist durably before returning. Raises errors.Conflict when an active token of the
        same workspace and project already has that name."""

    async def by_hash(self, token_hash: bytes) -> TokenRecord | None: ...

    async def by_id(self, token_id: str) -> TokenRecord | None: ...

    async def list(
        self, workspace: str | None, *, project_level_only: bool = False, status: Status = "active"
    ) -> builtins.list[TokenRecord]: ...

    async def revoke(self, token_id: str, at: float) -> bytes | None:
        """Mark revoked and append to the revocation feed; the token's hash, or None when unknown
        or already revoked."""

    async def revocations_since(self, seq: int) -> tuple[int, builtins.list[bytes]]:
        """Token hashes revoked after feed position `seq`, and the newest position."""

    async def touch(self, last_used: dict[str, float]) -> None:
        """Batch-write last_used_at for token ids."""

    async def rotate(
        self, old_id: str, successor: TokenRecord, successor_hash: bytes, revoke_at: float | None
    ) -> bytes | None:
        """In one transaction: end the old token (revoked now when `revoke_at` is None, else
        expiring and scheduled for revocation at `revoke_at`) and insert its successor. The old
        token's hash, or None when it is unknown or revoked. Raises errors.Conflict when the old
        token was already rotated (a revocation is scheduled)."""

    async def revoke_due(self, now: float) -> builtins.list[tuple[str, bytes]]:
        """Revoke, through the feed, every token whose scheduled revocation has come; the
        (id, hash) pairs this call revoked (another process may have done some already)."""

    async def claim_expiry_notices(
        self, now: float, thresholds: Sequence[int], lease: float, limit: int = 100
    ) -> builtins.list[ExpiryNotice]:
        """Claim, for `lease` seconds, the unsent warnings that are due: a live token whose
        lifetime exceeds a threshold and whose expiry lies within it. A claim is exclusive across
        processes, so each (token, threshold) is sent by one process at a time."""

    async def finish_expiry_notice(
        self, token_id: str, threshold: int, *, sent: bool, retry_at: float
    ) -> None:
        """Record a delivery (never claimed again) or a failure (claimable from `retry_at`)."""


@runtime_checkable
class RevocationPush(Protocol):
    """A store that also pushes revocations as they commit (PostgreSQL LISTEN/NOTIFY).

    The polled feed stays authoritative; the push only makes a revocation arrive sooner.
    """

    push_connected: bool

    def subscribe_revocations(self, callback: Callable[[bytes], None]) -> None:
        """Call `callback(token_hash)` for every revocation committed anywhere on the store."""
