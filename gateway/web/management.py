"""The management mount (default /auth): token lifecycle, the scope catalogue, forward-auth.

Served by the gateway itself, before any surface rule, never forwarded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from aiohttp.hdrs import AUTHORIZATION
from multidict import CIMultiDict, CIMultiDictProxy, istr

from ..errors import BadRequest, NotFound
from ..observe import escape
from ..proxy.headers import client_ip, identity_headers
from ..surface.paths import CleanPath
from .apidoc import document_json
from .peer import peer_of
from .tokens_api import only, tokens
from .ui import serve_ui

if TYPE_CHECKING:
    from ..pipeline import Decision
    from .runtime import Runtime

# What a fronting proxy asks about: Traefik's and Envoy's names, then nginx's (istr: looked up
# without lower-casing the name on every request).
URI_NAMES: Final = (istr("X-Forwarded-Uri"), istr("X-Original-URI"))
METHOD_NAMES: Final = (istr("X-Forwarded-Method"), istr("X-Original-Method"))
_NONE: Final[tuple[str, ...]] = ()


async def management(
    rt: Runtime, request: web.Request, path: CleanPath, rid: str, fields: dict[str, Any]
) -> web.StreamResponse:
    rest = path.segments[len(rt.mount_segments) :]
    method = request.method
    if rest == ("verify",):
        return await verify(rt, request, rid, fields)
    if rest == ("scopes",):
        only(method, ("GET", "HEAD"))
        return web.json_response({"scopes": rt.catalogue.as_json()})
    if rest and rest[0] == "ui":
        return await serve_ui(rt, request, path, rest)
    if rest == ("openapi.json",):
        only(method, ("GET", "HEAD"))
        return web.Response(text=document_json(rt.cfg.management_mount), content_type="application/json")
    if rest and rest[0] == "tokens":
        return await tokens(rt, request, rest, fields)
    raise NotFound("no such management endpoint")


def original_request(headers: CIMultiDictProxy[str]) -> tuple[str, str]:
    """The method and URI a fronting proxy asks about (Traefik/Envoy or nginx names)."""

    # SECURITY: each proxy sets one family of names and passes a client's copy of the other on
    # (nginx sets X-Original-*, Traefik X-Forwarded-*): when both are present they must agree, or
    # a client could have us judge a request other than the one the proxy forwards.
    uri = _agreed(headers, URI_NAMES, False)
    method = _agreed(headers, METHOD_NAMES, True)
    if uri == "":
        raise BadRequest("forward-auth needs X-Forwarded-Uri or X-Original-URI")
    if method == "":
        # SECURITY: guessing GET would let every write through on a read credential when the
        # proxy sends only the URI (nginx's own auth_request example does).
        raise BadRequest("forward-auth needs X-Forwarded-Method or X-Original-Method")
    if uri is None or method is None:
        raise BadRequest("forward-auth: the X-Forwarded-* and X-Original-* names disagree")
    return method, uri


def _agreed(headers: CIMultiDictProxy[str], names: tuple[istr, istr], upper: bool) -> str | None:
    """The one non-empty value the two names carry ("" for none, None when they disagree)."""
    first, second = headers.getall(names[0], _NONE), headers.getall(names[1], _NONE)
    if len(first) + len(second) == 1:  # the usual question: one proxy's name, once
        only = (first or second)[0]
        if only:
            return only.upper() if upper else only
    values = {v.upper() if upper else v for v in (*first, *second) if v}
    if len(values) > 1:
        return None
    return values.pop() if values else ""


async def verify(rt: Runtime, request: web.Request, rid: str, fields: dict[str, Any]) -> web.StreamResponse:
    """Forward-auth: the same pipeline as the proxy; 200 with identity headers, or its refusal."""
    out = await forward_auth(rt, request.headers, peer_of(request), rid, fields)
    return web.Response(status=200, headers=out)


async def forward_auth(
    rt: Runtime, headers: CIMultiDictProxy[str], peer: str | None, rid: str, fields: dict[str, Any]
) -> CIMultiDict[str]:
    """The answer's headers for a forward-auth question; raises its refusal."""
    d = await forward_decision(rt, headers, peer, fields)
    return forward_answer(d, headers, rid, rt.cfg.workspace_header)


async def forward_decision(
    rt: Runtime, headers: CIMultiDictProxy[str], peer: str | None, fields: dict[str, Any]
) -> Decision:
    """The pipeline's decision on a forward-auth question (both doors ask here); raises its
    refusal. The answer is `forward_answer`'s headers (the fast door writes the same as bytes)."""
    fields["route"] = "verify"
    method, uri = original_request(headers)
    fields["method"], fields["path"] = method, escape(uri.partition("?")[0])[:2048]
    path = rt.pipeline.vet(method, uri, headers)
    if path.segments[: len(rt.mount_segments)] == rt.mount_segments:
        raise BadRequest("forward-auth cannot ask about the management mount")
    d = await rt.pipeline.decide(method, path, headers, client_ip(peer, headers, rt.cfg.trusted_proxies))
    d.log_into(fields)
    if d.principal.token_id:
        rt.validator.note_used(d.principal.token_id)
    return d


def forward_answer(
    d: Decision, headers: CIMultiDictProxy[str], rid: str, workspace_header: str
) -> CIMultiDict[str]:
    """Forward-auth's 200: the identity headers, the request id, and a JWT to pass on."""
    out: CIMultiDict[str] = CIMultiDict(identity_headers(d.principal, workspace_header))
    out["X-Request-Id"] = rid
    if d.principal.kind == "jwt":
        # The Authorization value the fronting proxy should pass on: a JWT's, never a token's.
        out["X-Auth-Authorization"] = headers.get(AUTHORIZATION, "")
        # Traefik's authResponseHeaders and ingress-nginx's auth-response-headers copy by name and
        # delete the request's copy when the answer lacks it: naming `Authorization` lets them
        # pass a JWT on and drop a token. Never sent for a token.
        out["Authorization"] = out["X-Auth-Authorization"]
    return out
