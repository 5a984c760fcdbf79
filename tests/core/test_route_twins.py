"""A generated request never reaches a weaker rule than its canonical twin (contract section 4).

Many frameworks route `/x/` as `/x`, and some route case-blind (Express, Spring MVC, Rails,
Laravel, ASP.NET). So a request that would match a more specific rule if its trailing slash were
dropped or its letter case ignored is 404 `no_route`; it is never judged by a less specific rule
(issue 8, item 1). Checked on generated surfaces and on requests drawn from the rules themselves,
with letters flipped and slashes added, against the brute-force reading in routegen.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.surface.matcher import Verdict
from gateway.surface.paths import clean

from .routegen import METHODS, Spec, load, requests, stronger_twins, surfaces, target
from .test_route_properties import BOUNDED


@st.composite
def variants(draw: st.DrawFn, specs: list[Spec]) -> tuple[str, tuple[str, ...], bool]:
    """A request built from one of the rules: parameters filled, letters flipped, a slash added."""
    spec = draw(st.sampled_from(specs))
    segs = []
    for seg in spec.segs:
        text = draw(st.sampled_from(("7", "a", "A"))) if seg.startswith("{") else seg
        segs.append("".join(c.swapcase() if draw(st.booleans()) else c for c in text))
    if spec.kind == "prefix":
        segs += draw(st.lists(st.sampled_from(("a", "B", "7")), max_size=2))
    trailing = bool(segs) and draw(st.booleans())
    return draw(st.sampled_from(METHODS)), tuple(segs), trailing


def _check(specs: list[Spec], method: str, segs: tuple[str, ...], trailing: bool) -> None:
    matcher = load(specs)
    path = clean(target(segs, trailing))
    found = matcher.match(method, path.segments, path.trailing_slash)
    if found.verdict is not Verdict.FULL:
        return
    assert found.route is not None
    (reached,) = [s for s in specs if s.id == found.route.id]
    # SECURITY: what the request reached must be at least as specific as anything its
    # slash-less, case-blind twin would reach at such an upstream.
    stronger = stronger_twins(specs, path.segments, reached)
    assert stronger == [], (method, target(segs, trailing), reached, stronger)


@settings(BOUNDED, max_examples=200)
@given(surfaces(max_rules=60), st.data())
def test_variants_of_rules_never_reach_a_weaker_rule(specs: list[Spec], data: st.DataObject) -> None:
    for _ in range(10):
        _check(specs, *data.draw(variants(specs)))


@settings(BOUNDED, max_examples=100)
@given(surfaces(), st.lists(requests(), min_size=1, max_size=20))
def test_generated_requests_never_reach_a_weaker_rule(
    specs: list[Spec], reqs: list[tuple[str, tuple[str, ...], bool]]
) -> None:
    for method, segs, trailing in reqs:
        _check(specs, method, segs, trailing)


def test_the_reviewed_bypasses_are_no_route() -> None:
    """Issue 8's reproductions: trailing slash and letter case past `scope: full`, and case
    past a catch-all."""
    specs = [
        Spec("devices", "prefix", ("v1", "devices"), None),
        Spec("reboot", "path", ("v1", "devices", "{id}", "reboot"), ("POST",)),
        Spec("reports", "prefix", ("reports",), None),
        Spec("root", "prefix", (), None),
    ]
    matcher = load(specs)
    for method, raw in (
        ("POST", "/v1/devices/5/reboot/"),
        ("POST", "/V1/Devices/7/Reboot"),
        ("GET", "/REPORTS/secret"),
    ):
        path = clean(raw)
        assert matcher.match(method, path.segments, path.trailing_slash).verdict is Verdict.NONE, raw
    path = clean("/v1/devices/5/reboot")
    found = matcher.match("POST", path.segments, path.trailing_slash)
    assert found.route is not None and found.route.id == "reboot"
