"""What the gateway says about itself: the last-resort 500, the identified token on a refusal,
and `Server: scopegate` on every response it makes (issue 8 item 5, issue 9 items 8 and 9)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.web.admin import build_admin_app
from gateway.web.runtime import Runtime
from tests.conftest import EXAMPLE_ROUTES, Gateway, MakeGateway, Upstream
from tests.gates.conftest import bearer, mint
from tests.support import captured_access_log


def requests_counted(gw: Gateway, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(gw.runtime.metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == "scopegate_requests_total" and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total


def boom(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("injected failure: /secret/internal/path")


def fail_once_reading_draining(patch: pytest.MonkeyPatch) -> None:
    """Make the next read of `Runtime.draining` raise a bug of ours, once.

    The request path is compiled (setup.py), so its functions cannot be monkeypatched; the
    Runtime it reads is plain Python. A door reads `draining` first when it is about to answer:
    the proxy door right after the upstream's answer arrived, `/auth/verify` right after its
    decision and identity headers. The failure lands there, as a bug past those steps would."""
    armed = [True]

    def get(rt: Runtime) -> bool:
        if armed[0]:
            armed[0] = False
            boom()
        return bool(rt.__dict__["draining"])

    def put(rt: Runtime, value: bool) -> None:
        rt.__dict__["draining"] = value

    patch.setattr(Runtime, "draining", property(get, put), raising=False)


# ---------------------------------------------------------------------------------------------
# issue 8 item 5: the last resort


async def test_unexpected_failure_in_the_proxy_door_is_a_json_500(
    make_gateway: MakeGateway, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    # The upstream answers; the door fails as it turns that answer into ours.
    fail_once_reading_draining(monkeypatch)
    with captured_access_log(json.loads) as lines:
        resp = await gw.client.get("/v1/health", headers={"X-Request-Id": "rid-boom"})
        text = await resp.text()
    assert resp.status == 500
    assert resp.content_type == "application/json"
    assert json.loads(text) == {
        "error": "internal_error",
        "detail": "the gateway failed",
        "request_id": "rid-boom",
    }
    assert "injected" not in text and "Traceback" not in text
    assert resp.headers["Server"] == "scopegate"
    assert len(upstream.seen) == 1
    [line] = [r for r in lines if r["request_id"] == "rid-boom"]
    assert (line["status"], line["decision"], line["reason"], line["route"]) == (
        500,
        "deny",
        "internal_error",
        "health",
    )
    assert requests_counted(gw, reason="internal_error", status="500", route="health") == 1


async def test_unexpected_failure_in_auth_verify_is_a_json_500(
    make_gateway: MakeGateway, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    fail_once_reading_draining(monkeypatch)
    headers = {"X-Original-URI": "/v1/health", "X-Original-Method": "GET", "X-Request-Id": "rid-verify"}
    with captured_access_log(json.loads) as lines:
        resp = await gw.client.get("/auth/verify", headers=headers)
        body = await resp.json()
    assert resp.status == 500
    assert body == {"error": "internal_error", "detail": "the gateway failed", "request_id": "rid-verify"}
    [line] = [r for r in lines if r["request_id"] == "rid-verify"]
    assert (line["status"], line["reason"], line["route"]) == (500, "internal_error", "health")
    assert requests_counted(gw, reason="internal_error", status="500") == 1
    assert upstream.seen == []


async def test_the_gateway_keeps_serving_after_an_unexpected_failure(
    make_gateway: MakeGateway, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    with monkeypatch.context() as patch:
        fail_once_reading_draining(patch)
        assert (await gw.client.get("/v1/health")).status == 500
    resp = await gw.client.get("/v1/health")
    assert resp.status == 200
    assert (await resp.json())["path"] == "/v1/health"


# ---------------------------------------------------------------------------------------------
# issue 9 item 8: a refused request names the token it identified


@pytest.mark.parametrize("door", ["proxy", "verify"])
async def test_insufficient_scope_logs_the_token_id(
    make_gateway: MakeGateway, upstream: Upstream, door: str
) -> None:
    gw = await make_gateway(EXAMPLE_ROUTES)
    record, secret = await mint(gw, ["read"])
    rid = f"rid-403-{door}"
    with captured_access_log(json.loads) as lines:
        if door == "proxy":
            resp = await gw.client.post("/v1/playlists/7", headers={**bearer(secret), "X-Request-Id": rid})
        else:
            headers = {
                **bearer(secret),
                "X-Original-URI": "/v1/playlists/7",
                "X-Original-Method": "POST",
                "X-Request-Id": rid,
            }
            resp = await gw.client.get("/auth/verify", headers=headers)
        body = await resp.json()
    assert resp.status == 403 and body["error"] == "insufficient_scope"
    [line] = [r for r in lines if r["request_id"] == rid]
    assert line["token_id"] == record.id
    assert line["credential"] == "token"
    assert (line["route"], line["reason"]) == ("playlists", "insufficient_scope")
    assert upstream.seen == []


async def test_an_unknown_token_is_still_logged_without_an_id(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(EXAMPLE_ROUTES)
    _, secret = await mint(gw, ["read"])
    wrong = secret[:-8] + ("A" if secret[-8] != "A" else "B") + secret[-7:]
    with captured_access_log(json.loads) as lines:
        resp = await gw.client.get("/v1/playlists/7", headers={**bearer(wrong), "X-Request-Id": "rid-401"})
    assert resp.status == 401
    [line] = [r for r in lines if r["request_id"] == "rid-401"]
    assert (line["token_id"], line["credential"]) == (None, "none")


# ---------------------------------------------------------------------------------------------
# issue 9 item 9: Server says scopegate, without a version, on what the gateway makes


async def test_gateway_made_responses_say_server_scopegate(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(EXAMPLE_ROUTES)
    refused = await gw.client.get("/v1/playlists/7")
    assert refused.status == 401
    verified = await gw.client.get(
        "/auth/verify", headers={"X-Original-URI": "/v1/health", "X-Original-Method": "GET"}
    )
    assert verified.status == 200
    scopes = await gw.client.get("/auth/scopes")
    assert scopes.status == 200
    no_route = await gw.client.get("/nowhere")
    assert no_route.status == 404
    for resp in (refused, verified, scopes, no_route):
        assert resp.headers.getall("Server") == ["scopegate"], resp.headers


async def test_upstream_server_header_passes_through(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    resp = await gw.client.get("/v1/health")
    assert resp.status == 200
    # The test upstream is aiohttp: its own Server header, as it sent it, and only that one.
    [server] = resp.headers.getall("Server")
    assert server.startswith("Python/") and "aiohttp/" in server


async def test_admin_responses_say_server_scopegate(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    admin = TestClient(TestServer(build_admin_app(gw.runtime), host="127.0.0.1"))
    await admin.start_server()
    try:
        for path in ("/healthz", "/metrics", "/nowhere"):
            resp = await admin.get(path)
            assert resp.headers.getall("Server") == ["scopegate"], (path, resp.headers)
    finally:
        await admin.close()
