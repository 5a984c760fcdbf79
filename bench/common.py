"""Helpers shared by the benchmarks: free ports, processes, wrk runs, medians."""

from __future__ import annotations

import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence


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
