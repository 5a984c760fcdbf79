"""`<mount>/tokens...`: create, list, revoke, rotate, and revoke by value (contract section 8).

POST   tokens                  create            a JWT, or a workspace token with tokens:manage
GET    tokens                  list              the tokens the caller could have minted
DELETE tokens/{id}             revoke            the same rule as listing; 404 otherwise
POST   tokens/{id}/rotate      rotate            whoever may revoke it
POST   tokens/self/rotate      rotate itself     the API token that calls
POST   tokens/revoke           revoke by value   anyone, rate-limited, always 200
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from ..auth.principal import Principal
from ..auth.ratelimit import FailedAuthLimiter
from ..authz import network_gate
from ..errors import MethodNotAllowed, NotFound, RateLimited
from ..tokens.fields import record_json
from ..tokens.policy import require_manager
from .jsonbody import json_body
from .peer import client_of
from .ui import authenticate_manager

if TYPE_CHECKING:
    from .runtime import Runtime

# Per client address and minute. A scanner revoking a leak sends up to 100 secrets at a time.
BY_VALUE_PER_MINUTE: Final = 10


class ByValueLimiter(FailedAuthLimiter):
    """Counts every revoke-by-value call (not only failures) in a fixed one-minute window."""

    def __init__(self) -> None:
        super().__init__(BY_VALUE_PER_MINUTE)


async def tokens(
    rt: Runtime, request: web.Request, rest: tuple[str, ...], fields: dict[str, Any]
) -> web.StreamResponse:
    """`rest` is the path below the mount, starting with "tokens"."""
    method = request.method
    client = client_of(request, rt.cfg.trusted_proxies)
    if rest == ("tokens", "revoke"):
        fields["route"] = "revoke-by-value"
        only(method, ("POST",))
        return await _revoke_by_value(rt, request, client)
    if len(rest) > 3 or (len(rest) == 3 and rest[2] != "rotate"):
        raise NotFound("no such management endpoint")
    # The Authorization header, or the token page's sign-in cookie (with its CSRF header).
    principal = await authenticate_manager(rt, request)
    fields["credential"], fields["token_id"] = principal.kind, principal.token_id
    # SECURITY: a token bound to networks manages nothing from outside them either.
    network_gate(principal, client)
    if rest[1:] == ("self", "rotate"):
        only(method, ("POST",))
        record, secret = await rt.service.rotate(principal, None, await json_body(request, empty_ok=True))
        response: web.StreamResponse = web.json_response(_shown(rt, record, secret), status=201)
    else:
        # SECURITY: who may manage tokens is decided before the body is read.
        require_manager(principal)
        response = await _managed(rt, request, rest, principal)
    if principal.token_id:
        # An allowed management call is a use of the token; refusals raised above.
        rt.validator.note_used(principal.token_id)
    return response


async def _managed(
    rt: Runtime, request: web.Request, rest: tuple[str, ...], principal: Principal
) -> web.StreamResponse:
    method = request.method
    if len(rest) == 1:
        only(method, ("GET", "HEAD", "POST"))
        if method == "POST":
            record, secret = await rt.service.create(principal, await json_body(request))
            return web.json_response(_shown(rt, record, secret), status=201)
        records = await rt.service.list(principal, request.query.get("status", "active"))
        now = rt.service.clock()
        listed = [record_json(r, now=now, idle_ttl=rt.cfg.tokens.idle_ttl) for r in records]
        return web.json_response({"tokens": listed})
    if len(rest) == 3:
        only(method, ("POST",))
        body = await json_body(request, empty_ok=True)
        record, secret = await rt.service.rotate(principal, rest[1], body)
        return web.json_response(_shown(rt, record, secret), status=201)
    only(method, ("DELETE",))
    await rt.service.revoke(principal, rest[1])
    return web.Response(status=204)


async def _revoke_by_value(rt: Runtime, request: web.Request, client: str | None) -> web.StreamResponse:
    limiter = rt.by_value_limiter
    ip = client or ""
    if limiter.blocked(ip):
        raise RateLimited("too many revoke-by-value calls from this address")
    limiter.failed(ip)  # every call counts
    body = await json_body(request)
    await rt.service.revoke_by_value(body.get("tokens"), client)
    # SECURITY: the same answer for a live, an unknown and an already revoked secret.
    return web.json_response({"revoked": "ok"})


def _shown(rt: Runtime, record: Any, secret: str) -> dict[str, Any]:
    return record_json(record, secret, now=rt.service.clock(), idle_ttl=rt.cfg.tokens.idle_ttl)


def only(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(f"method {method} is not allowed here", allow=allowed)
