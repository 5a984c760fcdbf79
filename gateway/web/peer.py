"""Who is on the other end of a request: the TCP peer, and the client behind trusted proxies."""

from __future__ import annotations

from aiohttp import web

from ..proxy.headers import Network, client_ip


def peer_of(request: web.Request) -> str | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else None


def client_of(request: web.Request, trusted: tuple[Network, ...]) -> str | None:
    """The address failed authentications are counted against."""
    return client_ip(peer_of(request), request.headers, trusted)
