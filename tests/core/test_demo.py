"""`scopegate demo`: the README's first command, run as a user would, checks its own walkthrough."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_walkthrough_answers_as_printed(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--check", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 7 and all(line.startswith("ok ") for line in lines), done.stdout
    assert "Traceback" not in done.stderr


def test_demo_ships_the_example_policies() -> None:
    shipped = REPO / "gateway" / "demo" / "example.yaml"
    assert shipped.read_text() == (REPO / "policies" / "example.yaml").read_text()
