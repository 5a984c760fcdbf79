"""A request's round trip to its upstream, up to the response head: the head built (one line per
header, nothing injected), written once on a pooled connection, and the answer's head read, with
a reused connection's failure retried once when that is safe, and every failure mapped to the
contract's 502 or 504. Both doors send every body-less request through here, and the fast door
a small body it holds whole; bodies that stream are forward.py's. Compiled (setup.py): this is
nearly every proxied request's path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Final

import aiohttp

from ..errors import BodyTooLarge, UpstreamTimeout, UpstreamUnavailable
from .pool import Connection, Pool
from .response import Message, UpstreamError, UpstreamReadTimeout

# Methods a request may be sent twice for (RFC 9110 9.2.2), when it has no body.
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

# What a failure talking to an upstream is for the client: 504 when it was too slow, else 502.
_TIMEOUTS: Final = (TimeoutError, aiohttp.ServerTimeoutError, UpstreamReadTimeout)
_FAILURES: Final = (aiohttp.ClientError, asyncio.IncompleteReadError, UpstreamError)


class UpstreamErrors:
    """`async with UpstreamErrors(name):` maps client-side failures to the contract's 502/504,
    never leaking internals. (A class, not a generator: the module is compiled, see setup.py.)"""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if isinstance(exc, _TIMEOUTS):
            raise UpstreamTimeout(f"upstream {self.name} did not answer in time") from None
        if isinstance(exc, _FAILURES):
            raise UpstreamUnavailable(f"upstream {self.name} is unavailable") from None
        return False


def request_head(
    method: str,
    target: str,
    authority: str,
    headers: Iterable[tuple[str, str]],
    framing: str | None,
    ours: bytes = b"",
) -> bytes:
    """The head: request line, Host, `headers`, then `ours` (lines already checked and each
    ended: the fast door's identity block, rendered once per principal), then the framing."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in headers]
    text = "\r\n".join(lines)
    # SECURITY: one header per line, whatever a value holds (the parser refuses CR/LF, and
    # identity values are cleaned; this is the last line of defence against header injection).
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1 or "\x00" in text:
        raise UpstreamUnavailable("a header cannot be forwarded")
    head = text.encode("utf-8", "surrogateescape") + b"\r\n" + ours
    if framing is not None:  # ours: a Content-Length of an int, or chunked
        head += framing.encode() + b"\r\n"
    return head + b"\r\n"


def check_body_size(size: int, max_body: int) -> None:
    """A body over `limits.max_body`, declared or counted so far, is refused (both doors)."""
    if size > max_body:
        raise BodyTooLarge(f"request body over {max_body} bytes")


async def exchange_plain(pool: Pool, method: str, head: bytes) -> tuple[Connection, Message]:
    """A request without a body: its head out, the response head back (both doors use this).
    Failures map as `UpstreamErrors` maps them (inline: this is every request's path)."""
    try:
        conn, reused = await pool.acquire()
        try:
            return conn, await _plain(conn, head, method)
        except UpstreamError as exc:
            # SECURITY: a read timeout is an upstream too slow, not one that closed the idle
            # connection: it may be acting on the request, which is never sent to it twice.
            closed_idle = reused and not exc.answered and not isinstance(exc, UpstreamReadTimeout)
            if not (closed_idle and method in IDEMPOTENT):
                raise
        # A kept-alive connection the upstream closed as we sent: once more, on a new one.
        conn = await pool.connect()
        return conn, await _plain(conn, head, method)
    except _TIMEOUTS:
        raise UpstreamTimeout(f"upstream {pool.name} did not answer in time") from None
    except _FAILURES:
        raise UpstreamUnavailable(f"upstream {pool.name} is unavailable") from None


async def exchange_whole(pool: Pool, method: str, head: bytes, body: bytes) -> tuple[Connection, Message]:
    """A request whose body is all here (most small ones): head and body in one write, then
    the answer, with no task for each direction. Never retried: it has a body."""
    async with UpstreamErrors(pool.name):
        conn, _ = await pool.acquire()
        msg = await _plain(conn, head + body, method)
    return conn, msg


async def _plain(conn: Connection, head: bytes, method: str) -> Message:
    try:
        conn.send_head(head, head_request=method == "HEAD")
        conn.request_sent()
        return await conn.head()
    except BaseException:
        conn.abort()
        raise
