"""The reference decider behind nginx auth_request: allows every request, deciding nothing (uvloop).

    python bench/stub_auth.py PORT [ANSWERS.json]

ANSWERS maps an Authorization header to the headers scopegate's /auth/verify answered it with
(`cases.verify_answers`, asked once at set-up): the stub says the same, so nginx copies the same
identity headers to the app behind it, the JWT among them, and the rows compared differ only in
the decider. Without a file, or for a header not in it, a bare 200.
"""

from __future__ import annotations

import json
import sys

import uvloop
from aiohttp import web
from multidict import CIMultiDict


def main() -> None:
    answers: dict[str, CIMultiDict[str]] = {}
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as fh:
            answers = {auth: CIMultiDict(headers) for auth, headers in json.load(fh).items()}
    none: CIMultiDict[str] = CIMultiDict()

    async def allow(request: web.Request) -> web.Response:
        return web.Response(status=200, headers=answers.get(request.headers.get("Authorization", ""), none))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", allow)
    port = int(sys.argv[1])
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
