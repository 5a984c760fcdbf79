"""An HTTP/1.1 client for a few known upstreams: asyncio protocols, llhttp parsing, keep-alive pools.

One `Connection` (an asyncio.BufferedProtocol, reading into a buffer all connections share) owns
one `httptools.HttpResponseParser` and carries one request at a time; the parser callbacks fill
the current `Message` and never do I/O. Body bytes wait in the message's deque: past `HIGH_WATER`
the socket stops reading until the consumer (the client side) takes them, so a slow client never
makes the gateway hold a body.
Writes pause on `pause_writing` the same way (`drain`). One timer per connection carries the
read timeout, pushed back lazily on each read.

A `Pool` keeps idle keep-alive connections per upstream (LIFO, at most `MAX_IDLE`, none older
than `IDLE_TIMEOUT`) and opens new ones with the connect timeout and, for https, TLS.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, Final

import httptools

from ..config import Upstream
from .response import (
    Message,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamReadTimeout,
)

# Every upstream read lands in one buffer of this size, shared by the process's connections: the
# parser copies the body out at once, so no read of the socket is ever held as a whole (uvloop's
# own reads are up to 256 KiB each). Peak RSS with 32 downloads of 1 MB, side by side (README,
# Reads into one shared buffer): 70.0 MB at 64 KiB reads, 74.9 MB at 128 KiB, 90.4 MB at 1 MiB.
READ_SIZE: Final = 64 * 1024
_READ: Final = memoryview(bytearray(READ_SIZE))
HIGH_WATER: Final = 128 * 1024  # body bytes buffered before the upstream socket stops being read
MAX_IDLE: Final = 100  # idle keep-alive connections kept per upstream
# Seconds an idle connection is reused for: below the 5 s keep-alive of Node and friends, so
# a POST rarely meets an upstream that is closing the connection under it.
IDLE_TIMEOUT: Final = 4.0


class Connection(asyncio.BufferedProtocol):
    """One upstream connection; one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.msg: Message | None = None
        self._parsing: Message = Message()  # what the parser callbacks fill: `msg`, or a discard
        self.exc: UpstreamError | None = None
        self.closed = False
        self.answered = False  # a response byte arrived for the current request
        self.head_request = False
        self.reusable = True
        self.idle_since = 0.0
        self._fresh_parser = True
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._reading = False  # the read timeout runs
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.BufferedProtocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_READ[:nbytes])  # llhttp reads the view; its callbacks copy what they keep

    def data_received(self, data: bytes | memoryview) -> None:
        if self.msg is None or self.msg.complete:
            # Bytes nobody asked for: the connection cannot be trusted with another request.
            self.reusable = False
            self.transport.close()
            return
        self.answered = True
        if self._reading:
            self._deadline = self.loop.time() + self.pool.read_timeout
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("upstream switched protocols unasked"))
        except httptools.HttpParserError:
            self._fail(UpstreamError("upstream sent a malformed response"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        msg = self.msg
        if msg is not None and not msg.complete and self.exc is None:
            if msg.head_done and msg.close_delimited and exc is None:
                msg.complete = True  # the end of a close-delimited body
                self._reading = False
            else:
                self.exc = UpstreamError("upstream closed the connection", answered=self.answered)
        self._wake()
        self._wake_drain()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # -- parser callbacks (no I/O) ------------------------------------------------------------

    def on_message_begin(self) -> None:
        msg = self.msg
        assert msg is not None
        if msg.complete:
            # SECURITY: a second answer to one request (response splitting, a desynchronised
            # upstream) never reaches the client: it is parsed into a discard, and the
            # connection is not reused.
            self.reusable = False
            self._parsing = Message()
            return
        msg.headers = []

    def on_status(self, reason: bytes) -> None:
        self._parsing.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsing.headers.append((name, value))

    def on_headers_complete(self) -> None:
        msg = self._parsing
        if msg is not self.msg:
            return
        status = self.parser.get_status_code()
        if status < 200:
            # 1xx interim answers (100 Continue, 103 Early Hints) are absorbed; 101 is an
            # upgrade the proxy door never asks for, which the parser reports as an error.
            msg.interim, msg.reason = True, b""
            return
        msg.status = status
        msg.head_done = True
        msg.keep_alive = self.parser.should_keep_alive()
        framed = status in (204, 304) or self.head_request
        if not framed:
            for name, value in msg.headers:
                lname = name.lower()
                if lname == b"content-length" or (
                    lname == b"transfer-encoding" and b"chunked" in value.lower()
                ):
                    framed = True
                    break
        msg.close_delimited = not framed
        if self.head_request:
            # llhttp does not know the request was HEAD: the answer ends with its head.
            msg.complete = True
            self._reading = False
            self._fresh_parser = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        msg = self._parsing
        if msg is not self.msg or msg.complete:
            self.reusable = False  # a body after a HEAD answer: desynchronised
            return
        msg.chunks.append(body)
        msg.buffered += len(body)
        if msg.buffered > HIGH_WATER and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        msg = self._parsing
        if msg is not self.msg:
            return
        if msg.interim:
            msg.interim = False
            return
        if not msg.complete:
            msg.complete = True
            self._reading = False
            self._wake()

    # -- the request side ---------------------------------------------------------------------

    def send_head(self, head: bytes, *, head_request: bool) -> None:
        if not self._fresh_parser:
            self.parser = httptools.HttpResponseParser(self)
            self._fresh_parser = True
        self.msg = self._parsing = Message()
        self.exc = None
        self.answered = False
        self.head_request = head_request
        self.transport.write(head)
        # The read timeout runs from here: a client trickling a body is bounded by it too.
        self.request_sent()

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def writelines(self, data: list[bytes]) -> None:
        if not self.closed:
            self.transport.writelines(data)

    async def drain(self) -> None:
        """Wait while the upstream socket's write buffer is full (or until it fails or answers)."""
        while self._write_paused and not self.closed and not (self.msg and self.msg.head_done):
            self._drain = self.loop.create_future()
            await self._drain

    def request_sent(self) -> None:
        """The request (head, then whole body) is out: the upstream has `timeout` seconds per read."""
        self._reading = True
        self._deadline = self.loop.time() + self.pool.read_timeout
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)

    async def head(self) -> Message:
        msg = self.msg
        assert msg is not None
        while not msg.head_done and self.exc is None:
            self._waiter = self.loop.create_future()
            await self._waiter
        if not msg.head_done:
            assert self.exc is not None
            raise self.exc
        return msg

    async def read(self) -> bytes:
        """The next body bytes, b"" at the end; raises if the body was cut short."""
        msg = self.msg
        assert msg is not None
        chunks = msg.chunks
        while not chunks:
            if msg.complete:
                return b""
            if self.exc is not None:
                raise self.exc
            self._waiter = self.loop.create_future()
            await self._waiter
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        msg.buffered = 0
        if self._read_paused and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    def take_body(self) -> bytes:
        """The whole body of a complete message, at once."""
        assert self.msg is not None
        chunks = self.msg.chunks
        data = b"".join(chunks)
        chunks.clear()
        self.msg.buffered = 0
        return data

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # -- internals ----------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_drain(self) -> None:
        waiter = self._drain
        if waiter is not None:
            self._drain = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, exc: UpstreamError) -> None:
        if self.exc is None:
            exc.answered = self.answered
            self.exc = exc
        self.abort()
        self._wake()
        self._wake_drain()

    def _on_timer(self) -> None:
        self._timer = None
        if not self._reading or self.closed:
            return
        now = self.loop.time()
        if self._read_paused:  # the client is slow, not the upstream
            self._deadline = now + self.pool.read_timeout
        if now < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        self._fail(UpstreamReadTimeout("upstream did not answer in time"))


class Pool:
    """Keep-alive connections to one upstream."""

    def __init__(self, upstream: Upstream) -> None:
        url = upstream.url
        self.name = upstream.name
        self.host = url.host or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self.ssl = ssl.create_default_context(cafile=upstream.ca_file)
        host = url.raw_host or ""
        if ":" in host:
            host = f"[{host}]"
        if url.explicit_port is not None and url.explicit_port != (443 if self.ssl else 80):
            host = f"{host}:{url.explicit_port}"
        self.authority = host
        self.prefix = url.raw_path.rstrip("/")
        self.connect_timeout = upstream.connect_timeout
        self.read_timeout = upstream.timeout
        self._idle: deque[Connection] = deque()

    def target(self, raw_path: str, query: str) -> str:
        """The request target upstream: the upstream URL's path, then the client's."""
        # SECURITY: the raw path goes out byte for byte; nothing resolves dot segments or
        # re-encodes, so the upstream sees the path we matched.
        return f"{self.prefix}{raw_path}?{query}" if query else self.prefix + raw_path

    async def acquire(self) -> tuple[Connection, bool]:
        """A connection to send one request on, and whether it was reused from the pool."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport.is_closing():
                continue
            if conn.loop.time() - conn.idle_since > IDLE_TIMEOUT:
                conn.close()
                continue
            return conn, True
        return await self.connect(), False

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError:
            raise UpstreamConnectTimeout("connect timeout", answered=False) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"connect failed: {exc}", answered=False) from None
        return conn

    def release(self, conn: Connection) -> None:
        """Back to the pool when the exchange ended cleanly, else closed."""
        msg = conn.msg
        if (
            conn.reusable
            and not conn.closed
            and msg is not None
            and msg.complete
            and msg.keep_alive
            and not msg.chunks
        ):
            conn.msg = None
            conn.idle_since = conn.loop.time()
            idle = self._idle
            idle.append(conn)
            if len(idle) > MAX_IDLE:
                idle.popleft().close()
            return
        conn.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
