"""The public listener: aiohttp's TCP site, plus a deadline for receiving a request's headers.

aiohttp has no header-read timeout (THREATS.md: slowloris). Each connection's protocol is
wrapped: from the first byte of a request head until its blank line, the client has
`limits.header_timeout` seconds, or the connection is closed. Idle keep-alive connections are
bounded by aiohttp's own keepalive timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

HEAD_END = b"\r\n\r\n"


class _HeaderDeadline(asyncio.Protocol):
    __slots__ = ("_handle", "_inner", "_tail", "_timeout", "_transport", "_waiting")

    def __init__(self, inner: Any, timeout: float) -> None:
        self._inner = inner
        self._timeout = timeout
        self._handle: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._waiting = True
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inner.connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._waiting, self._tail = True, b""
        self._handle = asyncio.get_running_loop().call_later(self._timeout, self._expire)

    def _expire(self) -> None:
        self._handle = None
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
            if HEAD_END in window:
                self._waiting = False
                if self._handle is not None:
                    self._handle.cancel()
                    self._handle = None
            else:
                self._tail = window[-3:]
        self._inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


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
    ) -> None:
        super().__init__(runner, host, port, reuse_port=reuse_port or None, backlog=backlog)
        self._header_timeout = header_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        timeout = self._header_timeout

        def factory() -> asyncio.Protocol:
            return _HeaderDeadline(server(), timeout)

        self._server = await asyncio.get_running_loop().create_server(
            factory,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        if sockets:
            self._bound_port = sockets[0].getsockname()[1]
