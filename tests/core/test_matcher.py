"""Matcher.match: contract section 4's precedence, 405 verdicts, params, and lookup cost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.surface import matcher as matcher_module
from gateway.surface.matcher import Match, Matcher, Verdict
from gateway.surface.model import Route, RouteClass, Surface
from gateway.surface.paths import clean
from tests.support import interpreted


def rule(
    rid: str, *, path: str | None = None, prefix: str | None = None, methods: str | None = None
) -> Route:
    """A route as the loader would build it (GET admits HEAD)."""
    ms = frozenset(methods.split()) if methods else None
    if ms is not None and "GET" in ms:
        ms |= {"HEAD"}
    return Route(rid, "routes.yaml", 1, RouteClass.PUBLIC, path=path, prefix=prefix, methods=ms)


def build(*routes: Route) -> Matcher:
    return Matcher(Surface(tuple(routes), ("routes.yaml",)))


def match(m: Matcher, method: str, target: str) -> Match:
    path = clean(target)
    return m.match(method, path.segments, path.trailing_slash)


PRECEDENCE = build(
    rule("health", path="/v1/health", methods="GET"),
    rule("v1", prefix="/v1"),
    rule("playlists", prefix="/v1/playlists"),
    rule("playlists-post", prefix="/v1/playlists", methods="POST"),
    rule("playlist-one", path="/v1/playlists/{pid}", methods="GET"),
    rule("playlist-new", path="/v1/playlists/new", methods="GET"),
    rule("a-x-c", path="/a/{x}/c"),
    rule("a-b-y", path="/a/b/{y}"),
    rule("d-e-f", path="/d/e/f"),
    rule("d-p-g", path="/d/{p}/g"),
    rule("reboot", path="/v1/devices/{device_id}/reboot", methods="POST"),
    rule("multi", path="/m/{first}/{second}"),
    rule("s-get", path="/s", methods="GET"),
    rule("s-post", path="/s", methods="POST PUT"),
    rule("t-any", path="/t"),
    rule("t-delete", path="/t", methods="DELETE"),
    rule("deep", prefix="/x/y/z"),
    rule("shallow", prefix="/x"),
    rule("root", prefix="/"),
)

FULL = Verdict.FULL
METHOD = Verdict.METHOD

# (method, target, verdict, route id, params, allow)
CASES = [
    ("GET", "/v1/health", FULL, "health", {}, (), "exact-path"),
    ("HEAD", "/v1/health", FULL, "health", {}, (), "get-admits-head"),
    ("POST", "/v1/health", METHOD, None, {}, ("GET", "HEAD"), "405-never-falls-through-to-prefix"),
    ("GET", "/v1/health/x", FULL, "v1", {}, (), "longer-than-exact-path"),
    ("GET", "/v1/playlists", FULL, "playlists", {}, (), "prefix-itself"),
    ("GET", "/v1/playlists/", FULL, "playlists", {}, (), "prefix-with-trailing-slash"),
    ("GET", "/v1/playlists/7/tracks", FULL, "playlists", {}, (), "prefix-below"),
    ("POST", "/v1/playlists", FULL, "playlists-post", {}, (), "method-specific-beats-any-method"),
    ("POST", "/v1/playlists/7/tracks", FULL, "playlists-post", {}, (), "method-specific-below-prefix"),
    ("DELETE", "/v1/playlists/7/tracks", FULL, "playlists", {}, (), "any-method-when-method-unnamed"),
    ("GET", "/v1/playlists/7", FULL, "playlist-one", {"pid": "7"}, (), "path-beats-prefix"),
    ("HEAD", "/v1/playlists/7", FULL, "playlist-one", {"pid": "7"}, (), "path-head"),
    ("DELETE", "/v1/playlists/7", METHOD, None, {}, ("GET", "HEAD"), "405-path-does-not-fall-to-prefix"),
    ("GET", "/v1/playlists/new", FULL, "playlist-new", {}, (), "literal-beats-param"),
    ("POST", "/v1/playlists/new", METHOD, None, {}, ("GET", "HEAD"), "405-literal-does-not-fall-to-param"),
    ("GET", "/v1/playlistsX", FULL, "v1", {}, (), "prefix-whole-segments-only"),
    ("GET", "/v1/play", FULL, "v1", {}, (), "prefix-not-a-string-prefix"),
    ("GET", "/v1", FULL, "v1", {}, (), "shorter-prefix-itself"),
    ("GET", "/v1x", FULL, "root", {}, (), "root-catch-all"),
    ("GET", "/", FULL, "root", {}, (), "root-itself"),
    ("OPTIONS", "/anything/at/all", FULL, "root", {}, (), "root-any-method"),
    ("GET", "/a/b/c", FULL, "a-b-y", {"y": "c"}, (), "literal-beats-param-left-to-right"),
    ("GET", "/a/z/c", FULL, "a-x-c", {"x": "z"}, (), "param-when-literal-absent"),
    ("GET", "/a/b/d", FULL, "a-b-y", {"y": "d"}, (), "literal-branch-param-tail"),
    ("GET", "/a/z/d", FULL, "root", {}, (), "no-path-fits-falls-to-prefix"),
    ("GET", "/d/e/f", FULL, "d-e-f", {}, (), "all-literal"),
    ("GET", "/d/e/g", FULL, "d-p-g", {"p": "e"}, (), "backtrack-literal-dead-end"),
    ("GET", "/d/q/g", FULL, "d-p-g", {"p": "q"}, (), "param-branch-directly"),
    ("POST", "/v1/devices/9/reboot", FULL, "reboot", {"device_id": "9"}, (), "param-captured"),
    ("GET", "/v1/devices/9/reboot", METHOD, None, {}, ("POST",), "405-allow-lists-the-pattern-methods"),
    ("GET", "/v1/devices/9/rebooted", FULL, "v1", {}, (), "near-miss-path-falls-to-prefix"),
    ("GET", "/m/1/2", FULL, "multi", {"first": "1", "second": "2"}, (), "two-params"),
    (
        "GET",
        "/m/caf%C3%A9/a%20b",
        FULL,
        "multi",
        {"first": "caf\u00e9", "second": "a b"},
        (),
        "params-decoded",
    ),
    ("GET", "/s", FULL, "s-get", {}, (), "group-get"),
    ("PUT", "/s", FULL, "s-post", {}, (), "group-put"),
    ("DELETE", "/s", METHOD, None, {}, ("GET", "HEAD", "POST", "PUT"), "405-allow-unions-the-group"),
    ("DELETE", "/t", FULL, "t-delete", {}, (), "method-specific-beats-any-on-path"),
    ("PATCH", "/t", FULL, "t-any", {}, (), "any-method-path"),
    ("GET", "/x/y/z/1", FULL, "deep", {}, (), "longer-prefix-beats-shorter"),
    ("GET", "/x/y/z", FULL, "deep", {}, (), "longer-prefix-itself"),
    ("GET", "/x/y", FULL, "shallow", {}, (), "between-prefixes"),
    ("GET", "/x/y/zz", FULL, "shallow", {}, (), "longer-prefix-whole-segments"),
]


@pytest.mark.parametrize(
    ("method", "target", "verdict", "route_id", "params", "allow"),
    [c[:6] for c in CASES],
    ids=[c[6] for c in CASES],
)
def test_precedence(
    method: str,
    target: str,
    verdict: Verdict,
    route_id: str | None,
    params: dict[str, str],
    allow: tuple[str, ...],
) -> None:
    found = match(PRECEDENCE, method, target)
    assert found.verdict is verdict
    assert (found.route.id if found.route else None) == route_id
    assert found.params == params
    assert found.allow == allow


NO_CATCH_ALL = build(
    rule("health", path="/v1/health", methods="GET"),
    rule("playlists", prefix="/v1/playlists"),
    rule("item", path="/v1/items/{id}"),
)

MISSES = [
    ("GET", "/v1/playlistsX", "prefix-whole-segments"),
    ("GET", "/v1", "above-prefix"),
    ("GET", "/", "root"),
    ("GET", "/v1/health/", "exact-path-trailing-slash"),
    ("GET", "/v1/healthz", "exact-path-longer-name"),
    ("GET", "/v1/items", "path-missing-param"),
    ("GET", "/v1/items/1/2", "path-extra-segment"),
    ("GET", "/v1/items/1/", "param-path-trailing-slash"),
    ("POST", "/elsewhere", "unknown"),
]


@pytest.mark.parametrize(("method", "target"), [m[:2] for m in MISSES], ids=[m[2] for m in MISSES])
def test_no_match(method: str, target: str) -> None:
    found = match(NO_CATCH_ALL, method, target)
    assert (found.verdict, found.route, found.params) == (Verdict.NONE, None, {})


def test_empty_surface_matches_nothing() -> None:
    assert build().match("GET", ()) == Match(Verdict.NONE)
    assert build().match("GET", ("v1",), True) == Match(Verdict.NONE)


def test_405_on_prefix_with_methods_only() -> None:
    m = build(rule("ro", prefix="/ro", methods="GET"), rule("root", prefix="/"))
    assert match(m, "DELETE", "/ro/1") == Match(Verdict.METHOD, allow=("GET", "HEAD"))
    assert match(m, "DELETE", "/rox") == Match(Verdict.FULL, m.surface.routes[1], {})


def test_root_prefix_catch_all_alone() -> None:
    m = build(rule("root", prefix="/"))
    for target in ("/", "/a", "/a/b/", "/v1/playlists/7"):
        found = match(m, "PATCH", target)
        assert (found.verdict, found.route) == (Verdict.FULL, m.surface.routes[0]), target


def test_root_path_rule() -> None:
    m = build(rule("index", path="/", methods="GET"), rule("root", prefix="/"))
    assert match(m, "GET", "/").route == m.surface.routes[0]
    assert match(m, "GET", "/a").route == m.surface.routes[1]


def test_params_are_a_fresh_dict_per_match() -> None:
    m = build(rule("item", path="/i/{id}"))
    first = match(m, "GET", "/i/1")
    second = match(m, "GET", "/i/2")
    assert (first.params, second.params) == ({"id": "1"}, {"id": "2"})


def test_backtracking_restores_params_of_the_abandoned_branch() -> None:
    m = build(
        rule("lit", path="/w/{ws}/items/{id}/edit"),
        rule("par", path="/w/{ws}/{kind}/{id}/view"),
    )
    found = match(m, "GET", "/w/acme/items/7/view")
    assert found.route == m.surface.routes[1]
    assert found.params == {"ws": "acme", "kind": "items", "id": "7"}


def test_same_shape_rules_capture_their_own_param_names() -> None:
    m = build(
        rule("get-by-x", path="/a/{x}", methods="GET"),
        rule("post-by-y", path="/a/{y}", methods="POST"),
    )
    assert match(m, "GET", "/a/1").params == {"x": "1"}
    found = match(m, "POST", "/a/1")
    assert found.route == m.surface.routes[1]
    assert found.params == {"y": "1"}


def _counting_walk(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[int]]:
    """Count every step of the path-trie walk (the walk recurses through the module global), in
    a plain-Python copy of the matcher: the compiled one calls `_walk` directly."""
    plain = interpreted(matcher_module)
    calls = [0]
    real: Callable[..., Any] = plain._walk

    def walk(*args: Any) -> Any:
        calls[0] += 1
        return real(*args)

    monkeypatch.setattr(plain, "_walk", walk)
    return plain, calls


def _many(n: int, module: Any = matcher_module) -> Matcher:
    routes = [rule(f"r{i}", path=f"/r{i}/items/{{id}}", methods="GET") for i in range(n)]
    routes += [rule(f"p{i}", prefix=f"/p{i}/files") for i in range(n)]
    return module.Matcher(Surface(tuple(routes), ("routes.yaml",)))  # type: ignore[no-any-return]


LOOKUPS = [
    ("GET", "/r0/items/7", Verdict.FULL, "r0", {"id": "7"}),
    ("GET", "/r5000/items/x", Verdict.FULL, "r5000", {"id": "x"}),
    ("GET", "/r9999/items/last", Verdict.FULL, "r9999", {"id": "last"}),
    ("POST", "/r9999/items/last", Verdict.METHOD, None, {}),
    ("GET", "/p9998/files/a/b", Verdict.FULL, "p9998", {}),
    ("GET", "/r10000/items/1", Verdict.NONE, None, {}),
    ("GET", "/r9999/things/1", Verdict.NONE, None, {}),
]


def test_ten_thousand_rules_match_right_with_constant_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    large = _many(10_000)
    assert len(large.surface.routes) == 20_000
    for method, target, verdict, route_id, params in LOOKUPS:
        found = match(large, method, target)
        assert found.verdict is verdict, target
        assert (found.route.id if found.route else None) == route_id, target
        assert found.params == params, target
    # The walk visits one trie node per segment, whatever the number of rules.
    plain, calls = _counting_walk(monkeypatch)
    small, large = _many(10, plain), _many(10_000, plain)
    for target in ("/r9/items/7", "/r9/things/7", "/nothing/here/at/all"):
        calls[0] = 0
        match(small, "GET", target)
        in_small = calls[0]
        calls[0] = 0
        match(large, "GET", target)
        assert 0 < calls[0] == in_small <= len(clean(target).segments) + 1, target


# Contract section 4: a request that would match a more specific rule with its trailing slash
# dropped or its letter case ignored is a miss, never judged by the less specific rule.
SLASH = "without its trailing slash"
CASE = "with letter case ignored"
CASE_SLASH = "with letter case ignored and its trailing slash dropped"
SUFFIX = "with its format suffix dropped"
SHADOWS = [
    ("GET", "/v1/health/", "health", SLASH, "exact-path-trailing-slash"),
    ("GET", "/v1/playlists/7/", "playlist-one", SLASH, "param-path-trailing-slash"),
    ("POST", "/v1/devices/5/reboot/", "reboot", SLASH, "reboot-trailing-slash"),
    ("GET", "/v1/devices/5/reboot/", "reboot", SLASH, "wrong-method-still-a-miss"),
    ("POST", "/V1/Devices/5/Reboot", "reboot", CASE, "reboot-case"),
    ("POST", "/V1/DEVICES/5/REBOOT/", "reboot", CASE_SLASH, "reboot-case-and-slash"),
    ("GET", "/V1/health", "health", CASE, "case-in-prefix-part"),
    ("GET", "/v1/Playlists/7/tracks", "playlists", CASE, "case-reaches-a-longer-prefix"),
    ("GET", "/X/Y/Z/1", "deep", CASE, "case-deeper-prefix"),
    ("GET", "/D/e/f", "d-e-f", CASE, "case-literal-beats-exact-param-match"),
    # Matched as sent by `/a/{x}/c`, but `/a/b/c` is `/a/b/{y}` (literal first) to a case-blind upstream.
    ("GET", "/a/B/c", "a-b-y", CASE, "case-literal-beats-the-param-rule-it-matched"),
    # Rails' `(.:format)` and Spring's suffix patterns route `/reboot.json` as `/reboot`.
    ("POST", "/v1/devices/5/reboot.json", "reboot", SUFFIX, "format-suffix"),
    ("POST", "/v1/devices/5/reboot.tar.gz", "reboot", SUFFIX, "format-suffix-cut-at-the-first-dot"),
    ("GET", "/v1/health.json", "health", SUFFIX, "format-suffix-under-a-prefix"),
    ("GET", "/v1/playlists/new.xml", "playlist-new", SUFFIX, "format-suffix-beats-a-param"),
    ("GET", "/x/y/z.html", "deep", SUFFIX, "format-suffix-reaches-a-deeper-prefix"),
    ("GET", "/x.json", "shallow", SUFFIX, "format-suffix-reaches-a-top-level-prefix"),
    ("POST", "/V1/Devices/5/Reboot.json", "reboot", SUFFIX, "format-suffix-and-case"),
]


@pytest.mark.parametrize(
    ("method", "target", "shadowed", "how"), [s[:4] for s in SHADOWS], ids=[s[4] for s in SHADOWS]
)
def test_variant_of_a_more_specific_rule_is_a_miss(method: str, target: str, shadowed: str, how: str) -> None:
    found = match(PRECEDENCE, method, target)
    assert found.verdict is Verdict.NONE
    assert found.route is None
    assert found.shadowed is not None and found.shadowed.id == shadowed
    # The 404's detail: the client hears why, not which rule.
    assert found.why == f"this path matches a more specific rule {how}"


UNSHADOWED = [
    ("GET", "/v1/playlists/", "playlists", "prefix-itself-with-slash"),
    ("GET", "/v1/playlists/7/tracks/", "playlists", "below-prefix-with-slash"),
    ("GET", "/v1/Other/7", "v1", "no-deeper-rule-differs-by-case"),
    ("GET", "/x/Y", "shallow", "case-below-the-deepest-prefix"),
    ("GET", "/Anything", "root", "catch-all-nothing-more-specific"),
    ("GET", "/a/Z/c", "a-x-c", "param-takes-any-case"),
    ("GET", "/v1/playlists/7.json", "playlist-one", "format-suffix-on-a-param"),
    ("GET", "/x/app.js", "shallow", "dot-with-nothing-behind-it"),
    ("GET", "/.well-known", "root", "leading-dot"),
]


@pytest.mark.parametrize(
    ("method", "target", "route_id"), [u[:3] for u in UNSHADOWED], ids=[u[3] for u in UNSHADOWED]
)
def test_variant_with_nothing_more_specific_still_matches(method: str, target: str, route_id: str) -> None:
    found = match(PRECEDENCE, method, target)
    assert found.verdict is Verdict.FULL
    assert found.route is not None and found.route.id == route_id
    assert found.shadowed is None


def test_mixed_case_literals_are_folded_on_both_sides() -> None:
    m = build(rule("reports", prefix="/Reports"), rule("root", prefix="/"))
    assert match(m, "GET", "/Reports/1").route == m.surface.routes[0]
    for target in ("/reports/1", "/REPORTS", "/rEpOrTs/x/"):
        found = match(m, "GET", target)
        assert found.shadowed == m.surface.routes[0], target
    assert match(m, "GET", "/report").route == m.surface.routes[1]


def test_case_variants_of_one_pattern_do_not_shadow_their_own_rule() -> None:
    m = build(rule("exact", path="/api/Items/{id}", methods="GET"), rule("root", prefix="/"))
    assert match(m, "GET", "/api/Items/AbC").route == m.surface.routes[0]
    assert match(m, "GET", "/api/items/AbC").shadowed == m.surface.routes[0]


@pytest.mark.parametrize(
    "target",
    ["/adm%C4%B0n", "/adm%C4%B1n", "/%C4%B0tems/1", "/%E2%84%AAeys/x", "/%C5%BFecret"],
    ids=["dotted-capital-I", "dotless-i", "dotted-I-under-prefix", "kelvin-sign", "long-s"],
)
def test_letters_a_simple_case_mapping_makes_ascii_shadow_the_ascii_rule(target: str) -> None:
    # Java's Character.toLowerCase(U+0130) is 'i', equalsIgnoreCase(U+0131, 'i') holds (Spring with
    # case-insensitive matching): such a request must not fall to the catch-all.
    m = build(
        rule("admin", path="/admin"),
        rule("items", prefix="/items"),
        rule("keys", path="/keys/{k}"),
        rule("secret", path="/secret"),
        rule("root", prefix="/"),
    )
    found = match(m, "GET", target)
    assert found.verdict is Verdict.NONE, target
    assert found.shadowed is not None and found.shadowed.id != "root"


def test_one_mixed_case_literal_makes_every_request_case_blind() -> None:
    """A literal that case folding changes, wherever it sits in the surface (before or after
    all-lowercase rules), makes a lowercase request a case twin of its rule."""
    for order in ((0, 1, 2), (1, 0, 2), (2, 1, 0)):
        rules = [rule("admin", path="/v1/Admin"), rule("x", path="/v1/x"), rule("v1", prefix="/v1")]
        m = build(*(rules[i] for i in order))
        found = match(m, "GET", "/v1/admin")
        assert found.verdict is Verdict.NONE, order
        assert found.shadowed is not None and found.shadowed.id == "admin", order
        assert found.why == f"this path matches a more specific rule {CASE}"
        assert match(m, "GET", "/v1/y").route == rules[2]


def test_a_surface_whose_only_literals_are_mixed_case_is_case_blind() -> None:
    """No all-lowercase literal anywhere (the weaker rule is parameters only): a lowercase request
    is still a case twin of the mixed-case rule, never the weaker rule's."""
    m = build(rule("admin", path="/V1/Admin"), rule("any", path="/{a}/{b}"))
    found = match(m, "GET", "/v1/admin")
    assert found.verdict is Verdict.NONE
    assert found.shadowed is not None and found.shadowed.id == "admin"
    assert match(m, "GET", "/v1/other").route == m.surface.routes[1]


def test_format_suffix_of_a_mixed_case_rule_is_a_miss() -> None:
    m = build(rule("reboot", path="/v1/Reboot", methods="POST"), rule("v1", prefix="/v1"))
    for target in ("/v1/reboot.json", "/v1/Reboot.json"):
        found = match(m, "POST", target)
        assert found.shadowed is not None and found.shadowed.id == "reboot", target
        assert found.why == f"this path matches a more specific rule {SUFFIX}"
    # Even a literal rule for the suffixed name yields to the case twin of its stem.
    m = build(rule("dotted", path="/v1/reboot.json"), rule("reboot", path="/v1/Reboot", methods="POST"))
    found = match(m, "POST", "/v1/reboot.json")
    assert found.shadowed is not None and found.shadowed.id == "reboot"


def test_format_twin_names_the_rule_its_stem_matches_exactly() -> None:
    # Two rules one letter case apart: the stem `reboot` is the lowercase one's, not its twin's.
    m = build(rule("upper", path="/v1/REBOOT"), rule("lower", path="/v1/reboot"), rule("v1", prefix="/v1"))
    found = match(m, "GET", "/v1/reboot.json")
    assert found.shadowed is not None and found.shadowed.id == "lower"
    found = match(m, "GET", "/v1/REBOOT.json")
    assert found.shadowed is not None and found.shadowed.id == "upper"


def test_literals_are_kept_whole() -> None:
    """Patterns are cut at `/` only: a literal that begins or ends with any other character
    (here `X`) keeps it."""
    m = build(rule("box", path="/v1/BOX"), rule("xray", path="/Xray/{id}"), rule("lux", prefix="/LUX"))
    assert match(m, "GET", "/v1/BOX").route == m.surface.routes[0]
    assert match(m, "GET", "/Xray/1").route == m.surface.routes[1]
    assert match(m, "GET", "/LUX/1").route == m.surface.routes[2]
    assert match(m, "GET", "/v1/BO").verdict is Verdict.NONE


# -- the quick tests in front of case folding and format suffixes ---------------------------------

_SEGMENT = st.text(
    # ASCII, and letters whose folding is special: dotted capital I, dotless i, sharp s, Kelvin, ...
    alphabet=st.sampled_from([*"aZz09.-_~", *"\u0130\u0131\u00df\u212a\u0307\u00e9\u00c9"]),
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_SEGMENT, max_size=4).map(tuple))
def test_the_quick_fold_test_agrees_with_folding_every_segment(segments: tuple[str, ...]) -> None:
    # SECURITY: a wrong "no" here would skip the case-blind twin search (`/ADMIN` past `/admin`).
    assert matcher_module._any_folds(segments) == any(matcher_module._folds(s) for s in segments)


@settings(max_examples=400, deadline=None)
@given(st.lists(_SEGMENT, max_size=4).map(tuple))
def test_the_quick_suffix_test_never_skips_a_format_twin(segments: tuple[str, ...]) -> None:
    # SECURITY: a wrong "no" would let `/x/reboot.json` reach `/x/{id}` past `/x/reboot`.
    last = segments[-1] if segments else ""
    stem = last.split(".", 1)[0]
    assert matcher_module._suffixed(segments) or not stem or stem == last
