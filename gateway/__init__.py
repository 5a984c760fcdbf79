"""scopegate: an authorization gateway in front of existing HTTP APIs."""

import hashlib
from pathlib import Path

__version__ = "0.1.0"


def _compiled_sources_unchanged() -> None:
    """The build compiles the request path with mypyc (setup.py) and notes each source's SHA-256
    in `COMPILED`. A source edited after that build would not run: its stale compiled module
    would. Refuse to start instead, saying how to rebuild."""
    here = Path(__file__).resolve().parent
    try:
        manifest = (here / "COMPILED").read_text()
    except FileNotFoundError:
        return  # plain Python: nothing compiled
    for line in manifest.splitlines():
        digest, _, name = line.partition(" ")
        source = here.parent / name
        try:
            current = hashlib.sha256(source.read_bytes()).hexdigest()
        except FileNotFoundError:
            continue  # an installed package may ship the compiled module alone
        if current != digest:
            raise SystemExit(
                f"scopegate: {name} changed after it was compiled; rebuild with "
                "`pip install -e .` (or `SCOPEGATE_PURE=1 pip install -e .` for plain Python)"
            )


_compiled_sources_unchanged()
