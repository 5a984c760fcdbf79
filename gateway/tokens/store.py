"""The token store interface: SQLite (aiosqlite, sqlite.py) and PostgreSQL (asyncpg, postgres.py).

Every method raises `errors.StoreUnavailable` when the backing store cannot be reached or read,
so callers fail closed without knowing which store they talk to.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
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


@runtime_checkable
class RevocationPush(Protocol):
    """A store that also pushes revocations as they commit (PostgreSQL LISTEN/NOTIFY).

    The polled feed stays authoritative; the push only makes a revocation arrive sooner.
    """

    push_connected: bool

    def subscribe_revocations(self, callback: Callable[[bytes], None]) -> None:
        """Call `callback(token_hash)` for every revocation committed anywhere on the store."""
