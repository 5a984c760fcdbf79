"""`jwt.max_lifetime` and `jwt.jwks_max_stale`: parsed as durations, refused with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError

SECRET = "s" * 32
HEAD = f"surface: routes.yaml\njwt:\n  algorithms: [HS256]\n  secret: {SECRET}\n"


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(str(_write(tmp_path, "")))
    assert cfg.jwt is not None
    assert cfg.jwt.max_lifetime is None
    assert cfg.jwt.jwks_max_stale == 24 * 3600


def _write(tmp_path: Path, lines: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + lines)
    return path


@pytest.mark.parametrize(
    ("line", "lifetime", "stale"),
    [
        pytest.param("  max_lifetime: 30d\n", 30 * 86400, 86400, id="lifetime-days"),
        pytest.param("  max_lifetime: 3600\n", 3600, 86400, id="lifetime-seconds"),
        pytest.param("  max_lifetime: null\n", None, 86400, id="lifetime-null"),
        pytest.param("  max_lifetime: off\n", None, 86400, id="lifetime-off-yaml-false"),
        pytest.param("  max_lifetime: 'off'\n", None, 86400, id="lifetime-off-string"),
        pytest.param("  jwks_max_stale: 1h\n", None, 3600, id="stale-hours"),
    ],
)
def test_values(tmp_path: Path, line: str, lifetime: float | None, stale: float) -> None:
    cfg = load_config(str(_write(tmp_path, line)))
    assert cfg.jwt is not None
    assert (cfg.jwt.max_lifetime, cfg.jwt.jwks_max_stale) == (lifetime, stale)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param(
            "  max_lifetime: soon\n",
            "jwt.max_lifetime: expected a positive duration such as 30d, or null, got 'soon'",
            id="lifetime-word",
        ),
        pytest.param(
            "  max_lifetime: 0\n",
            "jwt.max_lifetime: expected a positive duration such as 30d, or null, got 0",
            id="lifetime-zero",
        ),
        pytest.param(
            "  jwks_max_stale: -5\n",
            "jwt.jwks_max_stale: expected a positive duration such as 24h, got -5",
            id="stale-negative",
        ),
        pytest.param(
            "  jwks_max_stale: true\n",
            "jwt.jwks_max_stale: expected a positive duration such as 24h, got True",
            id="stale-bool",
        ),
        pytest.param("  max_lifetim: 1d\n", "jwt: unknown key 'max_lifetim'", id="typo"),
    ],
)
def test_bad_values_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path, line)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert [str(p) for p in info.value.problems] == [f"{path}:5: {message}"]
