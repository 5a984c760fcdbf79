"""`_method` in form bodies, through a real gateway to a real recording upstream.

Issue 9 item 13 / issue 8 item 7: a token holding `items:create` must not delete by posting
`_method=DELETE`. The upstream must never receive such a body complete: the recording upstream
logs a request the moment it starts and marks it `complete` once it has read the whole body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from tests.conftest import MakeGateway, Upstream
from tests.core.test_proxy import assert_refusal, base, port_of, raw_get, raw_request

B = "sgFormBoundary"
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={B}"}


def part(name: str, value: bytes) -> bytes:
    return f'--{B}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"


async def streamed(*pieces: bytes, block: int = 64 * 1024) -> AsyncIterator[bytes]:
    for piece in pieces:
        for i in range(0, len(piece), block):
            yield piece[i : i + block]


async def post(
    gw_url: str, path: str, headers: dict[str, str], data: object
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw_url + path, headers=headers, data=data) as r,
    ):
        body = await r.json() if r.content_type == "application/json" else {}
        return r.status, body


@pytest.mark.parametrize(
    "body",
    [
        b"_method=DELETE",
        b"name=x&_method=DELETE",
        b"name=x&.method=DELETE",
        b"%20_method=DELETE",
        b"_method%00=PUT",
    ],
    ids=["plain", "second-field", "dot", "encoded-leading-space", "nul-cut"],
)
async def test_urlencoded_method_field_is_400_and_never_forwarded(
    make_gateway: MakeGateway, upstream: Upstream, body: bytes
) -> None:
    gw = await make_gateway()
    status, answer = await post(base(gw), "/open/items", URLENCODED, body)
    assert_refusal(status, answer, 400, "bad_request")
    status, answer = await post(base(gw), "/open/items", URLENCODED, streamed(body, block=3))
    assert_refusal(status, answer, 400, "bad_request")
    assert not any(s.complete for s in upstream.seen)


async def test_urlencoded_without_method_is_forwarded_byte_for_byte(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    body = b"name=widget&method=DELETE&note=_method"
    status, _ = await post(base(gw), "/open/items", URLENCODED, body)
    assert status == 200
    assert (upstream.last.method, upstream.last.body_len) == ("POST", len(body))


async def test_urlencoded_over_form_inspect_is_413(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra="limits: {form_inspect: 1KiB}\n")
    body = b"a=" + b"x" * 2000
    status, answer = await post(base(gw), "/open/items", URLENCODED, body)  # declared length
    assert_refusal(status, answer, 413, "body_too_large")
    status, answer = await post(base(gw), "/open/items", URLENCODED, streamed(body, block=100))  # chunked
    assert_refusal(status, answer, 413, "body_too_large")
    assert not any(s.complete for s in upstream.seen)
    status, _ = await post(base(gw), "/open/items", {"Content-Type": "application/octet-stream"}, body)
    assert status == 200  # only forms are held; other bodies stream up to limits.max_body


async def test_multipart_method_part_after_a_large_file_cuts_the_upstream(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    big = part("file", b"f" * (3 * 2**20))
    pieces = (big, part("_method", b"DELETE"), f"--{B}--\r\n".encode())
    status, answer = await post(base(gw), "/open/uploads", MULTIPART, streamed(*pieces))
    assert_refusal(status, answer, 400, "bad_request")
    # A large multipart body streams: its start may reach the upstream, its end never does.
    assert not any(s.complete for s in upstream.seen)


async def test_multipart_without_method_streams_through(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    pieces = (part("title", b"t"), part("file", b"f" * (3 * 2**20)), f"--{B}--\r\n".encode())
    status, _ = await post(base(gw), "/open/uploads", MULTIPART, streamed(*pieces))
    assert status == 200
    assert upstream.last.body_len == sum(len(p) for p in pieces)


async def test_gzip_form_is_refused(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    status, answer = await post(
        base(gw), "/open/items", {**URLENCODED, "Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00"
    )
    assert_refusal(status, answer, 400, "bad_request")
    assert upstream.seen == []


@pytest.mark.parametrize(
    "query",
    [
        "_method=DELETE",
        ".method=DELETE",
        "%20_method=DELETE",
        "+_method=DELETE",
        "_method%00x=DELETE",
        "_method[]=DELETE",
    ],
    ids=["plain", "dot", "encoded-space", "plus-space", "nul", "bracket"],
)
async def test_method_query_parameter_read_as_php_reads_it_is_400(
    make_gateway: MakeGateway, upstream: Upstream, query: str
) -> None:
    gw = await make_gateway()
    async with (
        aiohttp.ClientSession() as session,
        session.post(URL(base(gw) + "/open/items?" + query, encoded=True)) as r,
    ):
        assert_refusal(r.status, await r.json(), 400, "bad_request")
    assert upstream.seen == []


@pytest.mark.parametrize(
    "disposition",
    [
        "form-data; name='_method'",
        "form-data; name=_method x",
        "form-data; name= _method\tx",
        'form-data; name="_met\r\nhod"',
        'x\r\nX-Note: Content-Disposition: x; name="_method"',
    ],
    ids=["single-quoted", "space-cut", "tab-cut", "joined-without-colon", "rack-unanchored"],
)
async def test_multipart_method_name_read_as_php_reads_it_is_400(
    make_gateway: MakeGateway, upstream: Upstream, disposition: str
) -> None:
    # PHP's php_ap_getword_conf takes single quotes and stops an unquoted value at whitespace;
    # multipart_buffer_headers appends a line without ':' to the previous header, no separator;
    # Rack looks for `Content-Disposition:...name=` anywhere in the part's headers.
    gw = await make_gateway()
    body = f"--{B}\r\nContent-Disposition: {disposition}\r\n\r\nDELETE\r\n--{B}--\r\n".encode()
    status, answer = await post(base(gw), "/open/items", MULTIPART, body)
    assert_refusal(status, answer, 400, "bad_request")
    assert not any(s.complete for s in upstream.seen)


async def test_post_without_content_type_is_read_as_rack_reads_it(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    # Rack parses a POST body with no Content-Type as an urlencoded form (Rails' MethodOverride
    # then runs `_method=DELETE` as a DELETE).
    gw = await make_gateway()
    async with aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as session:
        for body in (b"_method=DELETE", b"a=1&_method=DELETE"):
            async with session.post(base(gw) + "/open/items", data=body) as r:
                assert_refusal(r.status, await r.json(), 400, "bad_request")
        assert not any(s.complete for s in upstream.seen)
        async with session.post(base(gw) + "/open/items", data=b"a=1&method=DELETE") as r:
            assert r.status == 200
    assert (upstream.last.method, upstream.last.body_len) == ("POST", 17)


async def test_put_without_content_type_is_an_upload_not_a_form(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    # Only a POST without a Content-Type is a form to Rack; a large `curl -T` PUT must not be
    # held to limits.form_inspect (64 KiB) nor read as one.
    gw = await make_gateway()
    body = b"_method=DELETE&" + b"x" * (200 * 1024)
    async with (
        aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as session,
        session.put(base(gw) + "/open/items", data=body) as r,
    ):
        assert r.status == 200
    assert (upstream.last.method, upstream.last.body_len) == ("PUT", len(body))
    assert upstream.last.all("Content-Type") == []


@pytest.mark.parametrize("content_type", ["", " "], ids=["empty", "blank"])
async def test_post_with_an_empty_content_type_is_read_as_rack_reads_it(
    make_gateway: MakeGateway, upstream: Upstream, content_type: str
) -> None:
    """SECURITY: Rack's media type of an empty Content-Type is nil, so a POST carrying one is a
    form to Rack like a POST carrying none (mutation testing found it forwarded unread)."""
    gw = await make_gateway()

    def request(body: bytes) -> bytes:
        head = [f"Content-Type:{content_type}", f"Content-Length: {len(body)}"]
        return raw_get("/open/items", *head, method="POST") + body

    resp = await raw_request(port_of(gw), request(b"a=1&_method=DELETE"))
    assert_refusal(resp.status, resp.json(), 400, "bad_request")
    assert not any(s.complete for s in upstream.seen)
    resp = await raw_request(port_of(gw), request(b"a=1&method=DELETE"))
    assert resp.status == 200
    assert (upstream.last.method, upstream.last.body_len) == ("POST", 17)
