"""`scopegate check --openapi spec.yaml`: how the surface and an OpenAPI document cover each other."""

from __future__ import annotations

from .errors import Problem
from .surface.matcher import Matcher, Verdict
from .surface.model import PARAM_RE, Route, Surface
from .yamlsrc import LMap, line_of, load_yaml

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations(spec_path: str) -> list[tuple[str, str, int]]:
    """(METHOD, path template, line) for every operation of the document."""
    doc = load_yaml(spec_path)
    paths = doc.get("paths") if isinstance(doc, LMap) else None
    if not isinstance(paths, LMap):
        return []
    out = []
    for template, item in paths.items():
        if not isinstance(item, LMap):
            continue
        for method in HTTP_METHODS:
            if method in item:
                out.append((method.upper(), str(template), line_of(item, method)))
    return out


def _segments(template: str) -> tuple[str, ...]:
    return tuple(s for s in template.strip("/").split("/") if s)


def _route_covers(route: Route, method: str, template: str) -> bool:
    if route.methods is not None and method not in route.methods:
        return False
    segs = _segments(template)
    if route.prefix is not None:
        prefix = _segments(route.prefix)
        return segs[: len(prefix)] == prefix
    pattern = _segments(route.path or "")
    # An exact path does not match with a trailing slash added (section 4).
    if (template != "/" and template.endswith("/")) or len(pattern) != len(segs):
        return False
    return all(PARAM_RE.match(p) or p == s for p, s in zip(pattern, segs, strict=True))


def coverage(spec_path: str, surface: Surface) -> list[Problem]:
    ops = operations(spec_path)
    problems: list[Problem] = []
    if not ops:
        return [Problem(spec_path, 1, "no operations found under 'paths'")]
    matcher = Matcher(surface)
    for method, template, line in ops:
        # A template's {param} segments are sent as themselves: they can only match a parameter.
        found = matcher.match(method, _segments(template), template != "/" and template.endswith("/"))
        if found.verdict is not Verdict.FULL:
            problems.append(
                Problem(spec_path, line, f"operation {method} {template} is not covered by any route")
            )
    for route in surface.routes:
        if not any(_route_covers(route, m, t) for m, t, _ in ops):
            problems.append(
                Problem(route.file, route.line, f"route {route.id} matches no operation of {spec_path}")
            )
    return problems
