"""Plain helpers several test packages share: held ports, `python -m gateway` subprocesses, log checks."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
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


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port held bound (never listening) for the block: a connection to it is refused,
    and nothing else can take it meanwhile. For a dead upstream."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@contextlib.contextmanager
def silent_port(*, accepting: bool) -> Iterator[int]:
    """A loopback port whose listener never answers, for an upstream too slow. Accepting, the
    kernel completes connections nobody reads; not accepting, its accept queue is full, so SYNs
    are dropped and a connect hangs (until the caller's connect timeout)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8 if accepting else 0)
        port = int(listener.getsockname()[1])
        if not accepting:
            for _ in range(3):  # fill the accept queue; nothing ever accepts
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A loopback port held with SO_REUSEPORT (bound, not listening) for the block, for servers
    that cannot bind port 0 and report it but bind with SO_REUSEPORT themselves (`serve
    --workers N`, nginx `listen ... reuseport`): they can join it, no one else can take it."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


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
    `stdout` is false, its stdout) written to `log`; a separate stdout goes to `<log>.stdout`."""
    with log.open("wb") as sink, _stdout_of(log).open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(config), *args],
            cwd=config.parent,
            stdout=sink if stdout else out,
            stderr=subprocess.STDOUT if stdout else sink,
            env=_gateway_env(),
        )


def _stdout_of(log: Path) -> Path:
    return log.with_name(log.name + ".stdout")


# `serve` prints this once bound (gateway/cli.py), whatever the log level.
_ANNOUNCED = re.compile(r"^scopegate: listening on \S+:(\d+)(?:, admin on \S+:(\d+))?$", re.MULTILINE)


def announced(log: Path) -> tuple[int, int | None] | None:
    """The (port, admin port) a `serve` process announced in `log`, or None before it has."""
    for path in (log, _stdout_of(log)):
        if path.exists():
            m = _ANNOUNCED.search(path.read_text(errors="replace"))
            if m:
                return int(m.group(1)), int(m.group(2)) if m.group(2) else None
    return None


def wait_announced_sync(
    proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0
) -> tuple[int, int | None]:
    """Until `serve` (started with `--port 0` or a port-0 admin) has bound and said where; it
    accepts connections by then."""
    deadline = time.monotonic() + timeout
    while (ports := announced(log)) is None:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"gateway did not announce its port in {timeout} s:\n{log.read_text()}")
        time.sleep(0.05)
    return ports


async def wait_announced(
    proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0
) -> tuple[int, int | None]:
    deadline = time.monotonic() + timeout
    while (ports := announced(log)) is None:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"gateway did not announce its port in {timeout} s:\n{log.read_text()}")
        await asyncio.sleep(0.05)
    return ports


async def start_serve(config: Path, *args: str, log: Path | None = None) -> Running:
    """`python -m gateway serve -c config --port 0 [args]`, once it has bound a port and said which."""
    log = log or config.parent / f"serve-{next(_serial)}.log"
    proc = spawn_serve(config, log, "--port", "0", *args)
    try:
        port, admin = await wait_announced(proc, log)
    except BaseException:
        stop(proc)
        raise
    return Running(proc, port, log, admin)


_serial = itertools.count()


@dataclass
class Running:
    """A `serve` process started on `port`, its output in `log`."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    admin: int | None = None  # the admin listener's port, when it has one

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


def interpreted(module: ModuleType) -> ModuleType:
    """A plain-Python copy of one of our modules, loaded from its source whatever the build
    compiled (setup.py). For a test that counts the steps an algorithm takes by wrapping one of
    its functions: a compiled module calls its own functions directly, past any monkeypatch."""
    package, _, name = module.__name__.rpartition(".")
    source = Path(str(module.__file__)).parent / f"{name}.py"
    copy_name = f"{package}._interpreted_{name}"
    spec = importlib.util.spec_from_file_location(copy_name, source)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    sys.modules[copy_name] = copy  # dataclasses look their module up while the class is made
    spec.loader.exec_module(copy)
    return copy
