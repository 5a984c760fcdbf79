"""Requests per second through scopegate against a bare aiohttp passthrough, side by side.

    python bench/proxy_rps.py [--seconds 5] [--rounds 3] [--connections 32]

Starts one upstream, the reference passthrough proxy and `scopegate serve` (one worker), then
runs wrk against each in interleaved rounds so machine noise hits all alike. Prints the median
requests/s of each and its ratio to the passthrough measured in the same run:
  anonymous  an anonymous route
  token      a public route with an API token (cached after the first request)
  jwt        a public route with an HS256 JWT
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time

import jwt
from common import free_port, median, start, wrk

ROUTES = """routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    folder = tempfile.mkdtemp(prefix="scopegate-bench-")
    up_port, ref_port, gw_port = free_port(), free_port(), free_port()
    secret = secrets.token_urlsafe(32)
    with open(os.path.join(folder, "routes.yaml"), "w") as fh:
        fh.write(ROUTES)
    config = os.path.join(folder, "config.yaml")
    with open(config, "w") as fh:
        fh.write(f"""listen: {{host: 127.0.0.1, port: {gw_port}}}
admin: false
surface: routes.yaml
upstreams: {{default: "http://127.0.0.1:{up_port}"}}
store: sqlite:///tokens.db
jwt: {{algorithms: [HS256], secret: {json.dumps(secret)}}}
""")
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "token",
            "create",
            "-c",
            config,
            "--name",
            "bench",
            "--workspace",
            "bench",
            "--scope",
            "read",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    token = json.loads(created.stdout)["token"]
    now = int(time.time())
    jwt_token = jwt.encode(
        {"sub": "bench", "workspace_id": "bench", "iat": now, "exp": now + 3600}, secret, algorithm="HS256"
    )
    procs = [
        start([sys.executable, os.path.join(here, "upstream.py"), str(up_port)], up_port),
        start(
            [
                sys.executable,
                os.path.join(here, "passthrough.py"),
                str(ref_port),
                f"http://127.0.0.1:{up_port}",
            ],
            ref_port,
        ),
        start([sys.executable, "-m", "gateway", "serve", "-c", config], gw_port),
    ]
    cases = {
        "passthrough": (f"http://127.0.0.1:{ref_port}/v1/playlists/1", []),
        "anonymous": (f"http://127.0.0.1:{gw_port}/v1/health", []),
        "token": (f"http://127.0.0.1:{gw_port}/v1/playlists/1", [f"Authorization: Bearer {token}"]),
        "jwt": (f"http://127.0.0.1:{gw_port}/v1/playlists/1", [f"Authorization: Bearer {jwt_token}"]),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for url, headers in cases.values():  # warm-up: token cache, connection pools
            wrk(url, 1, args.connections, headers)
        for _ in range(args.rounds):
            for name, (url, headers) in cases.items():
                results[name].append(wrk(url, args.seconds, args.connections, headers))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    ref = median(results["passthrough"])
    print(f"{'case':<12} {'median req/s':>12} {'ratio':>7}   rounds")
    for name, values in results.items():
        print(
            f"{name:<12} {median(values):>12.0f} {median(values) / ref:>7.2f}   "
            + " ".join(f"{v:.0f}" for v in values)
        )


if __name__ == "__main__":
    main()
