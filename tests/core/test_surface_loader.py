"""load_surface: every problem is `file:line: message`; valid files give exact Route objects."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.surface.loader import load_surface
from gateway.surface.matcher import Matcher, Verdict
from gateway.surface.model import Route, RouteClass, Target
from gateway.surface.paths import clean

REPO = Path(__file__).resolve().parents[2]
CLASSES = "anonymous, public, jwt_only, agency"


def write(folder: Path, body: str, name: str = "routes.yaml") -> Path:
    path = folder / name
    path.write_text("routes:\n" + textwrap.dedent(body))
    return path


def problems(files: list[Path], upstreams: tuple[str, ...] = ("default",), mount: str = "/auth") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_surface([str(f) for f in files], upstreams, mount)
    return [str(p) for p in info.value.problems]


# Each body starts on line 2 of the file (line 1 is `routes:`). `{f}` stands for the file's path.
ERRORS = [
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: public
          scpe: full
        """,
        [(5, "route at line 2: unknown key 'scpe'")],
        "unknown-route-key",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a, method: [GET]}
          class: public
        """,
        [(3, "routes[a].match: unknown key 'method'")],
        "unknown-match-key",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
        """,
        [(2, f"routes[a]: missing 'class' (one of {CLASSES})")],
        "missing-class",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: admin
        """,
        [(4, f"routes[a].class: 'admin' is not one of {CLASSES}")],
        "unknown-class",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a, prefix: /v1}
          class: public
        """,
        [(3, "routes[a].match: needs exactly one of 'path' or 'prefix'")],
        "path-and-prefix",
    ),
    (
        """\
        - id: a
          match: {methods: [GET]}
          class: public
        """,
        [(3, "routes[a].match: needs exactly one of 'path' or 'prefix'")],
        "neither-path-nor-prefix",
    ),
    (
        """\
        - id: a
          class: public
        """,
        [
            (2, "routes[a].match: expected a mapping"),
            (2, "routes[a]: missing 'match'"),
            (2, "routes[a].match: needs exactly one of 'path' or 'prefix'"),
        ],
        "missing-match",
    ),
    (
        """\
        - id: a b
          match: {path: /v1/a}
          class: public
        """,
        [(2, "route: 'id' must be 1-64 of [A-Za-z0-9_.-], got 'a b'")],
        "bad-id",
    ),
    (
        """\
        - match: {path: /v1/a}
          class: nope
        """,
        [
            (2, "route: 'id' must be 1-64 of [A-Za-z0-9_.-], got None"),
            (3, f"routes[<line 2>].class: 'nope' is not one of {CLASSES}"),
        ],
        "missing-id",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: jwt_only
          scope: full
        """,
        [(5, "routes[a].scope: only public routes take scope, one of read, write, full")],
        "scope-on-jwt-only",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: anonymous
          scope: read
        """,
        [(5, "routes[a].scope: only public routes take scope, one of read, write, full")],
        "scope-on-anonymous",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: public
          scope: admin
        """,
        [(5, "routes[a].scope: only public routes take scope, one of read, write, full")],
        "scope-not-a-rung",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: jwt_only
          scopes: ["nodes:create"]
        """,
        [(5, "routes[a].scopes: only public routes take fine-grained scopes")],
        "scopes-on-jwt-only",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: public
          scope: full
          scopes: ["nodes:create"]
        """,
        [(6, "routes[a]: give either 'scope' or 'scopes', not both")],
        "scope-and-scopes",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: public
          scopes: []
        """,
        [(5, "routes[a].scopes: expected a non-empty list of resource:action")],
        "scopes-empty",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: public
          scopes:
            - nodes:create
            - Nodes:create
            - nodes
            - "nodes:*"
            - "nodes:create:x"
        """,
        [
            (7, "routes[a].scopes[1]: 'Nodes:create' is not a resource:action scope"),
            (8, "routes[a].scopes[2]: 'nodes' is not a resource:action scope"),
            (9, "routes[a].scopes[3]: 'nodes:*' is not a resource:action scope"),
            (10, "routes[a].scopes[4]: 'nodes:create:x' is not a resource:action scope"),
        ],
        "bad-fine-scopes",
    ),
    (
        """\
        - id: a
          match: {path: "/v1/w/{ws}/p/{pid}"}
          class: agency
          target: {param: pid}
        """,
        [(5, "routes[a].target.kind: expected a target kind")],
        "agency-target-without-kind",
    ),
    (
        """\
        - id: a
          match: {path: "/v1/w/{ws}/p/{pid}"}
          class: agency
          target:
            param: playlist_id
            kind: playlist
        """,
        [(6, "routes[a].target.param: 'playlist_id' is not a parameter of the path")],
        "agency-target-param-not-in-path",
    ),
    (
        """\
        - id: a
          match: {prefix: /v1/p}
          class: agency
          target: {param: pid, kind: playlist}
        """,
        [(3, "routes[a]: an agency route needs a 'path' with its target parameter")],
        "agency-on-prefix",
    ),
    (
        """\
        - id: a
          match: {path: "/v1/p/{pid}"}
          class: public
          target: {param: pid, kind: playlist}
        """,
        [(5, "routes[a].target: only agency routes take a target")],
        "target-on-public",
    ),
    (
        """\
        - id: a
          match: {path: "/v1/w/{workspace}/p/{pid}"}
          class: agency
          target: {param: pid, kind: playlist}
          workspace_param: workspace_id
        """,
        [(6, "routes[a].workspace_param: 'workspace_id' is not a path parameter")],
        "workspace-param-not-in-path",
    ),
    (
        """\
        - id: a
          match: {prefix: /v1/w}
          class: public
          workspace_param: ws
        """,
        [(5, "routes[a].workspace_param: 'ws' is not a path parameter")],
        "workspace-param-on-prefix",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: public
          upstream: billing
        """,
        [(5, "routes[a].upstream: 'billing' is not defined in upstreams")],
        "undefined-upstream",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: public
          mode: dry-run
        """,
        [(5, "routes[a].mode: expected enforce or shadow, got 'dry-run'")],
        "bad-mode",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: public
          description: [x]
        """,
        [(5, "routes[a].description: expected a string")],
        "description-not-string",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a, methods: GET}
          class: public
        """,
        [(3, "routes[a].match.methods: expected a non-empty list")],
        "methods-not-list",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a, methods: [GET, post]}
          class: public
        """,
        [(3, "routes[a].match.methods: 'post' is not an upper-case method")],
        "methods-lower-case",
    ),
    (
        """\
        - id: a
          match: {path: /v1/../admin}
          class: public
        """,
        [(3, "routes[a].match.path: dot segment in path")],
        "path-dotdot",
    ),
    (
        """\
        - id: a
          match: {prefix: /v1/./admin}
          class: public
        """,
        [(3, "routes[a].match.prefix: dot segment in path")],
        "prefix-dot",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a/}
          class: public
        """,
        [(3, "routes[a].match.path: must not end with '/'")],
        "path-trailing-slash",
    ),
    (
        """\
        - id: a
          match: {prefix: /v1/a/}
          class: public
        """,
        [(3, "routes[a].match.prefix: must not end with '/'")],
        "prefix-trailing-slash",
    ),
    (
        """\
        - id: a
          match: {path: /v1//a}
          class: public
        """,
        [(3, "routes[a].match.path: empty path segment")],
        "path-empty-segment",
    ),
    (
        """\
        - id: a
          match: {path: v1/a}
          class: public
        """,
        [(3, "routes[a].match.path: expected an absolute path starting with '/', got 'v1/a'")],
        "path-relative",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a%2Fb}
          class: public
        """,
        [(3, "routes[a].match.path: encoded '/', '\\' or NUL in path")],
        "path-encoded-slash",
    ),
    (
        """\
        - id: a
          match: {prefix: "/v1/{id}"}
          class: public
        """,
        [(3, "routes[a].match.prefix: a prefix cannot contain parameters ({id})")],
        "prefix-with-param",
    ),
    (
        """\
        - id: a
          match: {path: "/v1/{id}/x/{id}"}
          class: public
        """,
        [(3, "routes[a].match.path: parameter {id} appears twice")],
        "param-twice",
    ),
    (
        """\
        - id: a
          match: {path: "/v1/{id"}
          class: public
        """,
        [(3, "routes[a].match.path: malformed parameter segment '{id'")],
        "param-malformed",
    ),
    (
        """\
        - id: a
          match: {path: "/v1/x{id}"}
          class: public
        """,
        [(3, "routes[a].match.path: malformed parameter segment 'x{id}'")],
        "param-glued-to-literal",
    ),
    (
        """\
        - id: a
          match: {path: /v1/a}
          class: public
        - id: a
          match: {path: /v1/b}
          class: public
        """,
        [(5, "route id 'a' already used at {f}:2")],
        "duplicate-id",
    ),
    (
        """\
        - id: one
          match: {path: "/v1/p/{pid}", methods: [GET, PUT]}
          class: public
        - id: two
          match: {path: "/v1/p/{playlist}", methods: [PUT, DELETE]}
          class: public
        """,
        [(5, "routes[two]: ties with routes[one] at {f}:2")],
        "tie-same-shape-other-param-names",
    ),
    (
        """\
        - id: one
          match: {path: "/v1/p/{pid}", methods: [GET]}
          class: public
        - id: two
          match: {path: "/v1/p/{x}", methods: [HEAD]}
          class: public
        """,
        [(5, "routes[two]: ties with routes[one] at {f}:2")],
        "tie-via-implied-head",
    ),
    (
        """\
        - id: one
          match: {prefix: /v1/p}
          class: public
        - id: two
          match: {prefix: /v1/p}
          class: jwt_only
        """,
        [(5, "routes[two]: ties with routes[one] at {f}:2")],
        "tie-two-prefixes-without-methods",
    ),
    (
        """\
        - id: one
          match: {path: /v1/p}
          class: public
        - id: two
          match: {path: /v1/p}
          class: public
        - id: three
          match: {path: /v1/p}
          class: public
        """,
        [
            (5, "routes[two]: ties with routes[one] at {f}:2"),
            (8, "routes[three]: ties with routes[one] at {f}:2"),
            (8, "routes[three]: ties with routes[two] at {f}:5"),
        ],
        "tie-three-ways",
    ),
    (
        """\
        - id: tokens
          match: {path: /auth/x}
          class: public
        """,
        [(2, "routes[tokens]: /auth/x lies inside the management mount /auth")],
        "path-inside-mount",
    ),
    (
        """\
        - id: tokens
          match: {prefix: /auth}
          class: public
        """,
        [(2, "routes[tokens]: /auth lies inside the management mount /auth")],
        "prefix-is-mount",
    ),
    (
        """\
        - id: tokens
          match: {prefix: /auth/tokens/x}
          class: public
        """,
        [(2, "routes[tokens]: /auth/tokens/x lies inside the management mount /auth")],
        "prefix-deep-inside-mount",
    ),
]


@pytest.mark.parametrize(("body", "expected"), [(b, e) for b, e, _ in ERRORS], ids=[i for _, _, i in ERRORS])
def test_route_errors_name_file_and_line(tmp_path: Path, body: str, expected: list[tuple[int, str]]) -> None:
    path = write(tmp_path, body)
    assert problems([path]) == [
        f"{path}:{line}: {message.replace('{f}', str(path))}" for line, message in expected
    ]


FILE_ERRORS = [
    pytest.param(
        "rutes: []\n",
        [(1, "surface: unknown key 'rutes'"), (1, "surface: expected 'routes:' with a list of routes")],
        id="unknown-top-key",
    ),
    pytest.param(
        "routes: {id: a}\n", [(1, "surface: expected 'routes:' with a list of routes")], id="routes-not-list"
    ),
    pytest.param("routes:\n  - id: a\n    id: b\n", [(3, "duplicate key 'id'")], id="duplicate-yaml-key"),
    pytest.param(
        "routes:\n  - {id: a\n", [(3, "YAML: expected ',' or '}', but got '<stream end>'")], id="yaml-syntax"
    ),
    pytest.param("", [(1, "surface: expected 'routes:' with a list of routes")], id="empty-file"),
    pytest.param(
        "- id: a\n",
        [(1, "surface: expected a mapping"), (1, "surface: expected 'routes:' with a list of routes")],
        id="top-level-list",
    ),
    pytest.param(
        "routes:\n  - just a string\n",
        [(2, "route at line 2: expected a mapping")],
        id="route-not-mapping",
    ),
]


@pytest.mark.parametrize(("text", "expected"), FILE_ERRORS)
def test_file_level_errors(tmp_path: Path, text: str, expected: list[tuple[int, str]]) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    assert problems([path]) == [f"{path}:{line}: {message}" for line, message in expected]


def test_missing_surface_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert problems([path]) == [f"{path}:0: cannot read: No such file or directory"]


def test_agency_route_without_target_is_reported_at_its_own_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - id: ok
          match: {path: /v1/a}
          class: public
        - id: ag
          match: {path: "/v1/p/{pid}"}
          class: agency
        """,
    )
    found = problems([path])
    assert found[0] == f"{path}:5: routes[ag].target: expected a mapping"
    assert all(p.startswith(f"{path}:5: routes[ag].target") for p in found), found


def test_percent_encoded_pattern_is_refused_or_matches_what_it_says(tmp_path: Path) -> None:
    path = write(tmp_path, '- id: a\n  match: {path: "/v1/play%6Cists"}\n  class: public\n')
    try:
        surface = load_surface([str(path)], ["default"], "/auth")
    except ConfigError as exc:
        assert [p.line for p in exc.problems] == [3]
        return
    target = clean("/v1/play%6Cists")
    found = Matcher(surface).match("GET", target.segments, target.trailing_slash)
    assert found.route is not None
    assert found.route.id == "a"


def test_duplicate_ids_across_two_files(tmp_path: Path) -> None:
    first = write(tmp_path, "- id: a\n  match: {path: /v1/a}\n  class: public\n", "one.yaml")
    second = write(
        tmp_path,
        "- id: b\n  match: {path: /v1/b}\n  class: public\n"
        "- id: a\n  match: {path: /v1/c}\n  class: public\n",
        "two.yaml",
    )
    assert problems([first, second]) == [f"{second}:5: route id 'a' already used at {first}:2"]


def test_ties_across_two_files(tmp_path: Path) -> None:
    first = write(tmp_path, "- id: a\n  match: {prefix: /v1/a}\n  class: public\n", "one.yaml")
    second = write(tmp_path, "- id: b\n  match: {prefix: /v1/a}\n  class: public\n", "two.yaml")
    assert problems([first, second]) == [f"{second}:2: routes[b]: ties with routes[a] at {first}:2"]


def test_problems_from_several_files_are_all_reported(tmp_path: Path) -> None:
    first = write(tmp_path, "- id: a\n  match: {path: /v1/a}\n  class: admin\n", "one.yaml")
    broken = tmp_path / "two.yaml"
    broken.write_text("routes: [\n")
    third = write(tmp_path, "- id: c\n  match: {path: /v1/c}\n  class: public\n  upstream: x\n", "three.yaml")
    assert problems([first, broken, third]) == [
        f"{first}:4: routes[a].class: 'admin' is not one of {CLASSES}",
        f"{broken}:2: YAML: expected the node content, but found '<stream end>'",
        f"{third}:5: routes[c].upstream: 'x' is not defined in upstreams",
    ]


NOT_TIES = [
    (
        """\
        - id: one
          match: {path: "/v1/p/{pid}", methods: [GET]}
          class: public
        - id: two
          match: {path: "/v1/p/{x}", methods: [POST]}
          class: public
        """,
        "same-shape-disjoint-methods",
    ),
    (
        """\
        - id: one
          match: {prefix: /v1/p}
          class: public
        - id: two
          match: {prefix: /v1/p, methods: [POST]}
          class: public
        """,
        "prefix-any-and-prefix-with-methods",
    ),
    (
        """\
        - id: one
          match: {path: /v1/p}
          class: public
        - id: two
          match: {prefix: /v1/p}
          class: public
        """,
        "path-and-prefix-same-text",
    ),
    (
        """\
        - id: one
          match: {path: "/v1/{a}/x"}
          class: public
        - id: two
          match: {path: "/v1/x/{b}"}
          class: public
        """,
        "different-shapes",
    ),
    (
        """\
        - id: root
          match: {prefix: /}
          class: anonymous
        - id: authx
          match: {path: /authx}
          class: public
        - id: param-first
          match: {path: "/{any}/tokens"}
          class: public
        """,
        "catch-all-and-mount-lookalikes",
    ),
]


@pytest.mark.parametrize("body", [b for b, _ in NOT_TIES], ids=[i for _, i in NOT_TIES])
def test_allowed_neighbours(tmp_path: Path, body: str) -> None:
    path = write(tmp_path, body)
    surface = load_surface([str(path)], ["default"], "/auth")
    assert len(surface.routes) == body.count("- id:")


def test_custom_mount_is_respected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "- id: a\n  match: {prefix: /auth/x}\n  class: public\n"
        "- id: b\n  match: {prefix: /_gw/x}\n  class: public\n",
    )
    assert problems([path], mount="/_gw") == [
        f"{path}:5: routes[b]: /_gw/x lies inside the management mount /_gw"
    ]


def test_valid_file_gives_exact_routes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - id: health
          match: {path: /v1/health, methods: [GET]}
          class: anonymous
          description: liveness
        - id: playlists
          match: {prefix: /v1/playlists}
          class: public
        - id: reboot
          match: {path: "/v1/devices/{device_id}/reboot", methods: [POST]}
          class: public
          scope: full
          upstream: devices
        - id: register
          match: {path: /v1/agents/register, methods: [POST, PUT]}
          class: public
          scopes: ["nodes:create", "agents:register"]
          mode: shadow
        - id: admin
          match: {prefix: /v1/admin}
          class: jwt_only
          mode: enforce
        - id: agency-playlist
          match: {path: "/v1/workspaces/{workspace_id}/playlists/{playlist_id}", methods: [GET, PUT]}
          class: agency
          target: {param: playlist_id, kind: playlist}
          workspace_param: workspace_id
        - id: root
          match: {prefix: /}
          class: anonymous
        """,
    )
    surface = load_surface([str(path)], ["default", "devices"], "/auth")
    f = str(path)
    assert surface.files == (f,)
    assert surface.routes == (
        Route(
            "health",
            f,
            2,
            RouteClass.ANONYMOUS,
            path="/v1/health",
            methods=frozenset({"GET", "HEAD"}),
            description="liveness",
        ),
        Route("playlists", f, 6, RouteClass.PUBLIC, prefix="/v1/playlists"),
        Route(
            "reboot",
            f,
            9,
            RouteClass.PUBLIC,
            path="/v1/devices/{device_id}/reboot",
            methods=frozenset({"POST"}),
            scope="full",
            upstream="devices",
        ),
        Route(
            "register",
            f,
            14,
            RouteClass.PUBLIC,
            path="/v1/agents/register",
            methods=frozenset({"POST", "PUT"}),
            scopes=("nodes:create", "agents:register"),
            shadow=True,
        ),
        Route("admin", f, 19, RouteClass.JWT_ONLY, prefix="/v1/admin"),
        Route(
            "agency-playlist",
            f,
            23,
            RouteClass.AGENCY,
            path="/v1/workspaces/{workspace_id}/playlists/{playlist_id}",
            methods=frozenset({"GET", "HEAD", "PUT"}),
            target=Target("playlist_id", "playlist"),
            workspace_param="workspace_id",
        ),
        Route("root", f, 28, RouteClass.ANONYMOUS, prefix="/"),
    )


METHOD_SETS = [
    (["GET"], {"GET", "HEAD"}),
    (["HEAD"], {"HEAD"}),
    (["GET", "HEAD"], {"GET", "HEAD"}),
    (["POST"], {"POST"}),
    (["OPTIONS", "GET"], {"OPTIONS", "GET", "HEAD"}),
]


@pytest.mark.parametrize(
    ("methods", "expected"), METHOD_SETS, ids=["get", "head-only", "get-head", "post", "options-get"]
)
def test_get_admits_head(tmp_path: Path, methods: list[str], expected: set[str]) -> None:
    path = write(
        tmp_path, f"- id: a\n  match: {{path: /v1/a, methods: [{', '.join(methods)}]}}\n  class: public\n"
    )
    (route,) = load_surface([str(path)], ["default"], "/auth").routes
    assert route.methods == frozenset(expected)


def test_scope_names_include_resource_wildcards(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        - id: register
          match: {path: /v1/agents/register, methods: [POST]}
          class: public
          scopes: ["nodes:create", "agents:register"]
          description: register a node agent
        - id: nodes-delete
          match: {path: "/v1/nodes/{id}", methods: [DELETE]}
          class: public
          scopes: ["nodes:delete", "nodes:create"]
        - id: plain
          match: {prefix: /v1}
          class: public
          scope: write
        """,
    )
    names = load_surface([str(path)], ["default"], "/auth").scope_names()
    assert names == {
        "nodes:create": "register a node agent",
        "nodes:*": "every nodes action",
        "agents:register": "register a node agent",
        "agents:*": "every agents action",
        "nodes:delete": "used by route nodes-delete",
    }


def test_repository_example_surface_loads() -> None:
    surface = load_surface([str(REPO / "policies" / "example.yaml")], ["default"], "/auth")
    assert [r.id for r in surface.routes] == [
        "health",
        "playlists",
        "device-reboot",
        "register-agent",
        "admin",
        "agency-playlist",
    ]
    matcher = Matcher(surface)
    found = matcher.match("GET", ("v1", "workspaces", "w1", "playlists", "p9"))
    assert found.verdict is Verdict.FULL
    assert found.params == {"workspace_id": "w1", "playlist_id": "p9"}
