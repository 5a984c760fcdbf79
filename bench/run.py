"""The benchmark harness: everything on loopback, one table, ratios to references of the same run.

    python bench/run.py            # 5 s per case, 5 interleaved rounds, a 1,000,000-token store
    python bench/run.py --quick    # 2 s, 1 round, a 100,000-token store
    python bench/run.py --only token,anonymous,passthrough

Starts the upstream (bench/upstream.py, aiohttp on uvloop), the references — the bare aiohttp
passthrough on uvloop (bench/passthrough.py), nginx as a plain reverse proxy, nginx
`auth_request` in front of a stub auth service that allows everything — and `scopegate serve`
processes (one worker each): the main one (HS256 JWTs), one verifying RS256, surfaces of 10,
1,000 and 10,000 rules, one with a large token store and the token cache off (every request a
store lookup), and nginx `auth_request` asking scopegate's /auth/verify. wrk (`-t1 -c32`; `-c1`
for the rows ending `c1`, a request's own latency with no queue in front of it) runs every case
once per round, rounds interleaved, so machine noise hits all alike. Prints one row
per case: the median req/s (or MB/s for body cases); its ratio to its reference, the median of
the ratios of each round (a row and its reference run seconds apart, so a machine that slows and
recovers between rounds moves both), with the lowest and highest of them; p50 and p99 latency,
the peak RSS of the process under test and its CPU time per request (a steadier guide than req/s
on a busy machine). Then the decision micro-benchmark.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import cases as S
from common import free_port, need_wrk, start, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
MB = 2**20


@dataclass
class Case:
    name: str
    url: str
    proc: str  # the process under test, for peak RSS
    ref: str | None = None  # the case it is compared with
    headers: list[str] = field(default_factory=list)
    script: str | None = None  # a wrk lua script
    body: int = 0  # bytes per request moved (request or response body): reported as MB/s
    refusal: bool = False  # non-2xx answers expected
    connections: int | None = None  # wrk's -c for this case (default: --connections)
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # CPU time of `proc` per request
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)


def wrk(case: Case, seconds: int, connections: int) -> tuple[float, float, float]:
    cmd = [need_wrk(), "-t1", f"-c{case.connections or connections}", f"-d{seconds}s", "--latency"]
    for h in case.headers:
        cmd += ["-H", h]
    if case.script:
        cmd += ["-s", case.script]
    out = subprocess.run([*cmd, case.url], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx and not case.refusal:
        raise RuntimeError(f"{case.name}: {non2xx.group(1)} non-2xx responses\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(out)
    return float(rps.group(1)), _latency(out, "50%"), _latency(out, "99%")


def _latency(out: str, pct: str) -> float:
    m = re.search(rf"{pct}\s+([\d.]+)(us|ms|s)\b", out)
    if m is None:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def lua(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, f"{name}.lua")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def post_body(folder: str, size: int) -> str:
    return lua(
        folder,
        f"post{size}",
        f'wrk.method = "POST"\nwrk.body = string.rep("x", {size})\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n',
    )


def random_token(folder: str, tokens_file: str) -> str:
    return lua(
        folder,
        "random_token",
        f"""local tokens = {{}}
for line in io.lines("{tokens_file}") do tokens[#tokens + 1] = line end
math.randomseed(os.time())
request = function()
  local t = tokens[math.random(#tokens)]
  return wrk.format(nil, nil, {{["Authorization"] = "Bearer " .. t}})
end
""",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 s per case, one round, 100,000 tokens")
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--tokens", type=int, help="tokens in the large store (default 1,000,000)")
    ap.add_argument("--only", help="comma-separated case names (their references are added)")
    args = ap.parse_args()
    seconds = args.seconds or (2 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else 5)
    store_size = args.tokens or (100_000 if args.quick else 1_000_000)
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if nginx is None:
        sys.exit("bench: nginx not found (Debian: apt-get install nginx-light)")
    need_wrk()
    folder = tempfile.mkdtemp(prefix="scopegate-bench-")
    port = {n: free_port() for n in ("up", "pass", "ngx", "stub", "ngx_stub", "gw", "rs", "r10", "r1k",
                                     "r10k", "big", "ngx_gw")}  # fmt: skip
    upstream = f"http://127.0.0.1:{port['up']}"
    secret = secrets.token_urlsafe(32)
    print(f"bench: setting up in {folder} ...", file=sys.stderr)
    main_cfg = S.gateway(os.path.join(folder, "gw"), port["gw"], upstream, S.ROUTES, S.hs256(secret))
    token = S.mint(main_cfg, "--name", "bench", "--scope", "read")
    agency = S.mint(main_cfg, "--name", "agent", "--scope", "agency", "--target", "playlist:7")
    hs_jwt = S.sign(secret, "HS256")
    rs_block, rs_jwt = S.rs256(os.path.join(folder, "rs"))
    shared = os.path.join(folder, "gw", "tokens.db")  # one store: the token works everywhere
    rs_cfg = S.gateway(os.path.join(folder, "rs"), port["rs"], upstream, S.ROUTES, rs_block, store=shared)
    route_cfgs = {
        n: S.gateway(
            os.path.join(folder, name), port[name], upstream, S.many_routes(n), S.hs256(secret), store=shared
        )
        for n, name in ((10, "r10"), (1000, "r1k"), (10000, "r10k"))
    }
    big_cfg = S.gateway(
        os.path.join(folder, "big"), port["big"], upstream, S.ROUTES, S.hs256(secret),
        "tokens: {cache_ttl: 0.000001}\n",
    )  # fmt: skip
    S.mint(big_cfg, "--name", "first", "--scope", "read")
    tokens_file = os.path.join(folder, "big-tokens.txt")
    print(f"bench: seeding a store of {store_size:,} tokens ...", file=sys.stderr)
    S.seed_store(big_cfg, store_size, tokens_file)

    py = sys.executable
    serve = [py, "-m", "gateway", "serve", "-c"]
    env = {**os.environ, "PYTHONPATH": os.path.join(HERE, os.pardir)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["upstream"] = start([py, os.path.join(HERE, "upstream.py"), str(port["up"])], port["up"])
        procs["passthrough"] = start(
            [py, os.path.join(HERE, "passthrough.py"), str(port["pass"]), upstream], port["pass"]
        )
        configs = {"gw": main_cfg, "rs": rs_cfg, "big": big_cfg, "r10": route_cfgs[10],
                   "r1k": route_cfgs[1000], "r10k": route_cfgs[10000]}  # fmt: skip
        for name, cfg in configs.items():
            procs[name] = serve_gateway([*serve, cfg], port[name], env, os.path.join(folder, f"{name}.log"))
        # The stub answers each credential with the identity headers scopegate answered it with.
        said = S.verify_answers(port["gw"], [token, hs_jwt], os.path.join(folder, "stub-answers.json"))
        procs["stub"] = start([py, os.path.join(HERE, "stub_auth.py"), str(port["stub"]), said], port["stub"])
        for name, conf in (
            ("nginx", S.nginx_proxy(os.path.join(folder, "ngx"), port["ngx"], port["up"])),
            ("nginx_stub", S.nginx_forward_auth(os.path.join(folder, "nstub"), port["ngx_stub"],
                                                port["stub"], port["up"])),
            ("nginx_gw", S.nginx_forward_auth(os.path.join(folder, "ngw"), port["ngx_gw"], port["gw"],
                                              port["up"])),
        ):  # fmt: skip
            lp = {"nginx": "ngx", "nginx_stub": "ngx_stub", "nginx_gw": "ngx_gw"}[name]
            procs[name] = start([nginx, "-p", os.path.dirname(conf), "-e", "stderr", "-c", conf], port[lp])
        cases = build_cases(folder, port, token, agency, hs_jwt, rs_jwt, tokens_file)
        if args.only:
            wanted = set(args.only.split(","))
            wanted |= {c.ref for c in cases if c.name in wanted and c.ref}
            cases = [c for c in cases if c.name in wanted]
        print(f"bench: {len(cases)} cases x {rounds} round(s) of {seconds} s ...", file=sys.stderr)
        for case in cases:  # warm-up: caches, keep-alive pools, JIT-free but page-warm
            wrk(case, 1, args.connections)
        for _ in range(rounds):
            for case in cases:
                pid = procs[case.proc].pid
                before = cpu_seconds(pid)
                rps, p50, p99 = wrk(case, seconds, args.connections)
                case.cpu_us.append((cpu_seconds(pid) - before) / max(rps * seconds, 1) * 1e6)
                case.rps.append(rps)
                case.p50.append(p50)
                case.p99.append(p99)
        rss = {name: peak_rss_mb(p.pid) for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # aiohttp's graceful shutdown waits up to 60 s for a handler still reading a body
                # a reference proxy abandoned when wrk stopped mid-upload: the figures are taken.
                p.kill()
                p.wait()
        shutil.rmtree(folder, ignore_errors=True)
    print_table(cases, rss, seconds, rounds, args.connections, store_size)
    subprocess.run([py, os.path.join(HERE, "decision.py")], check=True, env=env)


def serve_gateway(cmd: list[str], port: int, env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    """`scopegate serve`, its decision lines written to a file as a deployment writes them
    somewhere; the start of that file shown if it does not come up."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sink, env=env)
    try:
        wait_port(port, 60)
    except RuntimeError:
        proc.kill()
        with open(log, errors="replace") as fh:
            sys.exit(f"bench: {' '.join(cmd)} did not start:\n{fh.read(2000)}")
    return proc


def build_cases(
    folder: str, port: dict[str, int], token: str, agency: str, hs: str, rs: str, tokens_file: str
) -> list[Case]:
    def at(name: str, path: str) -> str:
        return f"http://127.0.0.1:{port[name]}{path}"

    bearer = "Authorization: Bearer "
    cases = [
        Case("passthrough", at("pass", "/v1/playlists/1"), "passthrough"),
        Case("nginx proxy", at("ngx", "/v1/playlists/1"), "nginx", ref="passthrough"),
        Case("anonymous", at("gw", "/v1/health"), "gw", ref="passthrough"),
        Case("token", at("gw", "/v1/playlists/1"), "gw", ref="passthrough", headers=[bearer + token]),
        Case("jwt hs256", at("gw", "/v1/playlists/1"), "gw", ref="passthrough", headers=[bearer + hs]),
        Case("jwt rs256", at("rs", "/v1/playlists/1"), "rs", ref="passthrough", headers=[bearer + rs]),
        Case("agency", at("gw", "/v1/workspaces/bench/playlists/7"), "gw", ref="passthrough",
             headers=[bearer + agency]),
        Case("refused 401", at("gw", "/v1/playlists/1"), "gw", ref="passthrough", refusal=True),
        Case("routes 10", at("r10", "/v1/r5/items/1"), "r10", ref="passthrough", headers=[bearer + token]),
        Case("routes 1000", at("r1k", "/v1/r500/items/1"), "r1k", ref="routes 10",
             headers=[bearer + token]),
        Case("routes 10000", at("r10k", "/v1/r5000/items/1"), "r10k", ref="routes 10",
             headers=[bearer + token]),
        Case("store miss", at("big", "/v1/playlists/1"), "big", ref="token",
             script=random_token(folder, tokens_file)),
        # One connection: a request's own latency, no queue of 31 others in front of it (at -c32
        # p50 is about 32 / req/s, whatever a request costs). The miss row's reference: a cached
        # token, also on one connection.
        Case("token c1", at("gw", "/v1/playlists/1"), "gw", ref="token", headers=[bearer + token],
             connections=1),
        Case("store miss c1", at("big", "/v1/playlists/1"), "big", ref="token c1",
             script=random_token(folder, tokens_file), connections=1),
        # The stub is asked the same request as scopegate, its bearer header too, and answers with
        # the same identity headers (stub_auth.py): nginx reads the one from the client and copies
        # the others to the app either way, and what is compared is the decider. Without them
        # the stub's rows had less of nginx's and the app's work in them.
        Case("verify stub", at("ngx_stub", "/v1/playlists/1"), "stub", headers=[bearer + token]),
        Case("verify stub jwt", at("ngx_stub", "/v1/playlists/1"), "stub", headers=[bearer + hs]),
        Case("verify token", at("ngx_gw", "/v1/playlists/1"), "gw", ref="verify stub",
             headers=[bearer + token]),
        Case("verify jwt", at("ngx_gw", "/v1/playlists/1"), "gw", ref="verify stub jwt",
             headers=[bearer + hs]),
    ]  # fmt: skip
    for size, label in ((1024, "1 KB"), (MB, "1 MB")):
        post = post_body(folder, size)
        cases += [
            Case(f"pass up {label}", at("pass", "/v1/blob"), "passthrough", script=post, body=size),
            Case(f"up {label}", at("gw", "/v1/blob"), "gw", ref=f"pass up {label}", script=post, body=size),
            Case(f"pass down {label}", at("pass", f"/v1/blob/{size}"), "passthrough", body=size),
            Case(f"down {label}", at("gw", f"/v1/blob/{size}"), "gw", ref=f"pass down {label}", body=size),
        ]
    return cases


def print_table(cases: list[Case], rss: dict[str, float], seconds: int, rounds: int, conns: int,
                store: int) -> None:  # fmt: skip
    by_name = {c.name: c for c in cases}

    def rate(c: Case) -> float:
        value = statistics.median(c.rps)
        return value * c.body / MB if c.body else value

    def ratios(c: Case, ref: Case) -> list[float]:
        """Round by round: the row's req/s over its reference's (MB/s over MB/s is the same)."""
        return [mine / theirs for mine, theirs in zip(c.rps, ref.rps, strict=True)]

    print(f"\nwrk -t1 -c{conns} (rows ending c1: -c1), {seconds} s x {rounds} interleaved round(s), medians "
          f"(ratio: of the rounds' ratios, range: lowest-highest), {store:,} tokens")  # fmt: skip
    print(f"| {'case':<15} | {'req/s':>9} | {'MB/s':>7} | {'ratio':>5} | {'range':>9} | {'to':<15} | "
          f"{'p50 ms':>7} | {'p99 ms':>7} | {'peak RSS MB':>11} | {'CPU us/req':>10} |")  # fmt: skip
    print(f"|{'-' * 17}|{'-' * 11}|{'-' * 9}|{'-' * 7}|{'-' * 11}|{'-' * 17}|{'-' * 9}|{'-' * 9}|{'-' * 13}|"
          f"{'-' * 12}|")  # fmt: skip
    for c in cases:
        ref = by_name.get(c.ref or "")
        ratio, spread = "1.00", ""
        if ref:
            each = ratios(c, ref)
            ratio, spread = f"{statistics.median(each):.2f}", f"{min(each):.2f}-{max(each):.2f}"
        mbs = f"{rate(c):.1f}" if c.body else ""
        rps, p50, p99, cpu = (statistics.median(v) for v in (c.rps, c.p50, c.p99, c.cpu_us))
        print(
            f"| {c.name:<15} | {rps:>9.0f} | {mbs:>7} | {ratio:>5} | {spread:>9} | {c.ref or '':<15} | "
            f"{p50:>7.2f} | {p99:>7.2f} | {rss.get(c.proc, 0):>11.1f} | {cpu:>10.0f} |"
        )


if __name__ == "__main__":
    main()
