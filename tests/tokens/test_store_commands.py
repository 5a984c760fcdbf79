"""`scopegate store migrate` and `scopegate store copy`, run as real CLI processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.tokens.migrations import LATEST
from gateway.web.runtime import Runtime
from tests.conftest import write_config
from tests.pg import PgServer
from tests.support import cli_create, gateway_cli


def config_for(folder: Path, store: str) -> Path:
    folder.mkdir(exist_ok=True)
    return write_config(folder, "http://127.0.0.1:9", store=store)


def listed(config: Path) -> list[dict[str, Any]]:
    done = gateway_cli(config, "token", "list", "--status", "all", "--json")
    assert done.returncode == 0, done.stderr
    out: list[dict[str, Any]] = json.loads(done.stdout)
    return out


async def test_copy_moves_every_token_and_each_keeps_working(
    tmp_path: Path, pg_server: PgServer, pg_database: str
) -> None:
    lite = config_for(tmp_path / "lite", "sqlite:///tokens.db")
    kept = cli_create(lite, "--name", "kept", "--workspace", "w1", "--scope", "write")
    agent = cli_create(
        lite, "--name", "agent", "--workspace", "w1", "--project", "p1", "--scope", "agency",
        "--target", "playlist:9", "--target", "device:a", "--target", "playlist:1",
    )  # fmt: skip
    gone = cli_create(lite, "--name", "gone", "--workspace", "w2")
    assert gateway_cli(lite, "token", "revoke", gone["id"]).returncode == 0
    url = pg_server.url(pg_database)
    done = gateway_cli(
        lite, "store", "copy", "--from", f"sqlite:///{tmp_path / 'lite' / 'tokens.db'}", "--to", url
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "copied 3 token(s) (2 active), 3 target(s), 1 revocation(s)"
    pg = config_for(tmp_path / "pg", url)
    assert listed(pg) == listed(lite)  # ids, names, targets in order, times, revoked_at
    rt = Runtime(load_config(str(pg)))
    await rt.store.open()
    try:
        assert (await rt.validator.authenticate(kept["token"])) is not None
        principal = await rt.validator.authenticate(agent["token"])
        assert principal is not None and ("playlist", "9") in principal.targets
        with pytest.raises(Exception, match="revoked"):
            await rt.validator.authenticate(gone["token"])
        # The feed came across too: a replica starting from position 0 learns the revocation.
        _, hashes = await rt.store.revocations_since(0)
        assert len(hashes) == 1
    finally:
        await rt.validator.stop()
        await rt.store.close()
    # A second copy into the now non-empty database is refused, and changes nothing.
    again = gateway_cli(lite, "store", "copy", "--from", "sqlite:///tokens.db", "--to", url)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        "scopegate store copy: --to: the destination already holds tokens; copy into an empty database"
    ]
    assert len(listed(pg)) == 3


@pytest.mark.parametrize(
    ("source", "destination", "message"),
    [
        pytest.param(
            "postgresql://u@h/db", "postgresql://u@h/db2", "--from: must be a sqlite:/// store", id="from-pg"
        ),
        pytest.param(
            "sqlite:///a.db", "sqlite:///b.db", "--to: must be a postgresql:// store", id="to-sqlite"
        ),
        pytest.param(
            "sqlite:///missing.db", "postgresql://u@h/db", "--from: no such file: ", id="missing-file"
        ),
        pytest.param(
            "sqlite:///a.db",
            "postgresql://u:secret@h/db",
            "--to: keep the password out of the URL",
            id="password-in-url",
        ),
        pytest.param("mysql://x", "postgresql://u@h/db", "--from: expected sqlite:///path.db", id="scheme"),
    ],
)
def test_copy_refuses_bad_urls_with_one_line(
    tmp_path: Path, source: str, destination: str, message: str
) -> None:
    config = config_for(tmp_path / "c", "sqlite:///tokens.db")
    done = gateway_cli(config, "store", "copy", "--from", source, "--to", destination)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"scopegate store copy: {message}"), lines
    assert "secret" not in done.stderr


def test_migrate_on_sqlite_and_on_postgresql(tmp_path: Path, pg_server: PgServer, pg_database: str) -> None:
    lite = config_for(tmp_path / "lite", "sqlite:///tokens.db")
    done = gateway_cli(lite, "store", "migrate")
    assert (done.returncode, done.stdout.strip()) == (0, "sqlite:///tokens.db: schema up to date")
    url = pg_server.url(pg_database)
    pg = config_for(tmp_path / "pg", url)
    first, second = gateway_cli(pg, "store", "migrate"), gateway_cli(pg, "store", "migrate")
    assert first.stdout.strip() == f"{url}: applied {LATEST} migration(s)", first.stderr
    assert second.stdout.strip() == f"{url}: schema already up to date"


def test_migrate_with_the_database_unreachable_is_one_line(tmp_path: Path) -> None:
    config = config_for(tmp_path / "c", "postgresql://nobody@127.0.0.1:1/db")
    done = gateway_cli(config, "store", "migrate")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "scopegate store: store_unavailable: cannot open token store"
    ), lines
