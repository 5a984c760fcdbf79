"""Streaming forward to an upstream over our own keep-alive pool: bodies never held whole.

The request head is written once (a request with no body, or a small one held whole, goes
through exchange.py's round trip); the body follows as it arrives (its own Content-Length, or
chunked), each chunk passing through `_send_body`'s one loop. The response head is parsed by
llhttp (see pool.py); a response already complete goes out in one write, anything else is
streamed with the client's and the upstream's flow control.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ..config import Upstream
from ..errors import ClientGone
from .exchange import UpstreamErrors, check_body_size, exchange_plain, request_head
from .formscan import FormScan
from .headers import SERVER, downstream_raw
from .pool import Connection, Pool
from .response import Message, UpstreamError

LOG = logging.getLogger("scopegate")
_CRLF = b"\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class Upstreams:
    """The upstream pools (and, for WebSockets, aiohttp client sessions), created and closed
    with the app (a cleanup_ctx pairs them)."""

    def __init__(self, upstreams: Mapping[str, Upstream]) -> None:
        self._config = dict(upstreams)
        self.pools = {name: Pool(up) for name, up in self._config.items()}
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        for name, up in self._config.items():
            ssl_context = self.pools[name].ssl
            self._sessions[name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, ssl=ssl_context or True),
                timeout=aiohttp.ClientTimeout(total=None, connect=up.connect_timeout, sock_read=up.timeout),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )

    async def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def session(self, name: str) -> aiohttp.ClientSession:
        """The aiohttp session WebSocket upgrades are opened with."""
        return self._sessions[name]

    def target(self, name: str, raw_path: str, query: str) -> str:
        return self.pools[name].target(raw_path, query)

    def url(self, name: str, raw_path: str, query: str) -> URL:
        base = self._config[name].url
        return URL(f"{base.scheme}://{base.raw_authority}{self.target(name, raw_path, query)}", encoded=True)


async def forward(
    request: web.Request,
    upstreams: Upstreams,
    name: str,
    target: str,
    headers: CIMultiDict[str],
    max_body: int,
    timings: dict[str, float],
    scan: FormScan | None = None,
) -> web.StreamResponse:
    declared = request.content_length
    if declared is not None:
        check_body_size(declared, max_body)
    pool = upstreams.pools[name]
    method = request.method
    has_body = request.body_exists
    framing = None
    if has_body:
        framing = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    head = request_head(method, target, pool.authority, headers.items(), framing)
    started = time.perf_counter()
    if has_body:
        read = request.content.readany
        conn, msg = await exchange_body(pool, method, head, read, declared is None, max_body, scan)
    else:
        conn, msg = await exchange_plain(pool, method, head)
    timings["upstream_ms"] = (time.perf_counter() - started) * 1000
    try:
        return await _respond(request, conn, msg, headers["X-Request-Id"], timings)
    finally:
        pool.release(conn)


async def exchange_body(
    pool: Pool,
    method: str,
    head: bytes,
    read: Callable[[], Awaitable[bytes]],
    chunked: bool,
    max_body: int,
    scan: FormScan | None,
) -> tuple[Connection, Message]:
    """A request with a body (both doors): its head out, then each chunk `read` gives (b"" at
    its end) while the answer is awaited. Never retried: the body cannot be sent twice."""
    async with UpstreamErrors(pool.name):
        conn, _ = await pool.acquire()
        msg = await _exchange(method, read, conn, head, chunked, max_body, scan)
    return conn, msg


async def _exchange(
    method: str,
    read: Callable[[], Awaitable[bytes]],
    conn: Connection,
    head: bytes,
    chunked: bool,
    max_body: int,
    scan: FormScan | None,
) -> Message:
    sending: asyncio.Future[None] | None = None
    answer: asyncio.Future[Message] | None = None
    try:
        conn.send_head(head, head_request=method == "HEAD")
        # The body goes up while we listen: an upstream may answer (413, 401 ...) before it has
        # all of it, and a stalled client must not keep that answer from being passed on.
        sending = asyncio.ensure_future(_send_body(read, conn, chunked, max_body, scan))
        answer = asyncio.ensure_future(conn.head())
        await asyncio.wait((sending, answer), return_when=asyncio.FIRST_COMPLETED)
        if sending.done():
            # A body over max_body, or a form naming `_method`, raises here; the connection is
            # aborted below, so the upstream never has a complete request.
            sending.result()
            conn.request_sent()
            return await answer
        sending.cancel()
        conn.reusable = False  # the rest of the body was never sent: this connection is done
        return answer.result()
    except BaseException:
        for task in (sending, answer):
            if task is not None and not task.done():
                task.cancel()
        conn.abort()
        raise


async def _send_body(
    read: Callable[[], Awaitable[bytes]],
    conn: Connection,
    chunked: bool,
    max_body: int,
    scan: FormScan | None,
) -> None:
    seen = 0
    while True:
        try:
            chunk = await read()
        except ConnectionError:  # `read` reads the client: it left mid-body
            raise ClientGone("the client closed the connection mid-body") from None
        if not chunk:
            break
        # Every request-body chunk passes here, once.
        seen += len(chunk)
        check_body_size(seen, max_body)
        if scan is not None:
            # SECURITY: a form scanner holds back what it has not judged; its refusal (raised
            # here) aborts the upstream connection before the upstream has a complete body.
            chunk = scan.feed(chunk)
            if not chunk:
                continue  # an empty chunk would end a chunked body
        if conn.closed:
            return  # the upstream hung up: its answer, or the failure, is what counts
        _write(conn, chunk, chunked)
        await conn.drain()
    if scan is not None and (rest := scan.end()) and not conn.closed:
        _write(conn, rest, chunked)
        await conn.drain()
    if chunked:
        conn.write(_LAST_CHUNK)


def _write(conn: Connection, chunk: bytes, chunked: bool) -> None:
    if chunked:
        conn.writelines([b"%x\r\n" % len(chunk), chunk, _CRLF])
    else:
        conn.write(chunk)


async def _respond(
    request: web.Request, conn: Connection, msg: Message, rid: str, timings: dict[str, float]
) -> web.StreamResponse:
    status, reason, headers_out, no_body = response_head(msg, rid, request.method)
    if msg.complete and not no_body:
        # The whole answer is here: one write, headers and body.
        response: web.StreamResponse = web.Response(
            status=status, reason=reason, body=conn.take_body(), headers=headers_out
        )
    else:
        response = web.StreamResponse(status=status, reason=reason, headers=headers_out)
    if not conn.reusable and request.body_exists and not request.content.at_eof():
        response.force_close()  # the upstream answered before the client's body was all read
    if isinstance(response, web.Response):
        return response
    length = content_length(msg)
    if length is not None:
        response.content_length = length
    elif not no_body and request.version >= aiohttp.HttpVersion11:
        # An HTTP/1.0 client cannot take chunks: its body ends when the connection closes.
        response.enable_chunked_encoding()
    await response.prepare(request)
    if no_body:
        await response.write_eof()
        return response
    transport = request.transport
    await pump(conn, response.write, response.write_eof, transport.close if transport else _nothing, timings)
    return response


async def pump(
    conn: Connection,
    write: Callable[[bytes], Awaitable[None]],
    finish: Callable[[], Awaitable[None]],
    cut: Callable[[], None],
    timings: dict[str, float],
) -> None:
    """Stream an upstream body to the client (both doors): `write` each chunk, `finish`, or
    `cut` the client's connection when the body cannot be completed."""
    try:
        while chunk := await conn.read():
            await write(chunk)
        await finish()
    except UpstreamError:
        # The status line is gone already: the only honest signal left is a cut connection.
        timings["upstream_error"] = 1
        cut()
    except ConnectionError:
        timings["client_gone"] = 1  # the client hung up mid-body; the upstream connection closes
    except Exception:
        # Past the status line a 500 cannot be sent: cut the connection, say why in the log.
        LOG.exception("unexpected failure streaming a response")
        timings["internal_error"] = 1
        cut()


def _nothing() -> None:
    pass


def response_head(msg: Message, rid: str, method: str) -> tuple[int, str | None, CIMultiDict[str], bool]:
    """What the client is told of an upstream's answer: status, reason, headers (hop-by-hop
    removed, our request id, a Server), and whether it carries no body (HEAD, 204, 304)."""
    headers_out = downstream_raw(msg.headers)
    # The id the upstream and the decision log saw, never the upstream's own.
    headers_out["X-Request-Id"] = rid
    if "Server" not in headers_out:
        headers_out["Server"] = SERVER
    reason = msg.reason.decode("latin-1") or None
    status = msg.status
    return status, reason, headers_out, method == "HEAD" or status in (204, 304)


def content_length(msg: Message) -> int | None:
    length = None
    for name, value in msg.headers:
        lname = name.lower()
        if lname == b"transfer-encoding":
            return None
        if lname == b"content-length" and value.strip().isdigit():
            length = int(value)
    return length
