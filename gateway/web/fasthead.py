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
_VERSION: Final = b" HTTP/1.1\r\n"
_SINGLE_BITS: Final = {lname: 1 << bit for bit, lname in enumerate(sorted(SINGLE))}
_HOST: Final = _SINGLE_BITS[b"host"]
_CONTENT_LENGTH: Final = _SINGLE_BITS[b"content-length"]
NAMES_MEMO: Final = 4096  # raw header names remembered (known ones first); past it, worked out each time
# SECURITY: only names this short are remembered, so what clients can make the memo hold is
# bounded (4,096 x 64 bytes, twice) and does not grow with the head's 8 KB; a longer name is
# worked out each time.
NAME_MEMO_BYTES: Final = 64


class _Name:
    """What a raw header name is to `plain`: its text as aiohttp names it, and its kind: -1 hands
    the request to aiohttp, a bit of its own for a header that may come once, 0 for any other."""

    __slots__ = ("kind", "text")

    def __init__(self, text: str, kind: int) -> None:
        self.text = text
        self.kind = kind


_NAMES: Final[dict[bytes, _Name]] = {}


def _name(raw: bytes) -> _Name:
    """A raw name's _Name, remembered if it is short and the memo has room (a client picks the
    names)."""
    lname = raw.lower()
    kind = -1 if lname in HAND_OFF else _SINGLE_BITS.get(lname, 0)
    name = _Name(CANONICAL.get(lname) or raw.decode("latin-1"), kind)
    if len(raw) <= NAME_MEMO_BYTES and len(_NAMES) < NAMES_MEMO:
        _NAMES[raw] = name
    return name


def _remember_known() -> None:
    for text in CANONICAL.values():  # the spellings clients send: aiohttp's and lower case
        _name(text.encode("latin-1"))
        _name(text.lower().encode("latin-1"))


_remember_known()


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
    # Each check below is a C primitive of the compiled module or a dict read (no method found
    # by name and called with parsed arguments): 26,000 instructions a token request before.
    if not head.isascii():
        return None  # ASCII only: obs-text is aiohttp's
    # SECURITY: no CR or LF but in a CRLF pair. A bare LF frames differently elsewhere; no control
    # byte but HTAB gets past llhttp (the hostile tests' NUL, DEL, VT, FF and ESC heads are all
    # handed over), nor a folded line (obs-fold, obs-fold-tab, te-obs-fold).
    # (An int, not b"\r": bytes' `in` tries its operand as an int first, and a bytes operand
    # costs a TypeError raised and cleared, 2,000 instructions a search.)
    lines = head.replace(b"\r\n", b"")
    if 13 in lines or 10 in lines or not parsed.read(head):
        return None
    url = parsed.url
    if url[:1] != b"/" or len(parsed.headers) > MAX_HEADERS:
        return None
    # The request line, rebuilt from what llhttp read: `method SP target SP HTTP/1.1 CRLF`,
    # exactly (llhttp also takes two spaces, and RTSP/1.1 as version 1.1: both go to aiohttp).
    sp = 3
    while sp < 8 and head[sp] != 32:
        sp += 1
    method = head[:sp]
    end = sp + 1 + len(url)
    if method not in FAST_METHODS or head[sp + 1 : end] != url or head[end : end + 11] != _VERSION:
        return None
    seen = 0
    pairs: list[tuple[str, str]] = []
    length = 0
    for raw_name, raw_value in parsed.headers:
        name = _NAMES.get(raw_name)
        if name is None:
            name = _name(raw_name)
        kind = name.kind
        if kind:
            if kind < 0:
                return None
            if seen & kind:
                return None
            seen |= kind
        value = raw_value
        if value and (value[-1] == 32 or value[-1] == 9):  # llhttp keeps trailing whitespace
            value = value.rstrip(b" \t")
        if kind == _CONTENT_LENGTH:
            if not value.isdigit() or len(value) > 18 or (value[:1] == b"0" and value != b"0"):
                return None  # SECURITY: a length that is not plainly one is aiohttp's to refuse
            length = int(value)
        pairs.append((name.text, value.decode("latin-1")))
    if not seen & _HOST:
        return None  # aiohttp refuses an HTTP/1.1 request without Host
    if parsed.complete != (length == 0):
        return None  # SECURITY: llhttp and this count must agree on where the request ends
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    return Plain(method.decode(), url.decode("latin-1"), headers, parsed.keep_alive, length)
