"""The one place a GatewayError becomes an HTTP response."""

from __future__ import annotations

import json

from aiohttp import web

from ..errors import GatewayError
from ..proxy.headers import SERVER


def error_response(err: GatewayError, rid: str, *, close: bool = False) -> web.Response:
    body = json.dumps({"error": err.code, "detail": err.detail, "request_id": rid})
    response = web.Response(
        status=err.status,
        text=body,
        content_type="application/json",
        headers={**err.headers(), "X-Request-Id": rid, "Server": SERVER},
    )
    if close:
        response.force_close()
    return response
