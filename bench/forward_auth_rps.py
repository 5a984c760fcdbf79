"""Requests per second through nginx `auth_request` with scopegate deciding, against a stub decider.

    python bench/forward_auth_rps.py [--seconds 5] [--rounds 3] [--connections 32]

Two nginx instances run deploy/nginx/forward-auth.conf (one worker each, only the addresses
rewritten) in front of the same upstream (bench/upstream.py). One asks `scopegate serve`'s
/auth/verify, the other asks a stub auth service that answers 200 to everything. wrk runs against
each in interleaved rounds so machine noise hits all alike. Prints the median requests/s of each
case and its ratio to the stub measured in the same run:
  stub       nginx -> stub auth (always 200) -> upstream: the cost of auth_request itself
  anonymous  nginx -> scopegate, an anonymous route
  token      nginx -> scopegate, a public route with an API token (cached after the first request)
  jwt        nginx -> scopegate, a public route with an HS256 JWT
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

from aiohttp import web
from common import credentials, free_port, gateway_cases, gateway_config, measure, report, start, stop

HERE = os.path.dirname(os.path.abspath(__file__))
SNIPPET = os.path.join(HERE, os.pardir, "deploy", "nginx", "forward-auth.conf")


def stub_auth(port: int) -> None:
    """The reference decider: allows every request, says nothing about the caller."""

    async def allow(_request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", allow)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def nginx_conf(folder: str, listen: int, auth: int, app: int) -> str:
    with open(SNIPPET) as fh:
        snippet = fh.read()
    for old, new in (
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{auth};"),
        ("server 127.0.0.1:8081;", f"server 127.0.0.1:{app};"),
        ("listen 80;", f"listen 127.0.0.1:{listen} backlog=1024;"),
    ):
        snippet = snippet.replace(old, new)
    os.makedirs(folder)
    temp = "\n".join(
        f"    {kind}_temp_path {os.path.join(folder, kind)};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    path = os.path.join(folder, "nginx.conf")
    with open(path, "w") as fh:
        fh.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {os.path.join(folder, "nginx.pid")};
error_log {os.path.join(folder, "error.log")} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
{snippet}
}}
""")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--stub-auth", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stub_auth:
        stub_auth(args.stub_auth)
        return
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if nginx is None:
        sys.exit("bench: nginx not found (Debian: apt-get install nginx-light)")
    folder = tempfile.mkdtemp(prefix="scopegate-bench-fa-")
    up_port, stub_port, gw_port, ng_stub, ng_gw = (free_port() for _ in range(5))
    secret = secrets.token_urlsafe(32)
    # The upstream is never reached by scopegate itself here: nginx forwards after /auth/verify.
    config = gateway_config(folder, gw_port, "http://127.0.0.1:9", secret)
    token, token_jwt = credentials(config, secret)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start([sys.executable, os.path.join(HERE, "upstream.py"), str(up_port)], up_port))
        procs.append(start([sys.executable, __file__, "--stub-auth", str(stub_port)], stub_port))
        procs.append(start([sys.executable, "-m", "gateway", "serve", "-c", config], gw_port))
        for name, listen, auth in (("stub", ng_stub, stub_port), ("scopegate", ng_gw, gw_port)):
            conf = nginx_conf(os.path.join(folder, f"nginx-{name}"), listen, auth, up_port)
            procs.append(start([nginx, "-p", os.path.dirname(conf), "-e", "stderr", "-c", conf], listen))
        results = measure(
            {
                "stub": (f"http://127.0.0.1:{ng_stub}/v1/playlists/1", []),
                **gateway_cases(f"http://127.0.0.1:{ng_gw}", token, token_jwt),
            },
            args.seconds,
            args.rounds,
            args.connections,
        )
    finally:
        stop(procs)
        shutil.rmtree(folder, ignore_errors=True)
    report(results, "stub")


if __name__ == "__main__":
    main()
