"""A minimal upstream for benchmarks: 200 with a small JSON body for every request."""

from __future__ import annotations

import sys

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'{"ok":true}', content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
