"""The CLI as a user runs it: `python -m gateway ...` in a folder holding config files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
admin: false
surface: routes.yaml
upstreams:
  default: http://127.0.0.1:9
store: sqlite:///tokens.db
log: {level: error}
"""

ROUTES = """\
routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
  - id: device-reboot
    match: {path: "/v1/devices/{device_id}/reboot", methods: [POST]}
    class: public
    scope: full
  - id: register-agent
    match: {path: /v1/agents/register, methods: [POST]}
    class: public
    scopes: ["nodes:create"]
  - id: admin
    match: {prefix: /v1/admin}
    class: jwt_only
  - id: agency-playlist
    match: {path: "/v1/workspaces/{workspace_id}/playlists/{playlist_id}", methods: [GET, PUT]}
    class: agency
    target: {param: playlist_id, kind: playlist}
    workspace_param: workspace_id
"""
# Line of each route's `- id:` in ROUTES.
LINES = {
    "health": 2,
    "playlists": 5,
    "device-reboot": 8,
    "register-agent": 12,
    "admin": 16,
    "agency-playlist": 19,
}


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "routes.yaml").write_text(ROUTES)
    return tmp_path.resolve()


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCOPEGATE_")}
    base["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_check_ok(folder: Path) -> None:
    r = run(folder, "check")
    assert (r.code, r.out, r.err) == (0, "ok: config.yaml and 1 surface file(s), 6 routes\n", "")


def test_check_ok_json(folder: Path) -> None:
    r = run(folder, "check", "--format", "json")
    assert (r.code, r.err) == (0, "")
    assert json.loads(r.out) == {"ok": True, "routes": 6, "problems": [], "warnings": []}


CHECK_ERRORS = [
    (
        CONFIG + "colour: blue\nlimits: {max_body: 10XB}\n",
        ROUTES,
        [
            ("config.yaml", 7, "config: unknown key 'colour'"),
            ("config.yaml", 8, "limits.max_body: expected a size such as 10MiB, got '10XB'"),
        ],
        "config-problems",
    ),
    (
        CONFIG,
        ROUTES.replace("class: jwt_only", "class: admin") + "  - id: health\n    match: {prefix: /auth/x}\n"
        "    class: public\n",
        [
            (
                "routes.yaml",
                18,
                "routes[admin].class: 'admin' is not one of anonymous, public, jwt_only, agency",
            ),
            ("routes.yaml", 24, "route id 'health' already used at {routes}:2"),
            ("routes.yaml", 24, "routes[health]: /auth/x lies inside the management mount /auth"),
        ],
        "surface-problems",
    ),
    (
        CONFIG.replace("surface: routes.yaml", "surface: missing.yaml"),
        ROUTES,
        [("missing.yaml", 0, "cannot read: No such file or directory")],
        "surface-file-missing",
    ),
    (
        CONFIG + "listen: {port: 1}\nlisten: {port: 2}\n",
        ROUTES,
        [("config.yaml", 8, "duplicate key 'listen'")],
        "duplicate-key",
    ),
]


@pytest.mark.parametrize(
    ("config", "routes", "expected"), [c[:3] for c in CHECK_ERRORS], ids=[c[3] for c in CHECK_ERRORS]
)
def test_check_reports_problems(
    folder: Path, config: str, routes: str, expected: list[tuple[str, int, str]]
) -> None:
    (folder / "config.yaml").write_text(config)
    (folder / "routes.yaml").write_text(routes)
    routes_file = str(folder / "routes.yaml")

    def where(name: str) -> str:
        # The config path is printed as given on the command line; surface files are absolute.
        return name if name == "config.yaml" else str(folder / name)

    text = run(folder, "check")
    assert (text.code, text.out) == (1, "")
    assert text.err.splitlines() == [
        f"{where(f)}:{line}: {msg.replace('{routes}', routes_file)}" for f, line, msg in expected
    ]

    js = run(folder, "check", "--format", "json")
    assert (js.code, js.err) == (1, "")
    assert json.loads(js.out) == {
        "ok": False,
        "routes": 0,
        "problems": [
            {"file": where(f), "line": line, "message": msg.replace("{routes}", routes_file)}
            for f, line, msg in expected
        ],
        "warnings": [],
    }


def test_routes_table(folder: Path) -> None:
    r = run(folder, "routes")
    assert (r.code, r.err) == (0, "")
    rows = [line.split() for line in r.out.splitlines()]
    assert rows == [
        ["ID", "MATCH", "METHODS", "CLASS", "REQUIRES", "UPSTREAM"],
        ["health", "path", "/v1/health", "GET,HEAD", "anonymous", "none", "default"],
        ["playlists", "prefix", "/v1/playlists", "*", "public", "read/write", "by", "method", "default"],
        ["device-reboot", "path", "/v1/devices/{device_id}/reboot", "POST", "public", "full", "default"],
        ["register-agent", "path", "/v1/agents/register", "POST", "public", "nodes:create", "default"],
        [
            "admin",
            "prefix",
            "/v1/admin",
            "*",
            "jwt_only",
            "read/write",
            "by",
            "method",
            "(JWT",
            "only)",
            "default",
        ],
        [
            "agency-playlist",
            "path",
            "/v1/workspaces/{workspace_id}/playlists/{playlist_id}",
            "GET,HEAD,PUT",
            "agency",
            "agency,",
            "target",
            "playlist",
            "default",
        ],
    ]


def _route_line(folder: Path, rid: str) -> str:
    return f"route:       {rid} ({folder / 'routes.yaml'}:{LINES[rid]})"


EXPLAIN = [
    (
        ["GET", "/v1/health"],
        0,
        [
            "@health",
            "class:       anonymous",
            "requires:    none",
            "credential:  none",
            "decision:    allow ok -> upstream default",
        ],
        "anonymous-allow",
    ),
    (
        ["get", "http://api.example/v1/health?verbose=1"],
        0,
        [
            "@health",
            "class:       anonymous",
            "requires:    none",
            "credential:  none",
            "decision:    allow ok -> upstream default",
        ],
        "absolute-url-lower-case-method",
    ),
    (
        ["GET", "/v1/nothing"],
        1,
        ["route:       none", "decision:    deny 404 no_route (no route matches this path)"],
        "no-route",
    ),
    (
        ["POST", "/v1/playlists"],
        1,
        [
            "@playlists",
            "class:       public",
            "requires:    write",
            "credential:  none",
            "decision:    deny 401 invalid_token (missing bearer credential)",
        ],
        "public-without-token",
    ),
    (
        ["GET", "/v1/playlists/7", "--token", "st_bogus"],
        1,
        [
            "@playlists",
            "class:       public",
            "requires:    read",
            "credential:  bearer credential given",
            "decision:    deny 401 invalid_token (malformed token)",
        ],
        "public-bad-token",
    ),
    (
        ["GET", "/v1/devices/9/reboot"],
        1,
        [
            "route:       none",
            "decision:    deny 405 method_not_allowed (method GET is not allowed on this path)",
        ],
        "wrong-method",
    ),
    (
        ["GET", "/v1/playlists/%2e%2e/admin"],
        1,
        ["route:       none", "decision:    deny 400 bad_path (dot segment in path)"],
        "bad-path",
    ),
    (
        # Issue 9 item 12: the raw target reaches path hygiene, never a URL library's resolution.
        ["GET", "http://host/v1/playlists/../admin"],
        1,
        ["route:       none", "decision:    deny 400 bad_path (dot segment in path)"],
        "absolute-url-dot-segments-not-resolved",
    ),
    (
        ["GET", "http://host/v1/playlists/./7?x=1"],
        1,
        ["route:       none", "decision:    deny 400 bad_path (dot segment in path)"],
        "absolute-url-single-dot-not-resolved",
    ),
    (
        ["GET", "http://host/v1/playlists/%252e%252e/admin"],
        1,
        [
            "route:       none",
            "decision:    deny 400 bad_path (double-encoded '.', '/', '\\' or NUL in path)",
        ],
        "absolute-url-double-encoded-dot",
    ),
]


@pytest.mark.parametrize(("args", "code", "lines"), [e[:3] for e in EXPLAIN], ids=[e[3] for e in EXPLAIN])
def test_explain(folder: Path, args: list[str], code: int, lines: list[str]) -> None:
    r = run(folder, "explain", *args)
    expected = [_route_line(folder, line[1:]) if line.startswith("@") else line for line in lines]
    assert (r.code, r.out.splitlines(), r.err) == (code, expected, "")


MISSING_CONFIG = [
    ["check", "-c", "nope.yaml"],
    ["routes", "-c", "nope.yaml"],
    ["explain", "GET", "/v1/health", "-c", "nope.yaml"],
    ["token", "list", "-c", "nope.yaml"],
]


@pytest.mark.parametrize("args", MISSING_CONFIG, ids=["check", "routes", "explain", "token-list"])
def test_missing_config_file_is_one_line(folder: Path, args: list[str]) -> None:
    r = run(folder, *args)
    assert (r.code, r.out, r.err) == (1, "", "nope.yaml:0: cannot read: No such file or directory\n")


def test_config_from_environment(folder: Path) -> None:
    other = folder / "elsewhere"
    other.mkdir()
    (other / "gw.yaml").write_text(CONFIG.replace("surface: routes.yaml", "surface: ../routes.yaml"))
    (folder / "config.yaml").write_text("colour: blue\n")
    r = run(folder, "check", env={"SCOPEGATE_CONFIG": str(other / "gw.yaml")})
    assert (r.code, r.out, r.err) == (0, f"ok: {other / 'gw.yaml'} and 1 surface file(s), 6 routes\n", "")


def test_explicit_config_beats_environment(folder: Path) -> None:
    r = run(folder, "check", "-c", "config.yaml", env={"SCOPEGATE_CONFIG": str(folder / "absent.yaml")})
    assert (r.code, r.out) == (0, "ok: config.yaml and 1 surface file(s), 6 routes\n")


def test_environment_beats_working_folder(folder: Path) -> None:
    r = run(folder, "routes", env={"SCOPEGATE_CONFIG": str(folder / "absent.yaml")})
    assert (r.code, r.out, r.err) == (
        1,
        "",
        f"{folder / 'absent.yaml'}:0: cannot read: No such file or directory\n",
    )


BAD_INVOCATIONS = [
    (["frob"], "scopegate: unknown command 'frob'", "unknown-subcommand"),
    ([], "scopegate: a command is required", "no-subcommand"),
    (["explain", "GET"], "scopegate explain: url is required", "explain-without-url"),
    (["check", "--format", "xml"], "scopegate check: --format: invalid choice: 'xml'", "bad-format"),
    (
        ["explain", "GET", "/v1/health", "--header", "nocolon"],
        "scopegate explain: --header 'nocolon': expected NAME:VALUE",
        "bad-header",
    ),
]


@pytest.mark.parametrize(
    ("args", "message"), [b[:2] for b in BAD_INVOCATIONS], ids=[b[2] for b in BAD_INVOCATIONS]
)
def test_bad_invocation_exits_2_without_traceback(folder: Path, args: list[str], message: str) -> None:
    r = run(folder, *args)
    assert (r.code, r.out) == (2, "")
    assert r.err.splitlines()[-1].startswith(message), r.err


def test_explain_unparsable_url_is_one_line(folder: Path) -> None:
    r = run(folder, "explain", "GET", "http://[::1")
    assert r.code == 2
    assert len(r.err.splitlines()) == 1


SHADOWED = [
    (["POST", "/v1/devices/7/reboot/"], "without its trailing slash", "trailing-slash"),
    (["POST", "http://h/V1/Devices/7/Reboot"], "with letter case ignored", "letter-case"),
    (["GET", "/V1/PLAYLISTS/7/"], "with letter case ignored", "case-and-slash-on-a-prefix"),
]


@pytest.mark.parametrize(("args", "why"), [s[:2] for s in SHADOWED], ids=[s[2] for s in SHADOWED])
def test_explain_says_which_stronger_rule_a_variant_shadows(folder: Path, args: list[str], why: str) -> None:
    (folder / "routes.yaml").write_text(
        ROUTES + "  - id: rest\n    match: {prefix: /}\n    class: anonymous\n"
    )
    r = run(folder, "explain", *args)
    rid = "playlists" if "PLAYLISTS" in args[1] else "device-reboot"
    cls = "public"
    assert (r.code, r.err) == (1, "")
    assert r.out.splitlines() == [
        "route:       none",
        f"shadows:     {rid} ({folder / 'routes.yaml'}:{LINES[rid]}), class {cls}",
        f"decision:    deny 404 no_route (this path matches a more specific rule {why})",
    ]


def test_check_warns_about_rules_under_a_weaker_prefix(folder: Path) -> None:
    (folder / "routes.yaml").write_text(
        ROUTES
        + """  - id: devices
    match: {prefix: /v1/devices}
    class: anonymous
  - id: rest
    match: {prefix: /}
    class: anonymous
  - id: reports
    match: {prefix: /Reports}
    class: public
"""
    )
    r = run(folder, "check")
    routes = folder / "routes.yaml"
    tail = "by a trailing slash or letter case is refused 404 no_route"
    assert r.code == 0
    assert r.out.startswith("ok: config.yaml")
    lines = r.err.splitlines()
    # Every rule stronger than the prefix around it is named once, with its nearest weaker prefix.
    named = {line.split("routes[")[1].split("]")[0]: line for line in lines}
    assert set(named) == {
        "playlists",
        "device-reboot",
        "register-agent",
        "admin",
        "agency-playlist",
        "reports",
    }
    assert named["device-reboot"] == (
        f"{routes}:8: warning: routes[device-reboot] sits under prefix /v1/devices of routes[devices] "
        f"(anonymous, weaker) at {routes}:24: a request differing from "
        f"/v1/devices/{{device_id}}/reboot {tail}"
    )
    assert "prefix / of routes[rest]" in named["reports"]
    assert all(line.endswith(tail) for line in lines)
    assert "routes[health]" not in r.err  # an anonymous rule is stronger than no prefix around it
    js = run(folder, "check", "--format", "json")
    assert js.code == 0
    assert len(json.loads(js.out)["warnings"]) == 6
