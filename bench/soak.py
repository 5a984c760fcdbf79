"""Soak: minutes of mixed traffic through one `scopegate serve`, on loopback.

    python bench/soak.py [--minutes 10] [--concurrency 8] [--revoke-every 3] [--reload-every 30]

Starts an upstream (HTTP echo and WebSocket echo, a process of its own) and `scopegate serve`
(SQLite store, HS256 JWTs, port 0) and keeps `--concurrency` clients busy with:

- anonymous GETs, API-token GETs, JWT requests on a jwt_only route;
- refusals: no credential (401), an API token on the jwt_only route (401), a read token
  writing (403), a path with `..` (400), no route (404), each checked for its status;
- 1 MiB uploads (the upstream echoes the byte count, which must match);
- WebSockets: upgrade with a token, three echoed messages, close;
- requests with revoked tokens.

Every `--revoke-every` seconds one live token is revoked through DELETE /auth/tokens/{id} and
replaced by a fresh one. Every `--reload-every` seconds the surface file is rewritten and the
gateway gets SIGHUP. Every `--sample` seconds the gateway's RSS and open file descriptors are read
from /proc and printed.

It fails (exit 1) on any 5xx from the gateway, on any request answered 2xx with a token sent
more than `tokens.revocation_poll` (1 s) after its revocation was acknowledged, on any answer
other than the one expected, on a failed reload, or when RSS or open descriptors keep growing
(last sample against the one a fifth of the way in: RSS +25 %, descriptors +2 x concurrency + 16).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import aiohttp
import jwt
from aiohttp import web
from yarl import URL

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECRET = secrets.token_urlsafe(48)
REVOCATION_BOUND = 1.0  # tokens.revocation_poll below
UPLOAD = 1024 * 1024
BLOB = os.urandom(UPLOAD)
ROUTES = """routes:
  - id: health
    match: {path: /v1/health, methods: [GET]}
    class: anonymous
  - id: items
    match: {prefix: /v1/items}
    class: public
  - id: uploads
    match: {path: /v1/uploads, methods: [POST]}
    class: public
  - id: ws
    match: {path: /v1/ws, methods: [GET]}
    class: public
  - id: admin
    match: {prefix: /v1/admin}
    class: jwt_only
"""


# ---------------------------------------------------------------------------------------------
# the upstream (run as its own process: `soak.py --upstream`)


async def _echo(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
    return web.json_response({"path": request.raw_path, "body_len": total})


async def _serve_upstream() -> None:
    app = web.Application(client_max_size=4 * UPLOAD)
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------------------------------------
# processes


def listening_ports(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:
                    ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def write_config(folder: str, upstream: int) -> str:
    with open(os.path.join(folder, "routes.yaml"), "w") as fh:
        fh.write(ROUTES)
    config = os.path.join(folder, "config.yaml")
    with open(config, "w") as fh:
        fh.write(f"""listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0}}
surface: routes.yaml
upstreams:
  default: {{url: "http://127.0.0.1:{upstream}", connect_timeout: 5, timeout: 30}}
store: sqlite:///tokens.db
log: {{level: warning}}
limits: {{max_body: 2MiB}}
tokens: {{revocation_poll: {REVOCATION_BOUND}, cache_ttl: 60, last_used_flush: 5}}
jwt: {{algorithms: [HS256], secret: {json.dumps(SECRET)}}}
""")
    return config


async def find_ports(proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    """(public, admin): the admin port is the one answering /healthz with 200."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"soak: the gateway exited with {proc.returncode}")
        ports = listening_ports(proc.pid)
        if len(ports) == 2:
            async with aiohttp.ClientSession() as s:
                for port in ports:
                    async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            return (ports - {port}).pop(), port
        await asyncio.sleep(0.1)
    sys.exit("soak: the gateway did not listen within 60 s")


# ---------------------------------------------------------------------------------------------
# the traffic


@dataclass
class Tokens:
    live: dict[str, str] = field(default_factory=dict)  # id -> secret (scopes read write)
    reader: str = ""  # a read-only token, for the 403 refusal
    revoked: dict[str, float] = field(default_factory=dict)  # secret -> monotonic time of the 204


@dataclass
class Tally:
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)
    late_revocations: list[str] = field(default_factory=list)
    revocations: int = 0
    reloads: int = 0
    client_errors: int = 0

    def note(self, kind: str, status: int, expected: set[int]) -> None:
        self.by_kind[kind] += 1
        self.statuses[status] += 1
        if status not in expected and len(self.unexpected) < 50:
            self.unexpected.append(f"{kind}: {status}, expected {sorted(expected)}")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def mint(session: aiohttp.ClientSession, base: str, auth: str, scopes: list[str]) -> tuple[str, str]:
    body = {"name": f"soak-{secrets.token_hex(6)}", "scopes": scopes, "expires_in": "1d"}
    async with session.post(f"{base}/auth/tokens", json=body, headers=bearer(auth)) as r:
        payload = await r.json()
        if r.status != 201:
            raise RuntimeError(f"mint: {r.status} {payload}")
        return payload["id"], payload["token"]


async def one_request(
    session: aiohttp.ClientSession, base: str, rng: random.Random, tokens: Tokens, auth: str, tally: Tally
) -> None:
    token = rng.choice(list(tokens.live.values()))
    kind = rng.choices(
        ["anonymous", "token", "jwt", "refusal", "upload", "websocket", "revoked"],
        weights=[20, 25, 15, 15, 5, 5, 15],
    )[0]
    if kind == "anonymous":
        async with session.get(f"{base}/v1/health") as r:
            await r.read()
            tally.note(kind, r.status, {200})
    elif kind == "token":
        sent = time.monotonic()
        async with session.get(f"{base}/v1/items/{rng.randrange(1000)}", headers=bearer(token)) as r:
            await r.read()
            # The token may have been revoked since it was picked: judge it like a revoked one.
            revoked_at = tokens.revoked.get(token)
            tally.note(kind, r.status, {200} if revoked_at is None else {200, 401})
            if revoked_at is not None and r.status == 200 and sent > revoked_at + REVOCATION_BOUND:
                tally.late_revocations.append(f"token GET sent {sent - revoked_at:.2f}s after revocation")
    elif kind == "jwt":
        method = rng.choice(["GET", "DELETE", "PUT"])
        async with session.request(
            method, f"{base}/v1/admin/users/{rng.randrange(100)}", headers=bearer(auth)
        ) as r:
            await r.read()
            tally.note(kind, r.status, {200})
    elif kind == "refusal":
        method, path, headers, status = rng.choice(
            [
                ("GET", "/v1/items/1", {}, 401),
                ("GET", "/v1/admin/x", bearer(token), 401),
                ("POST", "/v1/items", bearer(tokens.reader), 403),
                ("GET", "/v1/items/%2e%2e/admin", {}, 400),
                ("GET", "/v2/nothing", {}, 404),
                ("GET", "/v1/items/1", bearer("st_" + "A" * 38), 401),
            ]
        )
        async with session.request(method, URL(base + path, encoded=True), headers=headers) as r:
            body = await r.read()
            tally.note(f"refusal-{status}", r.status, {status})
            if r.status == status and not body.startswith(b'{"error"'):
                tally.unexpected.append(f"refusal {status} without a JSON body")
    elif kind == "upload":
        async with session.post(f"{base}/v1/uploads", data=BLOB, headers=bearer(token)) as r:
            got = await r.json() if r.status == 200 else {}
            revoked = token in tokens.revoked
            tally.note(kind, r.status, {200, 401} if revoked else {200})
            if r.status == 200 and got.get("body_len") != UPLOAD:
                tally.unexpected.append(f"upload: upstream got {got.get('body_len')} bytes")
    elif kind == "websocket":
        try:
            async with session.ws_connect(f"{base}/v1/ws", headers=bearer(token)) as ws:
                for i in range(3):
                    await ws.send_str(f"m{i}")
                    msg = await ws.receive(timeout=10)
                    if msg.type is not aiohttp.WSMsgType.TEXT or msg.data != f"m{i}":
                        if token not in tokens.revoked:  # a revocation closes it with 1008
                            tally.unexpected.append(f"websocket: {msg.type} {msg.data!r}")
                        break
            tally.note(kind, 101, {101})
        except aiohttp.WSServerHandshakeError as exc:
            tally.note(kind, exc.status, {401} if token in tokens.revoked else {101})
    elif not tokens.revoked:
        await asyncio.sleep(0.01)  # nothing revoked yet
    else:
        secret, revoked_at = rng.choice(list(tokens.revoked.items()))
        sent = time.monotonic()
        async with session.get(f"{base}/v1/items/1", headers=bearer(secret)) as r:
            await r.read()
            if sent > revoked_at + REVOCATION_BOUND:
                tally.note(kind, r.status, {401})
                if r.status < 300:
                    tally.late_revocations.append(f"revoked token answered {r.status}")
            else:
                tally.note(kind, r.status, {200, 401})


async def client(
    session: aiohttp.ClientSession, base: str, tokens: Tokens, auth: str, tally: Tally, until: float
) -> None:
    rng = random.Random()
    while time.monotonic() < until:
        try:
            await one_request(session, base, rng, tokens, auth, tally)
        except (TimeoutError, aiohttp.ClientError) as exc:
            tally.client_errors += 1
            if len(tally.unexpected) < 50:
                tally.unexpected.append(f"client error: {exc!r}")


async def revoker(
    session: aiohttp.ClientSession,
    base: str,
    tokens: Tokens,
    auth: str,
    tally: Tally,
    every: float,
    until: float,
) -> None:
    while time.monotonic() + every < until:
        await asyncio.sleep(every)
        victim_id = random.choice(list(tokens.live))
        async with session.delete(f"{base}/auth/tokens/{victim_id}", headers=bearer(auth)) as r:
            if r.status != 204:
                tally.unexpected.append(f"revoke: {r.status}")
                continue
        tokens.revoked[tokens.live.pop(victim_id)] = time.monotonic()
        new_id, new_secret = await mint(session, base, auth, ["read", "write"])
        tokens.live[new_id] = new_secret
        tally.revocations += 1


async def reloader(
    routes: str, proc: subprocess.Popen[bytes], tally: Tally, every: float, until: float
) -> None:
    n = 0
    while time.monotonic() + every < until:
        await asyncio.sleep(every)
        n += 1
        tmp = routes + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(
                ROUTES + f"  - id: reload-{n}\n    match: {{path: /v1/reload/{n}}}\n    class: anonymous\n"
            )
        os.replace(tmp, routes)
        proc.send_signal(signal.SIGHUP)
        tally.reloads += 1


async def sampler(
    pid: int,
    started: float,
    every: float,
    until: float,
    tally: Tally,
    rows: list[tuple[float, int, int, int]],
) -> None:
    print(f"{'t (s)':>6} {'RSS (MiB)':>10} {'open fds':>9} {'requests':>9}", flush=True)
    while True:
        row = (time.monotonic() - started, rss_kib(pid), open_fds(pid), sum(tally.by_kind.values()))
        rows.append(row)
        print(f"{row[0]:>6.0f} {row[1] / 1024:>10.1f} {row[2]:>9} {row[3]:>9}", flush=True)
        if time.monotonic() + every > until + every / 2:
            return
        await asyncio.sleep(every)


async def metrics_5xx(admin: int) -> tuple[float, dict[str, float]]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{admin}/metrics") as r:
        text = await r.text()
    server_errors = 0.0
    reloads: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"scopegate_requests_total\{(.*)\} ([0-9.e+]+)$", line)
        if m and re.search(r'status="5\d\d"', m.group(1)):
            server_errors += float(m.group(2))
        m = re.match(r"scopegate_reloads_total\{(.*)\} ([0-9.e+]+)$", line)
        result = re.search(r'result="(\w+)"', m.group(1)) if m else None
        if m and result:
            reloads[result.group(1)] = reloads.get(result.group(1), 0.0) + float(m.group(2))
    return server_errors, reloads


async def soak(args: argparse.Namespace) -> int:
    folder = tempfile.mkdtemp(prefix="scopegate-soak-")
    env = {**os.environ, "PYTHONPATH": ROOT}
    upstream = subprocess.Popen([sys.executable, __file__, "--upstream"], stdout=subprocess.PIPE, env=env)
    assert upstream.stdout is not None
    up_port = int(upstream.stdout.readline())
    config = write_config(folder, up_port)
    log = open(os.path.join(folder, "gateway.log"), "wb")  # noqa: SIM115 - closed at the end
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "-c", config], cwd=folder, stderr=log, stdout=log, env=env
    )
    try:
        port, admin = await find_ports(gateway)
        base = f"http://127.0.0.1:{port}"
        now = int(time.time())
        seconds = args.minutes * 60
        auth = jwt.encode(
            {"sub": "soak", "workspace_id": "soak", "iat": now, "exp": now + int(seconds) + 3600},
            SECRET,
            "HS256",
        )
        tally = Tally()
        tokens = Tokens()
        connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            for _ in range(20):
                token_id, secret = await mint(session, base, auth, ["read", "write"])
                tokens.live[token_id] = secret
            tokens.reader = (await mint(session, base, auth, ["read"]))[1]
            print(
                f"soak: {args.minutes:g} min, {args.concurrency} clients, "
                f"gateway pid {gateway.pid} on {base}, a revocation every {args.revoke_every:g} s, "
                f"a reload every {args.reload_every:g} s",
                flush=True,
            )
            started = time.monotonic()
            until = started + seconds
            rows: list[tuple[float, int, int, int]] = []
            tasks = [client(session, base, tokens, auth, tally, until) for _ in range(args.concurrency)]
            tasks.append(revoker(session, base, tokens, auth, tally, args.revoke_every, until))
            tasks.append(
                reloader(os.path.join(folder, "routes.yaml"), gateway, tally, args.reload_every, until)
            )
            tasks.append(sampler(gateway.pid, started, args.sample, until, tally, rows))
            await asyncio.gather(*tasks)
            elapsed = time.monotonic() - started
        server_errors, reloads = await metrics_5xx(admin)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=60)
        upstream.terminate()
        upstream.wait(timeout=30)
        log.close()
    return report(args, tally, rows, elapsed, server_errors, reloads, folder)


def report(
    args: argparse.Namespace,
    tally: Tally,
    rows: list[tuple[float, int, int, int]],
    elapsed: float,
    server_errors: float,
    reloads: dict[str, float],
    folder: str,
) -> int:
    total = sum(tally.by_kind.values())
    print(f"\n{total} requests in {elapsed:.0f} s ({total / elapsed:.0f}/s):")
    for kind, n in sorted(tally.by_kind.items()):
        print(f"  {kind:<12} {n:>8}")
    print(f"statuses: {dict(sorted(tally.statuses.items()))}")
    print(f"revocations: {tally.revocations}, reloads sent: {tally.reloads}, gateway counted {reloads}")
    five = sum(n for s, n in tally.statuses.items() if s >= 500)
    print(f"5xx seen by clients: {five}; 5xx in scopegate_requests_total: {server_errors:.0f}")
    print(
        f"revoked tokens answered 2xx after the {REVOCATION_BOUND:g} s bound: {len(tally.late_revocations)}"
    )
    print(f"unexpected answers: {len(tally.unexpected)}; client errors: {tally.client_errors}")
    for line in tally.unexpected[:10]:
        print(f"  {line}")
    base = rows[max(1, len(rows) // 5)] if len(rows) > 2 else rows[0]
    last = rows[-1]
    rss_growth = (last[1] - base[1]) / base[1] if base[1] else 0.0
    fd_growth = last[2] - base[2]
    print(
        f"RSS {base[1] / 1024:.1f} -> {last[1] / 1024:.1f} MiB ({rss_growth:+.0%}) and open fds "
        f"{base[2]} -> {last[2]} ({fd_growth:+d}) from t={base[0]:.0f} s to t={last[0]:.0f} s"
    )
    failures = []
    if five or server_errors:
        failures.append("5xx answers")
    if tally.late_revocations:
        failures.append("revoked tokens served after the bound")
    if tally.unexpected or tally.client_errors:
        failures.append("unexpected answers")
    if reloads.get("error", 0) or reloads.get("ok", 0) < tally.reloads:
        failures.append("reloads not all counted ok")
    if rss_growth > 0.25 or fd_growth > 2 * args.concurrency + 16:
        failures.append("RSS or open fds grew")
    if failures:
        print(f"soak: FAILED: {', '.join(failures)} (gateway log and store kept in {folder})")
        return 1
    shutil.rmtree(folder, ignore_errors=True)
    print("soak: ok")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--revoke-every", type=float, default=3.0)
    parser.add_argument("--reload-every", type=float, default=30.0)
    parser.add_argument("--sample", type=float, default=10.0)
    parser.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        asyncio.run(_serve_upstream())
        return 0
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
