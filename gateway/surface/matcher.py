"""Route matching on a segment trie, compiled once per surface load.

A lookup walks the request's segments once through the exact-path trie (literal children
before the `{param}` child, backtracking only where both exist) and once through the prefix
trie (remembering the deepest prefix that has rules): O(segments), whatever the number of
rules. Precedence (contract section 4): a path rule beats a prefix rule; literal segments beat
parameters, left to right; a longer prefix beats a shorter; then a rule naming the method beats
a rule without `methods`. The most specific pattern decides: if none of its rules admits the
method, the answer is 405, never a fall-through to a less specific rule.

Many upstream frameworks route `/x/` as `/x` and `/X` as `/x` (Express, Spring MVC, Rails,
Laravel, ASP.NET). So a request that would match a more specific pattern with its trailing slash
dropped or its letter case ignored is not judged by the less specific rule it matches as sent:
it is a miss (404), and the Match names the rule it shadows. The case-blind check walks twin
tries whose literals are case-folded, and only when it can change the answer: when the request
or some literal of the surface holds a character that case folding changes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from .model import PARAM_RE, Route, Surface


class Verdict(Enum):
    NONE = "none"
    METHOD = "method"  # the path matched, the method did not
    FULL = "full"


@dataclass(slots=True, init=False)
class Match:
    """Never changed once made (not frozen, and `__init__` written out, for the reasons
    CleanPath gives)."""

    verdict: Verdict
    route: Route | None
    params: dict[str, str]
    allow: tuple[str, ...]
    # A miss because the request is a trailing-slash or letter-case variant of a more specific
    # pattern: the rule it would reach at an upstream that folds such variants, and why.
    shadowed: Route | None
    why: str

    def __init__(
        self,
        verdict: Verdict,
        route: Route | None = None,
        params: dict[str, str] | None = None,
        allow: tuple[str, ...] = (),
        shadowed: Route | None = None,
        why: str = "",
    ) -> None:
        self.verdict = verdict
        self.route = route
        self.params = {} if params is None else params
        self.allow = allow
        self.shadowed = shadowed
        self.why = why


_NO_MATCH: Final = Match(Verdict.NONE)


@dataclass(slots=True)
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

    def first(self) -> Route:
        route = self.any_method or next(iter(self.by_method.values()), None)
        assert route is not None  # a group exists only once a rule was added
        return route


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    group: _Group | None = None


@dataclass(slots=True)
class _FoldNode:
    """A node of a case-folded twin trie: literals folded, the original groups ending here."""

    literal: dict[str, _FoldNode] = field(default_factory=dict)
    param: _FoldNode | None = None
    groups: list[_Group] = field(default_factory=list)


def fold_case(seg: str) -> str:
    """A segment with letter case ignored: Unicode case folding, plus the two letters whose
    simple case mapping (Java's Character.toLowerCase and equalsIgnoreCase, which Spring uses)
    reaches an ASCII letter that full folding does not: U+0130 and U+0131 (dotted capital I,
    dotless small i) are `i`."""
    # SECURITY: `/adm%C4%B0n` is `/admin` to Spring with case-insensitive matching; casefold() alone
    # gives `admi̇n` (i + combining dot), which would let it fall through to a weaker rule.
    return seg.casefold().replace("i\u0307", "i").replace("\u0131", "i")


def _folds(seg: str) -> bool:
    return fold_case(seg) != seg


def _any_folds(segments: tuple[str, ...]) -> bool:
    """Whether any segment changes under `fold_case`. ASCII folds as `lower()` does (the two
    replacements concern letters that are no ASCII), so the common case is one test."""
    joined = "".join(segments)
    if joined.isascii():
        return joined.lower() != joined
    return any(_folds(s) for s in segments)


def _suffixed(segments: tuple[str, ...]) -> bool:
    """Whether the last segment has a `.` past its first character: only then can a format
    suffix be cut off it (`_format_twin`)."""
    return bool(segments) and "." in segments[-1][1:]


def _interned(seg: str) -> tuple[str, str]:
    """A rule's literal segment and its folded twin, each kept once however many rules name it
    (a surface of 10,000 rules repeats `v1` and `items` 10,000 times)."""
    seg = sys.intern(seg)
    folded = fold_case(seg)
    return seg, (seg if folded == seg else sys.intern(folded))


class Matcher:
    def __init__(self, surface: Surface) -> None:
        self.surface = surface
        self._paths = _Node()
        self._prefixes = _Node()
        self._fold_paths = _FoldNode()
        self._fold_prefixes = _FoldNode()
        self._mixed_case = False  # some literal changes under case folding
        for route in surface.routes:
            if route.path is not None:
                self._insert_path(route)
            else:
                self._insert_prefix(route)

    def _insert_path(self, route: Route) -> None:
        node, fold = self._paths, self._fold_paths
        names = []
        for seg in (route.path or "").strip("/").split("/"):
            if not seg:
                continue
            m = PARAM_RE.match(seg)
            if m:
                names.append(m.group(1))
                node.param = node.param or _Node()
                node = node.param
                fold.param = fold.param or _FoldNode()
                fold = fold.param
            else:
                seg, folded = _interned(seg)
                node = node.literal.get(seg) or node.literal.setdefault(seg, _Node())
                fold = fold.literal.get(folded) or fold.literal.setdefault(folded, _FoldNode())
                self._mixed_case |= folded != seg
        if node.group is None:
            node.group = _Group()
            fold.groups.append(node.group)
        node.group.add(route, tuple(names))

    def _insert_prefix(self, route: Route) -> None:
        node, fold = self._prefixes, self._fold_prefixes
        for seg in (route.prefix or "/").strip("/").split("/"):
            if seg:
                seg, folded = _interned(seg)
                node = node.literal.get(seg) or node.literal.setdefault(seg, _Node())
                fold = fold.literal.get(folded) or fold.literal.setdefault(folded, _FoldNode())
                self._mixed_case |= folded != seg
        if node.group is None:
            node.group = _Group()
            fold.groups.append(node.group)
        node.group.add(route)

    def match(self, method: str, segments: tuple[str, ...], trailing_slash: bool = False) -> Match:
        case_blind = self._mixed_case or _any_folds(segments)
        folded = tuple(fold_case(s) for s in segments) if case_blind else segments
        found = _walk(self._paths, segments, 0, [])
        if found is not None:
            group, values = found
            if trailing_slash:
                # SECURITY: `/x/` is `/x` to most frameworks; it must never reach a weaker rule.
                return _shadow(group, "without its trailing slash")
            if case_blind:
                twin = _walk_folded(self._fold_paths, folded, 0)
                if twin is not None and not any(g is group for g in twin):
                    return _shadow(twin[0], "with letter case ignored")
            suffixed = self._format_twin(segments, case_blind, group) if _suffixed(segments) else None
            return suffixed or _decide(group, method, values)
        if case_blind:
            twin = _walk_folded(self._fold_paths, folded, 0)
            if twin is not None:
                # SECURITY: `/V1/Devices/7/Reboot` is the reboot route to a case-blind upstream.
                why = "with letter case ignored" + (
                    " and its trailing slash dropped" if trailing_slash else ""
                )
                return _shadow(twin[0], why)
        suffixed = self._format_twin(segments, case_blind, None) if _suffixed(segments) else None
        if suffixed is not None:
            return suffixed
        node, best, depth = self._prefixes, self._prefixes.group, 0
        for i, seg in enumerate(segments):
            nxt = node.literal.get(seg)
            if nxt is None:
                break
            node = nxt
            if node.group is not None:
                best, depth = node.group, i + 1
        if case_blind:
            fold, deeper = self._fold_prefixes, None
            for i, seg in enumerate(folded):
                nxt_fold = fold.literal.get(seg)
                if nxt_fold is None:
                    break
                fold = nxt_fold
                if fold.groups and i + 1 > depth:
                    deeper = fold.groups[0]
            if deeper is not None:
                return _shadow(deeper, "with letter case ignored")
        if best is None:
            return _NO_MATCH
        return _decide(best, method, [])

    def _format_twin(self, segments: tuple[str, ...], case_blind: bool, group: _Group | None) -> Match | None:
        """SECURITY: Rails routes `/x/reboot.json` as `/x/reboot` (its `(.:format)`), Spring MVC
        before 5.3 as well (suffix patterns): a request whose last segment, cut at its first `.`,
        reaches a path rule (or a deeper prefix) that the request as sent does not, is a miss."""
        last = segments[-1] if segments else ""
        stem = last.split(".", 1)[0]
        if not stem or stem == last:
            return None
        twin = (*segments[:-1], stem)
        hit = _walk(self._paths, twin, 0, [])
        groups = [hit[0]] if hit is not None else []
        if case_blind or any(_folds(s) for s in twin):
            groups += _walk_folded(self._fold_paths, tuple(fold_case(s) for s in twin), 0) or []
        if groups and not any(g is group for g in groups):
            return _shadow(groups[0], "with its format suffix dropped")
        if group is None and _prefix_depth(self._prefixes, twin) > _prefix_depth(self._prefixes, segments):
            node = self._prefixes
            for seg in twin:
                node = node.literal[seg]
            assert node.group is not None  # the twin's deepest prefix ends at its last segment
            return _shadow(node.group, "with its format suffix dropped")
        return None


def _prefix_depth(node: _Node, segs: tuple[str, ...]) -> int:
    depth = 0
    for i, seg in enumerate(segs):
        nxt = node.literal.get(seg)
        if nxt is None:
            break
        node = nxt
        if node.group is not None:
            depth = i + 1
    return depth


def _shadow(group: _Group, how: str) -> Match:
    # The client hears why, not which rule: `explain` names the rule for the operator.
    return Match(Verdict.NONE, shadowed=group.first(), why=f"this path matches a more specific rule {how}")


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


def _walk_folded(node: _FoldNode, segs: tuple[str, ...], i: int) -> list[_Group] | None:
    """The groups of the most specific folded pattern that fits, in the exact trie's order."""
    if i == len(segs):
        return node.groups or None
    child = node.literal.get(segs[i])
    if child is not None:
        found = _walk_folded(child, segs, i + 1)
        if found is not None:
            return found
    if node.param is not None:
        return _walk_folded(node.param, segs, i + 1)
    return None


def _decide(group: _Group, method: str, values: list[str]) -> Match:
    route = group.pick(method)
    if route is None:
        return Match(Verdict.METHOD, allow=group.allow())
    return Match(Verdict.FULL, route, dict(zip(group.param_names[route.id], values, strict=True)))
