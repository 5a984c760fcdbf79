"""The cycle collector's full passes in `scopegate serve`: how many, and how long each one stops it.

    python bench/gcpause.py                  # 20 s per run, 50,000 distinct tokens
    python bench/gcpause.py --seconds 10 --tokens 20000

Starts the benchmark upstream and `scopegate serve` twice, each under a wrapper that records every
collection of the oldest generation (gc.callbacks) to a file: once as shipped, once with
gateway.heap.settle made a no-op (the heap left unfrozen, as before it existed). Each serves wrk
-c32 twice: one cached token, then a store of distinct tokens asked at random, so that the token
cache grows and full passes come. Prints, per run and load, the passes, their median and
longest pause, and wrk's p99; then what one cached token costs (tracked objects, bytes) and a
full pass over 100,000 of them, measured in this process on the validator's own entries.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import cases as S
from common import free_port, need_wrk, start, stop
from run import random_token

HERE = os.path.dirname(os.path.abspath(__file__))

# Runs `scopegate serve` in this process, with every full collection's pause appended to PAUSES.
PROBE = """
import gc, os, sys, time
sink = open(os.environ["PAUSES"], "a", buffering=1)
began = [0.0]
def probe(phase, info):
    if info["generation"] != 2:
        return
    if phase == "start":
        began[0] = time.perf_counter()
    else:
        sink.write(f"{(time.perf_counter() - began[0]) * 1000:.3f}\\n")
gc.callbacks.append(probe)
if os.environ.get("UNSETTLED"):
    import gateway.heap
    gateway.heap.settle = lambda: None
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(config: str, port: int, unsettled: bool, loads: list[tuple[str, list[str]]], seconds: int,
        folder: str) -> list[tuple[str, list[float], str]]:  # fmt: skip
    results = []
    env = {**os.environ, "PYTHONPATH": os.path.join(HERE, os.pardir)}
    if unsettled:
        env["UNSETTLED"] = "1"
    for name, args in loads:
        pauses = os.path.join(folder, f"pauses-{int(unsettled)}-{name}")
        open(pauses, "w").close()
        env["PAUSES"] = pauses
        gw = start([sys.executable, "-c", PROBE, "serve", "-c", config], port, env=env)
        try:
            url = f"http://127.0.0.1:{port}/v1/playlists/1"
            subprocess.run([need_wrk(), "-t1", "-c32", "-d1s", *args, url], capture_output=True, check=True)
            with open(pauses, "w"):
                pass  # start-up's passes are not the load's
            out = subprocess.run(
                [need_wrk(), "-t1", "-c32", f"-d{seconds}s", "--latency", *args, url],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
        finally:
            stop([gw])
        p99 = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("99%"))
        with open(pauses) as fh:
            results.append((name, [float(x) for x in fh.read().split()], p99))
    return results


def entry_cost(count: int) -> None:
    """A token cache of `count` entries built as TokenValidator builds them, on a frozen heap."""
    from gateway.tokens.store import TokenRecord
    from gateway.tokens.validator import _Entry, principal_for

    gc.collect()
    gc.freeze()
    before = len(gc.get_objects())
    tracemalloc.start()
    cache = {}
    for i in range(count):
        record = TokenRecord(id=f"tok_{i:016d}", name=f"t{i}", display_prefix="st_x", owner="bench",
                             workspace="bench", project=None, scopes=("read",), targets=(), created_at=1.0,
                             expires_at=2e9)  # fmt: skip
        cache[i.to_bytes(32, "big")] = (_Entry(principal_for(record), None, 1.0), 2e9)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    tracked = len(gc.get_objects()) - before
    passes = []
    for _ in range(5):
        began = time.perf_counter()
        gc.collect()
        passes.append((time.perf_counter() - began) * 1000)
    print(f"\none cached token: {tracked / count:.1f} tracked objects, {held / count:.0f} bytes; "
          f"a full pass over {count:,} of them: median {statistics.median(passes):.1f} ms")  # fmt: skip
    gc.unfreeze()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=50_000)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="scopegate-gcpause-")
    up_port, port = free_port(), free_port()
    config = S.gateway(os.path.join(folder, "gw"), port, f"http://127.0.0.1:{up_port}", S.ROUTES,
                       S.hs256("x" * 40))  # fmt: skip
    token = S.mint(config, "--name", "bench", "--scope", "read")
    tokens_file = os.path.join(folder, "tokens.txt")
    S.seed_store(config, args.tokens, tokens_file)
    script = random_token(folder, tokens_file)
    loads = [("cached token", ["-H", f"Authorization: Bearer {token}"]),
             (f"{args.tokens:,} tokens", ["-s", script])]  # fmt: skip
    upstream = start([sys.executable, os.path.join(HERE, "upstream.py"), str(up_port)], up_port)
    try:
        rows = [("settled", *r) for r in run(config, port, False, loads, args.seconds, folder)]
        rows += [("unsettled", *r) for r in run(config, port, True, loads, args.seconds, folder)]
    finally:
        stop([upstream])
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nwrk -t1 -c32, {args.seconds} s per row; full collections (generation 2) during the load")
    print(f"| {'heap':<9} | {'load':<16} | passes | median ms | longest ms | wrk p99 |")
    print(f"|{'-' * 11}|{'-' * 18}|--------|-----------|------------|---------|")
    for heap, load, pauses, p99 in rows:
        med = f"{statistics.median(pauses):.1f}" if pauses else "-"
        top = f"{max(pauses):.1f}" if pauses else "-"
        print(f"| {heap:<9} | {load:<16} | {len(pauses):>6} | {med:>9} | {top:>10} | {p99:>7} |")
    entry_cost(100_000)


if __name__ == "__main__":
    main()
