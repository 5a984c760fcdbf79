"""The reference decider behind nginx auth_request: allows every request, says nothing (uvloop)."""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web


async def allow(_request: web.Request) -> web.Response:
    return web.Response(status=200)


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", allow)
    port = int(sys.argv[1])
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
