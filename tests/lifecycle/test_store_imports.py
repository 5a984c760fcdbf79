"""A gateway on a SQLite store never loads the PostgreSQL driver (issue 10: a worker's memory).

The real `serve` process is asked: with PYTHONPROFILEIMPORTTIME set, Python writes a line to
stderr for every module it imports, at start or later. The process starts, admits a token (a
store lookup) and revokes nothing; its stderr must name the SQLite store and never asyncpg.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Upstream
from tests.support import cli_create

from .conftest import serve_config, serving, status_of


async def test_a_sqlite_gateway_never_imports_asyncpg(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = serve_config(tmp_path, upstream.url, extra="tokens: {cache_ttl: 0.001}\n")
    created = cli_create(config, "--name", "ci", "--workspace", "w1", "--scope", "read")
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    async with serving(config) as (gw,), aiohttp.ClientSession() as session:
        for _ in range(3):  # cache misses: each one a store lookup
            assert await status_of(session, f"{gw.url}/v1/playlists/1", created["token"]) == 200
        assert await status_of(session, f"{gw.url}/v1/playlists/1", "st_" + "x" * 38) == 401
    imported = {line.rsplit("|", 1)[-1].strip() for line in gw.log_lines() if line.startswith("import time:")}
    assert "gateway.tokens.sqlite" in imported, "the import log was not captured"
    postgres = {m for m in imported if m.split(".")[0] == "asyncpg" or m == "gateway.tokens.postgres"}
    assert not postgres
