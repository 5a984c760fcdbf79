"""The management mount (default /auth): token lifecycle, the scope catalogue, forward-auth.

Served by the gateway itself, before any surface rule, never forwarded.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ..auth.principal import Principal
from ..errors import BadRequest, InvalidRequest, MethodNotAllowed, NotFound
from ..observe import escape
from ..proxy.headers import identity_headers
from ..surface.paths import CleanPath
from ..tokens.service import record_json, require_manager
from .apidoc import document_json
from .peer import client_of
from .ui import authenticate_manager, serve_ui

if TYPE_CHECKING:
    from .runtime import Runtime

MAX_JSON = 64 * 1024


async def management(
    rt: Runtime, request: web.Request, path: CleanPath, rid: str, fields: dict[str, Any]
) -> web.StreamResponse:
    rest = path.segments[len(rt.mount_segments) :]
    method = request.method
    if rest == ("verify",):
        fields["route"] = "verify"
        return await verify(rt, request, rid, fields)
    if rest == ("scopes",):
        _only(method, ("GET", "HEAD"))
        return web.json_response({"scopes": rt.catalogue.as_json()})
    if rest and rest[0] == "ui":
        return await serve_ui(rt, request, path, rest)
    if rest == ("openapi.json",):
        _only(method, ("GET", "HEAD"))
        return web.Response(text=document_json(rt.cfg.management_mount), content_type="application/json")
    if rest and rest[0] == "tokens" and len(rest) <= 2:
        principal = await authenticate_manager(rt, request)
        fields["credential"], fields["token_id"] = principal.kind, principal.token_id
        # SECURITY: who may manage tokens is decided before the body is read.
        require_manager(principal)
        response = await _tokens(rt, request, rest, principal)
        if principal.token_id:
            # An allowed management call is a use of the token; refusals raised above.
            rt.validator.note_used(principal.token_id)
        return response
    raise NotFound("no such management endpoint")


async def _tokens(
    rt: Runtime, request: web.Request, rest: tuple[str, ...], principal: Principal
) -> web.StreamResponse:
    method = request.method
    if len(rest) == 1:
        _only(method, ("GET", "HEAD", "POST"))
        if method == "POST":
            record, secret = await rt.service.create(principal, await _json_body(request))
            return web.json_response(record_json(record, secret), status=201)
        records = await rt.service.list(principal, request.query.get("status", "active"))
        return web.json_response({"tokens": [record_json(r) for r in records]})
    _only(method, ("DELETE",))
    await rt.service.revoke(principal, rest[1])
    return web.Response(status=204)


def _only(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(f"method {method} is not allowed here", allow=allowed)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise InvalidRequest("body: expected Content-Type application/json")
    if request.content_length is not None and request.content_length > MAX_JSON:
        raise InvalidRequest(f"body: larger than {MAX_JSON} bytes")
    # read(n) returns what has arrived so far, not n bytes: read until EOF or past the limit.
    raw = bytearray()
    while chunk := await request.content.read(MAX_JSON + 1 - len(raw)):
        raw += chunk
        if len(raw) > MAX_JSON:
            raise InvalidRequest(f"body: larger than {MAX_JSON} bytes")
    try:
        body = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("body: not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body: expected a JSON object")
    return body


def original_request(headers: CIMultiDictProxy[str]) -> tuple[str, str]:
    """The method and URI a fronting proxy asks about (Traefik/Envoy or nginx names)."""

    # SECURITY: each proxy sets one family of names and passes a client's copy of the other on
    # (nginx sets X-Original-*, Traefik X-Forwarded-*): when both are present they must agree, or
    # a client could have us judge a request other than the one the proxy forwards.
    def given(*names: str) -> set[str]:
        return {v for n in names for v in headers.getall(n, []) if v}

    uris = given("X-Forwarded-Uri", "X-Original-URI")
    methods = {m.upper() for m in given("X-Forwarded-Method", "X-Original-Method")}
    if not uris:
        raise BadRequest("forward-auth needs X-Forwarded-Uri or X-Original-URI")
    if not methods:
        # SECURITY: guessing GET would let every write through on a read credential when the
        # proxy sends only the URI (nginx's own auth_request example does).
        raise BadRequest("forward-auth needs X-Forwarded-Method or X-Original-Method")
    if len(uris) > 1 or len(methods) > 1:
        raise BadRequest("forward-auth: the X-Forwarded-* and X-Original-* names disagree")
    return methods.pop(), uris.pop()


async def verify(rt: Runtime, request: web.Request, rid: str, fields: dict[str, Any]) -> web.StreamResponse:
    """Forward-auth: the same pipeline as the proxy; 200 with identity headers, or its refusal."""
    method, uri = original_request(request.headers)
    fields["method"], fields["path"] = method, escape(uri.partition("?")[0])[:2048]
    path = rt.pipeline.vet(method, uri, request.headers)
    if path.segments[: len(rt.mount_segments)] == rt.mount_segments:
        raise BadRequest("forward-auth cannot ask about the management mount")
    d = await rt.pipeline.decide(method, path, request.headers, client_of(request, rt.cfg.trusted_proxies))
    fields.update(d.log_fields())
    out: CIMultiDict[str] = CIMultiDict(identity_headers(d.principal, rt.cfg.workspace_header))
    out["X-Request-Id"] = rid
    if d.principal.kind == "jwt":
        # The Authorization value the fronting proxy should pass on: a JWT's, never a token's.
        out["X-Auth-Authorization"] = request.headers.get("Authorization", "")
        # Traefik's authResponseHeaders and ingress-nginx's auth-response-headers copy by name and
        # delete the request's copy when the answer lacks it: naming `Authorization` lets them
        # pass a JWT on and drop a token. Never sent for a token.
        out["Authorization"] = out["X-Auth-Authorization"]
    if d.principal.token_id:
        rt.validator.note_used(d.principal.token_id)
    return web.Response(status=200, headers=out)
