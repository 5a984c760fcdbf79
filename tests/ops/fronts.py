"""The two proxies proven in front of scopegate, each run from the file we ship.

nginx runs deploy/nginx/forward-auth.conf itself, only its three addresses rewritten, wrapped in
a minimal main context whose pid, logs and temp paths live in the test's folder. Caddy runs
deploy/caddy/Caddyfile itself, only its three addresses and its storage folder rewritten:
unprivileged on loopback, no admin endpoint, no automatic HTTPS, port 0, its storage, config
and home in the test's folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import reserved_port, stop

from .conftest import REPO, nginx_binary, wait_port
from .port0 import wait_listening

SNIPPET = REPO / "deploy" / "nginx" / "forward-auth.conf"
CADDYFILE = REPO / "deploy" / "caddy" / "Caddyfile"


@dataclass(frozen=True)
class Front:
    """A proxy in front of scopegate and the recording app: its address and its folder."""

    url: str
    folder: Path


def caddy_binary() -> str:
    found = shutil.which("caddy")
    if found is None:
        pytest.skip("caddy is not installed (Debian: apt-get install caddy)")
    return found


def render_nginx(snippet: str, *, listen: int, gateway: int, app: int, folder: Path) -> str:
    for old, new in (
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{gateway};"),
        ("server 127.0.0.1:8081;", f"server 127.0.0.1:{app};"),
        # reuseport: nginx joins the port the test holds (tests.support.reserved_port).
        ("listen 80;", f"listen 127.0.0.1:{listen} reuseport;"),
    ):
        assert snippet.count(old) == 1, f"deploy/nginx/forward-auth.conf: expected one {old!r}"
        snippet = snippet.replace(old, new)
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp}
{snippet}
}}
"""


def render_caddy(caddyfile: str, *, gateway: int, app: int, folder: Path) -> str:
    for old, new in (
        ("\n:80 {", "\nhttp://127.0.0.1:0 {"),
        ("forward_auth 127.0.0.1:8080 {", f"forward_auth 127.0.0.1:{gateway} {{"),
        ("reverse_proxy 127.0.0.1:8081\n", f"reverse_proxy 127.0.0.1:{app}\n"),
        ("storage file_system /var/lib/caddy\n", f"storage file_system {folder / 'data'}\n"),
    ):
        assert caddyfile.count(old) == 1, f"deploy/caddy/Caddyfile: expected one {old!r}"
        caddyfile = caddyfile.replace(old, new)
    return caddyfile


@contextlib.contextmanager
def run_nginx(
    folder: Path, *, gateway: int, app: int, edit: Callable[[str], str] = lambda s: s
) -> Iterator[Front]:
    """nginx with the shipped snippet (after `edit`), checked with `nginx -t` first."""
    binary = nginx_binary()
    folder.mkdir()
    with reserved_port() as port:
        conf = folder / "nginx.conf"
        conf.write_text(
            render_nginx(edit(SNIPPET.read_text()), listen=port, gateway=gateway, app=app, folder=folder)
        )
        log = folder / "error.log"
        checked = subprocess.run(
            [binary, "-t", "-p", str(folder), "-e", str(log), "-c", str(conf)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stderr
        proc = subprocess.Popen(
            [binary, "-p", str(folder), "-e", str(log), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port, proc, log)
            yield Front(f"http://127.0.0.1:{port}", folder)
        finally:
            stop(proc)


@contextlib.contextmanager
def run_caddy(folder: Path, *, gateway: int, app: int) -> Iterator[Front]:
    """Caddy with the shipped Caddyfile, checked with `caddy validate` first."""
    binary = caddy_binary()
    folder.mkdir()
    conf = folder / "Caddyfile"
    conf.write_text(render_caddy(CADDYFILE.read_text(), gateway=gateway, app=app, folder=folder))
    env = caddy_env(folder)
    checked = subprocess.run(
        [binary, "validate", "--adapter", "caddyfile", "--config", str(conf)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = folder / "caddy.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [binary, "run", "--adapter", "caddyfile", "--config", str(conf)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        (port,) = wait_listening(proc, log, 1)
        yield Front(f"http://127.0.0.1:{port}", folder)
    finally:
        stop(proc)


def caddy_env(folder: Path) -> dict[str, str]:
    """Caddy's home, config and data under `folder`: nothing of the machine's own."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "XDG_CONFIG_HOME": str(folder / "config"),
        "XDG_DATA_HOME": str(folder / "data"),
    }
