"""The build: the modules every request runs through are compiled to C with mypyc.

Metadata lives in pyproject.toml; this file only adds the compiled modules. Each request runs
the listed modules' Python for most of its CPU time (README, Performance); compiled, a request
costs about a fifth fewer instructions, with the same source and the same tests.

    pip install .                       # compiled when a C compiler is present
    SCOPEGATE_PURE=1 pip install -e .   # plain Python (and removes a previous build's files)

Without a C compiler (`cc`, or $CC) the package installs as plain Python, with a warning.
Beside the compiled modules the build writes `gateway/COMPILED`, the SHA-256 of each source it
compiled: `gateway/__init__.py` refuses to start when a source changed after its build, so an
editable install never runs stale compiled code.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
# The request path: the fast door, the pipeline's stages, the upstream pool, the token caches.
# Modules off the hot path stay Python, and so does proxy/forward.py: compiled, it doubled the
# kernel time of 1 MB downloads under 32 connections (bisected module by module; cause unknown).
HOT = [
    "gateway/web/fastbody.py",
    "gateway/web/fastdoor.py",
    "gateway/web/fasthead.py",
    "gateway/web/fastserve.py",
    "gateway/web/ledger.py",
    "gateway/web/management.py",  # /auth/verify (forward-auth)
    "gateway/web/tokens_api.py",  # subclasses the compiled failure limiter
    "gateway/pipeline.py",
    "gateway/authz.py",
    "gateway/scopes.py",
    "gateway/expiring.py",
    "gateway/observe.py",
    "gateway/surface/paths.py",
    "gateway/surface/matcher.py",
    "gateway/surface/model.py",  # the routes every decision reads
    "gateway/proxy/exchange.py",  # a request's round trip, up to the response head
    "gateway/proxy/headers.py",
    "gateway/proxy/pool.py",
    "gateway/proxy/response.py",
    "gateway/auth/bearer.py",
    "gateway/auth/jwt.py",
    "gateway/auth/principal.py",
    "gateway/auth/ratelimit.py",
    "gateway/tokens/validator.py",
]
MANIFEST = ROOT / "gateway" / "COMPILED"
GROUP = "scopegate"  # the shared runtime library: scopegate__mypyc.*.so


def _built_files() -> list[Path]:
    """What an earlier in-place (editable) build left in the tree, modules since dropped from
    HOT included: a stale extension module would shadow its source."""
    found = [ROOT / name for name in os.listdir(ROOT) if name.startswith(f"{GROUP}__mypyc.")]
    found += (ROOT / "gateway").rglob("*.cpython-*.so")
    return [MANIFEST, *found]


def _clear() -> None:
    for path in _built_files():
        path.unlink(missing_ok=True)


def ext_modules() -> list[object]:
    if "egg_info" in sys.argv or "dist_info" in sys.argv:
        return []  # metadata only
    if os.environ.get("SCOPEGATE_PURE") == "1":
        _clear()
        return []
    if not shutil.which(os.environ.get("CC", "cc")):
        print("scopegate: no C compiler found; installing as plain Python (slower)", file=sys.stderr)
        _clear()
        return []
    from mypyc.build import mypycify

    _clear()
    MANIFEST.write_text("".join(f"{hashlib.sha256((ROOT / s).read_bytes()).hexdigest()} {s}\n" for s in HOT))
    return list(mypycify(HOT, opt_level="3", group_name=GROUP))


setup(ext_modules=ext_modules())
