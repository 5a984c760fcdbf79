"""Plain helpers several test packages share: free ports, `python -m gateway` subprocesses, log checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.observe import JsonFormatter

ROOT = Path(__file__).resolve().parents[1]

# The keys every decision-log record carries (a `serve` process adds `worker`).
DECISION_LOG_FIELDS = (
    "ts",
    "request_id",
    "method",
    "path",
    "route",
    "class",
    "credential",
    "token_id",
    "decision",
    "reason",
    "status",
    "upstream_ms",
    "total_ms",
)
# The challenge on every `invalid_token` 401.
WWW_AUTHENTICATE_INVALID_TOKEN = 'Bearer realm="scopegate", error="invalid_token"'

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# `python -m gateway` subprocesses


def _gateway_env() -> dict[str, str]:
    """The environment for a `python -m gateway` child: this checkout, no config from the caller."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("SCOPEGATE_CONFIG", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def gateway_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway <args> -c config`, run to completion."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "-c", str(config)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        env=_gateway_env(),
        timeout=60,
        check=False,
    )


def cli_create(config: Path, *args: str) -> dict[str, Any]:
    """`gateway token create <args> --json`, which must succeed; the created record."""
    done = gateway_cli(config, "token", "create", *args, "--json")
    assert done.returncode == 0, done.stderr
    created: dict[str, Any] = json.loads(done.stdout)
    return created


def spawn_serve(config: Path, log: Path, *args: str, stdout: bool = True) -> subprocess.Popen[bytes]:
    """`python -m gateway serve -c config [args]` in the config's folder, its stderr (and, unless
    `stdout` is false, its stdout) written to `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(config), *args],
            cwd=config.parent,
            stdout=sink if stdout else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if stdout else sink,
            env=_gateway_env(),
        )


@dataclass
class Running:
    """A `serve` process started on `port`, its output in `log`."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code once `proc` has exited, or None if it still runs after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.05)
    return proc.poll()


async def wait_accepting(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    """Until a TCP connection to `port` succeeds; fails with the log if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}:\n{log.read_text()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"gateway did not accept on {port}:\n{log.read_text()}")


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll `check` (a function, or one returning an awaitable) until it returns true; fail
    after `timeout` seconds. Synchronise on what a test waits for, never on a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        await asyncio.sleep(interval)


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM, `grace` seconds to exit, then SIGKILL; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def stop_async(proc: subprocess.Popen[bytes], grace: float) -> None:
    """`stop` without blocking the event loop while the process drains."""
    if proc.poll() is None:
        proc.terminate()
        if await wait_exit(proc, grace) is None:
            proc.kill()
    proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------------
# the decision log, in process


@contextlib.contextmanager
def captured_access_log(convert: Callable[[str], T]) -> Iterator[list[T]]:
    """Every `scopegate.access` record as the JSON formatter writes it, passed through `convert`."""
    records: list[T] = []
    formatter = JsonFormatter()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(convert(formatter.format(record)))

    logger = logging.getLogger("scopegate.access")
    handler = Collect(logging.INFO)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
