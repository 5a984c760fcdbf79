"""Where one `scopegate serve` spends its time under load: py-spy samples, summed per function.

    python bench/profile.py token           # or: anonymous, jwt
    python bench/profile.py anonymous --seconds 10 --top 40
    python bench/profile.py miss            # one connection, every request a store lookup

Starts the benchmark upstream and one gateway on loopback (as bench/run.py does), warms it with
wrk (`-t1 -c32`) for 2 s, then samples the gateway's thread with `py-spy record --nonblocking`
(250 Hz) while wrk runs, and prints each function's share of the samples, inclusive and self.
`miss` seeds a store of `--tokens` tokens, sets a cache_ttl that lets no token stay cached, and
asks for a random one on each request over one connection, as run.py's `store miss c1` row does.
Needs `wrk` and `py-spy` (`pip install py-spy`).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile

import cases as S
from common import free_port, need_wrk, start, wait_port
from run import random_token

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = {
    "anonymous": "/v1/health",
    "token": "/v1/playlists/1",
    "jwt": "/v1/playlists/1",
    "miss": "/v1/playlists/1",
}
NO_CACHE = "tokens: {cache_ttl: 0.000001}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=sorted(PATHS))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--tokens", type=int, default=1_000_000, help="the store's size for `miss`")
    args = ap.parse_args()
    wrk, spy = need_wrk(), shutil.which("py-spy")
    if spy is None:
        sys.exit("bench: py-spy is not installed (pip install py-spy)")
    folder = tempfile.mkdtemp(prefix="scopegate-profile-")
    up, gw = free_port(), free_port()
    secret = "x" * 32
    extra = NO_CACHE if args.case == "miss" else ""
    cfg = S.gateway(
        os.path.join(folder, "gw"), gw, f"http://127.0.0.1:{up}", S.ROUTES, S.hs256(secret), extra
    )
    if args.case == "jwt":
        credential = S.sign(secret, "HS256")
    else:
        credential = S.mint(cfg, "--name", "bench", "--scope", "read")
    load = [wrk, "-t1", "-c32", "-H", f"Authorization: Bearer {credential}"]
    if args.case == "miss":
        tokens_file = os.path.join(folder, "tokens.txt")
        print(f"bench: seeding a store of {args.tokens:,} tokens ...", file=sys.stderr)
        S.seed_store(cfg, args.tokens, tokens_file)
        load = [wrk, "-t1", "-c1", "-s", random_token(folder, tokens_file)]
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": os.path.join(HERE, os.pardir)}
    procs = [start([py, os.path.join(HERE, "upstream.py"), str(up)], up)]
    try:
        with open(os.path.join(folder, "gw.log"), "wb") as log:
            gateway = subprocess.Popen(
                [py, "-m", "gateway", "serve", "-c", cfg], stdout=subprocess.DEVNULL, stderr=log, env=env
            )
        procs.append(gateway)
        wait_port(gw, 60)
        url = f"http://127.0.0.1:{gw}{PATHS[args.case]}"
        subprocess.run([*load, "-d2s", url], capture_output=True, check=True)
        raw = os.path.join(folder, "profile.txt")
        sampler = subprocess.Popen(
            [spy, "record", "--nonblocking", "-r", "250", "-f", "raw", "-d", str(args.seconds),
             "-o", raw, "-p", str(gateway.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        out = subprocess.run([*load, f"-d{args.seconds}s", url], capture_output=True, text=True, check=True)
        sampler.wait()
    finally:
        for proc in procs:
            proc.terminate()
    rate = [line.strip() for line in out.stdout.splitlines() if "Requests/sec" in line]
    print(f"{args.case}: {rate[0] if rate else 'no rate'}; py-spy samples in {raw}")
    report(raw, args.top)


def report(raw: str, top: int) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    with open(raw) as fh:
        for line in fh:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            total += n
            frames = [f.split(" (")[0] for f in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    print(f"{total} samples\n incl.   self  function")
    for name, n in inclusive.most_common(top):
        print(f"{100 * n / total:5.1f}% {100 * own[name] / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
