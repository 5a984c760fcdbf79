"""gateway.proxy.formscan at its edges: every refusal's exact detail, the limits to the byte,
and Content-Type and Content-Encoding values at the margins of what PHP and Rack read."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from multidict import CIMultiDict

from gateway.errors import BadRequest, BodyTooLarge
from gateway.proxy.formscan import (
    MAX_PART_HEADERS,
    PHP_LINE_BUFFER,
    FormScan,
    MultipartScan,
    UrlEncodedScan,
    php_name,
    scanner_for,
)

B = b"sgEdgeBoundary"
MULTIPART = "multipart/form-data; boundary=" + B.decode()
URLENCODED = "application/x-www-form-urlencoded"


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def run(scan: FormScan | None, body: bytes) -> bytes:
    assert scan is not None
    return scan.feed(body) + scan.end()


def multipart(body: bytes) -> Callable[[], object]:
    return lambda: run(MultipartScan(B), body)


def refusal_cases() -> list[object]:
    ct = ("Content-Type", MULTIPART)
    return [
        pytest.param(
            lambda: scanner_for(headers(("Content-Type", "text/plain"), ("Content-Type", URLENCODED)), 64),
            BadRequest,
            "more than one Content-Type header on a form body",
            id="two-content-types",
        ),
        pytest.param(
            lambda: scanner_for(headers(ct, ("Content-Encoding", "gzip")), 64),
            BadRequest,
            "a form body with a Content-Encoding cannot be inspected",
            id="content-encoding",
        ),
        pytest.param(
            lambda: scanner_for(headers(("Content-Type", URLENCODED), ("Content-Length", "65")), 64),
            BodyTooLarge,
            "form body over limits.form_inspect (64 bytes)",
            id="declared-too-large",
        ),
        pytest.param(
            lambda: scanner_for(headers(("Content-Type", "multipart/form-data")), 64),
            BadRequest,
            "multipart/form-data without a usable boundary",
            id="no-boundary",
        ),
        pytest.param(
            lambda: scanner_for(
                headers(("Content-Type", "multipart/form-data; xboundary=a; boundary=b")), 64
            ),
            BadRequest,
            "multipart/form-data with an ambiguous boundary",
            id="ambiguous-boundary",
        ),
        *(
            pytest.param(
                lambda value=value: scanner_for(
                    headers(("Content-Type", f"multipart/form-data; boundary={value}")), 64
                ),
                BadRequest,
                "multipart/form-data with a boundary outside RFC 2046's characters",
                id=f"boundary-{name}",
            )
            for name, value in (
                ("escaped-quote", '"a\\"b"'),  # busboy: a"b; PHP, Rack and the scan: a\
                ("escaped-backslash", '"a\\\\b"'),  # busboy: a\b
                ("escaped-letter", '"a\\xb"'),  # busboy: axb
                ("non-ascii", '"a\u00e9b"'),
                ("control", '"a\x01b"'),
            )
        ),
        pytest.param(
            lambda: UrlEncodedScan(4).feed(b"a=123"),
            BodyTooLarge,
            "form body over limits.form_inspect (4 bytes)",
            id="urlencoded-too-large",
        ),
        pytest.param(
            lambda: run(UrlEncodedScan(64), b"a=1&_method=PUT"),
            BadRequest,
            "a _method field in a form body is not accepted",
            id="urlencoded-method",
        ),
        pytest.param(
            lambda: run(UrlEncodedScan(64), b"\xef\xbb\xbf_method=PUT"),
            BadRequest,
            "a _method field in a form body is not accepted",
            id="urlencoded-method-after-a-bom",
        ),
        pytest.param(
            multipart(b"--" + B + b"\r\nContent-Disposition: form-data"),
            BadRequest,
            "multipart body ends inside a part's headers",
            id="ends-in-headers",
        ),
        pytest.param(
            lambda: MultipartScan(B).feed(b"--" + B + b"\r\nX: " + b"x" * MAX_PART_HEADERS),
            BadRequest,
            "a multipart part's headers are too long",
            id="headers-too-long",
        ),
        pytest.param(
            multipart(b"--" + B + b"\r\nContent-Disposition: form-data\n\r\nx\r\n--" + B + b"--"),
            BadRequest,
            "a multipart part's headers must end with CRLF CRLF",
            id="headers-end-lf-crlf",
        ),
        # busboy's readings (multer, so Express): each passed PHP's and Rack's as the scan read them
        pytest.param(
            lambda: scanner_for(
                headers(
                    ("Content-Type", 'multipart/form-data; x=";boundary=A;"; boundary=B; y="boundary=A"')
                ),
                64,
            ),
            BadRequest,
            "multipart/form-data with an ambiguous boundary",
            id="boundary-inside-quoted-parameters",
        ),
        pytest.param(
            lambda: scanner_for(
                headers(("Content-Type", "multipart/form-data; boundary=abc; xboundaryx")), 64
            ),
            BadRequest,
            "multipart/form-data with an ambiguous boundary",
            id="malformed-parameters",
        ),
        pytest.param(
            multipart(
                b"--"
                + B
                + b'\r\nContent-Disposition: form-data; x=";name="; name="_method"\r\n\r\nPUT\r\n--'
                + B
                + b"--"
            ),
            BadRequest,
            "a _method part in a multipart form body is not accepted",
            id="name-behind-quoted-name",
        ),
        pytest.param(
            multipart(
                b"--" + B + b'\r\nContent-Disposition: form-data; name="\r\n--' + B + b'_method"\r\n\r\nPUT'
                b"\r\n--" + B + b"--"
            ),
            BadRequest,
            "a multipart boundary inside a part's headers",
            id="boundary-inside-headers",
        ),
        pytest.param(
            multipart(
                b"--" + B + b"\r\nContent-Disposition: form-data\r\n\r\n--" + B + b" ;name=_method\r\n\r\nPUT"
                b"\r\n--" + B + b"--"
            ),
            BadRequest,
            "a multipart boundary line holds more than the boundary",
            id="boundary-line-with-more",
        ),
        pytest.param(
            multipart(b"x--" + B + b"\r\n"),
            BadRequest,
            "the multipart boundary occurs inside a line",
            id="boundary-inside-a-line",
        ),
        pytest.param(
            multipart(b"--" + B + b"\r\nX: " + b"x" * PHP_LINE_BUFFER + b"\r\n\r\nx\r\n--" + B + b"--"),
            BadRequest,
            "a multipart part header line is too long",
            id="header-line-too-long",
        ),
        pytest.param(
            multipart(
                b"--" + B + b'\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n--' + B + b"--"
            ),
            BadRequest,
            "a _method part in a multipart form body is not accepted",
            id="multipart-method",
        ),
        pytest.param(
            # Only Rack's unanchored reading finds this one (the Content-Disposition names `title`).
            multipart(
                b"--"
                + B
                + b'\r\nX-Note: Content-Disposition: form-data; name="_method"\r\n'
                + b'Content-Disposition: form-data; name="title"\r\n\r\nPUT\r\n--'
                + B
                + b"--"
            ),
            BadRequest,
            "a _method part in a multipart form body is not accepted",
            id="multipart-method-rack",
        ),
    ]


@pytest.mark.parametrize(("action", "error", "detail"), refusal_cases())
def test_each_refusal_says_exactly_why(
    action: Callable[[], object], error: type[Exception], detail: str
) -> None:
    with pytest.raises(error) as info:
        action()
    assert info.value.detail == detail  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# limits, to the byte


def test_urlencoded_form_of_exactly_form_inspect_bytes_passes() -> None:
    scan = scanner_for(headers(("Content-Type", URLENCODED), ("Content-Length", "10")), 10)
    assert isinstance(scan, UrlEncodedScan)
    assert run(scan, b"a=12345678") == b"a=12345678"


@pytest.mark.parametrize("declared", ["\u00b2", "\u0661\u0660\u0660"], ids=["superscript", "arabic-indic"])
def test_a_content_length_of_other_digits_is_no_declared_size(declared: str) -> None:
    # str.isdigit() is true of both; int() refuses U+00B2 and reads the Arabic-Indic "100" as
    # 100. Neither is a Content-Length (HTTP's are ASCII digits; both doors' parsers refuse these
    # first), so the scan counts what arrives instead of raising or trusting a number.
    scan = scanner_for(headers(("Content-Type", URLENCODED), ("Content-Length", declared)), 64)
    assert isinstance(scan, UrlEncodedScan)
    assert run(scan, b"a=1") == b"a=1"


def test_part_headers_of_exactly_max_part_headers_bytes_are_held_not_refused() -> None:
    scan = MultipartScan(B)
    opening = b"--" + B + b"\r\nX: "  # the part's headers are what follows `--boundary`
    pad = b"x" * (MAX_PART_HEADERS - len(opening) + len(b"--" + B))
    assert scan.feed(opening + pad) == b""
    with pytest.raises(BadRequest):
        scan.feed(b"x")


@pytest.mark.parametrize(
    ("length", "refused"),
    [(PHP_LINE_BUFFER - 101, False), (PHP_LINE_BUFFER - 100, True)],
    ids=["fits", "over"],
)
def test_a_part_header_line_is_refused_from_100_bytes_under_phps_buffer(length: int, refused: bool) -> None:
    line = b"X-Pad: " + b"p" * (length - len(b"X-Pad: ") - 1) + b"\r"  # as split at LF
    assert len(line) == length
    body = (
        b"--" + B + b"\r\n" + line + b'\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--' + B + b"--"
    )
    if refused:
        with pytest.raises(BadRequest):
            run(MultipartScan(B), body)
    else:
        assert run(MultipartScan(B), body) == body


# ---------------------------------------------------------------------------------------------
# header values at the margins


@pytest.mark.parametrize(
    "encoding", ["identity", " Identity ", ""], ids=["identity", "identity-cased", "empty"]
)
def test_a_form_whose_content_encoding_is_identity_is_read(encoding: str) -> None:
    scan = scanner_for(headers(("Content-Type", URLENCODED), ("Content-Encoding", encoding)), 64)
    assert isinstance(scan, UrlEncodedScan)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("content_type", ["", " "], ids=["empty", "blank"])
def test_only_a_post_with_an_empty_content_type_is_a_form(content_type: str, method: str) -> None:
    assert scanner_for(headers(("Content-Type", content_type)), 64, method) is None
    assert isinstance(scanner_for(headers(("Content-Type", content_type)), 64, "POST"), UrlEncodedScan)


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        # an `=` after the boundary: PHP's value ends at the first `;`
        ("multipart/form-data; boundary=abc; charset=utf-8", b"abc"),
        # a quote after the boundary's closing quote
        ('multipart/form-data; boundary="abc"; x="y"', b"abc"),
        # no lower-case `boundary`: PHP takes the first of any case (`xBOUNDARYx` has no `=`)
        ("multipart/form-data; BOUNDARY=abc; x=xBOUNDARYx", b"abc"),
        # a boundary Rack's regex cannot read: Rack parses no parts, PHP and we read `,abc`
        ('multipart/form-data; boundary=",abc"', b",abc"),
    ],
    ids=["param-after", "quote-after", "upper-case-first", "rack-unreadable"],
)
def test_boundaries_every_reader_agrees_on_are_scanned(content_type: str, boundary: bytes) -> None:
    scan = scanner_for(headers(("Content-Type", content_type)), 64)
    assert isinstance(scan, MultipartScan)
    body = (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n--'
        + boundary
        + b"--"
    )
    with pytest.raises(BadRequest):
        run(scan, body)


# ---------------------------------------------------------------------------------------------
# names as PHP reads them


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"_method[a][b]", b"_method"),  # cut at the first `[`, not the last
        (b"_method%00a%00b", b"_method"),  # cut at the first NUL, not the last
        (b"X_method", b"X_method"),  # only spaces are dropped in front
        (b"  .method", b"_method"),
        (b"\t_method", b"\t_method"),  # PHP drops leading spaces only
    ],
    ids=["two-brackets", "two-nuls", "leading-letter-kept", "spaces-then-dot", "leading-tab-kept"],
)
def test_php_name_edges(raw: bytes, name: bytes) -> None:
    assert php_name(raw) == name


# ---------------------------------------------------------------------------------------------
# a boundary inside a line, wherever the client's chunks end


def test_a_boundary_inside_a_line_is_refused_in_every_two_and_three_chunk_split() -> None:
    """Each chunk's search for `--boundary` resumes where the last one stopped: no split of the
    body may hide the one that does not start a line."""
    head = b"--" + B + b'\r\nContent-Disposition: form-data; name="t"\r\n\r\nhi\r\n'
    body = head + b"Z--" + B + b'\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n'
    n = len(body)
    for a in range(n + 1):
        for b in range(a, n + 1, 3):
            scan = MultipartScan(B)
            released = b""
            with pytest.raises(BadRequest) as info:
                for chunk in (body[:a], body[a:b], body[b:]):
                    released += scan.feed(chunk)
                released += scan.end()
            assert info.value.detail == "the multipart boundary occurs inside a line", (a, b)
            assert b"PUT" not in released


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_part_right_after_the_close_delimiter_is_refused(eol: bytes) -> None:
    """PHP reads on past `--boundary--`: a boundary line right after it opens a part."""
    body = b"--" + B + b'\r\nContent-Disposition: form-data; name="t"\r\n\r\nhi\r\n--' + B + b"--" + eol
    body += b"--" + B + b'\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n'
    refused_in_every_split(body)


def test_part_headers_cut_by_a_chunk_after_a_large_file_are_waited_for() -> None:
    """Only the pending part's own headers count against MAX_PART_HEADERS, not the file
    before them in the same chunk."""
    file = b"--" + B + b'\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n' + b"z" * 40000
    body = (
        file + b"\r\n--" + B + b'\r\nContent-Disposition: form-data; name="t"\r\n\r\nhi\r\n--' + B + b"--\r\n"
    )
    cut = len(file) + 30  # inside the second part's headers
    scan = MultipartScan(B)
    assert scan.feed(body[:cut]) + scan.feed(body[cut:]) + scan.end() == body


# ---------------------------------------------------------------------------------------------
# boundaries PHP finds first, and part headers only one reader sees


@pytest.mark.parametrize(
    "content_type",
    [
        # PHP's case-sensitive search finds `boundary` inside `xboundary`, with no `=`: PHP reads
        # no boundary at all, where the parameter and Rack read `a`.
        "multipart/form-data; Boundary=a; xboundary",
    ],
)
def test_a_boundary_php_cannot_read_is_refused(content_type: str) -> None:
    with pytest.raises(BadRequest) as info:
        scanner_for(headers(("Content-Type", content_type)), 64)
    assert info.value.detail == "multipart/form-data with an ambiguous boundary"


def test_a_parameter_before_the_boundary_does_not_hide_it() -> None:
    scan = scanner_for(headers(("Content-Type", "multipart/form-data; charset=utf-8; boundary=abc")), 64)
    assert isinstance(scan, MultipartScan)
    with pytest.raises(BadRequest):
        run(scan, b"--abc\r\nContent-Disposition: form-data; name=_method\r\n\r\nPUT\r\n--abc--")


def part_with(*header_lines: bytes) -> bytes:
    return b"--" + B + b"\r\n" + b"\r\n".join(header_lines) + b"\r\n\r\nPUT\r\n--" + B + b"--\r\n"


@pytest.mark.parametrize(
    "header_lines",
    [
        # Rack 2.2 reads `Content-Disposition:.*;\s*name=` on one line, past a `:` in a value.
        (b'X-Note: Content-Disposition: form-data; a="b:c"; name="_method"', b"X-Other: 1"),
        # Rack 3 reads `Content-Disposition:[^:]*;\s*name=` across lines.
        (b"X-Note: Content-Disposition: form-data", b' ; name="_method"'),
        # a quoted-string escape (busboy, so Express with multer, unescapes `\_`)
        (b'Content-Disposition: form-data; name="\\_method"',),
        # RFC 5987 with a `:` in another parameter, and without a charset
        (b"Content-Disposition: form-data; x=\"a:b\"; name*=utf-8''%5Fmethod",),
        (b"Content-Disposition: form-data; name*=%5Fmethod",),
    ],
    ids=["rack-one-line", "rack-across-lines", "quoted-escape", "rfc5987-after-colon", "rfc5987-no-charset"],
)
def test_part_headers_only_one_reader_sees_as_method_are_refused(header_lines: tuple[bytes, ...]) -> None:
    with pytest.raises(BadRequest) as info:
        run(MultipartScan(B), part_with(*header_lines))
    assert info.value.detail == "a _method part in a multipart form body is not accepted"


@pytest.mark.parametrize(
    "header_lines",
    [
        (b"no colon on the first line", b'Content-Disposition: form-data; name="a"'),
        (b'X-Note: form-data; name="_method"', b'Content-Disposition: form-data; name="a"'),
        (b"Content-Disposition: form-data; name=_methodX",),
        (b'Content-Disposition: form-data; name="_met ', b'hod"'),
        # Rack reads a Content-Disposition: inside another header on its line, or up to the next
        # `:` (Rack 3), never further: `name=` on a later header line is no name to it.
        (b"X-Note: Content-Disposition: form-data", b"X-B: x; name=_method", b"X-C: 1"),
    ],
    ids=[
        "first-line-without-colon",
        "name-in-another-header",
        "longer-name",
        "space-before-a-joined-line",
        "rack-reads-no-further",
    ],
)
def test_part_headers_no_reader_sees_as_method_pass(header_lines: tuple[bytes, ...]) -> None:
    body = part_with(*header_lines)
    assert run(MultipartScan(B), body) == body


def refused_in_every_split(body: bytes) -> None:
    for cut in range(len(body) + 1):
        scan = MultipartScan(B)
        released = b""
        with pytest.raises(BadRequest):
            released += scan.feed(body[:cut])
            released += scan.feed(body[cut:])
            released += scan.end()
        assert b"PUT" not in released, cut


def test_a_boundary_line_right_after_a_parts_headers_opens_a_part() -> None:
    """SECURITY: Rack's body regex `(?:\\r\\n|\\A)--boundary` matches at the start of a part's body,
    so `--boundary` right after the blank line ends an empty part and opens the next one. The
    scan searched for LF + `--boundary` after that blank line's LF, and missed the `_method`
    part (mutation testing found it)."""
    refused_in_every_split(
        b"--"
        + B
        + b'\r\nContent-Disposition: form-data; name="a"\r\n\r\n--'
        + B
        + b'\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n--'
        + B
        + b"--\r\n"
    )


def test_parts_after_two_close_delimiters_are_refused() -> None:
    """PHP reads on past every `--boundary--`, however many come before a part."""
    close = b"--" + B + b"--\r\n"
    first = b"--" + B + b'\r\nContent-Disposition: form-data; name="t"\r\n\r\nhi\r\n'
    refused_in_every_split(
        first
        + close
        + close
        + b"--"
        + B
        + b'\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n'
    )


@pytest.mark.parametrize("tail", [b"", b"-"], ids=["bare", "one-dash"])
def test_a_body_that_ends_on_a_boundary_without_its_close_is_refused(tail: bytes) -> None:
    body = b"--" + B + b'\r\nContent-Disposition: form-data; name="t"\r\n\r\nhi\r\n--' + B + tail
    with pytest.raises(BadRequest) as info:
        run(MultipartScan(B), body)
    assert info.value.detail == "multipart body ends inside a part's headers"


def test_every_boundary_in_one_chunk_is_checked_not_only_the_first_and_last() -> None:
    body = (
        b"--" + B + b'\r\nContent-Disposition: form-data; name="t"\r\n\r\nZ--' + B + b"\r\n--" + B + b"--\r\n"
    )
    with pytest.raises(BadRequest) as info:
        run(MultipartScan(B), body)
    assert info.value.detail == "the multipart boundary occurs inside a line"
