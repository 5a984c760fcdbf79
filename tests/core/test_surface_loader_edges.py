"""load_surface at its edges: the line of each problem when the key is not the route's first line,
values of the wrong type that must be refused, and neighbours that must not tie."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.surface.loader import load_surface

CLASSES = "anonymous, public, jwt_only, agency"


def problems(path: Path, upstreams: tuple[str, ...] = ("default",)) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_surface([str(path)], upstreams, "/auth")
    return [str(p) for p in info.value.problems]


# Whole files (line 1 is the first line), each with the exact problems it must produce.
CASES = [
    pytest.param(
        "just a string\n",
        [(1, "surface: expected a mapping"), (1, "surface: expected 'routes:' with a list of routes")],
        id="top-level-scalar",
    ),
    pytest.param(
        "rutes: []\nroutes: 5\n",
        [(1, "surface: unknown key 'rutes'"), (2, "surface: expected 'routes:' with a list of routes")],
        id="routes-not-list-on-second-line",
    ),
    pytest.param(
        "routes:\n  - class: public\n    id: a b\n    match: {path: /v1/a}\n",
        [(3, "route: 'id' must be 1-64 of [A-Za-z0-9_.-], got 'a b'")],
        id="bad-id-not-first-key",
    ),
    pytest.param(
        "routes:\n  - match: {path: /v1/a}\n    id: a\n",
        [(3, f"routes[a]: missing 'class' (one of {CLASSES})")],
        id="missing-class-reported-at-the-id",
    ),
    pytest.param(
        "routes:\n  - id: a\n    class: public\n    match: /v1/a\n",
        [
            (4, "routes[a].match: expected a mapping"),
            (4, "routes[a].match: needs exactly one of 'path' or 'prefix'"),
        ],
        id="match-not-a-mapping",
    ),
    pytest.param(
        "routes:\n  - id: a\n    class: public\n    match:\n      methods: [GET]\n      path: /v1//a\n",
        [(6, "routes[a].match.path: empty path segment")],
        id="path-below-methods",
    ),
    pytest.param(
        "routes:\n  - id: a\n    class: public\n    match:\n      methods: [GET]\n      prefix: /v1/./a\n",
        [(6, "routes[a].match.prefix: dot segment in path")],
        id="prefix-below-methods",
    ),
    pytest.param(
        "routes:\n  - id: a\n    class: public\n    match:\n      path: /v1/a\n      methods: [get]\n",
        [(6, "routes[a].match.methods: 'get' is not an upper-case method")],
        id="methods-below-path",
    ),
    pytest.param(
        "routes:\n  - id: a\n    class: public\n    match:\n      path: /v1/a\n      methods: []\n",
        [(6, "routes[a].match.methods: expected a non-empty list")],
        id="methods-empty-list",
    ),
    pytest.param(
        "routes:\n  - id: a\n    class: public\n    match: {path: /v1/a}\n    scopes: nodes:create\n",
        [(5, "routes[a].scopes: expected a non-empty list of resource:action")],
        id="scopes-a-string",
    ),
    pytest.param(
        'routes:\n  - id: a\n    class: public\n    match: {path: "/v1/id}"}\n',
        [(4, "routes[a].match.path: malformed parameter segment 'id}'")],
        id="param-closing-brace-only",
    ),
    pytest.param(
        'routes:\n  - id: a\n    class: public\n    match: {path: "/v1/play%6Cists"}\n',
        [(4, "routes[a].match.path: write the path decoded; '%' is not allowed in patterns")],
        id="percent-in-pattern",
    ),
    pytest.param(
        # A misspelt class is one problem: the route is not then judged as some other class
        # (no "only public routes take scope" for a scope that fits the public class it meant).
        "routes:\n  - id: a\n    class: pubilc\n    match: {path: /v1/a}\n    scope: full\n"
        "  - id: b\n    class: agent\n    match: {path: /v1/b}\n    scopes: [nodes:create]\n",
        [
            (3, f"routes[a].class: 'pubilc' is not one of {CLASSES}"),
            (7, f"routes[b].class: 'agent' is not one of {CLASSES}"),
        ],
        id="misspelt-class-is-one-problem",
    ),
    pytest.param(
        "routes:\n  - id: a\n    class: agency\n    match: {path: '/v1/{a}'}\n    target: a\n",
        [
            (5, "routes[a].target: expected a mapping"),
            (2, "routes[a].target.param: None is not a parameter of the path"),
            (2, "routes[a].target.kind: expected a target kind"),
        ],
        id="target-not-a-mapping",
    ),
    pytest.param(
        "routes:\n  - id: a\n    class: agency\n    match: {path: '/v1/{a}'}\n"
        "    target:\n      param: a\n      kind: ''\n",
        [(7, "routes[a].target.kind: expected a target kind")],
        id="target-kind-empty",
    ),
    pytest.param(
        "routes:\n  - id: a\n    class: agency\n    match: {path: '/v1/{a}'}\n"
        "    target:\n      kind: x\n      param: b\n",
        [(7, "routes[a].target.param: 'b' is not a parameter of the path")],
        id="target-param-below-kind",
    ),
    # A final newline (a YAML "\n" escape) must not pass a check: `$` matches before it.
    pytest.param(
        'routes:\n  - id: "a\\n"\n    class: public\n    match: {path: /v1/a}\n',
        [(2, "route: 'id' must be 1-64 of [A-Za-z0-9_.-], got 'a\\n'")],
        id="id-final-newline",
    ),
    pytest.param(
        'routes:\n  - id: a\n    class: public\n    match: {path: /v1/a, methods: ["GET\\n"]}\n',
        [(4, "routes[a].match.methods: 'GET\\n' is not an upper-case method")],
        id="method-final-newline",
    ),
    pytest.param(
        'routes:\n  - id: a\n    class: public\n    match: {path: /v1/a}\n    scopes: ["items:read\\n"]\n',
        [(5, "routes[a].scopes[0]: 'items:read\\n' is not a resource:action scope")],
        id="scope-final-newline",
    ),
    pytest.param(
        'routes:\n  - id: a\n    class: public\n    match: {path: "/v1/a\\n"}\n',
        [(4, "routes[a].match.path: character not allowed in path")],
        id="path-final-newline",
    ),
    pytest.param(
        'routes:\n  - id: a\n    class: public\n    match: {path: "/v1/{id}\\n"}\n',
        [(4, "routes[a].match.path: malformed parameter segment '{id}\\n'")],
        id="parameter-final-newline",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_problem_lines_and_messages(tmp_path: Path, text: str, expected: list[tuple[int, str]]) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    assert problems(path) == [f"{path}:{line}: {message}" for line, message in expected]


def test_a_route_without_upstream_needs_the_default_upstream(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("routes:\n  - id: a\n    class: public\n    match: {prefix: /}\n")
    assert problems(path, ("billing",)) == [
        f"{path}:2: routes[a].upstream: 'default' is not defined in upstreams"
    ]


def test_a_prefix_ending_in_x_does_not_tie_with_the_root(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "routes:\n  - id: root\n    class: public\n    match: {prefix: /}\n"
        "  - id: x\n    class: public\n    match: {prefix: /X}\n"
        "  - id: xx\n    class: public\n    match: {path: /v1/XX}\n"
        "  - id: v1\n    class: public\n    match: {path: /v1}\n"
    )
    surface = load_surface([str(path)], ("default",), "/auth")
    assert [(r.id, r.prefix, r.path) for r in surface.routes] == [
        ("root", "/", None),
        ("x", "/X", None),
        ("xx", None, "/v1/XX"),
        ("v1", None, "/v1"),
    ]
