"""The surface model's own answers: what each route demands per method (the words a refusal and
`explain` print), the rung ladder, and a route's pattern and place."""

from __future__ import annotations

import pytest

from gateway.surface.model import Route, RouteClass, Surface, Target, required_rung

METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "PROPFIND")
SAFE = {"GET", "HEAD", "OPTIONS"}
PUBLIC = RouteClass.PUBLIC


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scope", [None, "read", "write", "full"])
def test_required_rung_is_the_higher_of_method_and_route(method: str, scope: str | None) -> None:
    base = "read" if method in SAFE else "write"
    ladder = ["read", "write", "full"]
    expected = base if scope is None else ladder[max(ladder.index(base), ladder.index(scope))]
    assert required_rung(method, scope) == expected


def test_required_rung_table() -> None:
    # The same, written out: a safe method needs read, anything else write, `full` raises both.
    assert [required_rung(m, None) for m in ("GET", "HEAD", "OPTIONS", "POST", "get")] == [
        "read",
        "read",
        "read",
        "write",
        "write",  # method names are case-sensitive: `get` is not the safe GET
    ]
    assert [required_rung(m, "read") for m in ("GET", "DELETE")] == ["read", "write"]
    assert [required_rung(m, "write") for m in ("HEAD", "PUT")] == ["write", "write"]
    assert [required_rung(m, "full") for m in ("OPTIONS", "PATCH")] == ["full", "full"]


def test_requirement_in_words_for_each_class() -> None:
    anon = Route("open", "r.yaml", 1, RouteClass.ANONYMOUS, prefix="/open", scope="full")
    agency = Route("ag", "r.yaml", 2, RouteClass.AGENCY, path="/p/{pid}", target=Target("pid", "playlist"))
    bare_agency = Route("ag2", "r.yaml", 3, RouteClass.AGENCY, path="/q/{pid}")
    fine = Route(
        "fine", "r.yaml", 4, RouteClass.PUBLIC, path="/f", scopes=("nodes:create", "agents:register")
    )
    one_fine = Route("one", "r.yaml", 5, RouteClass.PUBLIC, path="/g", scopes=("nodes:create",))
    full = Route("reboot", "r.yaml", 6, RouteClass.PUBLIC, path="/r", scope="full")
    plain = Route("plain", "r.yaml", 7, RouteClass.PUBLIC, prefix="/v1")
    jwt_only = Route("admin", "r.yaml", 8, RouteClass.JWT_ONLY, prefix="/admin")
    assert [anon.requirement(m) for m in ("GET", "POST")] == ["none", "none"]
    assert [agency.requirement(m) for m in ("GET", "DELETE")] == ["agency, target playlist"] * 2
    assert bare_agency.requirement("GET") == "agency, target ?"
    assert [fine.requirement(m) for m in ("GET", "POST")] == ["nodes:create or agents:register"] * 2
    assert one_fine.requirement("PUT") == "nodes:create"
    assert [full.requirement(m) for m in ("GET", "POST")] == ["full", "full"]
    assert [plain.requirement(m) for m in ("HEAD", "OPTIONS", "PATCH")] == ["read", "read", "write"]
    assert [jwt_only.requirement(m) for m in ("GET", "DELETE")] == ["read", "write"]


def test_pattern_and_where() -> None:
    exact = Route("a", "dir/routes.yaml", 12, RouteClass.PUBLIC, path="/v1/p/{pid}")
    prefix = Route("b", "dir/routes.yaml", 30, RouteClass.PUBLIC, prefix="/v1/admin")
    assert (exact.pattern, exact.where) == ("/v1/p/{pid}", "dir/routes.yaml:12")
    assert (prefix.pattern, prefix.where) == ("/v1/admin/**", "dir/routes.yaml:30")


def test_route_defaults() -> None:
    route = Route("a", "r.yaml", 1, RouteClass.PUBLIC)
    assert (
        route.path,
        route.prefix,
        route.methods,
        route.scope,
        route.scopes,
        route.target,
        route.workspace_param,
        route.upstream,
        route.shadow,
        route.description,
    ) == (None, None, None, None, (), None, None, "default", False, "")


def test_scope_names_of_a_surface_without_fine_scopes_is_empty() -> None:
    surface = Surface(
        (
            Route("a", "r.yaml", 1, RouteClass.PUBLIC, prefix="/v1", scope="full", description="x"),
            Route("b", "r.yaml", 2, RouteClass.JWT_ONLY, prefix="/admin"),
        ),
        ("r.yaml",),
    )
    assert surface.scope_names() == {}


def test_scope_names_keep_the_first_description() -> None:
    surface = Surface(
        (
            Route("a", "r.yaml", 1, RouteClass.PUBLIC, path="/a", scopes=("nodes:create",)),
            Route(
                "b", "r.yaml", 2, RouteClass.PUBLIC, path="/b", scopes=("nodes:create",), description="later"
            ),
            Route(
                "c", "r.yaml", 3, RouteClass.PUBLIC, path="/c", scopes=("nodes_2:read-all",), description="d"
            ),
        ),
        ("r.yaml",),
    )
    assert surface.scope_names() == {
        "nodes:create": "used by route a",
        "nodes:*": "every nodes action",
        "nodes_2:read-all": "d",
        "nodes_2:*": "every nodes_2 action",
    }
