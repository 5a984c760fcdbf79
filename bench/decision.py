"""The decision alone, in microseconds: clean + match + cached API token + authorize.

    python bench/decision.py [--n 20000]

Builds the gateway's Runtime in-process from a config like the harness's (a real SQLite store,
a token minted through the CLI), warms the token cache with one request, then times
`pipeline.vet` + `pipeline.decide` for `/v1/playlists/1` in batches of 1,000. Prints the median,
min and p90 microseconds per decision (target: a median of 15 us or less).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import cases as S
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import load_config
from gateway.web.runtime import Runtime

BATCH = 1000


async def measure(config: str, token: str, n: int) -> list[float]:
    rt = Runtime(load_config(config))
    await rt.start()
    try:
        headers = CIMultiDictProxy(
            CIMultiDict({"Host": "api.example", "Authorization": f"Bearer {token}", "Accept": "*/*"})
        )
        vet, decide = rt.pipeline.vet, rt.pipeline.decide
        d = await decide("GET", vet("GET", "/v1/playlists/1", headers), headers, "127.0.0.1")
        assert d.principal.token_id, "the token did not authenticate"
        per_call = []
        for _ in range(n // BATCH):
            started = time.perf_counter_ns()
            for _ in range(BATCH):
                await decide("GET", vet("GET", "/v1/playlists/1", headers), headers, "127.0.0.1")
            per_call.append((time.perf_counter_ns() - started) / BATCH / 1000)
        return per_call
    finally:
        await rt.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="scopegate-decision-")
    config = S.gateway(folder, 0, "http://127.0.0.1:9", S.ROUTES, S.hs256(secrets.token_urlsafe(32)))
    token = S.mint(config, "--name", "bench", "--scope", "read")
    per_call = asyncio.run(measure(config, token, args.n))
    q = statistics.quantiles(per_call, n=10)
    print(
        f"decision (clean + match + cached token + authorize): median {statistics.median(per_call):.1f} us, "
        f"min {min(per_call):.1f} us, p90 {q[-1]:.1f} us ({args.n} decisions)"
    )


if __name__ == "__main__":
    main()
