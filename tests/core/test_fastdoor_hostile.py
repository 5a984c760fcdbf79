"""A hostile review of the fast door (gateway/web/fastdoor.py): what a client can do with the
bytes of a request head, a pipelined connection and its timing, now that llhttp reads each head
before aiohttp does.

Every attack here runs against two gateways built from one configuration: the public listener as
`scopegate serve` runs it (the fast door, aiohttp behind it), and the same listener with the fast
door off (aiohttp's door, the one the gates were written and tested against). The fast door must
answer the same bytes (the Date header and request ids aside), send the upstream the same
requests (method, target, headers, body size), and take or hand off what it should. A few checks
run against a real `scopegate serve` process too.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.serve import public_runner, public_site
from gateway.web.runtime import Runtime
from tests.conftest import Upstream, write_config
from tests.core.test_fastdoor import (
    ROUTES,
    Doors,
    StartDoor,
    _read_response,
    doors,
    exchange,
    normal,
    req,
    start_door,
)
from tests.support import Running, eventually, start_serve, stop_async

__all__ = ["doors", "start_door"]  # the fixtures, from the fast door's own tests


def head(*lines: str, target: str = "/open/x", method: str = "GET", version: str = "HTTP/1.1") -> bytes:
    """A request head exactly as given: CRLF after each line, a blank line, nothing added."""
    return (f"{method} {target} {version}\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode(
        "latin-1"
    )


CLOSE = "Connection: close"
SMUGGLED = b"GET /v1/admin HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"


def upstream_view(upstream: Upstream) -> list[tuple[str, str, int, list[tuple[str, str]]]]:
    """What the upstream was sent: method, raw target, body bytes and every header (the request
    id aside: each gateway makes its own)."""
    return [
        (s.method, s.raw_path, s.body_len, [(k, v) for k, v in s.headers if k.lower() != "x-request-id"])
        for s in upstream.seen
    ]


async def both(doors: Doors, upstream: Upstream, data: bytes) -> tuple[bytes, bytes]:
    """The same bytes through aiohttp's door, then the fast door; the answers and the upstream's
    view must agree. Returns the fast door's answer (normalised) and aiohttp's."""
    upstream.seen.clear()
    before = normal(await exchange(doors.plain.port, data))
    seen = upstream_view(upstream)
    upstream.seen.clear()
    after = normal(await exchange(doors.fast.port, data))
    assert after == before
    assert upstream_view(upstream) == seen
    return after, before


# -- one head, every trick: the fast door must agree with aiohttp, and take or hand off as said --

# Heads the fast door must hand to aiohttp (a body or a framing it does not judge).
HANDED = {
    # Content-Length variants: anything but a plain 0 is a body, or a length that is not one.
    "cl-plus-0": head("Host: a", "Content-Length: +0", CLOSE),
    "cl-00": head("Host: a", "Content-Length: 00", CLOSE),
    "cl-0-comma-0": head("Host: a", "Content-Length: 0,0", CLOSE),
    "cl-0-comma-0-spaced": head("Host: a", "Content-Length: 0, 0", CLOSE),
    "cl-hex": head("Host: a", "Content-Length: 0x0", CLOSE),
    "cl-empty": head("Host: a", "Content-Length:", CLOSE),
    "cl-negative": head("Host: a", "Content-Length: -0", CLOSE),
    "cl-two-lowercase": head("Host: a", "Content-Length: 0", "content-length: 0", CLOSE),
    # Transfer-Encoding in every spelling llhttp or aiohttp might read as one.
    "te-identity": head("Host: a", "Transfer-Encoding: identity", CLOSE),
    "te-empty": head("Host: a", "Transfer-Encoding:", CLOSE),
    "te-list": head("Host: a", "Transfer-Encoding: gzip, chunked", CLOSE) + b"0\r\n\r\n",
    "te-uppercase-name": head("Host: a", "TRANSFER-ENCODING: chunked", CLOSE) + b"0\r\n\r\n",
    "te-and-cl-0": head("Host: a", "Content-Length: 0", "Transfer-Encoding: chunked", CLOSE) + b"0\r\n\r\n",
    "te-obs-fold": head("Host: a", "Transfer-Encoding:", " chunked", CLOSE) + b"0\r\n\r\n",
    "te-space-before-colon": head("Host: a", "Transfer-Encoding : chunked", CLOSE),
    "te-tab-before-colon": head("Host: a", "Transfer-Encoding\t: chunked", CLOSE),
    # Expect and upgrade variants.
    "expect-empty": head("Host: a", "Expect:", CLOSE),
    "expect-continue-no-body": head("Host: a", "Expect: 100-continue", CLOSE),
    "upgrade-h2c": head(
        "Host: a", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AA"
    ),
    "upgrade-without-connection": head("Host: a", "Upgrade: websocket", CLOSE),
    "websocket-key1": head("Host: a", "Sec-WebSocket-Key1: 1", CLOSE),
    "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    # Versions, methods and targets that are not plain.
    "http-1.0-keep-alive": head("Host: a", "Connection: keep-alive", version="HTTP/1.0")
    + head("Host: a", target="/open/second", version="HTTP/1.0"),
    "http-lowercase-version": head("Host: a", CLOSE, version="http/1.1"),
    "http-1.10": head("Host: a", CLOSE, version="HTTP/1.10"),
    "http-2.0": head("Host: a", CLOSE, version="HTTP/2.0"),
    # llhttp reads these as version 1.1 too: the fast door checks the protocol's name itself.
    "rtsp-1.1": head("Host: a", CLOSE, version="RTSP/1.1"),
    "ice-1.1": head("Host: a", CLOSE, version="ICE/1.1"),
    # llhttp reads two spaces as one; the fast door takes only the request line it can rebuild.
    "double-space-request-line": b"GET  /open/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "http-0.9": b"GET /open/x\r\n\r\n",
    "connect": head("Host: a", CLOSE, method="CONNECT", target="gw.test:443"),
    "trace": head("Host: a", CLOSE, method="TRACE"),
    "lowercase-method": head("Host: a", CLOSE, method="get"),
    "asterisk-get": head("Host: a", CLOSE, target="*"),
    "absolute-form-management": head("Host: a", CLOSE, target="http://a/auth/tokens"),
    "absolute-form-admin": head("Host: a", CLOSE, target="http://a/v1/admin"),
    "authority-form-get": head("Host: a", CLOSE, target="a:80"),
    "trailing-space-request-line": b"GET /open/x HTTP/1.1 \r\nHost: a\r\nConnection: close\r\n\r\n",
    # Duplicated singletons.
    "two-hosts-case": head("Host: a", "host: b", CLOSE),
    "two-content-types": head("Host: a", "Content-Type: a", "Content-Type: b", CLOSE),
    # Header names and line endings llhttp refuses, and bytes the fast door never reads itself.
    "name-with-space": head("Host: a", "X A: 1", CLOSE),
    "name-empty": head("Host: a", ": 1", CLOSE),
    "name-bracket": head("Host: a", "X[A]: 1", CLOSE),
    "name-at": head("Host: a", "X@A: 1", CLOSE),
    "name-slash": head("Host: a", "X/A: 1", CLOSE),
    "bare-cr-in-value": head("Host: a", "X-A: a\rb", CLOSE),
    "bare-cr-line-end": b"GET /open/x HTTP/1.1\rHost: a\r\nConnection: close\r\n\r\n",
    "lf-cr-lf": b"GET /open/x HTTP/1.1\r\nHost: a\n\r\nConnection: close\r\n\r\n",
    "nul-in-name": head("Host: a", "X-\x00A: 1", CLOSE),
    "del-in-value": head("Host: a", "X-A: a\x7fb", CLOSE),
    "high-byte-in-name": head("Host: a", "X-\xe9: 1", CLOSE),
    "high-byte-in-target": head("Host: a", CLOSE, target="/open/\xe9"),
    "vertical-tab-in-value": head("Host: a", "X-A: a\x0bb", CLOSE),
    "form-feed-in-value": head("Host: a", "X-A: a\x0cb", CLOSE),
    "escape-in-target": head("Host: a", CLOSE, target="/open/\x1b[2J"),
    "obs-fold-tab": head("Host: a", "X-A: a", "\tfolded", CLOSE),
    "too-many-headers": head("Host: a", *[f"X-{i}: v" for i in range(101)], CLOSE),
    "head-over-8190": head("Host: a", "X-A: " + "a" * 4100, "X-B: " + "b" * 4100, CLOSE),
}

# Heads the fast door serves itself: the gate's verdict and the upstream's view must not change.
FAST = {
    "cl-0-then-a-second-request": head("Host: a", "Content-Length: 0") + SMUGGLED,
    # SECURITY: a body counted off by its Content-Length, the request inside it never gated.
    "cl-smuggles-admin": head("Host: a", f"Content-Length: {len(SMUGGLED)}", CLOSE) + SMUGGLED,
    "cl-body-then-a-second-request": head("Host: a", "Content-Length: 4") + b"abcd" + SMUGGLED,
    "cl-0-no-space": head("Host: a", "Content-Length:0", CLOSE),
    "cl-0-padded": head("Host: a", "Content-Length:  0  ", CLOSE),
    "te-underscore-twin": head("Host: a", "Transfer_Encoding: chunked", CLOSE),
    "te-header-hop": head("Host: a", "TE: trailers", CLOSE),
    "connection-upgrade-without-upgrade": head("Host: a", "Connection: upgrade, close"),
    "connection-close-and-keep-alive": head("Host: a", "Connection: keep-alive", "Connection: close"),
    "connection-names-identity": head(
        "Host: a", "Connection: close, X-Auth-Role, X-Keep", "X-Auth-Role: admin", "X-Keep: 1"
    ),
    "proxy-connection": head("Host: a", "Proxy-Connection: keep-alive", "Keep-Alive: 5", CLOSE),
    "identity-spoofs": head(
        "Host: a",
        "X-Auth-Subject: root",
        "X_Auth_Subject: root",
        "x-auth-scopes: all",
        "X-Auth-Type: token",
        "X-Auth-Token-Id: t1",
        "X-Workspace-Id: w1",
        CLOSE,
    ),
    "forwarded-spoofs": head(
        "Host: a",
        "X-Forwarded-For: 1.2.3.4",
        "X_Forwarded_For: 1.2.3.4",
        "Forwarded: for=1.2.3.4",
        "X-Real-IP: 1.2.3.4",
        "X-Forwarded-Host: evil",
        "X-Forwarded-Proto: https",
        CLOSE,
    ),
    "method-override-headers": head(
        "Host: a", "X-HTTP-Method-Override: DELETE", "X-Method-Override: DELETE", CLOSE
    ),
    "rewrite-headers": head("Host: a", "X-Original-URL: /v1/admin", "X-Rewrite-URL: /v1/admin", CLOSE),
    "two-request-ids": head("Host: a", "X-Request-Id: a", "X-Request-Id: b", CLOSE),
    "request-id-injection": head("Host: a", "X-Request-Id: a\tb", CLOSE),
    "two-authorizations-case": head(
        "Host: a", "Authorization: Bearer a", "authorization: Bearer a", CLOSE, target="/v1/playlists/1"
    ),
    "empty-host": head("Host:", CLOSE),
    "value-whitespace": head("Host: a", "X-A: \t v \t ", "X-B:", "X-C: a\tb", CLOSE),
    "name-token-characters": head("Host: a", "X!#$%&'*+-.^_`|~A: 1", CLOSE),
    # Targets the matcher must judge the same whoever parsed them.
    "fragment-hides-traversal": head("Host: a", CLOSE, target="/open#/../v1/admin"),
    "fragment-in-query": head("Host: a", CLOSE, target="/open/a?b#c"),
    "dot-segment": head("Host: a", CLOSE, target="/open/../v1/admin"),
    "encoded-dot-segment": head("Host: a", CLOSE, target="/open/%2e%2e/v1/admin"),
    "encoded-slash": head("Host: a", CLOSE, target="/v1/admin%2Fx"),
    "backslash": head("Host: a", CLOSE, target="/open\\..\\v1\\admin"),
    "double-slash-admin": head("Host: a", CLOSE, target="//v1/admin"),
    "semicolon": head("Host: a", CLOSE, target="/v1/admin;/open"),
    "percent-alone": head("Host: a", CLOSE, target="/open/a%"),
    "quote-and-braces": head("Host: a", CLOSE, target='/open/"{x}|^`'),
    "query-only-method": head("Host: a", CLOSE, target="/open/x?_method=DELETE"),
    "admin-needs-jwt": head("Host: a", CLOSE, target="/v1/admin"),
    # The management mount, spelt so that it is, or is not, the mount: the gate decides.
    "mount-uppercase": head("Host: a", CLOSE, target="/AUTH/tokens"),
    "mount-double-slash": head("Host: a", CLOSE, target="//auth/tokens"),
    "mount-dot": head("Host: a", CLOSE, target="/auth/./tokens"),
    "mount-semicolon": head("Host: a", CLOSE, target="/auth;x/tokens"),
    "mount-encoded-slash": head("Host: a", CLOSE, target="/auth%2ftokens"),
    # Forward-auth with odd questions.
    "verify-query": head(
        "Host: a", CLOSE, "X-Forwarded-Method: GET", "X-Forwarded-Uri: /open/x", target="/auth/verify?a"
    ),
    "verify-fragment": head(
        "Host: a", CLOSE, "X-Forwarded-Method: GET", "X-Forwarded-Uri: /open/x", target="/auth/verify#a"
    ),
    "verify-uri-absolute": head(
        "Host: a",
        CLOSE,
        "X-Forwarded-Method: GET",
        "X-Forwarded-Uri: http://x/v1/admin",
        target="/auth/verify",
    ),
    "verify-uri-traversal": head(
        "Host: a",
        CLOSE,
        "X-Forwarded-Method: GET",
        "X-Forwarded-Uri: /open/%2e%2e/v1/admin",
        target="/auth/verify",
    ),
    "verify-uri-empty-and-other": head(
        "Host: a",
        CLOSE,
        "X-Forwarded-Method: GET",
        "X-Forwarded-Uri:",
        "X-Original-URI: /v1/admin",
        target="/auth/verify",
    ),
    "verify-two-uris": head(
        "Host: a",
        CLOSE,
        "X-Forwarded-Method: GET",
        "X-Forwarded-Uri: /open/x",
        "X-Forwarded-Uri: /v1/admin",
        target="/auth/verify",
    ),
    "verify-method-case": head(
        "Host: a",
        CLOSE,
        "X-Forwarded-Method: delete",
        "X-Original-Method: DELETE",
        "X-Forwarded-Uri: /v1/health",
        target="/auth/verify",
    ),
    "verify-lowercase-names": head(
        "Host: a", CLOSE, "x-original-method: GET", "x-original-uri: /v1/admin", target="/auth/verify"
    ),
    "verify-spoofed-forwarded-for": head(
        "Host: a",
        CLOSE,
        "X-Forwarded-For: 10.0.0.1",
        "X-Forwarded-Method: GET",
        "X-Forwarded-Uri: /v1/playlists/1",
        "Authorization: Bearer nope",
        target="/auth/verify",
    ),
    "verify-asks-about-the-mount": head(
        "Host: a",
        CLOSE,
        "X-Forwarded-Method: GET",
        "X-Forwarded-Uri: /AUTH/../auth/tokens",
        target="/auth/verify",
    ),
    "verify-options": head(
        "Host: a",
        CLOSE,
        "X-Forwarded-Method: GET",
        "X-Forwarded-Uri: /v1/health",
        method="OPTIONS",
        target="/auth/verify",
    ),
    "long-head-under-the-limit": head("Host: a", "X-Big: " + "b" * 8100, CLOSE),
}


@pytest.mark.parametrize("name", list(HANDED))
async def test_a_head_that_is_not_plain_is_handed_to_aiohttp(
    doors: Doors, upstream: Upstream, name: str
) -> None:
    await both(doors, upstream, HANDED[name])
    # SECURITY: aiohttp's parser judged it, as it did before the fast door existed.
    assert doors.fast.rt.handed_off == 1
    assert doors.fast.rt.fast_requests == 0


@pytest.mark.parametrize("name", list(FAST))
async def test_a_plain_head_is_judged_as_aiohttp_judges_it(
    doors: Doors, upstream: Upstream, name: str
) -> None:
    await both(doors, upstream, FAST[name])
    assert doors.fast.rt.handed_off == 0
    assert doors.fast.rt.fast_requests >= 1


async def test_content_length_zero_then_a_request_is_gated_as_a_request(
    doors: Doors, upstream: Upstream
) -> None:
    # The bytes after a `Content-Length: 0` head are the next request, and the gate sees it.
    reply = await exchange(doors.fast.port, head("Host: a", "Content-Length: 0") + SMUGGLED)
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b'"body_len": 0}HTTP/1.1 401 ' in reply
    assert [s.raw_path for s in upstream.seen] == ["/open/x"]
    assert doors.fast.rt.fast_requests == 2


async def test_a_body_on_get_is_never_a_second_request(doors: Doors, upstream: Upstream) -> None:
    reply = await exchange(doors.fast.port, FAST["cl-smuggles-admin"])
    assert reply.count(b"HTTP/1.1 ") == 1 and reply.startswith(b"HTTP/1.1 200 ")
    assert [(s.raw_path, s.body_len) for s in upstream.seen] == [("/open/x", len(SMUGGLED))]
    assert doors.fast.rt.fast_requests == 1 and doors.fast.rt.handed_off == 0


async def test_identity_and_forwarding_headers_never_reach_the_upstream(
    doors: Doors, upstream: Upstream
) -> None:
    await exchange(doors.fast.port, FAST["identity-spoofs"] + b"")
    await exchange(doors.fast.port, FAST["forwarded-spoofs"])
    await exchange(doors.fast.port, FAST["connection-names-identity"])
    assert doors.fast.rt.fast_requests == 3
    sent = [
        v for s in upstream.seen for k, v in s.headers if k.lower().replace("_", "-").startswith("x-auth-")
    ]
    assert sent == ["anonymous"] * 3  # only the gateway's own X-Auth-Type
    for s in upstream.seen:
        names = {k.lower() for k, _ in s.headers}
        assert not names & {"x-workspace-id", "forwarded", "x-real-ip", "x-forwarded-for".replace("-", "_")}
        assert s.all("X-Forwarded-For") == ["127.0.0.1"]
        assert s.all("X-Forwarded-Host") == ["a"]
        assert s.all("X-Forwarded-Proto") == ["http"]
        assert "x-keep" not in names  # named by Connection: hop-by-hop


@pytest.mark.parametrize(
    "target", ["/auth/tokens", "/auth/scopes", "/auth/openapi.json", "/auth/ui/", "/auth/nothing"]
)
async def test_the_management_api_is_always_aiohttps(doors: Doors, upstream: Upstream, target: str) -> None:
    await both(doors, upstream, head("Host: a", CLOSE, target=target))
    assert doors.fast.rt.handed_off == 1 and doors.fast.rt.fast_requests == 0
    assert upstream.seen == []


# -- pipelining and keep-alive ----------------------------------------------------------------


PIPELINES = {
    "fast-then-http-1.0": req("GET", "/open/1", close=False) + b"GET /open/2 HTTP/1.0\r\nHost: a\r\n\r\n",
    "fast-then-leading-crlf": req("GET", "/open/1", close=False) + b"\r\n" + req("GET", "/open/2"),
    "fast-then-chunked-smuggle": req("GET", "/open/1", close=False)
    + req("POST", "/open/2", "Transfer-Encoding: chunked", "Content-Type: text/plain", close=False)
    + b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    + req("GET", "/open/3"),
    "refusal-keeps-alive": req("GET", "/v1/playlists/1", close=False)
    + req("GET", "/open/%2e%2e/v1/admin", close=False)
    + req("GET", "/open/3"),
    "verify-then-management": req(
        "GET", "/auth/verify", "X-Forwarded-Method: GET", "X-Forwarded-Uri: /open/x", close=False
    )
    + req("GET", "/auth/scopes"),
    "head-then-get": req("HEAD", "/download/70000", close=False) + req("GET", "/open/2"),
    "many-mixed": b"".join(
        req("GET", f"/open/{i}", close=False)
        if i % 3
        else req(
            "PUT", f"/open/{i}", "Content-Length: 2", "Content-Type: text/plain", close=False, body=b"ab"
        )
        for i in range(12)
    )
    + req("GET", "/open/last"),
}


@pytest.mark.parametrize("name", list(PIPELINES))
async def test_pipelined_mixes_are_answered_as_aiohttp_answers_them(
    doors: Doors, upstream: Upstream, name: str
) -> None:
    await both(doors, upstream, PIPELINES[name])


# aiohttp parses a whole packet before it answers anything: a bad second request (or any byte
# after a `Connection: close` request) made it refuse the good first one too, and forward
# nothing. The fast door answers the first, which the gate judged on its own, then hands the rest
# to aiohttp (or closes). A difference, and not a way past the gate: these tests pin what matters,
# that the second request never reaches the upstream and is refused as aiohttp refuses it.
REFUSED_SECOND = {
    "bare-lf": b"GET /v1/admin HTTP/1.1\nHost: a\n\n",
    "space-before-colon": b"GET /v1/admin HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
    "obs-fold-te": b"GET /v1/admin HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "cl-and-te": b"GET /v1/admin HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "nul": b"GET /v1/admin HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n",
}


@pytest.mark.parametrize("name", list(REFUSED_SECOND))
async def test_a_bad_request_pipelined_after_a_fast_one_is_refused(
    doors: Doors, upstream: Upstream, name: str
) -> None:
    reference = normal(await exchange(doors.plain.port, REFUSED_SECOND[name]))
    assert reference.startswith(b"HTTP/1.0 400 ")
    upstream.seen.clear()
    reply = normal(await exchange(doors.fast.port, req("GET", "/open/1", close=False) + REFUSED_SECOND[name]))
    first = b'{"method": "GET", "path": "/open/1", "body_len": 0}'
    assert reply.startswith(b"HTTP/1.1 200 ") and first in reply
    assert reply.partition(first)[2] == reference  # the second: aiohttp's own refusal, byte for byte
    assert [s.raw_path for s in upstream.seen] == ["/open/1"]
    assert doors.fast.rt.fast_requests == 1 and doors.fast.rt.handed_off == 1


async def test_nothing_after_a_connection_close_request_is_read(doors: Doors, upstream: Upstream) -> None:
    reply = normal(await exchange(doors.fast.port, req("GET", "/open/1") + SMUGGLED + req("GET", "/open/3")))
    assert reply.count(b"HTTP/1.1 ") == 1 and b"\r\nConnection: close\r\n" in reply
    assert [s.raw_path for s in upstream.seen] == ["/open/1"]
    assert doors.fast.rt.handed_off == 0


# A WebSocket handshake on a keep-alive connection: aiohttp's to serve, handed off by the fast door.
UPGRADE = req(
    "GET",
    "/open/ws",
    "Connection: Upgrade",
    "Upgrade: websocket",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    close=False,
)


async def test_a_websocket_pipelined_after_a_fast_request_is_aiohttps(
    doors: Doors, upstream: Upstream
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", doors.fast.port)
    try:
        writer.write(req("GET", "/open/1", close=False) + UPGRADE)
        first, _ = await _read_response(reader)
        switched = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert switched.startswith(b"HTTP/1.1 101 ")
    assert [(s.raw_path, s.header("Upgrade")) for s in upstream.seen] == [
        ("/open/1", None),
        ("/open/ws", "websocket"),
    ]
    assert doors.fast.rt.fast_requests == 1 and doors.fast.rt.handed_off == 1


async def test_a_hand_off_arriving_while_a_fast_request_is_answered_waits_its_turn(
    doors: Doors, upstream: Upstream
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", doors.fast.port)
    try:
        writer.write(req("GET", "/slow?s=0.4", close=False))
        await eventually(lambda: upstream.seen)
        writer.write(
            req("POST", "/open/2", "Transfer-Encoding: chunked", close=False, body=b"3\r\nabc\r\n0\r\n\r\n")
            + req("GET", "/open/3")
        )
        reply = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert reply.index(b'"/slow?s=0.4"') < reply.index(b'"/open/2"') < reply.index(b'"/open/3"')
    assert [(s.raw_path, s.body_len) for s in upstream.seen] == [
        ("/slow?s=0.4", 0),
        ("/open/2", 3),
        ("/open/3", 0),
    ]
    assert doors.fast.rt.fast_requests == 1 and doors.fast.rt.handed_off == 1


# -- the header deadline ------------------------------------------------------------------------


async def _cut_after(port: int, parts: list[bytes], pause: float) -> tuple[float, bytes]:
    """Sends `parts` with `pause` between them (stopping when the gateway hangs up); the seconds
    until the connection closed, and what came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    got = b""
    try:
        for part in parts:
            writer.write(part)
            try:
                chunk = await asyncio.wait_for(reader.read(65536), pause)
            except TimeoutError:
                continue
            got += chunk
            if not chunk:
                break
        else:
            got += await asyncio.wait_for(reader.read(), 10)
        return time.monotonic() - started, got
    finally:
        writer.close()


TRICKLES = {
    "byte-by-byte": list(iter(req("GET", "/open/x").splitlines(keepends=True)[0])),
    "plain-head-in-lines": req("GET", "/open/x").splitlines(keepends=True)[:-1],
    "head-that-turns-bare-lf": [
        b"GET /open/x HTTP/1.1\r\n",
        b"Host: a\r\n",
        b"X: 1\n",
        b"Y: 2\r\n",
        b"Z: 3\r\n",
    ],
    "head-that-grows-past-the-fast-limit": [
        b"GET /open/x HTTP/1.1\r\n",
        b"X: " + b"a" * 9000,
        b"b",
        b"c",
        b"d",
    ],
    "leading-cr": [b"\r", b"G", b"E", b"T", b" ", b"/"],
}


@pytest.mark.parametrize("name", list(TRICKLES))
async def test_a_trickled_head_is_cut_at_the_header_deadline(
    start_door: StartDoor, upstream: Upstream, name: str
) -> None:
    door = await start_door(extra="limits: {header_timeout: 0.6}\n")
    parts = [bytes([p]) if isinstance(p, int) else p for p in TRICKLES[name]]
    parts += [b"X"] * 40  # never a blank line
    elapsed, got = await _cut_after(door.port, parts, 0.15)
    if name == "head-that-turns-bare-lf":
        assert got.startswith(b"HTTP/1.0 400 ")  # aiohttp's refusal as soon as it sees the LF
        assert elapsed < 2.5, elapsed
    else:
        assert got == b""
        assert 0.5 <= elapsed < 2.5, elapsed
    assert upstream.seen == []


async def test_a_trickled_head_after_a_keep_alive_request_is_cut(
    start_door: StartDoor, upstream: Upstream
) -> None:
    door = await start_door(extra="limits: {header_timeout: 0.6}\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    try:
        writer.write(req("GET", "/open/1", close=False) + b"GET /open/2 HTTP/1.1\r\n")
        await _read_response(reader)
        started = time.monotonic()
        for _ in range(30):
            writer.write(b"X-A: 1\r\n")
            try:
                if await asyncio.wait_for(reader.read(1), 0.15) == b"":
                    break
            except TimeoutError:
                continue
        elapsed = time.monotonic() - started
    finally:
        writer.close()
    assert 0.4 <= elapsed < 2.5, elapsed
    assert [s.raw_path for s in upstream.seen] == ["/open/1"]


async def test_a_connection_that_sends_nothing_is_cut(start_door: StartDoor, upstream: Upstream) -> None:
    door = await start_door(extra="limits: {header_timeout: 0.5}\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    assert 0.4 <= time.monotonic() - started < 2.0


async def test_an_endless_head_is_refused_long_before_the_deadline(
    start_door: StartDoor, upstream: Upstream
) -> None:
    # SECURITY: a head without its blank line is not buffered past MAX_HEAD: aiohttp takes it and
    # refuses the over-long line, however fast the bytes come (no memory, no rescanning).
    door = await start_door(extra="limits: {header_timeout: 30}\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    started = time.monotonic()
    try:
        writer.write(b"GET /open/x HTTP/1.1\r\nHost: a\r\nX-A: ")
        try:
            for _ in range(256):
                writer.write(b"a" * 16384)
                await asyncio.wait_for(writer.drain(), 5)
        except (ConnectionError, TimeoutError):
            pass  # the gateway answered and closed while we were still sending
        got = await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        got = b""
    finally:
        writer.close()
    assert got.startswith(b"HTTP/1.0 400 ") or got == b""
    assert time.monotonic() - started < 10
    assert door.rt.handed_off == 1 and upstream.seen == []


@pytest.mark.parametrize("fast", [True, False])
async def test_empty_lines_before_a_head_do_not_stop_the_header_deadline(
    start_door: StartDoor, upstream: Upstream, fast: bool
) -> None:
    # `\r\n\r\n` is nothing at all to the parser (RFC 9112 2.2: empty lines before a request
    # line are skipped). The fast door hands such a connection to aiohttp with its deadline; the
    # watcher there once took it for a head's end and stood down, so the connection lived until
    # the keep-alive timeout (75 s in `serve`), not `header_timeout`: slowloris for 4 bytes.
    door = await start_door(fast=fast, extra="limits: {header_timeout: 0.5}\n", keepalive=6.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    started = time.monotonic()
    try:
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
    assert time.monotonic() - started < 3.0


# -- resources ------------------------------------------------------------------------------------


async def test_connections_closed_mid_head_or_mid_request_leave_nothing_behind(
    doors: Doors, upstream: Upstream
) -> None:
    rt = doors.fast.rt
    server = doors.fast.runner.server
    assert server is not None
    for data in (
        b"GET /open/x HTTP/1.1\r\nHost: a\r\n",  # mid-head
        req("GET", "/slow?s=0.3", close=False),  # while the upstream thinks
        req("GET", "/download/5000000", close=False),  # mid-body
        req("POST", "/open/x", "Content-Length: 100", body=b"partial"),  # handed, mid-body
    ):
        for _ in range(5):
            _, writer = await asyncio.open_connection("127.0.0.1", doors.fast.port)
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.transport.abort()
    await eventually(lambda: rt.in_flight == 0 and not server.connections, timeout=15)
    pool = rt.upstreams.pools["default"]
    # The door goes on serving, and no half-read upstream connection was put back to be reused.
    assert (await exchange(doors.fast.port, req("GET", "/open/after"))).startswith(b"HTTP/1.1 200 ")
    assert all(not c.closed for c in pool._idle)


# A client that sends its request and shuts its side down (`nc -N`, some health checkers). The
# slow upstream makes sure the end of the client's side is read before the answer is ready: the
# transport used to close then, on both doors, and the answer was lost (or not, by a race).
HALF_CLOSED = {
    "fast": req("GET", "/slow?s=0.2", close=False),
    "fast-quick": req("GET", "/open/x", close=False),
    "fast-with-body": req("POST", "/slow?s=0.2", "Content-Length: 5", close=False, body=b"hello"),
    "handed-http-1.0": b"GET /slow?s=0.2 HTTP/1.0\r\nHost: a\r\n\r\n",
    "handed-chunked": req(
        "POST", "/slow?s=0.2", "Transfer-Encoding: chunked", close=False, body=b"5\r\nhello\r\n0\r\n\r\n"
    ),
}


async def half_close(port: int, data: bytes) -> bytes:
    """Send `data`, shut the sending side, read until the gateway closes the connection."""

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while got := s.recv(65536):
                chunks.append(got)
            return b"".join(chunks)

    return normal(await asyncio.to_thread(run))


@pytest.mark.parametrize("name", sorted(HALF_CLOSED))
async def test_a_half_closed_client_gets_its_answer_and_then_the_connection_closes(
    doors: Doors, upstream: Upstream, name: str
) -> None:
    data = HALF_CLOSED[name]
    upstream.seen.clear()
    before = await half_close(doors.plain.port, data)
    after = await half_close(doors.fast.port, data)
    assert re.match(rb"HTTP/1\.[01] 200 OK\r\n", before)
    assert after == before
    assert [s.complete for s in upstream.seen] == [True, True]


async def test_a_client_that_half_closes_inside_its_body_is_not_served(
    doors: Doors, upstream: Upstream
) -> None:
    # Half the promised body, then the end: nothing more will come, so there is no request to answer.
    data = req("POST", "/slow?s=0.2", "Content-Length: 10", close=False, body=b"hello")
    upstream.seen.clear()
    before = await half_close(doors.plain.port, data)
    after = await half_close(doors.fast.port, data)
    assert after == before == b""
    assert not any(s.complete for s in upstream.seen)


async def test_a_websocket_whose_client_half_closes_ends(doors: Doors, upstream: Upstream) -> None:
    # An upgraded connection is not kept half open: its reader needs the end of the stream.
    for port in (doors.plain.port, doors.fast.port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(UPGRADE)
            switched = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert switched.startswith(b"HTTP/1.1 101 ")
            writer.write_eof()
            await asyncio.wait_for(reader.read(), 5)  # the gateway closes: no hang to a timeout
        finally:
            writer.close()


class _Raw(asyncio.Protocol):
    """A raw upstream connection, remembered so that the test closes it (server.close() does not)."""

    def __init__(self, opened: list[asyncio.Transport]) -> None:
        self.opened = opened
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.opened.append(self.transport)

    def send(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)


def _close_all(opened: list[asyncio.Transport]) -> None:
    for transport in opened:
        transport.abort()


class _Stall(_Raw):
    """An upstream that answers a GET after 1.5 s and never reads a request body."""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        first, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if first.startswith(b"GET"):
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            asyncio.get_running_loop().call_later(1.5, self.send, answer)
        else:
            self.transport.pause_reading()


@pytest.fixture
async def stalling_gateways(tmp_path: Path) -> AsyncIterator[dict[bool, int]]:
    loop = asyncio.get_running_loop()
    opened: list[asyncio.Transport] = []
    server = await loop.create_server(lambda: _Stall(opened), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    runners = []
    ports = {}
    for fast in (True, False):
        folder = tmp_path / f"stall-{fast}"
        folder.mkdir()
        config = write_config(folder, f"http://127.0.0.1:{port}", ROUTES, "limits: {max_body: 2GiB}\n")
        config.write_text(config.read_text().replace("timeout: 2}", "timeout: 30}"))
        rt = Runtime(load_config(str(config)))
        runner = public_runner(rt)
        await runner.setup()
        runners.append(runner)
        site = public_site(runner, rt, "127.0.0.1", 0, fast_door=fast)
        await site.start()
        ports[fast] = site.port
    yield ports
    for runner in runners:
        await runner.cleanup()
    server.close()
    _close_all(opened)


async def _pushed(port: int, seconds: float) -> int:
    """Bytes of a chunked body the gateway took in `seconds`, pipelined behind a slow GET."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        req("GET", "/open/slow", close=False)
        + req("POST", "/open/x", "Transfer-Encoding: chunked", "Content-Type: text/plain", close=False)
    )
    block = b"%x\r\n%b\r\n" % (1 << 20, b"x" * (1 << 20))
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while sent < 512 << 20:
            writer.write(block)
            try:
                await asyncio.wait_for(writer.drain(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            sent += len(block)
    finally:
        writer.transport.abort()
    return sent


async def test_a_body_pipelined_behind_a_slow_fast_request_is_not_buffered_without_bound(
    stalling_gateways: dict[bool, int],
) -> None:
    # While the fast door answers the GET (1.5 s), everything after it waits in its buffer; past
    # BUFFER_LIMIT it stops reading. After the hand-off, aiohttp's flow control holds the body.
    pushed = await _pushed(stalling_gateways[True], 3.0)
    reference = await _pushed(stalling_gateways[False], 3.0)
    # Kernel socket buffers on both sides take some megabytes; unbounded reading takes hundreds.
    assert pushed < 96 << 20, (pushed, reference)
    assert pushed < reference + (48 << 20), (pushed, reference)


# -- response framing from a hostile upstream -------------------------------------------------------

UPSTREAM_ANSWERS = {
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "bare-cr": b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: x=1\r\nContent-Length: 2\r\n\r\nok",
    "bare-lf": b"HTTP/1.1 200 OK\nX-A: a\nContent-Length: 2\n\nok",
    "nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "control": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    "te-and-cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "101-to-a-get": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\n\r\nTUNNEL",
    "high-bytes": b"HTTP/1.1 200 Caf\xe9\r\nX-A: caf\xe9\r\nContent-Length: 2\r\n\r\nok",
    "connection-names-a-header": b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\n"
    b"Content-Length: 2\r\n\r\nok",
    "body-after-204": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/",
}


class _Answer(_Raw):
    def __init__(self, opened: list[asyncio.Transport], answer: bytes) -> None:
        super().__init__(opened)
        self.answer = answer

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" in self.buf:
            self.buf = b""
            self.send(self.answer)


@pytest.mark.parametrize("name", list(UPSTREAM_ANSWERS))
async def test_a_hostile_upstream_answer_is_framed_as_aiohttp_frames_it(tmp_path: Path, name: str) -> None:
    answer = UPSTREAM_ANSWERS[name]
    opened: list[asyncio.Transport] = []
    upstream = await asyncio.get_running_loop().create_server(lambda: _Answer(opened, answer), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
    replies = []
    try:
        for fast in (False, True):
            folder = tmp_path / f"gw-{fast}"
            folder.mkdir()
            rt = Runtime(load_config(str(write_config(folder, url, ROUTES))))
            runner = public_runner(rt)
            await runner.setup()
            try:
                site = public_site(runner, rt, "127.0.0.1", 0, fast_door=fast)
                await site.start()
                data = req("GET", "/open/1", close=False) + req("GET", "/open/2")
                replies.append(normal(await exchange(site.port, data)))
            finally:
                await runner.cleanup()
    finally:
        upstream.close()
        _close_all(opened)
    assert replies[1] == replies[0]
    # SECURITY: never a header line the gateway did not mean, never a response smuggled in.
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", replies[1])) == 2, replies[1]
    assert b"Set-Cookie" not in replies[1] and b"X-Secret" not in replies[1] and b"TUNNEL" not in replies[1]


# -- the real process ---------------------------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Running]:
    config = write_config(tmp_path, upstream.url, ROUTES, "limits: {header_timeout: 1}\n")
    running = await start_serve(config)
    yield running
    await stop_async(running.proc, 10)


async def test_scopegate_serve_gates_smuggling_attempts(served: Running, upstream: Upstream) -> None:
    attempts = [
        head("Host: a", "Content-Length: 0") + SMUGGLED,
        head("Host: a", f"Content-Length: {len(SMUGGLED)}") + SMUGGLED,
        head("Host: a", "Transfer-Encoding: chunked") + b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
        head("Host: a", "Content-Length: 0", "Transfer-Encoding: chunked") + b"0\r\n\r\n" + SMUGGLED,
        head("Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: identity")
        + b"0\r\n\r\n"
        + SMUGGLED,
        head("Host: a", "Transfer-Encoding:", " chunked") + b"0\r\n\r\n" + SMUGGLED,
        head("Host: a", "Content-Length: 0", "Connection: keep-alive", version="HTTP/1.0") + SMUGGLED,
        head("Host: a", "Connection: Upgrade", "Upgrade: h2c") + SMUGGLED,
        head("Host: a", "Connection: upgrade") + SMUGGLED,
        req("GET", "/open/x", close=False) + b"\r\n" + SMUGGLED,
    ]
    for data in attempts:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(data)
        try:
            while await asyncio.wait_for(reader.read(65536), 1.5):
                pass
        except TimeoutError:
            pass  # a connection kept alive, waiting for more: the gateway has what it will get
        finally:
            writer.close()
    assert upstream.seen  # the gateway forwarded the honest parts
    assert "/v1/admin" not in [s.raw_path for s in upstream.seen]


async def test_scopegate_serve_cuts_a_trickled_head(served: Running, upstream: Upstream) -> None:
    elapsed, got = await _cut_after(served.port, [b"GET /open/x HTTP/1.1\r\n"] + [b"X: 1\r\n"] * 40, 0.1)
    assert got == b"" and 0.8 <= elapsed < 4.0, elapsed
    assert upstream.seen == []


def test_header_names_are_judged_alike_once_the_name_memo_is_full() -> None:
    # fasthead remembers what each raw spelling of a name is, up to NAMES_MEMO spellings (a client
    # picks them); past that, a name is worked out each time, and judged the same.
    from gateway.web import fasthead

    parser = fasthead.HeadParser()
    # A long name is never remembered: what a client can make the memo hold stays small.
    before = len(fasthead._NAMES)
    assert before < fasthead.NAMES_MEMO  # room left: a long name would be remembered if allowed
    for n in range(50):
        long_name = b"X%d" % n + b"a" * 8000
        assert fasthead.plain(b"GET / HTTP/1.1\r\nHost: a\r\n%b: 1\r\n\r\n" % long_name, parser) is not None
    assert len(fasthead._NAMES) == before
    assert all(len(raw) <= fasthead.NAME_MEMO_BYTES for raw in fasthead._NAMES)
    for n in range(fasthead.NAMES_MEMO + 10):
        assert fasthead.plain(b"GET / HTTP/1.1\r\nHost: a\r\nX-N%d: 1\r\n\r\n" % n, parser) is not None
    assert len(fasthead._NAMES) <= fasthead.NAMES_MEMO
    for line in (b"TrAnSfEr-EnCoDiNg: chunked", b"UPGRADE: x", b"eXpEcT: 100-continue", b"hOsT: b"):
        assert fasthead.plain(b"GET / HTTP/1.1\r\nHost: a\r\n" + line + b"\r\n\r\n", parser) is None, line
    req = fasthead.plain(b"GET / HTTP/1.1\r\nhOsT: a\r\nX-Unseen-Name: v \t\r\n\r\n", parser)
    assert req is not None
    assert list(req.headers.items()) == [("Host", "a"), ("X-Unseen-Name", "v")]
