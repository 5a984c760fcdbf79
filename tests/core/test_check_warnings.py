"""`scopegate check` warns (without failing) about legal but risky JWT settings; PyJWT is pinned."""

from __future__ import annotations

import json
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from .test_cli import CONFIG, REPO, folder, run

__all__ = ["folder"]  # the fixture, shared with test_cli

SECRET = "a-check-warnings-secret-of-more-than-32-bytes"
JWT_LINE = CONFIG.count("\n") + 1  # `jwt:` follows the base config
NO_ISSUER = "jwt.issuer is not set: a JWT from any issuer is accepted"
NO_AUDIENCE = "jwt.audience is not set: a JWT without an `aud` claim is accepted, whatever API it was for"
FULL = "neither jwt.roles nor jwt.claims.scopes is set: every valid JWT holds `full`"


def _jwt(**keys: str) -> str:
    body = {"algorithms": "[HS256]", "secret": json.dumps(SECRET), **keys}
    return "jwt:\n" + "".join(f"  {k}: {v}\n" for k, v in body.items())


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        pytest.param(_jwt(), [NO_ISSUER, NO_AUDIENCE, FULL], id="bare"),
        pytest.param(_jwt(issuer="https://idp.example/"), [NO_AUDIENCE, FULL], id="issuer-only"),
        pytest.param(_jwt(issuer="https://idp.example/", audience="api"), [FULL], id="full-by-default"),
        pytest.param(
            _jwt(issuer="https://idp.example/", audience="api", claims="{scopes: scope}"),
            [],
            id="scope-claim",
        ),
        pytest.param(
            _jwt(issuer="https://idp.example/", audience="api", roles="{viewer: [read]}"), [], id="roles"
        ),
        pytest.param("", [], id="no-jwt"),
    ],
)
def test_check_warns_about_risky_jwt_settings(folder: Path, block: str, expected: list[str]) -> None:
    (folder / "config.yaml").write_text(CONFIG + block)
    r = run(folder, "check")
    assert (r.code, r.out) == (0, "ok: config.yaml and 1 surface file(s), 6 routes\n")
    assert r.err.splitlines() == [f"config.yaml:{JWT_LINE}: warning: {w}" for w in expected]
    as_json = run(folder, "check", "--format", "json")
    assert as_json.code == 0
    report = json.loads(as_json.out)
    assert report["ok"] is True and report["problems"] == []
    assert [(w["line"], w["message"]) for w in report["warnings"]] == [(JWT_LINE, w) for w in expected]


STORE_LINE = CONFIG.splitlines().index("store: sqlite:///tokens.db") + 1
WEAK = "the link may fall back to plain text and the server's certificate is not checked; "
WEAK += "use sslmode=verify-full (and sslrootcert=...)"


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        pytest.param(
            "postgresql://gw@db.internal/tokens",
            f"store: no sslmode (asyncpg's default, prefer) on db.internal: {WEAK}",
            id="no-sslmode",
        ),
        pytest.param(
            "postgresql://gw@db.internal/tokens?sslmode=require",
            f"store: sslmode=require on db.internal: {WEAK}",
            id="require",
        ),
        pytest.param(
            "postgres://gw@10.0.0.5:6432/tokens?sslmode=prefer",
            f"store: sslmode=prefer on 10.0.0.5: {WEAK}",
            id="prefer",
        ),
        pytest.param("postgresql://gw@db.internal/tokens?sslmode=verify-full", None, id="verify-full"),
        pytest.param("postgresql://gw@db.internal/tokens?sslmode=verify-ca", None, id="verify-ca"),
        pytest.param("postgresql://gw@127.0.0.1:5432/tokens", None, id="loopback"),
        pytest.param("postgresql://gw@localhost/tokens?sslmode=disable", None, id="localhost"),
        pytest.param("sqlite:///tokens.db", None, id="sqlite"),
    ],
)
def test_check_warns_about_a_store_link_without_a_checked_certificate(
    folder: Path, store: str, expected: str | None
) -> None:
    (folder / "config.yaml").write_text(CONFIG.replace("sqlite:///tokens.db", store))
    r = run(folder, "check")
    assert (r.code, r.out) == (0, "ok: config.yaml and 1 surface file(s), 6 routes\n")
    assert r.err.splitlines() == ([f"config.yaml:{STORE_LINE}: warning: {expected}"] if expected else [])
    report = json.loads(run(folder, "check", "--format", "json").out)
    assert report["ok"] is True
    assert [w["message"] for w in report["warnings"]] == ([expected] if expected else [])


def test_pyjwt_is_pinned_past_the_issuer_substring_bug() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [Requirement(d) for d in project["dependencies"] if Requirement(d).name.lower() == "pyjwt"]
    assert len(pins) == 1
    assert "2.10.0" not in pins[0].specifier  # CVE-2024-53861: `iss` compared by substring
    assert "2.10.1" in pins[0].specifier
    assert version("PyJWT") in pins[0].specifier
