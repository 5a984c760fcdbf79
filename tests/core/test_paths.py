"""gateway.surface.paths.clean: every ambiguous request target is refused, good ones decode right."""

from __future__ import annotations

import pytest

from gateway.errors import BadPath
from gateway.surface.paths import CleanPath, clean

DOT = "dot segment in path"
ENCODED_SEP = "encoded '/', '\\' or NUL in path"
CONTROL = "control character in path"
BAD_PCT = "invalid percent-encoding"
NOT_UTF8 = "path is not valid UTF-8"
NOT_ABSOLUTE = "the request target must be an absolute path"
BAD_CHAR = "character not allowed in path"
EMPTY = "empty path segment"
DOUBLE = "double-encoded '.', '/', '\\' or NUL in path"

BAD = [
    ("/v1/../admin", DOT, "raw-dotdot"),
    ("/v1/./admin", DOT, "raw-dot"),
    ("/v1/..", DOT, "raw-dotdot-last"),
    ("/v1/%2e%2e/admin", DOT, "pct-dotdot-lower"),
    ("/v1/%2E%2E/admin", DOT, "pct-dotdot-upper"),
    ("/v1/.%2e/admin", DOT, "pct-dotdot-mixed"),
    ("/v1/%2e/admin", DOT, "pct-dot-lower"),
    ("/v1/%2E/admin", DOT, "pct-dot-upper"),
    ("/v1/a%2fb", ENCODED_SEP, "pct-slash-lower"),
    ("/v1/a%2Fb", ENCODED_SEP, "pct-slash-upper"),
    ("/v1/a%5cb", ENCODED_SEP, "pct-backslash-lower"),
    ("/v1/a%5Cb", ENCODED_SEP, "pct-backslash-upper"),
    ("/v1/a%00b", ENCODED_SEP, "pct-nul"),
    # Issue 8 item 10: an upstream that decodes twice sees `.`, `/`, `\` or NUL.
    ("/v1/%252e%252e/admin", DOUBLE, "double-dotdot-lower"),
    ("/v1/%252E%252E/admin", DOUBLE, "double-dotdot-upper"),
    ("/v1/.%252e/admin", DOUBLE, "double-dotdot-mixed"),
    ("/v1/%252e", DOUBLE, "double-dot-last"),
    ("/v1/a%252fb", DOUBLE, "double-slash-lower"),
    ("/v1/a%252Fb", DOUBLE, "double-slash-upper"),
    ("/v1/a%255cb", DOUBLE, "double-backslash-lower"),
    ("/v1/a%255Cb", DOUBLE, "double-backslash-upper"),
    ("/v1/a%2500b", DOUBLE, "double-nul"),
    ("/v1/a%0ab", CONTROL, "pct-lf-lower"),
    ("/v1/a%0Ab", CONTROL, "pct-lf-upper"),
    ("/v1/a%0db", CONTROL, "pct-cr"),
    ("/v1/a%09b", CONTROL, "pct-tab"),
    ("/v1/a%7fb", CONTROL, "pct-del-lower"),
    ("/v1/a%7Fb", CONTROL, "pct-del-upper"),
    ("/v1\\admin", "backslash in path", "raw-backslash"),
    ("/v1/admin;x=1", "';' in path", "semicolon"),
    ("/v1/a;", "';' in path", "semicolon-trailing"),
    ("/v1//admin", EMPTY, "double-slash-inside"),
    ("//admin", EMPTY, "double-slash-leading"),
    ("/v1/admin//", EMPTY, "double-slash-trailing"),
    ("/v1/%zz", BAD_PCT, "pct-not-hex"),
    ("/v1/%ZZ", BAD_PCT, "pct-not-hex-upper"),
    ("/v1/%4", BAD_PCT, "pct-one-digit-at-end"),
    ("/v1/%4g", BAD_PCT, "pct-one-hex-digit"),
    ("/v1/a%", BAD_PCT, "pct-trailing"),
    ("/v1/%ff", NOT_UTF8, "utf8-invalid-lower"),
    ("/v1/%FF", NOT_UTF8, "utf8-invalid-upper"),
    ("/v1/%c0%ae", NOT_UTF8, "utf8-overlong-dot"),
    ("/v1/%e2%82", NOT_UTF8, "utf8-truncated"),
    ("http://evil/admin", NOT_ABSOLUTE, "absolute-form"),
    ("HTTP://evil/admin", NOT_ABSOLUTE, "absolute-form-upper"),
    ("*", NOT_ABSOLUTE, "asterisk-form"),
    ("", NOT_ABSOLUTE, "empty-target"),
    ("v1/admin", NOT_ABSOLUTE, "relative"),
    ("/v1/a b", BAD_CHAR, "raw-space"),
    ("/v1/caf\u00e9", BAD_CHAR, "raw-non-ascii"),
    ("/v1/a\tb", BAD_CHAR, "raw-tab"),
    # `$` in a pattern also matches before a final newline; the check must anchor at the end.
    ("/v1/a\n", BAD_CHAR, "raw-final-newline"),
    ("/\n", BAD_CHAR, "root-final-newline"),
    ("/v1/a\x00b", BAD_CHAR, "raw-nul"),
    ("/v1/<x>", BAD_CHAR, "raw-angle"),
    ('/v1/"x"', BAD_CHAR, "raw-quote"),
]


@pytest.mark.parametrize(("target", "detail"), [(t, d) for t, d, _ in BAD], ids=[i for _, _, i in BAD])
def test_bad_targets_raise_bad_path(target: str, detail: str) -> None:
    with pytest.raises(BadPath) as info:
        clean(target)
    assert info.value.detail == detail
    assert (info.value.status, info.value.code) == (400, "bad_path")


def test_lone_double_slash_is_refused() -> None:
    with pytest.raises(BadPath) as info:
        clean("//")
    assert info.value.detail == EMPTY


GOOD = [
    ("/", "/", "", (), False, "root"),
    ("/v1/health", "/v1/health", "", ("v1", "health"), False, "plain"),
    ("/v1/health/", "/v1/health/", "", ("v1", "health"), True, "trailing-slash"),
    ("/v1/play%6Cists", "/v1/play%6Cists", "", ("v1", "playlists"), False, "pct-upper-decodes"),
    ("/v1/play%6cists", "/v1/play%6cists", "", ("v1", "playlists"), False, "pct-lower-decodes"),
    ("/v1/%E2%82%AC", "/v1/%E2%82%AC", "", ("v1", "\u20ac"), False, "pct-utf8"),
    ("/v1/a%20b", "/v1/a%20b", "", ("v1", "a b"), False, "pct-space"),
    ("/v1/100%25", "/v1/100%25", "", ("v1", "100%"), False, "pct-percent"),
    ("/v1/100%2541", "/v1/100%2541", "", ("v1", "100%41"), False, "pct-percent-then-harmless-hex"),
    ("/v1/%252", "/v1/%252", "", ("v1", "%2"), False, "pct-percent-then-digit"),
    ("/v1/a%3Fb", "/v1/a%3Fb", "", ("v1", "a?b"), False, "pct-question-stays-in-segment"),
    ("/v1/...", "/v1/...", "", ("v1", "..."), False, "three-dots-is-a-name"),
    ("/v1/.well-known", "/v1/.well-known", "", ("v1", ".well-known"), False, "leading-dot-name"),
    ("/v1/a:b@c", "/v1/a:b@c", "", ("v1", "a:b@c"), False, "sub-delims"),
    ("/v1/x?a=1&b=2", "/v1/x", "a=1&b=2", ("v1", "x"), False, "query-split"),
    ("/v1/x/?a=1", "/v1/x/", "a=1", ("v1", "x"), True, "query-after-trailing-slash"),
    ("/v1/x?p=/../%2f%00;\\", "/v1/x", "p=/../%2f%00;\\", ("v1", "x"), False, "query-never-vetted"),
    ("/v1/x?/admin", "/v1/x", "/admin", ("v1", "x"), False, "query-path-lookalike-ignored"),
    ("/?q", "/", "q", (), False, "root-with-query"),
    ("/v1/x?", "/v1/x", "", ("v1", "x"), False, "empty-query"),
    ("/v1/x#frag", "/v1/x", "", ("v1", "x"), False, "fragment-dropped"),
]


@pytest.mark.parametrize(
    ("target", "raw", "query", "segments", "trailing"),
    [g[:5] for g in GOOD],
    ids=[g[5] for g in GOOD],
)
def test_good_targets(target: str, raw: str, query: str, segments: tuple[str, ...], trailing: bool) -> None:
    assert clean(target) == CleanPath(raw=raw, query=query, segments=segments, trailing_slash=trailing)
