"""Running the gateway: listeners, signals (SIGHUP reload, SIGTERM drain), and worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable

from aiohttp import web

from .config import Config
from .errors import StartupError
from .heap import settle
from .observe import flush_log
from .web.admin import build_admin_app
from .web.app import build_app
from .web.listener import GuardedSite
from .web.runtime import Runtime
from .web.tls import ServerTls, TlsError

LOG = logging.getLogger("scopegate")
WATCH_INTERVAL = 2.0
KEEPALIVE = 75.0  # seconds an idle keep-alive connection may stay open


async def serve(
    cfg: Config,
    host: str,
    port: int,
    *,
    worker: str = "0",
    reuse_port: bool = False,
    admin: bool = True,
    ready: Callable[[list[tuple[str, int]]], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
    settle_heap: bool = False,
) -> None:
    """One worker until `stop` (or SIGTERM). `settle_heap`: freeze the started heap out of the
    cycle collector's full passes (gateway/heap.py), for a process that is only this worker."""
    rt = Runtime(cfg, worker=worker)
    runner = public_runner(rt)
    await runner.setup()
    # Signals first: a SIGHUP or SIGTERM arriving as soon as the port accepts must not kill us.
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    admin_runner = None
    try:
        tls = _server_tls(cfg)
        loop.add_signal_handler(signal.SIGHUP, _reload, rt, tls)
        site = public_site(runner, rt, host, port, reuse_port=reuse_port, tls=tls)
        await _bind(site.start(), host, port)
        if admin and cfg.admin is not None:
            admin_runner = web.AppRunner(build_admin_app(rt), access_log=None, handle_signals=False)
            await admin_runner.setup()
            admin_site = web.TCPSite(
                admin_runner, cfg.admin.host, cfg.admin.port, reuse_port=reuse_port or None
            )
            await _bind(admin_site.start(), cfg.admin.host, cfg.admin.port)
    except StartupError:
        # Close what started (the store's thread would otherwise keep the process alive).
        if admin_runner is not None:
            await admin_runner.cleanup()
        await runner.cleanup()
        raise
    bound = [_address(runner)] + ([_address(admin_runner)] if admin_runner else [])
    LOG.info(
        "scopegate worker %s listening on %s:%d (%d routes)",
        worker,
        bound[0][0],
        bound[0][1],
        len(rt.surface.routes),
    )
    if settle_heap:
        settle()
    if ready is not None:
        await ready(bound)

    async def watch() -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if rt.surface_changed():
                rt.reload()

    watcher = asyncio.create_task(watch())
    await stop.wait()
    LOG.info("scopegate worker %s draining", worker)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await _drain(runner, rt, cfg.drain_timeout)
    # Then close what is left (idle keep-alive connections) and run the cleanup contexts, which
    # flush batched last_used_at writes and close the store.
    if admin_runner is not None:
        await admin_runner.cleanup()
    await runner.cleanup()
    flush_log()
    LOG.info("scopegate worker %s stopped", worker)


def public_runner(rt: Runtime, app: web.Application | None = None) -> web.AppRunner:
    """The public listener's runner (the app, built from `rt` unless given)."""
    return web.AppRunner(
        app if app is not None else build_app(rt),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=rt.cfg.drain_timeout,
        keepalive_timeout=KEEPALIVE,
    )


def public_site(
    runner: web.AppRunner,
    rt: Runtime,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    tls: ServerTls | None = None,
    fast_door: bool = True,
) -> GuardedSite:
    """The public listener: the fast door, aiohttp behind it, header deadline, optional TLS."""
    return GuardedSite(
        runner,
        host,
        port,
        header_timeout=rt.cfg.limits.header_timeout,
        reuse_port=reuse_port,
        refused=rt.parse_refused,
        ssl_context=tls.context if tls is not None else None,
        fast_door=fast_door,
    )


def _server_tls(cfg: Config) -> ServerTls | None:
    if cfg.listen.tls is None:
        return None
    try:
        return ServerTls(cfg.listen.tls)
    except TlsError as exc:
        raise StartupError(str(exc)) from None


def _reload(rt: Runtime, tls: ServerTls | None) -> None:
    """SIGHUP: the surface, then the listener's certificate; each keeps the old one on error."""
    rt.reload()
    if tls is not None:
        rt.metrics.reloads.labels("ok" if tls.reload() else "error").inc()


async def _bind(starting: Awaitable[None], host: str, port: int) -> None:
    try:
        await starting
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def _drain(runner: web.AppRunner, rt: Runtime, grace: float) -> None:
    """Stop accepting, then let in-flight requests finish, bodies included.

    aiohttp's own shutdown marks connections closing at once and from then on drops the rest of
    a request body still arriving, so an upload in flight would hang and fail. Draining first,
    with the connections still reading, lets it complete.
    """
    rt.draining = True
    for site in list(runner.sites):
        await site.stop()
    deadline = asyncio.get_running_loop().time() + grace
    while rt.in_flight and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 - a counter, polled
        await asyncio.sleep(0.05)
    if rt.in_flight:
        LOG.warning("drain timeout: %d request(s) still in flight are cut off", rt.in_flight)


def _address(runner: web.AppRunner) -> tuple[str, int]:
    for server_site in runner.sites:
        server = getattr(server_site, "_server", None)
        if server is not None and server.sockets:
            name = server.sockets[0].getsockname()
            return str(name[0]), int(name[1])
    return ("", 0)


def run_workers(config_path: str, host: str, port: int, workers: int, loop: str = "uvloop") -> int:
    """Start N worker processes on one port (SO_REUSEPORT); forward signals; exit when all do."""
    if port == 0:
        print("scopegate: --workers needs a fixed --port", file=sys.stderr)
        return 2
    metrics_dir = tempfile.mkdtemp(prefix="scopegate-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    procs = []
    for i in range(workers):
        cmd = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "-c",
            config_path,
            "--host",
            host,
            "--port",
            str(port),
            "--worker-id",
            str(i),
            "--loop",
            loop,
        ]
        procs.append(subprocess.Popen(cmd, env=env))  # noqa: S603 - our own interpreter and module

    def relay(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, relay)
    try:
        codes = [p.wait() for p in procs]
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return max(codes, default=0)
