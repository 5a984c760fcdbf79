"""The public listener: the fast door (fastdoor.py) in front of aiohttp's TCP site, plus a
deadline for receiving a request's headers.

Each connection starts at the fast door, which serves plain requests itself and hands anything
else, with the connection, to aiohttp's protocol as built here (`aiohttp_protocol`).

aiohttp has no header-read timeout (THREATS.md: slowloris). Each connection's protocol is
wrapped: from the first byte of a request head until its blank line, the client has
`limits.header_timeout` seconds, or the connection is closed. Idle keep-alive connections are
bounded by aiohttp's own keepalive timeout.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, InvalidURLError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from ..errors import BadPath, BadRequest
from ..proxy.headers import SERVER
from .app import RUNTIME
from .errors import error_response
from .fastdoor import FastDoor

HEAD_END = b"\r\n\r\n"


class _HeaderDeadline(asyncio.Protocol):
    """One timer per connection, pushed back lazily: a new request head moves the deadline,
    the timer only re-arms itself when it fires early (no timer object per request)."""

    __slots__ = (
        "_deadline",
        "_first",
        "_handle",
        "_inner",
        "_loop",
        "_tail",
        "_timeout",
        "_transport",
        "_waiting",
    )

    def __init__(self, inner: Any, timeout: float, first_deadline: float | None = None) -> None:
        self._inner = inner
        self._timeout = timeout
        self._handle: asyncio.TimerHandle | None = None
        # Any transport with close()/is_closing(): asyncio's own, uvloop's, or a TLS one.
        self._transport: Any = None
        self._waiting = True
        self._tail = b""
        self._deadline = 0.0
        self._loop = asyncio.get_running_loop()
        # A connection handed over by the fast door mid-head keeps the deadline it had there.
        self._first = first_deadline

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)
        self._arm(self._first)

    def _arm(self, deadline: float | None = None) -> None:
        self._waiting, self._tail = True, b""
        self._deadline = deadline if deadline is not None else self._loop.time() + self._timeout
        if self._handle is None:
            self._handle = self._loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        self._handle = None
        if not self._waiting:
            return
        if self._loop.time() < self._deadline:
            self._handle = self._loop.call_at(self._deadline, self._expire)
            return
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _idle(self) -> bool:
        # No request being handled and none queued: new bytes start a new request head.
        return getattr(self._inner, "_current_request", None) is None and not getattr(
            self._inner, "_messages", ()
        )

    def data_received(self, data: bytes) -> None:
        if not self._waiting and self._idle():
            self._arm()
        if self._waiting:
            window = self._tail + data
            if not self._tail:
                # SECURITY: empty lines before a request line are skipped by the parser (RFC 9112
                # section 2.2): they end no head, so they never stand the header deadline down.
                window = window.lstrip(b"\r\n")
            if HEAD_END in window:
                self._waiting = False
            else:
                self._tail = window[-3:]
        self._inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        # A client that sends its request and shuts its side down (`nc -N`, some health checkers)
        # still gets the answer, as on the fast door. Whether a whole request is in hand is
        # read one loop turn later: aiohttp takes a parsed request off its queue a turn before
        # its handler shows it, and the handler's first step is scheduled ahead of that turn.
        transport = self._transport
        if transport is None or transport.get_extra_info("sslcontext") is not None:
            return self._inner.eof_received()  # type: ignore[no-any-return]  # TLS: no half-close
        self._loop.call_soon(self._after_eof)
        return True  # the transport stays half open until then

    def _after_eof(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if self._whole_request_in_hand():
            self._inner.close()  # aiohttp's: close once the request in hand is answered
        else:
            self._transport.close()  # as aiohttp's protocol leaves it: the transport closes

    def _whole_request_in_hand(self) -> bool:
        """A request is being handled, or parsed and waiting, with all of its body here. Never on
        an upgraded connection, whose reader needs the end of the stream."""
        inner = self._inner
        if getattr(inner, "_upgraded", True) or getattr(inner, "_payload_parser", None) is not None:
            return False
        current = getattr(inner, "_current_request", None)
        if current is not None:
            return bool(current.content.is_eof())
        messages: Any = getattr(inner, "_messages", None)
        return bool(messages) and bool(messages[0][1].is_eof())

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


ParseRefusal = Callable[[str, str], str]  # (code, detail) -> request id, after logging it


class _JsonErrorHandler(RequestHandler):
    """Requests aiohttp's parser refuses (raw control bytes, bad request lines) get the same
    JSON refusal and decision line as every other refusal, not aiohttp's plain-text 400."""

    __slots__ = ("_refused",)

    def __init__(self, server: Server, refused: ParseRefusal) -> None:
        # aiohttp builds its handlers the same way in Server.__call__ (aiohttp 3.x).
        super().__init__(server, loop=server._loop, **server._kwargs)
        self._refused = refused

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500:
            fallback = super().handle_error(request, status, exc, message)
            fallback.headers["Server"] = SERVER
            return fallback
        err: BadPath | BadRequest = (
            BadPath("malformed request target")
            if isinstance(exc, InvalidURLError)
            else BadRequest("malformed HTTP request")
        )
        response = error_response(err, self._refused(err.code, err.detail))
        response.force_close()
        return response


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections must send their request heads within `header_timeout`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        header_timeout: float,
        reuse_port: bool = False,
        backlog: int = 1024,
        refused: ParseRefusal | None = None,
        ssl_context: ssl.SSLContext | None = None,
        fast_door: bool = True,
    ) -> None:
        super().__init__(
            runner, host, port, reuse_port=reuse_port or None, backlog=backlog, ssl_context=ssl_context
        )
        self._header_timeout = header_timeout
        self._refused = refused
        self._fast_door = fast_door

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        timeout, refused = self._header_timeout, self._refused

        def aiohttp_protocol(deadline: float | None = None) -> asyncio.Protocol:
            inner = server() if refused is None else _JsonErrorHandler(server, refused)
            return _HeaderDeadline(inner, timeout, deadline)

        factory: Callable[[], asyncio.BaseProtocol] = aiohttp_protocol
        app = getattr(self._runner, "app", None)
        if self._fast_door and app is not None and RUNTIME in app:
            rt = app[RUNTIME]
            # aiohttp's RequestHandler default, unless the runner was given one (serve.py is).
            keepalive = float(server._kwargs.get("keepalive_timeout", 3630.0))

            def factory() -> asyncio.BaseProtocol:
                return FastDoor(rt, server, aiohttp_protocol, timeout, keepalive)

        self._server = await asyncio.get_running_loop().create_server(
            factory,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl=self._ssl_context,
            # SECURITY: a TLS handshake gets no longer than a request head (slowloris).
            ssl_handshake_timeout=timeout if self._ssl_context is not None else None,
        )
        sockets = self._server.sockets
        if sockets:
            self._bound_port = sockets[0].getsockname()[1]
