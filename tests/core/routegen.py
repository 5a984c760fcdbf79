"""Generated surfaces and requests, and a brute-force reference matcher, for the property tests.

The reference is written from the README's precedence rules (contract section 4), not from the
trie: it looks at every rule for every request. A path rule beats a prefix rule; between paths,
literal segments beat `{param}` segments, compared left to right; between prefixes, the longer
beats the shorter; then a rule naming the method beats one without `methods`; `methods: [GET]`
admits HEAD; the most specific pattern decides, so a method none of its rules names is 405 with
the union of their methods in `Allow`, never a fall-through; no pattern at all is 404.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from gateway.surface.loader import load_surface
from gateway.surface.matcher import Matcher

# Few literals, so generated rules and requests collide often; upper and lower case of the same
# word, so the letter-case rule has something to judge.
LITERALS = ("a", "b", "A", "v1", "V1", "x.y")
REQUEST_EXTRA = ("7", "zz", "B")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MOUNT = "/auth"


@dataclass(frozen=True)
class Spec:
    """A rule as written in a surface file."""

    id: str
    kind: str  # "path" or "prefix"
    segs: tuple[str, ...]  # literal text, or "{name}" for a parameter
    methods: tuple[str, ...] | None  # as declared; None: any method

    @property
    def pattern(self) -> str:
        return "/" + "/".join(self.segs)

    @property
    def effective(self) -> frozenset[str] | None:
        """The methods the rule admits: the declared ones, and HEAD wherever GET is named."""
        if self.methods is None:
            return None
        ms = frozenset(self.methods)
        return ms | {"HEAD"} if "GET" in ms else ms

    def shape(self) -> tuple[str, tuple[str | None, ...]]:
        return self.kind, tuple(None if s.startswith("{") else s for s in self.segs)

    def rank(self) -> tuple[int, ...]:
        """Smaller is more specific: a path before any prefix; literal before parameter, left to
        right, between paths; longer before shorter between prefixes."""
        if self.kind == "path":
            return (0, *(1 if s.startswith("{") else 0 for s in self.segs))
        return (1, -len(self.segs))


@dataclass(frozen=True)
class Outcome:
    verdict: str  # "none", "method" or "full"
    route: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    allow: tuple[str, ...] = ()


def _segment(i: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(LITERALS), st.sampled_from(("x", "y", "id")).map(lambda n: f"{{{n}{i}}}")
    )


@st.composite
def _raw_spec(draw: st.DrawFn) -> tuple[str, tuple[str, ...], tuple[str, ...] | None]:
    kind = draw(st.sampled_from(("path", "path", "prefix")))
    n = draw(st.integers(0, 4 if kind == "path" else 3))
    if kind == "path":
        segs = tuple(draw(_segment(i)) for i in range(n))
    else:
        segs = tuple(draw(st.sampled_from(LITERALS)) for _ in range(n))
    methods = draw(
        st.one_of(
            st.none(), st.lists(st.sampled_from(METHODS), min_size=1, max_size=3, unique=True).map(tuple)
        )
    )
    return kind, segs, methods


@st.composite
def surfaces(draw: st.DrawFn, max_rules: int = 300) -> list[Spec]:
    """Rules as a surface file may hold them: no two tie (same shape, overlapping methods)."""
    specs: list[Spec] = []
    taken: dict[tuple[str, tuple[str | None, ...]], list[frozenset[str] | None]] = {}
    for kind, segs, methods in draw(st.lists(_raw_spec(), min_size=1, max_size=max_rules)):
        spec = Spec(f"r{len(specs)}", kind, segs, methods)
        mine = spec.effective
        others = taken.setdefault(spec.shape(), [])
        if any((m is None and mine is None) or (m and mine and m & mine) for m in others):
            continue  # a tie: `check` refuses it, so no loaded surface holds it
        others.append(mine)
        specs.append(spec)
    return specs


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, tuple[str, ...], bool]:
    method = draw(st.sampled_from(METHODS))
    segs = tuple(draw(st.lists(st.sampled_from(LITERALS + REQUEST_EXTRA), max_size=5)))
    trailing = bool(segs) and draw(st.booleans())
    return method, segs, trailing


def target(segs: tuple[str, ...], trailing: bool) -> str:
    return "/" + "/".join(segs) + ("/" if trailing and segs else "")


def load(specs: list[Spec]) -> Matcher:
    """The surface written to a file and loaded by the real loader, compiled by the real matcher."""
    routes = []
    for s in specs:
        match: dict[str, object] = {s.kind: s.pattern}
        if s.methods is not None:
            match["methods"] = list(s.methods)
        routes.append({"id": s.id, "match": match, "class": "public"})
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "routes.yaml"
        file.write_text(json.dumps({"routes": routes}, indent=1))  # JSON is YAML
        return Matcher(load_surface([str(file)], ("default",), MOUNT))


def fits(spec: Spec, segs: tuple[str, ...], fold: bool = False) -> bool:
    """Whether the pattern matches the segments (letter case ignored when `fold`)."""

    def same(a: str, b: str) -> bool:
        return a.lower() == b.lower() if fold else a == b

    if spec.kind == "prefix":
        return len(segs) >= len(spec.segs) and all(same(p, s) for p, s in zip(spec.segs, segs, strict=False))
    return len(segs) == len(spec.segs) and all(
        p.startswith("{") or same(p, s) for p, s in zip(spec.segs, segs, strict=True)
    )


def reference(specs: list[Spec], method: str, segs: tuple[str, ...], trailing: bool) -> Outcome:
    """The decision the README's rules give, by looking at every rule."""
    candidates = [
        s for s in specs if fits(s, segs) and (s.kind == "prefix" or not trailing)
    ]  # an exact path does not match with a trailing slash added
    if not candidates:
        return Outcome("none")
    best = min(s.rank() for s in candidates)
    group = [s for s in candidates if s.rank() == best]
    named = [s for s in group if s.effective is not None and method in s.effective]
    unnamed = [s for s in group if s.effective is None]
    if not named and not unnamed:
        allow = sorted(set().union(*(s.effective or () for s in group)))
        return Outcome("method", allow=tuple(allow))
    (chosen,) = named or unnamed
    params = tuple(
        (p[1:-1], v) for p, v in zip(chosen.segs, segs, strict=False) if p.startswith("{")
    )  # prefixes carry no parameters
    return Outcome("full", chosen.id, params)


def stronger_twins(specs: list[Spec], segs: tuple[str, ...], than: Spec) -> list[Spec]:
    """Rules more specific than `than` that the request would match with its trailing slash
    dropped or its letter case ignored (contract section 4)."""
    return [s for s in specs if fits(s, segs, fold=True) and s.rank() < than.rank()]


def twin_affected(specs: list[Spec], segs: tuple[str, ...], trailing: bool) -> bool:
    """Whether the request's slash-less, case-blind twin would match a more specific pattern than
    the request itself does: the letter-case/trailing-slash rule decides those (404), not the
    precedence rules alone (tests/core/test_route_twins.py)."""
    strict = [s for s in specs if fits(s, segs) and (s.kind == "prefix" or not trailing)]
    folded = [s for s in specs if fits(s, segs, fold=True)]
    if not folded:
        return False
    return not strict or min(s.rank() for s in folded) < min(s.rank() for s in strict)
