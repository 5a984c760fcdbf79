"""Fixtures of the in-process validator tests: every test here runs on a real SQLite file
(`store` overrides the parent's two-backend fixture), with and without `tokens.idle_ttl`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.config import TokensConfig
from gateway.tokens.sqlite import SqliteTokenStore
from gateway.tokens.validator import TokenValidator

from ..conftest import PREFIX, Clock

IDLE = 100.0


@pytest.fixture
async def store(db_path: str) -> AsyncIterator[SqliteTokenStore]:
    s = SqliteTokenStore(db_path)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def validator(store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock) -> TokenValidator:
    return TokenValidator(store, tokens_cfg, PREFIX, clock)


@pytest.fixture
def idle_validator(store: SqliteTokenStore, tokens_cfg: TokensConfig, clock: Clock) -> TokenValidator:
    return TokenValidator(store, replace(tokens_cfg, idle_ttl=IDLE), PREFIX, clock)


@pytest.fixture
async def replica(db_path: str, store: SqliteTokenStore) -> AsyncIterator[SqliteTokenStore]:
    """A second store on the same file: another replica."""
    s = SqliteTokenStore(db_path)
    await s.open()
    yield s
    await s.close()
