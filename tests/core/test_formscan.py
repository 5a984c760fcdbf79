"""gateway.proxy.formscan: `_method` found in queries and form bodies as PHP would read it.

Each refusal here is one a framework would honour: Laravel and Symfony (PHP's parser), Rails,
Express's method-override. The scanners are fed the body in every possible split, since a
client chooses where its chunks end.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.errors import BadRequest, BodyTooLarge
from gateway.proxy.formscan import (
    MAX_PART_HEADERS,
    FormScan,
    MultipartScan,
    UrlEncodedScan,
    is_method_field,
    php_name,
    query_names_method,
    scanner_for,
)

PHP_NAMES = [
    (b"_method", b"_method", "plain"),
    (b".method", b"_method", "dot-reads-as-underscore"),
    (b" _method", b"_method", "leading-space-dropped"),
    (b"   _method", b"_method", "leading-spaces-dropped"),
    (b"+_method", b"_method", "plus-is-a-leading-space"),
    (b"%20_method", b"_method", "encoded-leading-space"),
    (b"%5fmethod", b"_method", "encoded-underscore"),
    (b"%2emethod", b"_method", "encoded-dot"),
    (b"_method%00x", b"_method", "cut-at-nul"),
    (b"_method[]", b"_method", "cut-at-bracket"),
    (b"_method%5B0%5D", b"_method", "cut-at-encoded-bracket"),
    (b"_method[x", b"_method", "cut-at-open-bracket"),
    (b"a.b c", b"a_b_c", "dots-and-spaces-inside"),
    (b" method", b"method", "leading-space-dropped-not-read-as-underscore"),
    (b"_methods", b"_methods", "longer-name-kept"),
]


@pytest.mark.parametrize(("raw", "name"), [p[:2] for p in PHP_NAMES], ids=[p[2] for p in PHP_NAMES])
def test_php_name(raw: bytes, name: bytes) -> None:
    assert php_name(raw) == name


@pytest.mark.parametrize(
    "raw",
    [b"_METHOD", b"_Method", b".METHOD", b"%5FMETHOD"],
    ids=["upper", "title", "dot-upper", "enc-upper"],
)
def test_letter_case_is_ignored_fail_closed(raw: bytes) -> None:
    assert is_method_field(raw)


@pytest.mark.parametrize("raw", [b"method", b"__method", b"x_method", b"_meth", b"_method_", b"-method"])
def test_other_names_are_not_method(raw: bytes) -> None:
    assert not is_method_field(raw)


QUERIES = [
    ("_method=DELETE", True),
    ("a=1&.method=DELETE", True),
    ("a=1;%20_method=DELETE", True),
    ("_method%00junk=DELETE", True),
    ("_method[]=DELETE", True),
    ("+_method=DELETE", True),
    ("_method", True),
    ("method=DELETE", False),
    ("x=_method", False),
    ("q=a%26_method%3DDELETE", False),
]


@pytest.mark.parametrize(("query", "names"), QUERIES, ids=[q for q, _ in QUERIES])
def test_query_names_method(query: str, names: bool) -> None:
    assert query_names_method(query) is names


def run(scan: FormScan, chunks: list[bytes]) -> bytes:
    out = b"".join(scan.feed(c) for c in chunks)
    return out + scan.end()


def splits(body: bytes, cut: int) -> list[bytes]:
    return [body[:cut], body[cut:]]


def headers(content_type: str, **more: str) -> CIMultiDict[str]:
    h: CIMultiDict[str] = CIMultiDict({"Content-Type": content_type})
    h.update(more)
    return h


# ---------------------------------------------------------------------------------------------
# urlencoded


def test_urlencoded_without_method_is_released_whole_at_the_end() -> None:
    scan = UrlEncodedScan(1024)
    assert scan.feed(b"a=1&b=") == b""
    assert scan.feed(b"2") == b""
    assert scan.held == 7
    assert scan.end() == b"a=1&b=2"


@pytest.mark.parametrize(
    "body",
    [b"_method=DELETE", b"a=1&_method=DELETE", b"a=1&.method=DELETE", b"x=1&%5Fmethod=PUT", b"a=b&_method"],
)
def test_urlencoded_method_field_refused_in_any_split(body: bytes) -> None:
    for cut in range(len(body) + 1):
        scan = UrlEncodedScan(1024)
        released = b"".join(scan.feed(c) for c in splits(body, cut))
        assert released == b""  # nothing left before the verdict
        with pytest.raises(BadRequest):
            scan.end()


def test_urlencoded_over_form_inspect_is_413() -> None:
    scan = UrlEncodedScan(10)
    scan.feed(b"a=123456")
    with pytest.raises(BodyTooLarge):
        scan.feed(b"789")


def test_declared_urlencoded_length_over_form_inspect_is_413_before_any_byte() -> None:
    with pytest.raises(BodyTooLarge):
        scanner_for(headers("application/x-www-form-urlencoded", **{"Content-Length": "65537"}), 65536)


# ---------------------------------------------------------------------------------------------
# which requests are scanned


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("application/x-www-form-urlencoded", UrlEncodedScan),
        ("Application/X-WWW-Form-URLEncoded; charset=UTF-8", UrlEncodedScan),
        ("multipart/form-data; boundary=xyz", MultipartScan),
        ("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW", MultipartScan),
        ("multipart/form-data; boundary=xboundaryx", MultipartScan),
        ('Multipart/Form-Data; BOUNDARY="a b"', MultipartScan),
        ("application/json", type(None)),
        ("text/plain", type(None)),
        ("multipart/mixed; boundary=x", type(None)),
    ],
)
def test_scanner_for_content_type(content_type: str, kind: type) -> None:
    assert isinstance(scanner_for(headers(content_type), 1024), kind)


def test_no_content_type_is_a_form_on_post_only() -> None:
    # Rack reads a POST body without Content-Type as urlencoded; other methods it leaves alone.
    assert isinstance(scanner_for(CIMultiDict(), 1024, "POST"), UrlEncodedScan)
    assert isinstance(scanner_for(CIMultiDict(), 1024), UrlEncodedScan)  # method unknown: fail closed
    assert scanner_for(CIMultiDict(), 1024, "PUT") is None
    with pytest.raises(BodyTooLarge):
        scanner_for(CIMultiDict({"Content-Length": "2048"}), 1024, "POST")


@pytest.mark.parametrize(
    ("h", "detail"),
    [
        (headers("multipart/form-data"), "boundary"),
        (headers("multipart/form-data; boundary="), "boundary"),
        (headers("application/x-www-form-urlencoded", **{"Content-Encoding": "gzip"}), "Content-Encoding"),
        (headers("multipart/form-data; boundary=x", **{"Content-Encoding": "deflate"}), "Content-Encoding"),
        (headers("multipart/form-data; xboundary=a; boundary=b"), "boundary"),
        (headers("multipart/form-data; boundary= b"), "boundary"),
        (headers("multipart/form-data; Boundary=a; boundary=b"), "boundary"),
        (headers('multipart/form-data; boundary=a; x="boundary=b"'), "boundary"),
        (headers("multipart/form-data; boundary=a b"), "boundary"),
    ],
    ids=[
        "no-boundary",
        "empty-boundary",
        "gzip-urlencoded",
        "deflate-multipart",
        "boundary-inside-a-name",
        "space-php-keeps",
        "php-searches-case-sensitively-first",
        "rack-takes-the-last",
        "rack-reads-past-a-space",
    ],
)
def test_forms_that_cannot_be_read_are_refused(h: CIMultiDict[str], detail: str) -> None:
    with pytest.raises(BadRequest) as info:
        scanner_for(h, 1024)
    assert detail in info.value.detail


def test_a_second_content_encoding_header_is_seen() -> None:
    h = headers("application/x-www-form-urlencoded", **{"Content-Encoding": "identity"})
    h.add("Content-Encoding", "gzip")
    with pytest.raises(BadRequest):
        scanner_for(h, 1024)


def test_two_content_types_on_a_form_are_refused() -> None:
    h = headers("text/plain")
    h.add("Content-Type", "application/x-www-form-urlencoded")
    with pytest.raises(BadRequest):
        scanner_for(h, 1024)


# ---------------------------------------------------------------------------------------------
# multipart

B = b"----sgBoundary7MA4YWxk"


def part(name: bytes, value: bytes, *, extra: bytes = b"", quote: bool = True) -> bytes:
    disp = b'form-data; name="' + name + b'"' if quote else b"form-data; name=" + name
    return b"--" + B + b"\r\nContent-Disposition: " + disp + extra + b"\r\n\r\n" + value + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + B + b"--\r\n"


CLEAN = form(part(b"title", b"hello"), part(b"file", b"x" * 300, extra=b'; filename="a.bin"'))

METHOD_PARTS = [
    form(part(b"_method", b"DELETE")),
    form(part(b"title", b"hi"), part(b"_method", b"DELETE")),
    form(part(b".method", b"DELETE")),
    form(part(b" _method", b"DELETE")),
    form(part(b"_method[]", b"DELETE")),
    form(part(b"_method", b"DELETE", quote=False)),
    form(part(b"_METHOD", b"DELETE")),
    b"--" + B + b'\r\ncontent-disposition: form-data; NAME="_method"\r\n\r\nDELETE\r\n--' + B + b"--",
    b"--" + B + b'\r\nContent-Disposition: form-data;\r\n name="_method"\r\n\r\nDELETE\r\n--' + B + b"--",
    b"--" + B + b"\r\nContent-Disposition: form-data; name*=utf-8''%5Fmethod\r\n\r\nDELETE\r\n--" + B + b"--",
    # PHP's php_ap_getword_conf reads single quotes and cuts an unquoted value at whitespace.
    b"--" + B + b"\r\nContent-Disposition: form-data; name='_method'\r\n\r\nDELETE\r\n--" + B + b"--",
    b"--" + B + b"\r\nContent-Disposition: form-data; name=_method x\r\n\r\nDELETE\r\n--" + B + b"--",
    b"--" + B + b"\r\nContent-Disposition: form-data; name= _method\tx\r\n\r\nDELETE\r\n--" + B + b"--",
    b"--" + B + b"\r\nContent-Disposition: form-data; name='_method[;]'\r\n\r\nDELETE\r\n--" + B + b"--",
    # PHP joins a line without ':' (or starting with whitespace) to the previous header as is.
    b"--" + B + b'\r\nContent-Disposition: form-data; name="_met\r\nhod"\r\n\r\nDELETE\r\n--' + B + b"--",
    b"--" + B + b"\r\nContent-Disposition: form-data; name=_\r\nmethod\r\n\r\nDELETE\r\n--" + B + b"--",
    b"--" + B + b"\r\nContent-Disposition: form-data;\r\nname=_method\r\n\r\nDELETE\r\n--" + B + b"--",
    # PHP reads a line longer than its 5 KiB buffer as several lines: a boundary or a header
    # can start inside what a line-by-LF reading sees as one line.
    b"A" * 5120
    + b"--"
    + B
    + b'\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--'
    + B
    + b"--",
    b"--"
    + B
    + b"\r\nX-Pad: "
    + b"p" * (5120 - len(b"X-Pad: "))
    + b'Content-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--'
    + B
    + b"--",
    # Rack's unanchored name regex runs over the whole header block.
    b"--"
    + B
    + b'\r\nX-Note: Content-Disposition: form-data; name="_method"\r\n'
    + b'Content-Disposition: form-data; name="title"\r\n\r\nDELETE\r\n--'
    + B
    + b"--",
    b"--" + B + b"\r\nContent-Disposition: form-data; x name=_method\r\n\r\nDELETE\r\n--" + B + b"--",
    # Headers end at CRLF CRLF for Rack: after `\n\r\n` it still reads headers.
    b"--"
    + B
    + b"\r\nContent-Disposition: form-data\n\r\n"
    + b'Content-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--'
    + B
    + b"--",
    # PHP splits lines at a bare LF too.
    b"--" + B + b'\nContent-Disposition: form-data; name="_method"\n\nDELETE\n--' + B + b"--",
    b"preamble\r\n--"
    + B
    + b'\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--'
    + B
    + b"--",
]


def test_clean_multipart_passes_unchanged_in_every_split() -> None:
    for cut in range(len(CLEAN) + 1):
        assert run(MultipartScan(B), splits(CLEAN, cut)) == CLEAN, cut


@pytest.mark.parametrize("body", METHOD_PARTS, ids=[f"case{i}" for i in range(len(METHOD_PARTS))])
def test_method_part_refused_in_every_split_before_the_close_delimiter_goes_out(body: bytes) -> None:
    close = b"--" + B + b"--"
    for cut in range(len(body) + 1):
        scan = MultipartScan(B)
        released = b""
        with pytest.raises(BadRequest):
            for chunk in splits(body, cut):
                released += scan.feed(chunk)
            released += scan.end()
        assert close not in released, cut  # the upstream never has a complete form
        assert b"DELETE" not in released, cut


def test_multipart_ending_inside_part_headers_is_refused() -> None:
    scan = MultipartScan(B)
    scan.feed(b"--" + B + b"\r\nContent-Disposition: form-data; na")
    with pytest.raises(BadRequest):
        scan.end()


def test_multipart_part_headers_without_end_are_bounded() -> None:
    scan = MultipartScan(B)
    scan.feed(b"--" + B + b"\r\nX-Filler: ")
    with pytest.raises(BadRequest):
        for _ in range(MAX_PART_HEADERS // 1024 + 2):
            scan.feed(b"y" * 1024)


def test_a_large_upload_is_never_held() -> None:
    scan = MultipartScan(B)
    out = scan.feed(b"--" + B + b'\r\nContent-Disposition: form-data; name="f"; filename="big"\r\n\r\n')
    for _ in range(64):
        out += scan.feed(b"z" * 65536)
        assert scan.held < len(B) + 8  # only a possible delimiter's start is held back
    out += scan.feed(b"\r\n--" + B + b"--\r\n")
    out += scan.end()
    assert len(out) > 64 * 65536


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.sampled_from([b"title", b"a.b", b"_methods", b"file"]), max_size=3),
    evil=st.sampled_from([None, b"_method", b".method", b" _method", b"_method[x]", b"_Method"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_any_chunking_gives_the_same_verdict(
    before: list[bytes], evil: bytes | None, cuts: list[int]
) -> None:
    parts = [part(n, b"v" * 17) for n in before]
    if evil is not None:
        parts.append(part(evil, b"DELETE"))
    parts.append(part(b"tail", b"t"))
    body = form(*parts)
    edges = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *edges], [*edges, len(body)], strict=True)]
    scan = MultipartScan(B)
    if evil is None:
        assert run(scan, chunks) == body
    else:
        released = b""
        with pytest.raises(BadRequest):
            for c in chunks:
                released += scan.feed(c)
            released += scan.end()
        assert b"DELETE" not in released


def test_method_part_after_the_close_delimiter_is_refused() -> None:
    # PHP's parser reads on past `--B--` to the next `--B` line and registers that part too.
    body = form(part(b"title", b"hi")) + part(b"_method", b"DELETE") + b"--" + B + b"--\r\n"
    for cut in range(len(body) + 1):
        scan = MultipartScan(B)
        released = b""
        with pytest.raises(BadRequest):
            for chunk in splits(body, cut):
                released += scan.feed(chunk)
            released += scan.end()
        assert b"DELETE" not in released, cut


def test_boundary_inside_a_long_epilogue_line_is_refused() -> None:
    # PHP reads past `--B--` line by line, and a line over its 5 KiB buffer as two.
    body = form(part(b"title", b"hi")) + b"Z" * 5120 + b"--" + B + b"\r\n"
    body += b'Content-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n'
    for cut in range(0, len(body) + 1, 7):
        scan = MultipartScan(B)
        released = b""
        with pytest.raises(BadRequest):
            for chunk in splits(body, cut):
                released += scan.feed(chunk)
            released += scan.end()
        assert b"DELETE" not in released, cut


def test_epilogue_without_parts_passes() -> None:
    body = CLEAN + b"an epilogue\r\nwith lines\r\n"
    assert run(MultipartScan(B), [body]) == body


def test_header_lines_and_dashes_a_client_sends_still_pass() -> None:
    value = b"-- not a boundary --" + B[2:] + b" --" + b"x" * 6000
    body = form(part(b"title", value, extra=b"; filename=" + b"f" * 4000))
    for cut in (0, 7, len(body) // 2, len(body) - 3):
        assert run(MultipartScan(B), splits(body, cut)) == body
