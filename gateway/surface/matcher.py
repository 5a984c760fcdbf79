"""Route matching on a segment trie, compiled once per surface load.

A lookup walks the request's segments once through the exact-path trie (literal children
before the `{param}` child, backtracking only where both exist) and once through the prefix
trie (remembering the deepest prefix that has rules): O(segments), whatever the number of
rules. Precedence (contract section 4): a path rule beats a prefix rule; literal segments beat
parameters, left to right; a longer prefix beats a shorter; then a rule naming the method beats
a rule without `methods`. The most specific pattern decides: if none of its rules admits the
method, the answer is 405, never a fall-through to a less specific rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .model import PARAM_RE, Route, Surface


class Verdict(Enum):
    NONE = "none"
    METHOD = "method"  # the path matched, the method did not
    FULL = "full"


@dataclass(frozen=True)
class Match:
    verdict: Verdict
    route: Route | None = None
    params: dict[str, str] = field(default_factory=dict)
    allow: tuple[str, ...] = ()


_NO_MATCH = Match(Verdict.NONE)


@dataclass
class _Group:
    """The rules that share one pattern: by method, plus at most one without methods."""

    by_method: dict[str, Route] = field(default_factory=dict)
    any_method: Route | None = None
    param_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # route id -> its names

    def add(self, route: Route, names: tuple[str, ...] = ()) -> None:
        self.param_names[route.id] = names
        if route.methods is None:
            self.any_method = route
        else:
            for method in route.methods:
                self.by_method[method] = route

    def pick(self, method: str) -> Route | None:
        return self.by_method.get(method, self.any_method)

    def allow(self) -> tuple[str, ...]:
        return tuple(sorted(self.by_method))


@dataclass
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    group: _Group | None = None


class Matcher:
    def __init__(self, surface: Surface) -> None:
        self.surface = surface
        self._paths = _Node()
        self._prefixes = _Node()
        for route in surface.routes:
            if route.path is not None:
                self._insert_path(route)
            else:
                self._insert_prefix(route)

    def _insert_path(self, route: Route) -> None:
        node = self._paths
        names = []
        for seg in (route.path or "").strip("/").split("/"):
            if not seg:
                continue
            m = PARAM_RE.match(seg)
            if m:
                names.append(m.group(1))
                node.param = node.param or _Node()
                node = node.param
            else:
                node = node.literal.setdefault(seg, _Node())
        node.group = node.group or _Group()
        node.group.add(route, tuple(names))

    def _insert_prefix(self, route: Route) -> None:
        node = self._prefixes
        for seg in (route.prefix or "/").strip("/").split("/"):
            if seg:
                node = node.literal.setdefault(seg, _Node())
        node.group = node.group or _Group()
        node.group.add(route)

    def match(self, method: str, segments: tuple[str, ...], trailing_slash: bool = False) -> Match:
        if not trailing_slash:
            found = _walk(self._paths, segments, 0, [])
            if found is not None:
                group, values = found
                return _decide(group, method, values)
        node, best = self._prefixes, self._prefixes.group
        for seg in segments:
            nxt = node.literal.get(seg)
            if nxt is None:
                break
            node = nxt
            best = node.group or best
        if best is None:
            return _NO_MATCH
        return _decide(best, method, [])


def _walk(node: _Node, segs: tuple[str, ...], i: int, values: list[str]) -> tuple[_Group, list[str]] | None:
    if i == len(segs):
        return (node.group, values) if node.group is not None else None
    child = node.literal.get(segs[i])
    if child is not None:
        found = _walk(child, segs, i + 1, values)
        if found is not None:
            return found
    if node.param is not None:
        return _walk(node.param, segs, i + 1, [*values, segs[i]])
    return None


def _decide(group: _Group, method: str, values: list[str]) -> Match:
    route = group.pick(method)
    if route is None:
        return Match(Verdict.METHOD, allow=group.allow())
    return Match(Verdict.FULL, route, dict(zip(group.param_names[route.id], values, strict=True)))
