"""The token store goes away (contract section 7 and THREATS "Faults"): fail closed for what cannot
be checked, keep serving what can be (cached tokens, anonymous routes, JWTs), and never let an
outage turn a revoked token back into a good one."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.tokens.secret import generate
from gateway.tokens.service import TokenService
from gateway.tokens.sqlite import SqliteTokenStore
from tests.conftest import Gateway, MakeGateway, Upstream

from .conftest import PATHS, BuildGateway, allowed, bearer, jwt_extra, make_jwt, mint, refused

JWT = jwt_extra(claims={"scopes": "scope"})
# Background revocation polls are pushed out of the way unless a test wants them.
QUIET = JWT + "tokens: {revocation_poll: 60, last_used_flush: 60}\n"


async def outage(gw: Gateway) -> None:
    await gw.runtime.store.close()


async def store_unavailable(gw: Gateway, upstream: Upstream, token: str, path: str = PATHS["public"]) -> None:
    resp, _ = await refused(gw, upstream, "GET", path, bearer(token), 503, "store_unavailable")
    assert int(resp.headers["Retry-After"]) > 0


async def other_process_revokes(gw: Gateway, token_id: str) -> None:
    """A revocation made elsewhere on the same store (another worker, replica or the CLI)."""
    other = SqliteTokenStore(str(gw.folder / "tokens.db"))
    await other.open()
    try:
        assert await other.revoke(token_id, time.time())
    finally:
        await other.close()


async def test_cached_token_keeps_working(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=QUIET)
    _, token = await mint(gw, ["write"])
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    await outage(gw)
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    await allowed(gw, upstream, "POST", PATHS["public"], bearer(token))
    # Its scopes still bind.
    await refused(gw, upstream, "POST", PATHS["full"], bearer(token), 403, "insufficient_scope")


async def test_unseen_token_is_503_with_retry_after(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=QUIET)
    _, seen = await mint(gw, ["read"])
    _, unseen = await mint(gw, ["read"])
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(seen))
    await outage(gw)
    await store_unavailable(gw, upstream, unseen)
    await store_unavailable(gw, upstream, generate("st_"))
    # Every route class that takes tokens fails closed the same way.
    await store_unavailable(gw, upstream, generate("st_"), PATHS["agency"])
    # And shape checks need no store: a bad checksum is still a 401, not a 503.
    await refused(gw, upstream, "GET", PATHS["public"], bearer(unseen[:-1] + "!"), 401, "invalid_token")


async def test_store_coming_back_serves_unseen_tokens(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=QUIET)
    _, token = await mint(gw, ["read"])
    await outage(gw)
    await store_unavailable(gw, upstream, token)
    await gw.runtime.store.open()
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))


async def test_anonymous_and_jwt_unaffected(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=QUIET)
    await outage(gw)
    await allowed(gw, upstream, "GET", "/v1/health")
    await allowed(gw, upstream, "GET", "/open/x", {"Authorization": f"Bearer {generate('st_')}"})
    await allowed(gw, upstream, "POST", PATHS["public"], bearer(make_jwt(scope="write")))
    await allowed(gw, upstream, "DELETE", PATHS["jwt_only"], bearer(make_jwt(scope="write")))
    await refused(
        gw, upstream, "POST", PATHS["full"], bearer(make_jwt(scope="write")), 403, "insufficient_scope"
    )
    # The management API needs the store: it fails closed too, with a 503, not a 500.
    resp = await gw.client.get("/auth/tokens", headers=bearer(make_jwt(scope="full", workspace_id="w1")))
    assert resp.status == 503
    assert (await resp.json())["error"] == "store_unavailable"


async def test_revoked_by_this_gateway_after_use_stays_401(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra=QUIET)
    record, token = await mint(gw, ["full"])
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    await gw.runtime.service.revoke(None, record.id)
    await outage(gw)
    for _ in range(3):
        await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 401, "invalid_token")


async def test_seen_revoked_in_the_store_stays_401(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=QUIET)
    record, token = await mint(gw, ["full"])
    await other_process_revokes(gw, record.id)
    # The gateway learns of the revocation from the store on first sight...
    await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 401, "invalid_token")
    await outage(gw)
    # ...and keeps refusing it when the store is gone.
    await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 401, "invalid_token")


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "never-seen"])
async def test_revoked_elsewhere_then_polled_stays_401(
    make_gateway: MakeGateway, upstream: Upstream, cached: bool
) -> None:
    gw = await make_gateway(extra=JWT + "tokens: {revocation_poll: 0.05}\n")
    record, token = await mint(gw, ["full"])
    if cached:
        await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    await other_process_revokes(gw, record.id)
    committed = time.time()
    # Wait for a revocation poll that read the feed well after the revocation committed.
    deadline = time.monotonic() + 2
    while gw.runtime.validator.last_poll <= committed + 0.1 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert gw.runtime.validator.last_poll > committed + 0.1, "no revocation poll ran"
    await outage(gw)
    await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 401, "invalid_token")


async def test_revoked_by_this_gateway_unseen_stays_401(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra=QUIET)
    record, token = await mint(gw, ["full"])
    await gw.runtime.service.revoke(None, record.id)
    await outage(gw)
    await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 401, "invalid_token")


async def test_cached_token_expiring_during_outage_is_401(
    make_gateway: MakeGateway, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway(extra=QUIET)
    _, token = await mint(gw, ["read"], expires_in=3)  # whole seconds, rounded down: at least 2 s left
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    await outage(gw)
    monkeypatch.setattr(gw.runtime.validator, "clock", lambda: time.time() + 10)
    await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 401, "invalid_token")


async def test_cache_ttl_bounds_the_outage(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=JWT + "tokens: {cache_ttl: 0.5, revocation_poll: 60}\n")
    _, token = await mint(gw, ["read"])
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    await outage(gw)
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    await asyncio.sleep(0.6)
    # Past cache_ttl the token can no longer be checked: 503, never a silent admission.
    await store_unavailable(gw, upstream, token)


async def test_refused_requests_during_outage_do_not_count_as_failed_auth(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra=QUIET + "limits: {failed_auth_per_minute: 2}\n")
    _, token = await mint(gw, ["read"])
    await outage(gw)
    for _ in range(4):
        await store_unavailable(gw, upstream, token)
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(make_jwt(scope="read")))


async def test_gateway_with_store_in_missing_directory(
    build_gateway: BuildGateway, upstream: Upstream
) -> None:
    gw = await build_gateway(store="sqlite:///missing/dir/tokens.db", extra=JWT)
    assert not gw.runtime.store_ok
    await allowed(gw, upstream, "GET", "/v1/health")
    await allowed(gw, upstream, "PUT", PATHS["public"], bearer(make_jwt(scope="write")))
    await allowed(gw, upstream, "GET", PATHS["jwt_only"], bearer(make_jwt(scope="read")))
    await store_unavailable(gw, upstream, generate("st_"))
    await store_unavailable(gw, upstream, generate("st_"), PATHS["agency"])
    await refused(gw, upstream, "GET", PATHS["public"], bearer("st_" + "A" * 38), 401, "invalid_token")
    # Minting needs the store: 503, never a token that was not stored.
    resp = await gw.client.post(
        "/auth/tokens",
        json={"name": "n", "scopes": ["read"]},
        headers=bearer(make_jwt(scope="full", workspace_id="w1")),
    )
    assert resp.status == 503
    assert (await resp.json())["error"] == "store_unavailable"
    assert not (gw.folder / "missing").exists()


async def test_gateway_recovers_once_the_store_directory_appears(
    build_gateway: BuildGateway, upstream: Upstream
) -> None:
    gw = await build_gateway(store="sqlite:///late/tokens.db", extra=JWT + "tokens: {revocation_poll: 0.2}\n")
    (gw.folder / "late").mkdir()
    # Someone (the CLI, another replica) creates the store and mints a token in it.
    other = SqliteTokenStore(str(gw.folder / "late" / "tokens.db"))
    await other.open()
    try:
        rt = gw.runtime
        service = TokenService(other, rt.validator, rt.cfg.tokens, lambda: rt.catalogue)
        _, token = await service.create(None, {"name": "late", "workspace": "w1", "scopes": ["read"]})
    finally:
        await other.close()
    deadline = time.monotonic() + 2.0
    status = 0
    while time.monotonic() < deadline:
        resp = await gw.client.get(PATHS["public"], headers=bearer(token))
        status = resp.status
        if status != 503:
            break
        await asyncio.sleep(0.2)
    assert status == 200
