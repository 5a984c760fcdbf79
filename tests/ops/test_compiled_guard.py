"""The compiled build's guard (gateway/__init__.py): a source edited after its module was compiled
makes scopegate refuse to start, naming the module, instead of running the stale compiled code."""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import gateway

PACKAGE = Path(gateway.__file__).resolve().parent


def _tree(tmp_path: Path, source: bytes, noted: bytes) -> Path:
    """A package with the real `__init__.py`, one module, and a COMPILED note of `noted`."""
    pkg = tmp_path / "gateway"
    pkg.mkdir()
    shutil.copy(PACKAGE / "__init__.py", pkg / "__init__.py")
    (pkg / "hot.py").write_bytes(source)
    (pkg / "COMPILED").write_text(f"{hashlib.sha256(noted).hexdigest()} gateway/hot.py\n")
    return tmp_path


def _import(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import gateway; print('started')"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_source_changed_after_its_build_refuses_to_start(tmp_path: Path) -> None:
    done = _import(_tree(tmp_path, b"X = 2\n", noted=b"X = 1\n"))
    assert done.returncode == 1
    assert "started" not in done.stdout
    assert done.stderr.strip() == (
        "scopegate: gateway/hot.py changed after it was compiled; rebuild with `pip install -e .` "
        "(or `SCOPEGATE_PURE=1 pip install -e .` for plain Python)"
    )


def test_an_unchanged_source_starts(tmp_path: Path) -> None:
    done = _import(_tree(tmp_path, b"X = 1\n", noted=b"X = 1\n"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "started\n", "")


def test_no_note_means_plain_python_and_starts(tmp_path: Path) -> None:
    root = _tree(tmp_path, b"X = 2\n", noted=b"X = 1\n")
    (root / "gateway" / "COMPILED").unlink()
    assert _import(root).returncode == 0


def test_ci_runs_the_compiled_build() -> None:
    """CI tests what users install: every module setup.py compiles is the compiled one (a build
    that fell back to plain Python for want of a compiler fails here, not silently)."""
    if os.environ.get("CI") != "true":
        pytest.skip("outside CI a plain-Python install (SCOPEGATE_PURE=1) is allowed")
    note = PACKAGE / "COMPILED"
    assert note.exists(), "no gateway/COMPILED: this install was not compiled"
    names = [line.partition(" ")[2] for line in note.read_text().splitlines()]
    assert len(names) >= 10
    for name in names:
        module = importlib.import_module(name.removesuffix(".py").replace("/", "."))
        assert str(module.__file__).endswith(tuple(EXTENSION_SUFFIXES)), name
