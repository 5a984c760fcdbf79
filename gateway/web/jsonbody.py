"""Reading a management request's JSON body: bounded, and every bad body a 400, never a 500."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import InvalidRequest

MAX_JSON = 64 * 1024


async def json_body(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object; `{}` for an empty body when `empty_ok`."""
    if empty_ok and request.content_length in (None, 0) and not request.body_exists:
        return {}
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
    if empty_ok and not raw:
        return {}
    try:
        body = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("body: not valid JSON") from None
    except RecursionError:
        # SECURITY: 20,000 nested `[` exhaust the decoder's stack: bad input, not a 500 (issue 8).
        raise InvalidRequest("body: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body: expected a JSON object")
    return body
