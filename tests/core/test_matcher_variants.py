"""Property: a trailing-slash or letter-case variant never reaches a weaker rule than its twin.

Upstream frameworks (Express, Spring MVC, Rails, Laravel, ASP.NET) route `/x/` as `/x` and
often `/X` as `/x`. Whatever the surface and the request, when the matcher answers with a rule,
no rule is more specific for the request's canonical twin (letter case folded, trailing slash
dropped), computed here by brute force over every rule.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.surface.matcher import Matcher, Verdict, fold_case
from gateway.surface.model import Route, RouteClass, Surface

LITERALS = ("a", "A", "b", "B", "dev", "Dev", "DEV", "x1", "\u212a", "k", "K", "i", "I", "\u0130", "\u0131")
_seg = st.one_of(st.sampled_from(LITERALS), st.just("{p}"))


@st.composite
def surfaces(draw: st.DrawFn) -> Matcher:
    routes = []
    n = draw(st.integers(min_value=1, max_value=8))
    for i in range(n):
        segs = draw(st.lists(_seg, min_size=0, max_size=3))
        if draw(st.booleans()):
            pattern = "/" + "/".join(f"{{p{j}}}" if s == "{p}" else s for j, s in enumerate(segs))
            routes.append(Route(f"r{i}", "s.yaml", i + 1, RouteClass.PUBLIC, path=pattern))
        else:
            lits = [s for s in segs if s != "{p}"]
            prefix = "/" + "/".join(lits)
            routes.append(Route(f"r{i}", "s.yaml", i + 1, RouteClass.PUBLIC, prefix=prefix))
    return Matcher(Surface(tuple(routes), ("s.yaml",)))


def _segs(pattern: str) -> list[str]:
    return [s for s in pattern.strip("/").split("/") if s]


def _key(route: Route) -> tuple[int, tuple[int, ...]]:
    """Contract section 4's precedence as a sort key: path over prefix, literal over param, longer prefix."""
    if route.path is not None:
        return (1, tuple(0 if s.startswith("{") else 1 for s in _segs(route.path)))
    return (0, (len(_segs(route.prefix or "/")),))


def _fits_folded(route: Route, folded: tuple[str, ...]) -> bool:
    if route.path is not None:
        pat = _segs(route.path)
        return len(pat) == len(folded) and all(
            p.startswith("{") or fold_case(p) == s for p, s in zip(pat, folded, strict=True)
        )
    pat = _segs(route.prefix or "/")
    return len(pat) <= len(folded) and all(fold_case(p) == s for p, s in zip(pat, folded, strict=False))


@settings(max_examples=400, deadline=None)
@given(
    m=surfaces(),
    segments=st.lists(st.sampled_from((*LITERALS, "zz", "7")), min_size=0, max_size=4),
    slash=st.booleans(),
)
def test_a_variant_never_reaches_a_weaker_rule_than_its_canonical_twin(
    m: Matcher, segments: list[str], slash: bool
) -> None:
    segs = tuple(segments)
    found = m.match("GET", segs, slash and bool(segs))
    folded = tuple(fold_case(s) for s in segs)
    fitting = [r for r in m.surface.routes if _fits_folded(r, folded)]
    if found.verdict is Verdict.FULL:
        assert found.route is not None
        best = max(_key(r) for r in fitting)
        assert _key(found.route) == best, (found.route, fitting)
    elif found.shadowed is not None:
        # A refusal that names a rule names one the canonical twin really reaches.
        assert _fits_folded(found.shadowed, folded)
