"""The fast door: the public listener's protocol for plain requests, with aiohttp behind it.

Each connection starts here. Bytes are buffered until a request head's blank line; only that
head is parsed (llhttp, via httptools). A head that is plain (HTTP/1.1, an origin-form target,
no body or one framed by a single Content-Length, no upgrade, nothing unusual: fasthead.py) is
served here, through the same pipeline and bookkeeping as the aiohttp door (fastserve.py).
Anything else is handed to aiohttp before a byte of it is consumed: aiohttp's own protocol takes
the transport and is fed exactly what the client sent, this request's head onwards, and keeps the
connection for good. So chunked bodies, WebSockets, `Expect`, HTTP/1.0 and every parser refusal
behave as they do behind aiohttp.

A Content-Length body is counted off the bytes that follow its head, whatever their split
(fastbody.py): the forward takes it (reading paused while BODY_BUFFER bytes wait), and the next
head starts where it ends. What a refused request leaves unread is read and dropped for up to LINGER
seconds, as aiohttp lingers, before the next request; an upstream that answered before the body
was all sent closes the connection, as on aiohttp's door.

Reads land in one buffer shared by every connection (READ_SIZE, asyncio's BufferedProtocol) and
are copied out at once, so however fast a client sends, no piece held of its body is larger.

One timer per connection carries the header deadline (a head must arrive within
`limits.header_timeout`) and the idle keep-alive timeout, pushed back lazily.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp.tcp_helpers import tcp_nodelay

from .fastbody import Body
from .fasthead import MAX_HEAD, HeadParser, plain
from .fastserve import Plain, serve_plain
from .peer import peer_address

if TYPE_CHECKING:
    from ..surface.paths import CleanPath
    from .runtime import Runtime

LOG: Final = logging.getLogger("scopegate")

BUFFER_LIMIT: Final = 256 * 1024  # pipelined bytes buffered while a request is served, before reading stops
# Request-body bytes waiting for a slower upstream before reading stops (aiohttp's door: 64 KiB).
BODY_BUFFER: Final = 64 * 1024
# Every read of a client lands in one buffer of this size, shared by the process's connections
# and copied out at once, so no piece of a body is larger. Peak RSS with 32 uploads of 1 MB, side
# by side (README, Reads into one shared buffer): 79.7 MB at uvloop's own 256 KiB reads, 68.9 MB
# at 128 KiB, 65.0 MB at 64 KiB, whose extra reads cost more CPU per upload in that run (954
# against 845 us, within the machine's noise).
READ_SIZE: Final = 128 * 1024
_READ: Final = memoryview(bytearray(READ_SIZE))
LINGER = 10.0  # seconds a refused request's unread body is read and dropped (aiohttp's lingering_time)
VERIFY: Final = ("verify",)  # forward-auth, under the management mount: served here too
Fallback = Callable[[float | None], asyncio.Protocol]  # aiohttp's protocol, given a head deadline


class FastDoor(asyncio.BufferedProtocol):
    """One client connection, served here while its requests are plain."""

    # aiohttp's Server tracks its connections (to close them on shutdown) and reads this on
    # connection_lost: the fast door registers there too, with no aiohttp task of its own.
    _task_handler = None

    def __init__(
        self, rt: Runtime, server: Any, fallback: Fallback, header_timeout: float, keepalive: float
    ) -> None:
        self.rt = rt
        self._server = server
        self._fallback = fallback
        self._header_timeout = header_timeout
        self._keepalive = keepalive
        self._loop = asyncio.get_running_loop()
        self.transport: Any = None  # asyncio's, uvloop's or a TLS transport: nothing assumes a class
        self.peer: str | None = None
        self.scheme = "http"
        self._buf = bytearray()
        self._head = HeadParser()
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a request is being served; later bytes wait in the buffer
        self._lost = False
        self._handed = False
        self._closing = False  # close after the current response (shutdown)
        self._eof = False  # the client shut its side down: close after the current response
        self._close_after_linger = False  # the lingering request's connection ends with its body
        self._read_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.body = Body(self._loop, self._body_taken)  # the current request's, if it has one
        self._waiting_head = False
        self._deadline = 0.0  # when the connection is closed, 0 while a request is served
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.started = 0  # the status of a response whose head is out, while its body streams

    # -- asyncio.BufferedProtocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        tcp_nodelay(self.transport, True)  # as aiohttp's protocol does: no Nagle delay on a response
        self.peer = peer_address(transport)
        self.scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        self._server.connection_made(self, transport)
        # SECURITY: from its first byte, a connection has `header_timeout` to send a head.
        self._waiting_head = True
        self._set_deadline(self._loop.time() + self._header_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ  # the loop reads into it and calls buffer_updated at once, before any other read

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_READ[:nbytes]))

    def data_received(self, data: bytes) -> None:
        body = self.body
        if body.left:
            data = body.feed(data)
            if body.left:
                if body.size > BODY_BUFFER and not self._read_paused:
                    self._read_paused = True  # the upstream is slower than the client: wait for it
                    self.transport.pause_reading()
                return
            if body.lingering:  # the rest of an answered request's body is in: on to the next
                body.lingering = False
                if self._close_after_linger:
                    self.transport.close()
                    return
                self._buf += data
                self._next()
                return
        self._buf += data
        if self._busy:
            if len(self._buf) > BUFFER_LIMIT and not self._read_paused:
                self._read_paused = True
                self.transport.pause_reading()
            return
        self._next()

    def eof_received(self) -> bool | None:
        # A client that sends its request and shuts its side down (`nc -N`, some health checkers)
        # still gets the answer: a request whose body is all here is served, then the connection
        # closes (listener.py does the same on aiohttp's door). Otherwise the transport closes.
        # TLS has no half-close: asyncio and uvloop close it whatever this returns.
        if self._busy and not self.body.left and self.scheme == "http":
            self._eof = True
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()
        self.body.lost()
        if not self._handed:
            self._server.connection_lost(self, exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # -- aiohttp's Server, on shutdown ----------------------------------------------------------

    def close(self) -> None:
        """Idle connections close now, busy ones after their response."""
        self._closing = True
        if not self._busy and self.transport is not None:
            self.transport.close()

    async def shutdown(self, timeout: float | None) -> None:  # noqa: ASYNC109 - aiohttp's Server calls it so
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait((task,), timeout=timeout)
        if self.transport is not None and not self._handed:
            self.transport.close()

    # -- framing --------------------------------------------------------------------------------

    def _next(self) -> None:
        """Idle: serve the next buffered head, wait for one, or hand the connection to aiohttp."""
        buf = self._buf
        if not buf:
            self._waiting_head = False
            self._set_deadline(self._loop.time() + self._keepalive)
            return
        end = buf.find(b"\r\n\r\n") + 4
        if end < 4:
            if len(buf) > MAX_HEAD or buf.count(b"\n") != buf.count(b"\r\n") or buf[0] in b"\r\n":
                self._hand_off()
            elif not self._waiting_head:
                self._waiting_head = True
                self._set_deadline(self._loop.time() + self._header_timeout)
            return
        if end > MAX_HEAD or buf[0] in b"\r\n":
            self._hand_off()
            return
        head = bytes(buf[:end])
        try:
            req = plain(head, self._head)
        except Exception:  # a bug of ours: aiohttp, which checks everything itself, decides
            LOG.exception("the fast door failed reading a request head; handed to aiohttp")
            req = None
        if req is None:
            self._hand_off()
            return
        rt = self.rt
        vetted: CleanPath | Exception
        if req.target == rt.verify_target and req.method in rt.cfg.methods:
            # Forward-auth's own address, asked on every request behind a proxy: what `vet` checks
            # past the method is the path (vetted at start-up) and a query or an Upgrade (there
            # is none: an upgrade was handed to aiohttp). The question inside is vetted in full.
            vetted = rt.verify_path
        else:
            try:
                vetted = rt.pipeline.vet(req.method, req.target, req.headers)
            except Exception as exc:  # answered here, by the same refusal path as any other
                vetted = exc
            else:
                mount = rt.mount_segments
                if vetted.segments[: len(mount)] == mount and vetted.segments[len(mount) :] != VERIFY:
                    self._hand_off()  # the management API is aiohttp's, forward-auth aside
                    return
        del buf[:end]
        if req.length:
            self.body.start(bytes(buf[: req.length]), req.length)
            del buf[: req.length]
        self._busy = True
        self._waiting_head = False
        self._deadline = 0.0
        self._task = self._loop.create_task(self._serve(req, vetted))

    async def _serve(self, req: Plain, vetted: CleanPath | Exception) -> None:
        rt = self.rt
        rt.in_flight += 1
        rt.fast_requests += 1
        close, answered = True, False
        try:
            close = await serve_plain(self, req, vetted)
            answered = True
        finally:
            rt.in_flight -= 1
            self._task = None
            close = close or not req.keep_alive or rt.draining or self._closing or self._eof
            # An answered request whose body is still coming lingers first (below), closing after:
            # closed now, the unread bytes would reset the connection under the answer.
            if close and not self._lost and not (answered and self.body.left):
                self.transport.close()
        if self._lost or self.transport.is_closing():
            return
        self._close_after_linger = close
        if self._write_paused:
            try:
                await self.drain()
            except ConnectionError:
                return
        self._busy = False
        body = self.body
        body.linger()  # drops what the forward did not take
        if self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()
        if body.lingering:
            # Answered before the body was all here (a refusal): read the rest and drop it, as
            # aiohttp lingers, so the answer is not lost to a reset; then the next request.
            self._set_deadline(self._loop.time() + LINGER)
            return
        self._next()

    def _hand_off(self) -> None:
        """aiohttp takes the connection, and every byte not consumed here, for good."""
        self._handed = True
        self.rt.handed_off += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server.connection_lost(self, None)
        deadline = self._deadline if self._waiting_head else None
        inner = self._fallback(deadline)
        transport = self.transport
        transport.set_protocol(inner)
        inner.connection_made(transport)
        data = bytes(self._buf)
        self._buf.clear()
        if data:
            inner.data_received(data)
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()

    def _body_taken(self) -> None:
        """The forward took a piece of the body: read the client again once what is held is
        under BODY_BUFFER, unless pipelined requests fill the buffer."""
        if self._read_paused and self.body.size <= BODY_BUFFER and len(self._buf) <= BUFFER_LIMIT:
            self._read_paused = False
            self.transport.resume_reading()

    # -- writing --------------------------------------------------------------------------------

    @property
    def gone(self) -> bool:
        return self._lost or self.transport.is_closing()

    def write(self, data: bytes) -> None:
        """Bytes for the client; dropped if it is gone (the caller's next drain says so)."""
        if not self.gone:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the client's socket buffer is full; ConnectionResetError if it left."""
        while self._write_paused and not self._lost:
            waiter = self._drain_waiter = self._loop.create_future()
            await waiter
        if self.gone:
            raise ConnectionResetError("the client closed the connection")

    def cut(self) -> None:
        """Past the status line, the only honest signal of a failure is a cut connection."""
        if not self._lost:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the one timer ----------------------------------------------------------------------------

    def _set_deadline(self, at: float) -> None:
        self._deadline = at
        if self._timer is None or self._timer_at > at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = self._loop.call_at(at, self._expire), at

    def _expire(self) -> None:
        self._timer = None
        if not self._deadline or self._lost or self._handed:
            return
        if self._loop.time() < self._deadline:
            self._timer, self._timer_at = self._loop.call_at(self._deadline, self._expire), self._deadline
            return
        self.transport.close()  # a head too slow, or idle past the keep-alive timeout
