"""`scopegate serve` on port 0: the ports it bound, read from the kernel rather than guessed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def listening_ports(pid: int) -> set[int]:
    """The TCP ports on which process `pid` has a listening socket (Linux /proc)."""
    inodes = set()
    with os.scandir(f"/proc/{pid}/fd") as fds:
        for fd in fds:
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_listening(proc: subprocess.Popen[bytes], log: Path, count: int, timeout: float = 20.0) -> set[int]:
    """Until `proc` listens on `count` ports; fails with its log if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}:\n{log.read_text()}")
        ports = listening_ports(proc.pid)
        if len(ports) >= count:
            return ports
        time.sleep(0.05)
    raise AssertionError(f"gateway not listening on {count} port(s) after {timeout}s:\n{log.read_text()}")
