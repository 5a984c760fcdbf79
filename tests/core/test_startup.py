"""Start-up failures are one line and an exit code, and leave no process behind."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_config


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, "http://127.0.0.1:9")
        # The timeout proves the process exits by itself: before, the store's thread kept it alive.
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "-c", str(config), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("scopegate:")]
    assert lines == [lines[0]] and f"cannot listen on 127.0.0.1:{port}" in lines[0]


def test_unusable_jwt_key_is_a_config_error_for_check_and_serve(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("not a key\n")
    config = write_config(
        tmp_path, "http://127.0.0.1:9", extra="jwt:\n  algorithms: [RS256]\n  public_key_file: key.pem\n"
    )
    line = config.read_text().splitlines().index("jwt:") + 1
    for command in ("check", "serve"):
        done = subprocess.run(
            [sys.executable, "-m", "gateway", command, "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert done.returncode == 1, command
        assert "Traceback" not in done.stderr
        assert f"{config}:{line}: jwt.public_key_file: not a PEM public key or certificate" in done.stderr
