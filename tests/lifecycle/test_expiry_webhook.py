"""Expiry warnings (issue 12, item 5): signed POSTs to a real receiver, once per token and
threshold with two gateways on one store, retried after a failure, never carrying a secret."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.tokens.secret import hash_token
from tests.lifecycle.conftest import bearer, make_jwt, serve_config, serving
from tests.support import spawn_serve, wait_exit

ADMIN = make_jwt("w1", "admin")
SECRET = "webhook-secret-for-tests-0123456789"


@dataclass
class Receiver:
    server: TestServer
    got: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)  # headers, body, answer
    fail_first: set[str] = field(default_factory=set)  # delivery ids answered 500 the first time

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/hook"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec: Receiver

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        delivery = json.loads(body)["id"]
        answer = 200
        if delivery in rec.fail_first:
            rec.fail_first.discard(delivery)
            answer = 500
        rec.got.append((dict(request.headers), body, answer))
        return web.Response(status=answer)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rec = Receiver(server)
    yield rec
    await server.close()


def valid_signature(headers: dict[str, str], body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in headers["X-Scopegate-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(int(parts["t"]) - time.time()) < 60


@pytest.mark.slow
async def test_one_signed_warning_per_threshold_with_two_gateways(
    tmp_path: Path, upstream: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, store_url: str
) -> None:
    monkeypatch.setenv("SCOPEGATE_WEBHOOK_SECRET", SECRET)
    extra = (
        f'tokens:\n  revocation_poll: 0.2\n  expiry_webhook: {{url: "{receiver.url}", before: [6s, 3s]}}\n'
    )
    config = serve_config(tmp_path, upstream.url, extra=extra, store=store_url)
    async with serving(config, 2) as (a, _b), aiohttp.ClientSession() as session:
        created: dict[str, dict[str, Any]] = {}
        for name, life in (("soon", 9), ("short", 2)):
            async with session.post(
                a.url + "/auth/tokens", headers=bearer(ADMIN), json={"name": name, "expires_in": life}
            ) as resp:
                assert resp.status == 201
                created[name] = await resp.json()
        soon = created["soon"]
        receiver.fail_first.add(f"{soon['id']}:6")  # the first try of the 6 s warning fails
        deadline = time.time() + 15
        while time.time() < deadline:
            delivered = [json.loads(body)["id"] for _, body, answer in receiver.got if answer == 200]
            if len(delivered) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)  # room for a duplicate to show up, were there one
    ok = [json.loads(body) for _, body, answer in receiver.got if answer == 200]
    assert sorted(w["id"] for w in ok) == sorted([f"{soon['id']}:6", f"{soon['id']}:3"]), receiver.got
    assert [json.loads(body)["id"] for _, body, answer in receiver.got if answer != 200] == [
        f"{soon['id']}:6"
    ]
    retried = next(w for w in ok if w["threshold_seconds"] == 6)
    assert retried["attempt"] == 2
    for headers, body, _ in receiver.got:
        assert valid_signature(headers, body)
        assert headers["Content-Type"] == "application/json"
        # SECURITY: never the secret, nor its hash in any encoding.
        for token in created.values():
            digest = hash_token(token["token"])
            for leak in (token["token"], digest.hex(), token["token"][3:]):
                assert leak.encode() not in body
    warning = ok[0]
    assert warning["event"] == "token.expiring"
    assert warning["token"]["id"] == soon["id"] and warning["token"]["expires_at"] == soon["expires_at"]
    assert set(warning["token"]) == {"id", "name", "workspace", "project", "owner", "scopes", "expires_at"}


async def test_serve_refuses_to_start_without_the_secret(
    tmp_path: Path, upstream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCOPEGATE_WEBHOOK_SECRET", raising=False)
    config = serve_config(
        tmp_path, upstream.url, extra='tokens: {expiry_webhook: {url: "http://127.0.0.1:9/hook"}}\n'
    )
    log = tmp_path / "serve.log"
    proc = spawn_serve(config, log, "--port", "0")
    assert await wait_exit(proc, 30) == 1
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines[-1] == (
        "scopegate: tokens.expiry_webhook: set $SCOPEGATE_WEBHOOK_SECRET to a secret of at least 16 bytes"
    ), lines
    assert "Traceback" not in log.read_text()
