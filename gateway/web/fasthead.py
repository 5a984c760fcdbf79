"""The fast door's request heads: parsed by llhttp (httptools), then checked to be plain.

`plain` says whether the fast door may serve a head, and as what; None hands the request to
aiohttp (fastdoor.py)."""

from __future__ import annotations

from typing import Final

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from .fastserve import Plain

# What a fast head may be. Anything else goes to aiohttp, which decides as it always has.
MAX_HEAD: Final = 8190  # bytes: under aiohttp's line (8190) and field (16384) limits, whatever the split
MAX_HEADERS: Final = 100  # aiohttp refuses more than 128

FAST_METHODS: Final = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"})
# SECURITY: chunked framing, an upgrade or an Expect is aiohttp's to judge. A fast request's body
# is exactly its one Content-Length (digits, checked by llhttp and again below), so nothing after
# it can be smuggled in as part of it, nor a part of it read as a request.
HAND_OFF: Final = frozenset({b"transfer-encoding", b"upgrade", b"expect", b"sec-websocket-key1"})
# Headers aiohttp refuses to see twice (its SINGLETON_HEADERS).
SINGLE: Final = frozenset(
    {
        b"content-length",
        b"content-location",
        b"content-range",
        b"content-type",
        b"etag",
        b"host",
        b"max-forwards",
        b"server",
        b"transfer-encoding",
        b"user-agent",
    }
)


def _canonical_names() -> dict[bytes, str]:
    # aiohttp's parser names known headers by its own constants ("content-type" arrives as
    # "Content-Type"); the fast door does the same, so upstreams see the same names.
    from aiohttp import hdrs
    from multidict import istr

    return {str(v).lower().encode(): str(v) for v in vars(hdrs).values() if isinstance(v, istr)}


CANONICAL: Final = _canonical_names()


class HeadParser:
    """httptools' callbacks for one head: the target, the raw headers, and what llhttp made of it.
    The method and version are read off the request line by `plain`: asking the parser for them
    cost about 1,000 instructions a request (two calls, and a version string formatted each
    time)."""

    __slots__ = ("complete", "headed", "headers", "keep_alive", "parser", "url")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.headed = False
        self.keep_alive = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headed = True
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True

    def read(self, head: bytes) -> bool:
        """Whether `head` is one whole request head; `complete` when no body follows it."""
        self.url, self.headers, self.complete, self.headed = b"", [], False, False
        try:
            self.parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self.parser = httptools.HttpRequestParser(self)
            return False
        if not self.complete and self.headed:
            # A body follows, counted off by the door: the next head needs a parser of its own.
            self.parser = httptools.HttpRequestParser(self)
        return self.headed


def plain(head: bytes, parsed: HeadParser) -> Plain | None:
    """The request, if the fast door may serve it; None hands it to aiohttp."""
    crlf = head.count(b"\r\n")
    if (
        # ASCII only: obs-text is aiohttp's. No control byte but HTAB gets past llhttp (read below;
        # the hostile tests' NUL, DEL, VT, FF and ESC heads are all handed over), nor a folded
        # line (obs-fold, obs-fold-tab, te-obs-fold). Checking both here again, with
        # bytes.translate and two substring searches, cost 4 % of a forward-auth check.
        not head.isascii()
        or head.count(b"\n") != crlf  # SECURITY: a bare LF frames differently elsewhere
        or head.count(b"\r") != crlf
        or not parsed.read(head)
        or not parsed.url.startswith(b"/")
        or len(parsed.headers) > MAX_HEADERS
    ):
        return None
    # llhttp took the request line as `method SP target SP version` and refused any other byte
    # before the first space or after the version: the method is what comes before the first
    # space, and the line ends in " HTTP/1.1" (not RTSP/1.1, which llhttp also reads as 1.1).
    line = head[: head.find(b"\r\n")]
    method = line[: line.find(b" ")]
    if method not in FAST_METHODS or not line.endswith(b" HTTP/1.1"):
        return None
    seen: set[bytes] = set()
    pairs: list[tuple[str, str]] = []
    length = 0
    for raw_name, raw_value in parsed.headers:
        lname = raw_name.lower()
        if lname in HAND_OFF:
            return None
        if lname in SINGLE:
            if lname in seen:
                return None
            seen.add(lname)
        value = raw_value.rstrip(b" \t")
        if lname == b"content-length":
            if not value.isdigit() or len(value) > 18 or (value.startswith(b"0") and value != b"0"):
                return None  # SECURITY: a length that is not plainly one is aiohttp's to refuse
            length = int(value)
        name = CANONICAL.get(lname)
        pairs.append((name or raw_name.decode("latin-1"), value.decode("latin-1")))
    if b"host" not in seen:
        return None  # aiohttp refuses an HTTP/1.1 request without Host
    if parsed.complete != (length == 0):
        return None  # SECURITY: llhttp and this count must agree on where the request ends
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    return Plain(method.decode(), parsed.url.decode("latin-1"), headers, parsed.keep_alive, length)
