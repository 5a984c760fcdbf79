"""Surface warnings: valid rules whose layout an upstream may undo (`scopegate check` prints them).

Many frameworks route `/x/` as `/x` and `/X` as `/x`. The matcher refuses such variants of a
rule (404 `no_route`) rather than judge them by a weaker rule around it, so a client that sends
them gets a 404 it may not expect. `check` names every rule that sits under a prefix of a weaker
class, where that refusal is what keeps the stronger rule from being bypassed.
"""

from __future__ import annotations

from ..errors import Problem
from .matcher import fold_case
from .model import PARAM_RE, Route, RouteClass, Surface


def strength(route: Route) -> int:
    """How much a rule demands, coarsely: anonymous < public < public with full or fine scopes
    < jwt_only and agency."""
    if route.cls is RouteClass.ANONYMOUS:
        return 0
    if route.cls is RouteClass.PUBLIC:
        return 2 if route.scope == "full" or route.scopes else 1
    return 3


def _segments(pattern: str) -> list[str]:
    return [s for s in pattern.strip("/").split("/") if s]


def _under(route: Route, prefix: Route) -> bool:
    """Whether some request matching `route` (letter case ignored) lies under `prefix`."""
    inner = _segments(route.path if route.path is not None else route.prefix or "/")
    outer = _segments(prefix.prefix or "/")
    if len(outer) > len(inner) or (len(outer) == len(inner) and route.path is None):
        return False
    return all(PARAM_RE.match(i) or fold_case(i) == fold_case(o) for i, o in zip(inner, outer, strict=False))


def weaker_prefix_warnings(surface: Surface) -> list[Problem]:
    out = []
    prefixes = [r for r in surface.routes if r.path is None]
    for route in surface.routes:
        weaker = [
            o for o in prefixes if o is not route and strength(o) < strength(route) and _under(route, o)
        ]
        if weaker:
            # The nearest weaker prefix is the one a variant would reach.
            outer = max(weaker, key=lambda o: len(_segments(o.prefix or "/")))
            out.append(
                Problem(
                    route.file,
                    route.line,
                    f"routes[{route.id}] sits under prefix {outer.prefix} of routes[{outer.id}] "
                    f"({outer.cls.value}, weaker) at {outer.where}: a request differing from "
                    f"{route.pattern} by a trailing slash or letter case is refused 404 no_route",
                )
            )
    return out
