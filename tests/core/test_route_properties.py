"""Generated proofs for the two functions that decide which route a request gets.

1. `clean()`: a raw target spelled any way a client can (every byte percent-encoded, in either
   hex case; dot segments in every spelling; overlong UTF-8; `;` and `\\`) is either refused or
   cleaned to exactly the segments an upstream sees, so it matches the same route as its
   canonical form.
2. The trie matcher agrees with a brute-force reference written from the README's precedence
   rules (tests/core/routegen.py), on generated surfaces of up to a few hundred rules.

Bounded for CI: a fixed number of examples, derandomised, no example database.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import BadPath
from gateway.surface.matcher import Match, Matcher
from gateway.surface.paths import clean

from .routegen import Outcome, Spec, load, reference, requests, surfaces, target, twin_affected

BOUNDED = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(found: Match) -> Outcome:
    return Outcome(
        found.verdict.value,
        found.route.id if found.route else None,
        tuple(found.params.items()),
        found.allow,
    )


# ---------------------------------------------------------------------------------------------
# clean(): every spelling of a path is refused or means what the upstream reads

UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
SUB_DELIMS = set("!$&'()*+,=:@")

# A fixed surface whose literals the canonical paths draw on.
FIXED = [
    Spec("health", "path", ("v1", "health"), ("GET",)),
    Spec("item", "path", ("v1", "items", "{id}"), None),
    Spec("reboot", "path", ("v1", "devices", "{id}", "reboot"), ("POST",)),
    Spec("tilde", "path", ("~u", "x.y", "{rest}"), None),
    Spec("v1", "prefix", ("v1",), None),
    Spec("admin", "prefix", ("v1", "admin"), None),
    Spec("root", "prefix", (), None),
]
FIXED_MATCHER = load(FIXED)
WORDS = ("v1", "health", "items", "devices", "reboot", "admin", "~u", "x.y", "7", "Admin", "V1")


def _pct(byte: int, upper: bool) -> str:
    text = f"%{byte:02X}"
    return text if upper else text.lower()


@st.composite
def spelled(draw: st.DrawFn, char: str) -> str:
    """One character of a segment as a client may spell it."""
    data = char.encode("utf-8")
    plain_ok = char in UNRESERVED or char in SUB_DELIMS
    choices = ["pct"] + (["plain", "plain"] if plain_ok else [])
    if len(data) == 1 and data[0] < 0x80:
        choices.append("overlong")  # a lenient decoder reads %C0%AE as '.'
    how = draw(st.sampled_from(choices))
    upper = draw(st.booleans())
    if how == "plain":
        return char
    if how == "overlong":
        b = data[0]
        return _pct(0xC0 | (b >> 6), upper) + _pct(0x80 | (b & 0x3F), upper)
    return "".join(_pct(b, draw(st.booleans())) for b in data)


@st.composite
def spelled_segment(draw: st.DrawFn, seg: str) -> str:
    return "".join(draw(spelled(c)) for c in seg)


# Ways to write a separator (or nothing) that an upstream resolves away: dot segments in every
# spelling, a `;` parameter, a backslash, an encoded slash, a doubled slash.
DOT = st.sampled_from((".", "%2e", "%2E"))
NOISE = st.one_of(
    DOT.map(lambda d: f"/{d}"),
    st.tuples(st.sampled_from(WORDS), DOT, DOT).map(lambda t: f"/{t[0]}/{t[1]}{t[2]}"),
    st.sampled_from(("/%c0%ae", "/%C0%AE%c0%ae", "/.%2e", "/%2e.")),
    st.just(";"),
    st.sampled_from((";x=1", ";jsessionid=abc")),
)
SEPARATORS = st.sampled_from(("/", "/", "/", "/", "\\", "%2f", "%2F", "%5c", "//", "%c0%af"))

# Segment text a parameter may capture: anything but '/' and control characters, and not a
# dot segment.
SEGMENT_TEXT = st.one_of(
    st.sampled_from(WORDS),
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"), min_size=1, max_size=6
    ).filter(lambda s: s not in (".", "..")),
)


@st.composite
def spellings(draw: st.DrawFn) -> tuple[tuple[str, ...], bool, str]:
    """A canonical path (segments, trailing slash) and one raw spelling of it."""
    segs = tuple(draw(st.lists(SEGMENT_TEXT, max_size=5)))
    trailing = bool(segs) and draw(st.booleans())
    raw = ""
    for seg in segs:
        raw += draw(SEPARATORS) + draw(spelled_segment(seg))
        if draw(st.integers(0, 5)) == 0:
            raw += draw(NOISE)
    if not segs or trailing:
        raw += "/"
    if draw(st.booleans()):
        raw += "?" + draw(st.sampled_from(("a=1", "x=/../admin", "", "b=%2F")))
    return segs, trailing, raw


@BOUNDED
@given(spellings())
def test_clean_refuses_or_keeps_the_canonical_route(case: tuple[tuple[str, ...], bool, str]) -> None:
    segs, trailing, raw = case
    try:
        got = clean(raw)
    except BadPath:
        return
    # SECURITY: accepted means read exactly as the upstream reads it, so the matcher judged the
    # path the upstream will serve.
    assert (got.segments, got.trailing_slash) == (segs, trailing), raw
    if twin_affected(FIXED, segs, trailing):
        return  # decided by the letter-case/trailing-slash rule (test_route_twins.py)
    for method in ("GET", "POST"):
        assert outcome(FIXED_MATCHER.match(method, got.segments, got.trailing_slash)) == reference(
            FIXED, method, segs, trailing
        )


def upstream_view(raw: str) -> tuple[tuple[str, ...], bool]:
    """How a lenient upstream reads a path: `\\` as `/`, `;` parameters dropped, percent-decoded
    once (overlong UTF-8 read as ASCII), split again on decoded separators, dot segments
    resolved, empty segments collapsed."""
    path = raw.partition("?")[0].partition("#")[0]
    out: list[str] = []
    pieces = re.split(r"[/\\]", path)[1:]
    trailing = len(pieces) > 0 and pieces[-1] == "" and len(pieces) > 1
    for piece in pieces:
        piece = piece.partition(";")[0]
        data = bytearray()
        i = 0
        while i < len(piece):
            if piece[i] == "%" and re.fullmatch(r"[0-9A-Fa-f]{2}", piece[i + 1 : i + 3]):
                data.append(int(piece[i + 1 : i + 3], 16))
                i += 3
            else:
                data += piece[i].encode()
                i += 1
        data = re.sub(
            rb"[\xc0\xc1]([\x80-\xbf])", lambda m: bytes([((m[0][0] & 1) << 6) | (m[1][0] & 0x3F)]), data
        )
        for part in re.split(r"[/\\]", data.decode("utf-8", "replace")):
            if part in ("", "."):
                continue
            if part == "..":
                if out:
                    out.pop()
                continue
            out.append(part)
    return tuple(out), trailing and bool(out)


RAW_ALPHABET = st.sampled_from(
    ("/", "/", ".", "..", "%", "%2e", "%2E", "%2f", "%5C", "%00", "%25", "%c0%ae", "%C0%AF", "%e9",
     "%C3%A9", "%7E", "%41", ";", "\\", "a", "A", "v1", "~", "%20", "-", "?", "#")
)  # fmt: skip


@BOUNDED
@given(st.lists(RAW_ALPHABET, max_size=12).map(lambda parts: "/" + "".join(parts)))
def test_clean_agrees_with_a_lenient_upstream_or_refuses(raw: str) -> None:
    try:
        got = clean(raw)
    except BadPath:
        return
    assert (got.segments, got.trailing_slash) == upstream_view(raw), raw


# RFC 3986 pchar and "/", the only characters a kept path may hold (`%` only as an escape).
PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,=:@/%")


@BOUNDED
@given(st.text(st.characters(codec="ascii"), max_size=6), st.sampled_from(["", "\n", "\r\n", "\t", " "]))
def test_a_kept_path_holds_only_path_characters(text: str, end: str) -> None:
    # Every ASCII character, a final newline among them: `$` in a check's pattern matched before
    # one, so "/a\n" was kept.
    raw = "/a" + text + end
    try:
        got = clean(raw)
    except BadPath:
        return
    assert set(got.raw) <= PATH_CHARS, raw


@pytest.mark.parametrize("upper", [True, False], ids=["upper-hex", "lower-hex"])
@pytest.mark.parametrize("byte", range(256), ids=lambda b: f"{b:02x}")
def test_every_percent_encoded_byte(byte: int, upper: bool) -> None:
    """Each byte encoded in a parameter segment: refused, or decoded to what an upstream sees."""
    raw = f"/v1/items/a{_pct(byte, upper)}b"
    try:
        got = clean(raw)
    except BadPath:
        # SECURITY: separators, NUL, control characters and lone UTF-8 bytes are refused.
        assert byte in (0x2F, 0x5C, 0x7F) or byte < 0x20 or byte >= 0x80
        return
    assert byte not in (0x2F, 0x5C, 0x7F) and 0x20 <= byte < 0x80
    assert got.segments == upstream_view(raw)[0] == ("v1", "items", f"a{chr(byte)}b")
    found = FIXED_MATCHER.match("GET", got.segments, got.trailing_slash)
    assert outcome(found) == Outcome("full", "item", (("id", f"a{chr(byte)}b"),))


# ---------------------------------------------------------------------------------------------
# The trie matcher against the brute-force reference


@settings(BOUNDED, max_examples=150)
@given(surfaces(), st.lists(requests(), min_size=1, max_size=25))
def test_trie_matcher_agrees_with_the_reference(
    specs: list[Spec], reqs: list[tuple[str, tuple[str, ...], bool]]
) -> None:
    matcher = load(specs)
    for method, segs, trailing in reqs:
        if twin_affected(specs, segs, trailing and bool(segs)):
            continue  # decided by the letter-case/trailing-slash rule (test_route_twins.py)
        path = clean(target(segs, trailing))
        got = outcome(matcher.match(method, path.segments, path.trailing_slash))
        want = reference(specs, method, segs, path.trailing_slash)
        assert got == want, (
            method,
            target(segs, trailing),
            [s for s in specs if s.id in (got.route, want.route)],
        )


@settings(BOUNDED, max_examples=100)
@given(surfaces(max_rules=40), st.data())
def test_every_rule_is_reached_by_its_own_pattern(specs: list[Spec], data: st.DataObject) -> None:
    """Requests drawn from the rules themselves, so deep paths and parameters are exercised."""
    matcher = load(specs)
    for spec in specs:
        segs = tuple(
            data.draw(st.sampled_from(("7", "a", "A"))) if s.startswith("{") else s for s in spec.segs
        )
        extra = data.draw(st.lists(st.sampled_from(("a", "7")), max_size=2)) if spec.kind == "prefix" else []
        segs = segs + tuple(extra)
        if twin_affected(specs, segs, False):
            continue
        for method in (*(spec.methods or ()), "GET", "DELETE"):
            got = outcome(matcher.match(method, segs, False))
            assert got == reference(specs, method, segs, False)


def test_reference_reads_the_readme_rules() -> None:
    """The reference itself, on the README's own examples, so a wrong reference cannot agree
    with a wrong matcher."""
    specs = [
        Spec("health", "path", ("v1", "health"), ("GET",)),
        Spec("v1", "prefix", ("v1",), None),
        Spec("v1-post", "prefix", ("v1",), ("POST",)),
        Spec("one", "path", ("v1", "{id}"), ("GET",)),
        Spec("new", "path", ("v1", "new"), ("PUT",)),
        Spec("abc", "path", ("a", "{x}", "c"), None),
        Spec("aby", "path", ("a", "b", "{y}"), None),
    ]
    assert reference(specs, "HEAD", ("v1", "health"), False) == Outcome("full", "health")
    assert reference(specs, "POST", ("v1", "health"), False) == Outcome("method", allow=("GET", "HEAD"))
    assert reference(specs, "GET", ("v1", "health"), True) == Outcome("full", "v1")
    assert reference(specs, "POST", ("v1", "x", "y"), False) == Outcome("full", "v1-post")
    assert reference(specs, "GET", ("v1", "7"), False) == Outcome("full", "one", (("id", "7"),))
    assert reference(specs, "GET", ("v1", "new"), False) == Outcome("method", allow=("PUT",))
    assert reference(specs, "GET", ("a", "b", "c"), False) == Outcome("full", "aby", (("y", "c"),))
    assert reference(specs, "GET", ("b",), False) == Outcome("none")
    assert isinstance(load(specs), Matcher)
