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
import os
import secrets
import sys
import tempfile

from common import credentials, free_port, gateway_cases, gateway_config, measure, report, start, stop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    up_port, ref_port, gw_port = free_port(), free_port(), free_port()
    secret = secrets.token_urlsafe(32)
    upstream = f"http://127.0.0.1:{up_port}"
    config = gateway_config(tempfile.mkdtemp(prefix="scopegate-bench-"), gw_port, upstream, secret)
    token, token_jwt = credentials(config, secret)
    procs = [
        start([sys.executable, os.path.join(here, "upstream.py"), str(up_port)], up_port),
        start([sys.executable, os.path.join(here, "passthrough.py"), str(ref_port), upstream], ref_port),
        start([sys.executable, "-m", "gateway", "serve", "-c", config], gw_port),
    ]
    try:
        results = measure(
            {
                "passthrough": (f"http://127.0.0.1:{ref_port}/v1/playlists/1", []),
                **gateway_cases(f"http://127.0.0.1:{gw_port}", token, token_jwt),
            },
            args.seconds,
            args.rounds,
            args.connections,
        )
    finally:
        stop(procs)
    report(results, "passthrough")


if __name__ == "__main__":
    main()
