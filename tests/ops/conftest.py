"""Real processes for the operations tests: `scopegate serve` as a subprocess, nginx in front."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from tests.support import cli_create, spawn_serve, stop, wait_announced_sync

REPO = Path(__file__).resolve().parents[2]

# Forward-auth never forwards: scopegate's own `upstreams:` point nowhere on purpose.
ROUTES = """routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: status
    match: {prefix: /status}
    class: anonymous
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
  - id: admin
    match: {prefix: /v1/admin}
    class: jwt_only
"""


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening:\n{log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s:\n{log.read_text()}")


@dataclass(frozen=True)
class Scopegate:
    port: int
    folder: Path
    config: Path
    token: str
    token_id: str
    jwt: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def scopegate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scopegate]:
    """One `python -m gateway serve` for the module, with a read token and an HS256 JWT minted."""
    folder = tmp_path_factory.mktemp("scopegate")
    secret = secrets.token_urlsafe(48)
    (folder / "routes.yaml").write_text(ROUTES)
    config = folder / "config.yaml"
    config.write_text(
        f"""listen: {{host: 127.0.0.1, port: 0}}
admin: false
surface: routes.yaml
upstreams: {{default: "http://127.0.0.1:9"}}
store: sqlite:///tokens.db
log: {{level: error}}
jwt: {{algorithms: [HS256], secret: {json.dumps(secret)}}}
"""
    )
    record = cli_create(config, "--name", "t", "--workspace", "w", "--scope", "read")
    now = int(time.time())
    token_jwt = jwt.encode(
        {"sub": "alice", "workspace_id": "w", "iat": now, "exp": now + 3600}, secret, algorithm="HS256"
    )
    log = folder / "scopegate.log"
    proc = spawn_serve(config, log)
    try:
        port, _ = wait_announced_sync(proc, log)
        yield Scopegate(port, folder, config, record["token"], record["id"], token_jwt)
    finally:
        stop(proc)


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    return found
