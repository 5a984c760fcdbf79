"""The one place a GatewayError becomes an HTTP response (an aiohttp one, or the fast door's bytes)."""

from __future__ import annotations

import json

import orjson
from aiohttp import web

from ..errors import GatewayError
from ..proxy.headers import SERVER


def error_parts(err: GatewayError, rid: str) -> tuple[dict[str, str], bytes]:
    """The headers and JSON body every refusal carries, whichever door sends it."""
    fields = {"error": err.code, "detail": err.detail, "request_id": rid}
    try:
        body = orjson.dumps(fields)
    except TypeError:  # a detail quoting client text orjson will not encode (a lone surrogate)
        body = json.dumps(fields).encode()
    headers = {
        **err.headers(),
        "Content-Type": "application/json; charset=utf-8",
        "X-Request-Id": rid,
        "Server": SERVER,
    }
    return headers, body


def error_response(err: GatewayError, rid: str, *, close: bool = False) -> web.Response:
    headers, body = error_parts(err, rid)
    response = web.Response(status=err.status, body=body, headers=headers)
    if close:
        response.force_close()
    return response
