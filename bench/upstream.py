"""The benchmark upstream (aiohttp on uvloop): 200 with a small JSON body for every request;
`/v1/blob/N` answers N bytes; a request body is read whole and answered with the small body."""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web

SMALL = b'{"ok":true}'
_blobs: dict[int, bytes] = {}


async def hello(request: web.Request) -> web.Response:
    if request.body_exists:
        async for _ in request.content.iter_any():
            pass
    tail = request.match_info["tail"]
    if tail.startswith("v1/blob/") and request.method == "GET":
        size = int(tail.rsplit("/", 1)[1])
        blob = _blobs.get(size)
        if blob is None:
            blob = _blobs[size] = b"x" * size
        return web.Response(body=blob, content_type="application/octet-stream")
    return web.Response(body=SMALL, content_type="application/json")


def main() -> None:
    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_route("*", "/{tail:.*}", hello)
    port = int(sys.argv[1])
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
