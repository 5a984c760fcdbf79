"""/readyz means the store answers a read (contract, section 11), against `scopegate serve`.

The SQLite file is broken under a running gateway: corrupted in place, replaced by a directory,
removed, made unreadable (mode 000; as root the gateway runs without the capabilities that ignore
mode bits). /readyz is 503 with the reason, and 200 again by itself once the file is put back.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Upstream
from tests.support import ROOT as REPO
from tests.support import cli_create, stop_async

from .test_metrics_logs import Served, fetch, poll_until, serve_config, serving, wait_ready

TIMEOUT = 20.0


async def readyz(gw: Served) -> tuple[int, dict[str, object]]:
    status, text = await fetch("GET", gw.admin_url + "/readyz")
    return status, json.loads(text)


async def wait_status(gw: Served, want: int) -> dict[str, object]:
    seen: dict[str, object] = {}

    async def check() -> bool:
        status, body = await readyz(gw)
        seen.update(body)
        return status == want

    assert await poll_until(check, TIMEOUT, 0.1), (want, seen, gw.log_text())
    return seen


def store_problem(body: dict[str, object]) -> str:
    problems = body.get("problems")
    assert isinstance(problems, list), body
    found = [p for p in problems if isinstance(p, str) and p.startswith("store:")]
    assert found, body
    return found[0]


def garble(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.write((b"no database here" * (size // 16 + 1))[:size])


async def test_corrupt_file_is_not_ready_until_repaired(tmp_path: Path, upstream: Upstream) -> None:
    async with serving(tmp_path, upstream.url) as gw:
        # The database and its write-ahead log together hold the store: garble both (the live
        # connection still answers `SELECT 1` from its page cache, which is why that proved nothing).
        files = [tmp_path / "tokens.db", tmp_path / "tokens.db-wal"]
        await wait_status(gw, 200)
        originals = {f: f.read_bytes() for f in files}
        for f in files:
            garble(f)
        body = await wait_status(gw, 503)
        assert "not a database" in store_problem(body), body
        for f, data in originals.items():
            with f.open("r+b") as out:
                out.write(data)
        await wait_status(gw, 200)


async def test_file_replaced_by_a_directory_is_not_ready(tmp_path: Path, upstream: Upstream) -> None:
    async with serving(tmp_path, upstream.url) as gw:
        db = tmp_path / "tokens.db"
        await wait_status(gw, 200)
        db.rename(tmp_path / "aside.db")
        db.mkdir()
        body = await wait_status(gw, 503)
        assert "cannot be read" in store_problem(body), body
        db.rmdir()
        (tmp_path / "aside.db").rename(db)
        await wait_status(gw, 200)


async def test_removed_file_restored_from_a_copy_is_read_again(tmp_path: Path, upstream: Upstream) -> None:
    async with serving(tmp_path, upstream.url) as gw:
        db = tmp_path / "tokens.db"
        await wait_status(gw, 200)
        backup = tmp_path / "backup.db"
        with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)
        db.unlink()
        body = await wait_status(gw, 503)
        assert "cannot be read" in store_problem(body), body
        assert not db.exists(), "the gateway must not create an empty store in the missing file's place"
        shutil.copyfile(backup, db)
        await wait_status(gw, 200)
        # The gateway reads the restored file, not the removed one it had open: a token minted
        # into the restored file by another process is honoured.
        created = cli_create(gw.config, "--name", "after-restore", "--workspace", "w1", "--scope", "read")
        status, _ = await fetch(
            "GET", gw.url + "/v1/playlists/1", headers={"Authorization": f"Bearer {created['token']}"}
        )
        assert status == 200, gw.log_text()


def _without_root_file_powers() -> list[str]:
    """A command prefix under which mode bits bind: as root, drop the capabilities that ignore them."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root ignores mode bits and setpriv (util-linux) is not installed")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


async def test_unreadable_file_is_not_ready(tmp_path: Path, upstream: Upstream) -> None:
    config, port, admin = serve_config(tmp_path, upstream.url)
    log = tmp_path / "stderr.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("SCOPEGATE_CONFIG", None)
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*_without_root_file_powers(), sys.executable, "-m", "gateway", "serve", "-c", str(config)],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=env,
        )
    gw = Served(proc, port, admin, tmp_path, config, tmp_path / "routes.yaml", log)
    db = tmp_path / "tokens.db"
    try:
        await wait_ready(gw)
        await wait_status(gw, 200)
        db.chmod(0)
        try:
            body = await wait_status(gw, 503)
        finally:
            db.chmod(0o600)
        assert "cannot be read" in store_problem(body), body
        await wait_status(gw, 200)
    finally:
        await stop_async(proc, 12)
