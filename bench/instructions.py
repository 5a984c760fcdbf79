"""Instructions per request, counted by callgrind: a measure that machine noise does not move.

    python bench/instructions.py                    # passthrough, anonymous, token, jwt: 2,000 each
    python bench/instructions.py passthrough token --requests 5000 --top 20
    python bench/instructions.py "pass down" down --requests 50      # 1 MiB responses
    python bench/instructions.py stub "verify token" "stub jwt" "verify jwt"   # forward-auth

wrk's req/s on a shared 2-core machine moves by 10 % from run to run, more than most single
changes to the request path are worth. This starts the benchmark upstream normally, and one
`scopegate serve` and the bare aiohttp passthrough (bench/passthrough.py) each under
`valgrind --tool=callgrind`; warms each case with 300 requests, zeroes the counters, sends
exactly N requests one after another over one keep-alive connection, and reads the process's
instruction count (Ir) from a dump. Everything the process executes for those N requests is
counted: our code, the interpreter, uvloop, the C parsers and the system-call entry, not the
kernel's side of the calls (about a quarter of a request's CPU time on loopback, much the same
for both). The same tree gives the same count to within about 0.5 %; run it on two trees to
compare them.
Needs valgrind (`apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import cases as S
from common import free_port, start, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = {
    "passthrough": "/v1/playlists/1",
    "anonymous": "/v1/health",
    "token": "/v1/playlists/1",
    "jwt": "/v1/playlists/1",
    "pass down": "/v1/blob/1048576",  # a 1 MiB response; run with --requests 50 or so
    "down": "/v1/blob/1048576",
    "pass up": "/v1/blob",  # a 1 KiB request body (UPLOAD)
    "up": "/v1/blob",
    # Forward-auth, asked as deploy/nginx/forward-auth.conf asks (the stub is bench/stub_auth.py).
    "stub": "/auth/verify",
    "stub jwt": "/auth/verify",
    "verify token": "/auth/verify",
    "verify jwt": "/auth/verify",
}
Proc = subprocess.Popen[bytes]
CASES = list(PATHS)
DEFAULT = ["passthrough", "anonymous", "token", "jwt"]  # the passthrough first: the ratios' reference
# A row's reference, when not the passthrough.
REFERENCE = {"down": "pass down", "up": "pass up", "verify token": "stub", "verify jwt": "stub jwt"}
UPLOAD = 1024  # the request body of the "up" cases, as bench/run.py's "up 1 KB"
FORWARD_AUTH = "".join(f"{name}: {value}\r\n" for name, value in S.SUBREQUEST_HEADERS.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", choices=[[], *CASES], default=[])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--top", type=int, default=0, help="also print each case's K costliest C functions")
    ap.add_argument("--inclusive", action="store_true", help="--top with callees")
    args = ap.parse_args()
    control = shutil.which("callgrind_control")
    if shutil.which("valgrind") is None or control is None:
        sys.exit("bench: valgrind is not installed (apt-get install valgrind)")
    folder = tempfile.mkdtemp(prefix="scopegate-instructions-")
    up, gw, ref = free_port(), free_port(), free_port()
    secret = "x" * 32
    cfg = S.gateway(os.path.join(folder, "gw"), gw, f"http://127.0.0.1:{up}", S.ROUTES, S.hs256(secret))
    credentials = {
        "passthrough": None,
        "anonymous": None,
        "token": S.mint(cfg, "--name", "bench", "--scope", "read"),
        "jwt": S.sign(secret, "HS256"),
        "pass down": None,
        "down": None,
        "pass up": None,
        "up": None,
        "stub": None,
        "verify token": None,
        "verify jwt": S.sign(secret, "HS256"),
    }
    # The stub is asked as bench/run.py asks it, with the same credential as the row it is the
    # reference of, and answers with the headers scopegate answered that credential with.
    credentials["verify token"] = credentials["stub"] = credentials["token"]
    credentials["stub jwt"] = credentials["verify jwt"]
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": os.path.join(HERE, os.pardir)}
    procs = [start([py, os.path.join(HERE, "upstream.py"), str(up)], up)]
    stub_port = free_port()
    counted: dict[str, float] = {}
    try:
        passthrough = [py, os.path.join(HERE, "passthrough.py"), str(ref), f"http://127.0.0.1:{up}"]
        gateway = _under_callgrind(control, [py, "-m", "gateway", "serve", "-c", cfg], gw, folder, env, procs)
        reference = _under_callgrind(control, passthrough, ref, folder, env, procs)
        stub = None
        if {"stub", "stub jwt"} & set(args.cases):
            asked = [c for c in (credentials["stub"], credentials["stub jwt"]) if c is not None]
            said = S.verify_answers(gw, asked, os.path.join(folder, "stub-answers.json"))
            stub_cmd = [py, os.path.join(HERE, "stub_auth.py"), str(stub_port), said]
            stub = _under_callgrind(control, stub_cmd, stub_port, folder, env, procs)
        print(f"{'case':<12} {'requests':>8} {'instructions/request':>21} {'ratio to passthrough':>21}")
        for case in args.cases or DEFAULT:
            proc, port, out = reference if case.startswith("pass") else gateway
            if case.startswith("stub") and stub is not None:
                proc, port, out = stub
            extra = FORWARD_AUTH if PATHS[case] == "/auth/verify" else ""
            request = _request(PATHS[case], credentials[case], extra, UPLOAD if case.endswith("up") else 0)
            _send(port, request, min(300, args.requests))  # warm: caches, the upstream pool, the allocator
            _control(control, "-z", proc.pid)
            _send(port, request, args.requests)
            total, dump = _instructions(control, proc.pid, out)
            counted[case] = total / args.requests
            ref_case = REFERENCE.get(case, "passthrough")
            ratio = f"{counted[ref_case] / counted[case]:.2f}" if ref_case in counted else ""
            print(f"{case:<12} {args.requests:>8} {counted[case]:>21,.0f} {ratio:>21}")
            if args.top:
                _annotate(dump, args.top, args.inclusive)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    if args.top:
        print(f"callgrind's dumps are kept in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


def _under_callgrind(
    control: str, cmd: list[str], port: int, folder: str, env: dict[str, str], procs: list[Proc]
) -> tuple[Proc, int, str]:
    """A server under callgrind (added to `procs`), instrumentation on once it listens (its
    start-up is not counted): the process, its port, and callgrind's output file."""
    out = os.path.join(folder, f"{port}.callgrind")
    with open(out + ".log", "wb") as log:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *cmd],
            stdout=subprocess.DEVNULL, stderr=log, env=env,
        )  # fmt: skip
    procs.append(proc)
    wait_port(port, 300)
    _control(control, "-i", "on", proc.pid)
    return proc, port, out


def _request(path: str, credential: str | None, extra: str = "", body: int = 0) -> bytes:
    auth = f"Authorization: Bearer {credential}\r\n" if credential else ""
    if body:
        extra += f"Content-Type: application/octet-stream\r\nContent-Length: {body}\r\n"
    method = "POST" if body else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{extra}User-Agent: bench\r\n{auth}\r\n"
    return head.encode() + b"x" * body


def _send(port: int, request: bytes, count: int) -> None:
    """`count` requests, each sent when the one before is answered whole (Content-Length)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        buf = b""
        for _ in range(count):
            sock.sendall(request)
            while b"\r\n\r\n" not in buf:
                buf += _recv(sock)
            head, _, buf = buf.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                sys.exit(f"bench: the gateway answered {head.splitlines()[0]!r}")
            lines = head.lower().split(b"\r\n")
            length = next(int(line[15:]) for line in lines if line.startswith(b"content-length:"))
            while len(buf) < length:
                buf += _recv(sock)
            buf = buf[length:]


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    if not data:
        sys.exit("bench: the gateway closed the connection")
    return data


def _control(control: str, *args: object) -> None:
    subprocess.run([control, *map(str, args)], capture_output=True, check=True)


def _annotate(dump: str, top: int, inclusive: bool) -> None:
    """The functions with the most instructions of their own, or with their callees' too
    (callgrind_annotate's table)."""
    cmd = ["callgrind_annotate", *(["--inclusive=yes"] if inclusive else []), dump]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = [line for line in text.splitlines() if " (" in line and "[" in line]
    for line in rows[:top]:
        print("   " + line.strip())


def _instructions(control: str, pid: int, out: str) -> tuple[int, str]:
    """The instructions counted since the last zeroing: a dump's `summary:` line."""
    before = set(glob.glob(out + ".*"))
    _control(control, "-d", pid)
    (dump,) = set(glob.glob(out + ".*")) - before
    with open(dump) as fh:
        for line in fh:
            if line.startswith("summary:"):
                return int(line.split()[1].replace(",", "")), dump
    raise RuntimeError(f"no summary line in {dump}")


if __name__ == "__main__":
    main()
