"""What the store's last_used_at batch does to cache-miss reads on the event loop thread.

    python bench/missprobe.py                      # 1,000,000 tokens, a batch of 5,000 every 5 s
    python bench/missprobe.py --mmap 1073741824    # the reader maps the file instead of pread
    python bench/missprobe.py --stacks             # where the loop thread waits in the kernel

No gateway and no HTTP: one process opens the SQLite store as `scopegate serve` does, looks a
random token up by its hash on a uvloop loop (`LoopReader.by_hash`, the miss path) every 0.7 ms,
and every 5 s writes a batch of last-used times for random tokens through the store's own `touch`
(as `TokenValidator.flush` does). It prints each lookup that held the loop longer than 5 ms, with
its time since the batch began, then the lookups' percentiles. `--stacks` (root, Linux) has a
second process read the loop thread's kernel stack every 0.5 ms and count the frames it finds
outside epoll. The store is built once in the folder given (`--folder`) and reused.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time

import cases as S
import uvloop

from gateway.tokens.sqlite import SqliteTokenStore

SAMPLER = """
import collections, sys, time
pid, seconds = sys.argv[1], float(sys.argv[2])
seen = collections.Counter()
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        stack = open(f"/proc/{pid}/task/{pid}/stack").read().split()
    except OSError:
        break
    frames = [f.split("+")[0] for f in stack[1::2]]
    # Outside epoll, and not the probe's own wait for this sampler at the end.
    if frames and not any("epoll" in f or "wait4" in f for f in frames):
        seen[" < ".join(frames[:6])] += 1
    time.sleep(0.0005)
for frames, n in seen.most_common(8):
    print(f"{n:6d}  {frames}")
"""


def build(folder: str, count: int) -> str:
    db = os.path.join(folder, "tokens.db")
    if not os.path.exists(db):
        config = S.gateway(folder, 1, "http://127.0.0.1:1", S.ROUTES, "null")
        S.mint(config, "--name", "first", "--scope", "read")
        print(f"missprobe: seeding {count:,} tokens ...", file=sys.stderr)
        S.seed_store(config, count, os.path.join(folder, "tokens.txt"))
    return db


def pct(values: list[float], p: float) -> float:
    return sorted(values)[int(p * (len(values) - 1))] if values else float("nan")


async def probe(args: argparse.Namespace, db: str) -> None:
    store = SqliteTokenStore(db)
    await store.open()
    reader = store._reader  # the miss path's own reader, as serve opens it
    assert reader is not None, "the store opened without its loop reader (not in WAL mode?)"
    if args.mmap:
        reader._conn.execute(f"PRAGMA mmap_size = {int(args.mmap)}").fetchall()  # type: ignore[union-attr]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, token_hash FROM tokens ORDER BY random() LIMIT 200000").fetchall()
    ids, hashes = [r[0] for r in rows], [bytes(r[1]) for r in rows]
    took: list[float] = []
    during: list[float] = []
    began = [0.0, 0.0]  # [start of the batch running now (0: none), start of the last one]

    async def batches() -> None:
        while True:
            await asyncio.sleep(5)
            chosen = random.sample(ids, args.batch)
            now, start = time.time(), time.perf_counter()
            began[:] = [start, start]
            await store.touch(dict.fromkeys(chosen, now))
            print(f"batch of {args.batch:,}: {1000 * (time.perf_counter() - start):.0f} ms", file=sys.stderr)
            began[0] = 0.0

    sampler = None
    if args.stacks:
        code = [sys.executable, "-c", SAMPLER, str(os.getpid()), str(args.seconds)]
        sampler = subprocess.Popen(code)
    task = asyncio.create_task(batches())
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        reader.by_hash(random.choice(hashes))
        ms = (time.perf_counter() - start) * 1000
        (during if began[0] else took).append(ms)
        if ms > 5:
            print(f"stall {ms:.1f} ms, {1000 * (start - began[1]):.0f} ms after the last batch began")
        await asyncio.sleep(0.0007)
    task.cancel()
    await store.close()
    every = took + during
    print(
        f"{len(every):,} lookups: p50 {pct(every, 0.5):.3f} p99 {pct(every, 0.99):.3f} "
        f"p99.9 {pct(every, 0.999):.3f} max {max(every):.2f} ms; during a batch: "
        f"{len(during):,}, p99 {pct(during, 0.99):.3f} ms"
    )
    if sampler is not None:
        sampler.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "scopegate-missprobe"))
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--seconds", type=float, default=32)
    ap.add_argument("--mmap", type=int, default=0, help="PRAGMA mmap_size on the reader (bytes)")
    ap.add_argument("--stacks", action="store_true", help="sample the loop thread's kernel stack")
    args = ap.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    uvloop.run(probe(args, build(args.folder, args.tokens)))


if __name__ == "__main__":
    main()
