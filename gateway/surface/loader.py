"""Surface files -> a validated Surface. Every problem is reported as `file:line: message`."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from ..config import Reader
from ..errors import BadPath, ConfigError, Problem
from ..scopes import FINE_RE, LADDER
from ..yamlsrc import LList, LMap, line_of, load_yaml
from .model import PARAM_RE, Route, RouteClass, Surface, Target
from .paths import clean

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
_METHOD_RE = re.compile(r"^[A-Z]{1,20}\Z")
_ROUTE_KEYS = {
    "id",
    "match",
    "class",
    "scope",
    "scopes",
    "target",
    "workspace_param",
    "upstream",
    "description",
    "mode",
}


def path_params(pattern: str) -> list[str]:
    return [m.group(1) for seg in pattern.strip("/").split("/") if (m := PARAM_RE.match(seg))]


def _check_pattern(r: Reader, line: int, where: str, value: Any, allow_params: bool) -> str | None:
    if not isinstance(value, str) or not value.startswith("/"):
        r.error(line, f"{where}: expected an absolute path starting with '/', got {value!r}")
        return None
    if value == "/":
        return value
    if value.endswith("/"):
        r.error(line, f"{where}: must not end with '/'")
        return None
    literal = []
    names: set[str] = set()
    for seg in value[1:].split("/"):
        m = PARAM_RE.match(seg)
        if m:
            if not allow_params:
                r.error(line, f"{where}: a prefix cannot contain parameters ({seg})")
                return None
            if m.group(1) in names:
                r.error(line, f"{where}: parameter {{{m.group(1)}}} appears twice")
                return None
            names.add(m.group(1))
            literal.append("x")
        elif "{" in seg or "}" in seg:
            r.error(line, f"{where}: malformed parameter segment {seg!r}")
            return None
        else:
            literal.append(seg)
    try:
        clean("/" + "/".join(literal))
    except BadPath as exc:
        r.error(line, f"{where}: {exc.detail}")
        return None
    if "%" in value:
        r.error(line, f"{where}: write the path decoded; '%' is not allowed in patterns")
        return None
    return value


def _route(r: Reader, node: Any, line: int, file: str, upstreams: Collection[str]) -> Route | None:
    before = len(r.problems)
    m = r.mapping(node, f"route at line {line}", _ROUTE_KEYS, line)
    if not isinstance(node, LMap):
        return None
    rid = m.get("id")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        r.error(line_of(m, "id", line), f"route: 'id' must be 1-64 of [A-Za-z0-9_.-], got {rid!r}")
        rid = f"<line {line}>"
    w = f"routes[{rid}]"
    cls_value = m.get("class")
    try:
        cls = RouteClass(str(cls_value))
    except ValueError:
        choices = ", ".join(c.value for c in RouteClass)
        if cls_value is None:
            r.error(line_of(m, "id", line), f"{w}: missing 'class' (one of {choices})")
        else:
            r.error(line_of(m, "class"), f"{w}.class: {cls_value!r} is not one of {choices}")
        cls = RouteClass.PUBLIC
    match = r.mapping(m.get("match"), f"{w}.match", {"path", "prefix", "methods"}, line_of(m, "match", line))
    if "match" not in m:
        r.error(line, f"{w}: missing 'match'")
    path = prefix = None
    if ("path" in match) == ("prefix" in match):
        r.error(line_of(m, "match", line), f"{w}.match: needs exactly one of 'path' or 'prefix'")
    elif "path" in match:
        path = _check_pattern(r, line_of(match, "path"), f"{w}.match.path", match["path"], True)
    else:
        prefix = _check_pattern(r, line_of(match, "prefix"), f"{w}.match.prefix", match["prefix"], False)
    methods: frozenset[str] | None = None
    if match.get("methods") is not None:
        value = match["methods"]
        if not isinstance(value, LList) or not value:
            r.error(line_of(match, "methods"), f"{w}.match.methods: expected a non-empty list")
        else:
            bad = [v for v in value if not isinstance(v, str) or not _METHOD_RE.match(v)]
            if bad:
                r.error(
                    line_of(match, "methods"), f"{w}.match.methods: {bad[0]!r} is not an upper-case method"
                )
            methods = frozenset(v for v in value if isinstance(v, str))
            if "GET" in methods:
                methods |= {"HEAD"}

    scope = m.get("scope")
    if scope is not None and (cls is not RouteClass.PUBLIC or scope not in LADDER):
        r.error(line_of(m, "scope"), f"{w}.scope: only public routes take scope, one of read, write, full")
    scopes: tuple[str, ...] = ()
    if m.get("scopes") is not None:
        value = m["scopes"]
        if cls is not RouteClass.PUBLIC:
            r.error(line_of(m, "scopes"), f"{w}.scopes: only public routes take fine-grained scopes")
        elif scope is not None:
            r.error(line_of(m, "scopes"), f"{w}: give either 'scope' or 'scopes', not both")
        elif not isinstance(value, LList) or not value:
            r.error(line_of(m, "scopes"), f"{w}.scopes: expected a non-empty list of resource:action")
        else:
            for i, s in enumerate(value):
                if not isinstance(s, str) or not FINE_RE.match(s) or s.endswith(":*"):
                    r.error(line_of(value, i), f"{w}.scopes[{i}]: {s!r} is not a resource:action scope")
            scopes = tuple(s for s in value if isinstance(s, str))

    params = path_params(path) if path else []
    target = None
    workspace_param = m.get("workspace_param")
    if cls is RouteClass.AGENCY:
        t = r.mapping(m.get("target"), f"{w}.target", {"param", "kind"}, line_of(m, "target", line))
        param, kind = t.get("param"), t.get("kind")
        if path is None:
            r.error(
                line_of(m, "match", line), f"{w}: an agency route needs a 'path' with its target parameter"
            )
        elif not isinstance(param, str) or param not in params:
            r.error(line_of(t, "param", line), f"{w}.target.param: {param!r} is not a parameter of the path")
        if not isinstance(kind, str) or not kind:
            r.error(line_of(t, "kind", line), f"{w}.target.kind: expected a target kind")
        if isinstance(param, str) and isinstance(kind, str):
            target = Target(param, kind)
    elif "target" in m:
        r.error(line_of(m, "target"), f"{w}.target: only agency routes take a target")
    if workspace_param is not None and (
        not isinstance(workspace_param, str) or workspace_param not in params
    ):
        r.error(
            line_of(m, "workspace_param"), f"{w}.workspace_param: {workspace_param!r} is not a path parameter"
        )
        workspace_param = None

    upstream = m.get("upstream", "default")
    if not isinstance(upstream, str) or upstream not in upstreams:
        r.error(line_of(m, "upstream", line), f"{w}.upstream: {upstream!r} is not defined in upstreams")
    mode = m.get("mode", "enforce")
    if mode not in ("enforce", "shadow"):
        r.error(line_of(m, "mode"), f"{w}.mode: expected enforce or shadow, got {mode!r}")
    description = m.get("description", "")
    if not isinstance(description, str):
        r.error(line_of(m, "description"), f"{w}.description: expected a string")
        description = ""
    if len(r.problems) > before:
        return None
    return Route(
        id=rid,
        file=file,
        line=line,
        cls=cls,
        path=path,
        prefix=prefix,
        methods=methods,
        scope=scope,
        scopes=scopes,
        target=target,
        workspace_param=workspace_param,
        upstream=str(upstream),
        shadow=mode == "shadow",
        description=description,
    )


def _shape(route: Route) -> tuple[str, tuple[str | None, ...]]:
    pattern = route.path if route.path is not None else route.prefix or "/"
    segs = tuple(None if PARAM_RE.match(s) else s for s in pattern.strip("/").split("/") if s)
    return ("path" if route.path is not None else "prefix", segs)


def _inside(pattern: str, mount: str) -> bool:
    return pattern == mount or pattern.startswith(mount + "/")


def load_surface(files: Collection[str], upstreams: Collection[str], mount: str) -> Surface:
    """Load and validate every surface file together: ids and ties are checked across files."""
    problems: list[Problem] = []
    routes: list[Route] = []
    for file in files:
        try:
            raw = load_yaml(file)
        except ConfigError as exc:
            problems += exc.problems
            continue
        r = Reader(file)
        top = r.mapping(raw if raw is not None else LMap(), "surface", {"routes"}, 1)
        items = top.get("routes")
        if not isinstance(items, LList):
            r.error(line_of(top, "routes", 1), "surface: expected 'routes:' with a list of routes")
            items = LList()
        for i, node in enumerate(items):
            route = _route(r, node, line_of(items, i), file, upstreams)
            if route is not None:
                routes.append(route)
        problems += r.problems
    seen: dict[str, Route] = {}
    by_shape: dict[tuple[str, tuple[str | None, ...]], list[Route]] = {}
    for route in routes:
        if route.id in seen:
            problems.append(
                Problem(
                    route.file, route.line, f"route id {route.id!r} already used at {seen[route.id].where}"
                )
            )
        seen.setdefault(route.id, route)
        pattern = route.path if route.path is not None else route.prefix or "/"
        if pattern != "/" and _inside(pattern, mount):
            problems.append(
                Problem(
                    route.file,
                    route.line,
                    f"routes[{route.id}]: {pattern} lies inside the management mount {mount}",
                )
            )
        shape = _shape(route)
        for other in by_shape.get(shape, []):
            if (route.methods is None and other.methods is None) or (
                route.methods and other.methods and route.methods & other.methods
            ):
                problems.append(
                    Problem(
                        route.file,
                        route.line,
                        f"routes[{route.id}]: ties with routes[{other.id}] at {other.where}",
                    )
                )
        by_shape.setdefault(shape, []).append(route)
    if problems:
        raise ConfigError(problems)
    return Surface(tuple(routes), tuple(files))
