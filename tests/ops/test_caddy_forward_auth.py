"""Caddy alone: the Caddyfile we ship is formatted and adapts with its admin endpoint off.

The proofs both proxies share (allowed, refused, spoofed, the app's own errors) are in
test_forward_auth_fronts.py; Caddy is started as tests/ops/fronts.py says.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .fronts import CADDYFILE, caddy_binary, caddy_env


def test_the_shipped_caddyfile_is_formatted_and_valid(tmp_path: Path) -> None:
    binary = caddy_binary()
    formatted = subprocess.run(
        [binary, "fmt", str(CADDYFILE)], capture_output=True, text=True, timeout=60, check=True
    )
    assert formatted.stdout == CADDYFILE.read_text()
    checked = subprocess.run(
        [binary, "adapt", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
        capture_output=True,
        text=True,
        env=caddy_env(tmp_path),
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert '"disabled":true' in checked.stdout.replace(" ", "")  # admin off
