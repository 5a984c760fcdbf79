"""Who is on the other end of a request: the TCP peer, and the client behind trusted proxies."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..proxy.headers import Network, client_ip


def peer_address(transport: Any) -> str | None:
    """The TCP peer's address of a transport (asyncio's, uvloop's or a TLS one), or None."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if peer else None


def peer_of(request: web.Request) -> str | None:
    return peer_address(request.transport)


def client_of(request: web.Request, trusted: tuple[Network, ...]) -> str | None:
    """The address failed authentications are counted against."""
    return client_ip(peer_of(request), request.headers, trusted)
