"""Helpers shared by the benchmarks: free ports, processes, wrk runs, medians."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import jwt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def start(cmd: Sequence[str], port: int, **kw: object) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    wait_port(port)
    return proc


def need_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("bench: wrk not found (Debian: apt-get install wrk)")
    return wrk


def wrk(url: str, seconds: int, connections: int, headers: Sequence[str] = ()) -> float:
    cmd = [need_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} non-2xx responses\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(out)
    return float(m.group(1))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


ROUTES = """routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: playlists
    match: {prefix: /v1/playlists}
    class: public
"""

Cases = dict[str, tuple[str, list[str]]]  # name -> (url, headers)


def gateway_config(folder: str, port: int, upstream: str, secret: str) -> str:
    """A scopegate config for benchmarks: the routes above, an HS256 secret, default logging."""
    with open(os.path.join(folder, "routes.yaml"), "w") as fh:
        fh.write(ROUTES)
    config = os.path.join(folder, "config.yaml")
    with open(config, "w") as fh:
        fh.write(f"""listen: {{host: 127.0.0.1, port: {port}}}
admin: false
surface: routes.yaml
upstreams: {{default: "{upstream}"}}
store: sqlite:///tokens.db
jwt: {{algorithms: [HS256], secret: {json.dumps(secret)}}}
""")
    return config


def credentials(config: str, secret: str) -> tuple[str, str]:
    """A read API token minted through the CLI, and an HS256 JWT of the same workspace."""
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
    now = int(time.time())
    token_jwt = jwt.encode(
        {"sub": "bench", "workspace_id": "bench", "iat": now, "exp": now + 3600}, secret, algorithm="HS256"
    )
    return json.loads(created.stdout)["token"], token_jwt


def measure(cases: Cases, seconds: int, rounds: int, connections: int) -> dict[str, list[float]]:
    """One warm-up each, then interleaved rounds so machine noise hits every case alike."""
    results: dict[str, list[float]] = {name: [] for name in cases}
    for url, headers in cases.values():
        wrk(url, 1, connections, headers)
    for _ in range(rounds):
        for name, (url, headers) in cases.items():
            results[name].append(wrk(url, seconds, connections, headers))
    return results


def report(results: dict[str, list[float]], reference: str) -> None:
    ref = median(results[reference])
    print(f"{'case':<12} {'median req/s':>12} {'ratio':>7}   rounds")
    for name, values in results.items():
        rounds = " ".join(f"{v:.0f}" for v in values)
        print(f"{name:<12} {median(values):>12.0f} {median(values) / ref:>7.2f}   {rounds}")


def gateway_cases(base: str, token: str, token_jwt: str) -> Cases:
    """The three cases every benchmark measures through scopegate at `base`."""
    return {
        "anonymous": (f"{base}/v1/health", []),
        "token": (f"{base}/v1/playlists/1", [f"Authorization: Bearer {token}"]),
        "jwt": (f"{base}/v1/playlists/1", [f"Authorization: Bearer {token_jwt}"]),
    }


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)
