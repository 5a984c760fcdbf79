"""CLI usage errors are one line and exit 2, for every command; store commands need only the store.

Run as a user runs them: `python -m gateway ...` in a folder holding the config files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main

from .test_cli import CONFIG, folder, run

__all__ = ["folder"]  # the fixture, shared with test_cli

MINT = ["token", "create", "--name", "n", "--workspace", "w1"]

# (arguments, the one line on stderr)
USAGE_ERRORS = [
    pytest.param([], "scopegate: a command is required", id="no-command"),
    pytest.param(["frob"], "scopegate: unknown command 'frob'", id="unknown-command"),
    pytest.param(
        ["--bogus", "serve"], "scopegate: unknown option --bogus before the command", id="top-option"
    ),
    pytest.param(
        ["serve", "--port", "abc"], "scopegate serve: --port: invalid int value: 'abc'", id="serve-port"
    ),
    pytest.param(
        ["serve", "--workers", "0"], "scopegate serve: --workers must be at least 1", id="serve-workers"
    ),
    pytest.param(["serve", "--bogus"], "scopegate serve: unknown option --bogus", id="serve-unknown-option"),
    pytest.param(
        ["check", "--format", "xml"],
        "scopegate check: --format: invalid choice: 'xml' (choose from 'text', 'json')",
        id="check-format",
    ),
    pytest.param(
        ["check", "--openapi"], "scopegate check: --openapi: expected one argument", id="check-no-value"
    ),
    pytest.param(["routes", "extra"], "scopegate routes: unexpected argument 'extra'", id="routes-extra"),
    pytest.param(["explain"], "scopegate explain: method and url are required", id="explain-nothing"),
    pytest.param(
        ["explain", "GET", "/v1/health", "--wat"],
        "scopegate explain: unknown option --wat",
        id="explain-option",
    ),
    pytest.param(
        ["token"],
        "scopegate token: a token command (create, list, revoke or rotate) is required",
        id="token-nothing",
    ),
    pytest.param(["token", "frob"], "scopegate token: unknown command 'frob'", id="token-unknown"),
    pytest.param(
        ["token", "create"],
        "scopegate token create: --name and --workspace are required",
        id="create-nothing",
    ),
    pytest.param(
        ["token", "create", "--workspace", "w1"],
        "scopegate token create: --name is required",
        id="create-no-name",
    ),
    pytest.param(
        ["token", "create", "--name"],
        "scopegate token create: --name: expected one argument",
        id="create-name-bare",
    ),
    pytest.param(
        [*MINT, "--target", "nocolon"],
        "scopegate token create: --target 'nocolon': expected KIND:ID",
        id="target",
    ),
    pytest.param(
        [*MINT, "--expires-in", "soon"],
        "scopegate token create: invalid_request: expires_in: must be seconds or a duration such as "
        "30d or 12h",
        id="create-bad-expiry",
    ),
    pytest.param(
        [*MINT, "--scope", "nope"],
        "scopegate token create: invalid_request: scopes: unknown scope 'nope'",
        id="create-unknown-scope",
    ),
    # str.isdigit() is true of these; int() refuses the first and reads the second as a number.
    *[
        pytest.param(
            [*MINT, "--not-before", digits],
            "scopegate token create: invalid_request: not_before: must be an RFC 3339 time such as "
            "2026-01-01T00:00:00Z",
            id=f"create-not-before-{kind}-digits",
        )
        for digits, kind in (("\u00b2", "superscript"), ("\u0661\u0667" + "\u0669" * 8, "arabic-indic"))
    ],
    pytest.param(
        ["token", "list", "--status", "gone"],
        "scopegate token list: --status: invalid choice: 'gone' (choose from 'active', 'revoked', 'all')",
        id="list-status",
    ),
    pytest.param(
        ["token", "list", "--frob"], "scopegate token list: unknown option --frob", id="list-option"
    ),
    pytest.param(["token", "revoke"], "scopegate token revoke: id is required", id="revoke-no-id"),
    pytest.param(
        ["token", "revoke", "a", "b"], "scopegate token revoke: unexpected argument 'b'", id="revoke-two"
    ),
    pytest.param(["demo", "--port", "x"], "scopegate demo: --port: invalid int value: 'x'", id="demo-port"),
]


@pytest.mark.parametrize(("args", "line"), USAGE_ERRORS)
def test_usage_error_is_one_line_and_exit_2(
    folder: Path,
    args: list[str],
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In process (the same `main` that `python -m gateway` runs), for speed; see the next test.
    monkeypatch.chdir(folder)
    monkeypatch.delenv("SCOPEGATE_CONFIG", raising=False)
    code = main(args)
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", f"{line} (see --help)\n")


@pytest.mark.parametrize(
    "args", [["token", "create", "--workspace", "w1"], ["frob"], ["token", "list", "--status", "gone"]]
)
def test_usage_error_from_the_command_line(folder: Path, args: list[str]) -> None:
    r = run(folder, *args)
    assert r.code == 2 and r.out == "" and len(r.err.splitlines()) == 1, r
    assert r.err.endswith(" (see --help)\n")


@pytest.mark.parametrize("args", [["--help"], ["token", "create", "--help"], ["serve", "-h"]])
def test_help_is_still_help(folder: Path, args: list[str]) -> None:
    r = run(folder, *args)
    assert (r.code, r.err) == (0, "")
    assert r.out.startswith("usage: scopegate")


# --- store commands read only what they need (issue 9, item 10) -------------------------------

# An HS256 `jwt:` block whose secret comes from $SCOPEGATE_JWT_SECRET, which is not set.
JWT_FROM_ENV = 'jwt: {algorithms: [HS256], issuer: "https://idp.example/", audience: my-api}\n'
NO_SECRET = "jwt: HS* algorithms need `secret` or $SCOPEGATE_JWT_SECRET"


def _with(folder: Path, extra: str) -> Path:
    (folder / "config.yaml").write_text(CONFIG + extra)
    return folder


def test_token_commands_need_no_jwt_secret(folder: Path) -> None:
    _with(folder, JWT_FROM_ENV)
    created = run(folder, *MINT, "--scope", "nodes:create", "--json")
    assert (created.code, created.err) == (0, ""), created.err
    token_id = json.loads(created.out)["id"]
    listed = run(folder, "token", "list", "--json")
    assert (listed.code, listed.err) == (0, "")
    assert [t["id"] for t in json.loads(listed.out)] == [token_id]
    revoked = run(folder, "token", "revoke", token_id)
    assert (revoked.code, revoked.out, revoked.err) == (0, f"revoked {token_id}\n", "")
    assert run(folder, "routes").code == 0


@pytest.mark.parametrize("command", [["check"], ["serve", "--port", "0"]])
def test_serve_and_check_still_validate_the_whole_config(folder: Path, command: list[str]) -> None:
    _with(folder, JWT_FROM_ENV)
    r = run(folder, *command)
    assert r.code == 1
    assert [line.split(": ", 1)[1] for line in r.err.splitlines()] == [NO_SECRET], r.err
    assert r.err.startswith(f"{folder / 'config.yaml'}:") or r.err.startswith("config.yaml:"), r.err


def test_revoke_works_while_other_sections_are_broken(folder: Path) -> None:
    # An emergency revocation must not wait for a fix to the listener, limits or surface files.
    created = json.loads(run(folder, *MINT, "--json").out)
    _with(folder, "limits: {max_body: lots}\n" + JWT_FROM_ENV)
    (folder / "routes.yaml").write_text("routes: [\n")
    revoked = run(folder, "token", "revoke", created["id"])
    assert (revoked.code, revoked.err) == (0, "")
    assert run(folder, "token", "list", "--status", "revoked", "--json").code == 0
    # Minting checks scopes against the surface's catalogue, so it reports the broken surface.
    minted = run(folder, *MINT)
    assert minted.code == 1 and "routes.yaml:" in minted.err, minted.err
    # Unknown top-level keys stay errors for every command.
    _with(folder, "listn: {port: 1}\n")
    unknown = run(folder, "token", "list")
    assert unknown.code == 1 and "config: unknown key 'listn'" in unknown.err, unknown.err
