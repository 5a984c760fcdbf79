"""Crash safety: `kill -9` a real `scopegate serve` at random moments while it mints and revokes.

Clients mint tokens (plain and agency tokens with targets) and revoke acknowledged ones over HTTP,
four at a time, against a gateway whose `last_used_at` batches are flushed every 0.1 s, so the
store is written to almost all the time. The gateway is killed with SIGKILL at a random moment
(at least 50 times) and restarted on the same store. Then:

- every token whose 201 was received authenticates, with all its targets;
- every revocation whose 204 was received stays in force (never undone);
- the store holds no half-written row: integrity check, every token row complete, every target
  row owned, every revoked token in the revocation feed and every feed row a revoked token.

The store is a parameter (`store` fixture), so another backend can join by adding a param that
returns its URL and an inspector.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import secrets
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.conftest import Upstream
from tests.support import spawn_serve

from .port0 import wait_listening

KILLS = 50
WORKERS = 4
ROUTES = """routes:
  - id: items
    match: {prefix: /v1/items}
    class: public
  - id: agency-playlist
    match: {path: "/v1/workspaces/{workspace_id}/playlists/{playlist_id}", methods: [GET]}
    class: agency
    target: {param: playlist_id, kind: playlist}
    workspace_param: workspace_id
"""
TARGETS = [{"kind": "playlist", "id": "p1"}, {"kind": "playlist", "id": "p2"}]


@dataclass
class Snapshot:
    """What the store holds, read straight from it, and every inconsistency found."""

    tokens: dict[str, tuple[bytes, bool, int]]  # id -> (hash, revoked, number of targets)
    problems: list[str]


@dataclass(frozen=True)
class StoreUnderTest:
    url: str
    inspect: Callable[[], Snapshot]


def inspect_sqlite(path: Path) -> Snapshot:
    problems: list[str] = []
    conn = sqlite3.connect(path)
    try:
        if (check := conn.execute("PRAGMA integrity_check").fetchall()) != [("ok",)]:
            problems.append(f"integrity_check: {check}")
        if orphans := conn.execute("PRAGMA foreign_key_check").fetchall():
            problems.append(f"foreign_key_check: {orphans}")
        targets = dict(conn.execute("SELECT token_id, COUNT(*) FROM targets GROUP BY token_id").fetchall())
        if stray := set(targets) - {r[0] for r in conn.execute("SELECT id FROM tokens")}:
            problems.append(f"targets without a token: {stray}")
        feed: dict[str, list[bytes]] = {}
        for token_id, token_hash in conn.execute("SELECT token_id, token_hash FROM revocations"):
            feed.setdefault(token_id, []).append(bytes(token_hash))
        tokens = {}
        rows = conn.execute(
            "SELECT id, name, token_hash, display_prefix, owner, workspace, scopes, created_at, expires_at, "
            "revoked_at FROM tokens"
        ).fetchall()
        for tid, name, token_hash, prefix, owner, ws, scopes, created, expires, revoked in rows:
            if not (name and prefix and owner and ws == "w" and scopes):
                problems.append(f"token {tid}: incomplete row {name, prefix, owner, ws, scopes}")
            if not isinstance(token_hash, bytes) or len(token_hash) != 32:
                problems.append(f"token {tid}: hash {token_hash!r}")
            if not (isinstance(created, float) and isinstance(expires, float) and created < expires):
                problems.append(f"token {tid}: times {created!r} {expires!r}")
            if scopes == "agency" and targets.get(tid) != len(TARGETS):
                problems.append(f"agency token {tid}: {targets.get(tid, 0)} of {len(TARGETS)} targets")
            if (revoked is not None) != (tid in feed):
                problems.append(f"token {tid}: revoked_at {revoked!r} but feed rows {feed.get(tid)}")
            if tid in feed and feed[tid] != [token_hash]:
                problems.append(f"token {tid}: feed rows {len(feed[tid])} / hash mismatch")
            tokens[tid] = (bytes(token_hash), revoked is not None, targets.get(tid, 0))
        if unknown := set(feed) - set(tokens):
            problems.append(f"feed rows for unknown tokens: {unknown}")
    finally:
        conn.close()
    return Snapshot(tokens, problems)


@pytest.fixture(params=["sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    assert request.param == "sqlite"
    return StoreUnderTest("sqlite:///tokens.db", lambda: inspect_sqlite(tmp_path / "tokens.db"))


@dataclass
class Ledger:
    """What the clients were told: only acknowledged writes count."""

    created: dict[str, tuple[str, bool]] = field(default_factory=dict)  # id -> (secret, agency)
    revoked: set[str] = field(default_factory=set)
    revoke_in_doubt: set[str] = field(default_factory=set)  # DELETE cut off: may have committed
    unchecked: list[str] = field(default_factory=list)  # acknowledged since the last check
    in_doubt: int = 0  # requests cut off by a kill: may or may not have committed


class Gateway:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> None:
        self.proc = spawn_serve(self.config, self.log)
        (port,) = await asyncio.to_thread(wait_listening, self.proc, self.log, 1, 60.0)
        self.url = f"http://127.0.0.1:{port}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no drain, no flush, no cleanup
        self.proc.wait(timeout=10)


@pytest.fixture
async def gateway(tmp_path: Path, upstream: Upstream, store: StoreUnderTest) -> AsyncIterator[Gateway]:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    secret = secrets.token_urlsafe(48)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""listen: {{host: 127.0.0.1, port: 0}}
admin: false
surface: routes.yaml
upstreams:
  default: {{url: "{upstream.url}", connect_timeout: 2, timeout: 5}}
store: {store.url}
log: {{level: error}}
tokens: {{last_used_flush: 0.1, revocation_poll: 0.2}}
jwt: {{algorithms: [HS256], secret: {json.dumps(secret)}, roles: {{ops: [full, agency]}}}}
"""
    )
    (tmp_path / "jwt.secret").write_text(secret)
    gw = Gateway(config)
    yield gw
    if gw.proc is not None and gw.proc.poll() is None:
        gw.kill()


def minter_jwt(secret: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": "ops", "workspace_id": "w", "role": "ops", "iat": now, "exp": now + 3600}, secret, "HS256"
    )


async def churn(session: aiohttp.ClientSession, gw: Gateway, auth: str, ledger: Ledger, tag: str) -> None:
    """Mint and revoke until the gateway dies under us."""
    rng = random.Random()
    n = 0
    while True:
        n += 1
        if ledger.created and rng.random() < 0.3:
            candidates = [t for t in ledger.created if t not in ledger.revoked]
            if candidates:
                victim = rng.choice(candidates)
                try:
                    async with session.delete(
                        f"{gw.url}/auth/tokens/{victim}", headers=auth_header(auth)
                    ) as r:
                        status = r.status
                        await r.read()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    # Even a refused connection may follow a sent DELETE: aiohttp retries an
                    # idempotent request once when its reused connection dies under it.
                    ledger.revoke_in_doubt.add(victim)
                    ledger.in_doubt += not isinstance(exc, aiohttp.ClientConnectorError)
                    return
                # 404: another client revoked it first (acknowledged there).
                assert status in (204, 404), status
                if status == 204:
                    ledger.revoked.add(victim)
                    ledger.unchecked.append(victim)
                continue
        agency = rng.random() < 0.3
        body: dict[str, object] = {"name": f"{tag}-{n}", "expires_in": "1d"}
        body.update({"scopes": ["agency"], "targets": TARGETS} if agency else {"scopes": ["read"]})
        try:
            async with session.post(f"{gw.url}/auth/tokens", json=body, headers=auth_header(auth)) as r:
                status = r.status
                payload = await r.json() if status == 201 else await r.text()
        except aiohttp.ClientConnectorError:
            return
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
            ledger.in_doubt += 1
            return
        assert status == 201, payload
        assert isinstance(payload, dict)
        ledger.created[payload["id"]] = (payload["token"], agency)
        ledger.unchecked.append(payload["id"])
        # Use it at once, so batched last_used_at writes race the kills too.
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.get(f"{gw.url}/v1/items/1", headers=auth_header(payload["token"])) as r:
                await r.read()


def auth_header(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def authenticates(session: aiohttp.ClientSession, gw: Gateway, secret: str, agency: bool) -> int:
    """The status a token gets on its own kind of route (200 when it authenticates and fits)."""
    path = "/v1/workspaces/w/playlists/p2" if agency else "/v1/items/1"
    async with session.get(gw.url + path, headers=auth_header(secret)) as r:
        await r.read()
        return r.status


async def verify(
    session: aiohttp.ClientSession, gw: Gateway, store: StoreUnderTest, ledger: Ledger, ids: list[str]
) -> None:
    """Each token answers as the store says; check_store ties the store to what was acknowledged."""
    revoked_in_store = {tid for tid, (_, revoked, _) in store.inspect().tokens.items() if revoked}
    for token_id in ids:
        secret, agency = ledger.created[token_id]
        # SECURITY: an acknowledged revocation is never undone, by any crash.
        expected = 401 if token_id in ledger.revoked or token_id in revoked_in_store else 200
        assert await authenticates(session, gw, secret, agency) == expected, token_id


def check_store(store: StoreUnderTest, ledger: Ledger) -> None:
    snap = store.inspect()
    assert snap.problems == []
    for token_id, (secret, agency) in ledger.created.items():
        assert token_id in snap.tokens, f"acknowledged token {token_id} is gone"
        token_hash, revoked, targets = snap.tokens[token_id]
        assert token_hash == hashlib.sha256(secret.encode()).digest()
        assert targets == (len(TARGETS) if agency else 0)
        if token_id in ledger.revoked:
            assert revoked, f"acknowledged revocation of {token_id} is undone"
        elif revoked:
            assert token_id in ledger.revoke_in_doubt, f"{token_id} revoked without anyone asking"


@pytest.mark.slow
async def test_kill_9_never_loses_an_acknowledged_token_or_revocation(
    gateway: Gateway, store: StoreUnderTest, tmp_path: Path
) -> None:
    secret = (tmp_path / "jwt.secret").read_text()
    ledger = Ledger()
    rng = random.Random()
    timeout = aiohttp.ClientTimeout(total=10)
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for kill in range(KILLS):
            await gateway.start()
            auth = minter_jwt(secret)
            # What was acknowledged before the last kill holds after the restart.
            await verify(session, gateway, store, ledger, ledger.unchecked)
            ledger.unchecked.clear()
            clients = [
                asyncio.create_task(churn(session, gateway, auth, ledger, f"k{kill}w{i}"))
                for i in range(WORKERS)
            ]
            await asyncio.sleep(rng.uniform(0.02, 0.4))
            gateway.kill()
            await asyncio.gather(*clients)
            check_store(store, ledger)
        await gateway.start()
        await verify(session, gateway, store, ledger, list(ledger.created))
    check_store(store, ledger)
    elapsed = time.monotonic() - started
    print(
        f"\n{KILLS} kills in {elapsed:.0f}s: {len(ledger.created)} tokens and {len(ledger.revoked)} "
        f"revocations acknowledged, {ledger.in_doubt} requests cut off"
    )
    assert len(ledger.created) >= KILLS  # the kills landed among real writes
    assert ledger.revoked
    assert ledger.in_doubt >= KILLS // 2
