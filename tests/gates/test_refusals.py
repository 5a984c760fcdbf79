"""Contract section 10, the credential and gate rows, end to end through a real gateway.

Every refusal: status, the JSON `error` code, `request_id` in the body, WWW-Authenticate where
the contract demands it, and the upstream never saw the request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from gateway.auth.ratelimit import FailedAuthLimiter
from gateway.tokens.secret import ALPHABET, generate
from tests.conftest import MakeGateway, Upstream

from .conftest import (
    OTHER_SECRET,
    PATHS,
    allowed,
    bearer,
    jwt_extra,
    make_jwt,
    mint,
    refused,
    scope_challenge,
)

JWT = jwt_extra(claims={"scopes": "scope"})
# The method each route kind accepts (the fine-grained and full routes are POST only).
ROUTE_METHOD = {"public": "GET", "full": "POST", "fine": "POST", "jwt_only": "GET", "agency": "GET"}


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_jwt(alg: str) -> str:
    now = int(time.time())
    payload = {"sub": "mallory", "iss": "https://idp.example/", "aud": "scopegate-api", "exp": now + 300}
    return f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(payload | {'scope': 'full'})}."


def flip(token: str, index: int) -> str:
    """The same token with one character of its random part changed (the checksum no longer fits)."""
    old = token[index]
    new = ALPHABET[(ALPHABET.index(old) + 1) % len(ALPHABET)]
    return token[:index] + new + token[index + 1 :]


@pytest.mark.parametrize("route", list(PATHS), ids=list(PATHS))
async def test_missing_credential_is_401(make_gateway: MakeGateway, upstream: Upstream, route: str) -> None:
    gw = await make_gateway(extra=JWT)
    await refused(gw, upstream, ROUTE_METHOD[route], PATHS[route], {}, 401, "invalid_token")


MALFORMED = [
    pytest.param("Basic YWxpY2U6cGFzcw==", id="basic-scheme"),
    pytest.param("Bearer", id="scheme-only"),
    pytest.param("Bearer    ", id="scheme-and-spaces"),
    pytest.param("Token {token}", id="other-scheme-with-good-token"),
    pytest.param("{token}", id="no-scheme"),
    pytest.param("Bearer {token} extra", id="two-credentials"),
    pytest.param("Bearer st_short", id="token-too-short"),
    pytest.param("Bearer {token}x", id="token-too-long-by-one"),
    pytest.param("Bearer {token_no_prefix}", id="token-without-prefix"),
    pytest.param("Bearer not-a-token-nor-a-jwt", id="garbage"),
    pytest.param("Bearer a.b", id="two-segments"),
    pytest.param("Bearer a.b.c.d.e", id="jwe-five-segments"),
    pytest.param("Bearer st_" + "!" * 38, id="bad-alphabet"),
]


@pytest.mark.parametrize("value", MALFORMED)
async def test_malformed_credential_is_401(make_gateway: MakeGateway, upstream: Upstream, value: str) -> None:
    gw = await make_gateway(extra=JWT)
    _, token = await mint(gw, ["full"])
    header = value.format(token=token, token_no_prefix=token[3:])
    _, body = await refused(
        gw, upstream, "GET", PATHS["public"], {"Authorization": header}, 401, "invalid_token"
    )
    assert token not in body["detail"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_scheme_is_case_insensitive(make_gateway: MakeGateway, upstream: Upstream, scheme: str) -> None:
    gw = await make_gateway()
    _, token = await mint(gw, ["read"])
    await allowed(gw, upstream, "GET", PATHS["public"], {"Authorization": f"{scheme} {token}"})


async def test_unknown_token_with_good_checksum_is_401(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    await mint(gw, ["full"])  # the store is not empty
    never_minted = generate("st_")
    await refused(gw, upstream, "GET", PATHS["public"], bearer(never_minted), 401, "invalid_token")
    # And again (the negative cache answers the same).
    await refused(gw, upstream, "GET", PATHS["public"], bearer(never_minted), 401, "invalid_token")


@pytest.mark.parametrize("index", [3, 20, 34, -1], ids=["first-random", "middle", "last-random", "checksum"])
async def test_bad_checksum_is_401_before_any_store_lookup(
    make_gateway: MakeGateway, upstream: Upstream, index: int
) -> None:
    gw = await make_gateway()
    _, token = await mint(gw, ["full"])
    misses = gw.runtime.validator.cache_misses
    await refused(gw, upstream, "GET", PATHS["public"], bearer(flip(token, index)), 401, "invalid_token")
    assert gw.runtime.validator.cache_misses == misses, "a bad checksum reached the store"
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))


async def test_other_prefix_token_is_401(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=JWT)
    await refused(gw, upstream, "GET", PATHS["public"], bearer(generate("xx_")), 401, "invalid_token")


@pytest.mark.parametrize("cached", [False, True], ids=["never-used", "cached"])
async def test_expired_token_is_401(
    make_gateway: MakeGateway, upstream: Upstream, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    gw = await make_gateway()
    # expires_at is a whole second (floor(now + expires_in)): 1 s would leave anywhere from 0 to
    # 1 s for the first request, too little on a busy machine; 2 s leaves at least 1.
    _, token = await mint(gw, ["full"], expires_in=2)
    if cached:
        await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    # The validator reads time.time() through its clock: move it past the expiry.
    monkeypatch.setattr(gw.runtime.validator, "clock", lambda: time.time() + 5)
    await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 401, "invalid_token")


async def test_expired_token_is_401_in_real_time(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    _, token = await mint(gw, ["read"], expires_in=2)  # at least 1 s for the first request (above)
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    await asyncio.sleep(2.2)
    await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 401, "invalid_token")


@pytest.mark.parametrize("cached", [False, True], ids=["never-used", "cached"])
async def test_revoked_token_is_401_at_once(
    make_gateway: MakeGateway, upstream: Upstream, cached: bool
) -> None:
    gw = await make_gateway()
    record, token = await mint(gw, ["full"])
    if cached:
        await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    await gw.runtime.service.revoke(None, record.id)
    await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 401, "invalid_token")
    await refused(gw, upstream, "POST", PATHS["public"], bearer(token), 401, "invalid_token")


@pytest.mark.parametrize("scopes", [["read"], ["full"], ["tokens:manage"], ["nodes:*"]], ids=str)
async def test_api_token_on_jwt_only_is_jwt_required(
    make_gateway: MakeGateway, upstream: Upstream, scopes: list[str]
) -> None:
    gw = await make_gateway(extra=JWT)
    _, token = await mint(gw, scopes)
    await refused(gw, upstream, "GET", PATHS["jwt_only"], bearer(token), 401, "jwt_required")


INSUFFICIENT = [
    pytest.param(["read"], "POST", "public", "write", id="read-posts-public"),
    pytest.param(["write"], "POST", "full", "full", id="write-on-full-route"),
    pytest.param(["write"], "POST", "fine", "nodes:create", id="write-on-fine-route"),
    pytest.param(["nodes:create"], "GET", "public", "read", id="fine-on-public"),
    pytest.param(["full"], "GET", "agency", "agency", id="full-on-agency"),
]


@pytest.mark.parametrize(("scopes", "method", "route", "scope"), INSUFFICIENT)
async def test_insufficient_scope_names_the_scope(
    make_gateway: MakeGateway, upstream: Upstream, scopes: list[str], method: str, route: str, scope: str
) -> None:
    gw = await make_gateway()
    _, token = await mint(gw, scopes)
    await refused(
        gw,
        upstream,
        method,
        PATHS[route],
        bearer(token),
        403,
        "insufficient_scope",
        www=scope_challenge(scope),
    )


async def test_target_denied(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway()
    _, token = await mint(gw, ["agency"], targets=[{"kind": "playlist", "id": "p1"}])
    _, body = await refused(
        gw, upstream, "GET", "/v1/workspaces/w1/playlists/p2", bearer(token), 403, "target_denied"
    )
    assert body["request_id"]


@pytest.mark.parametrize("route", ["anonymous", "public"])
async def test_two_authorization_headers_are_400(
    make_gateway: MakeGateway, upstream: Upstream, route: str
) -> None:
    gw = await make_gateway()
    _, token = await mint(gw, ["full"])
    path = "/v1/health" if route == "anonymous" else PATHS["public"]
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    await refused(gw, upstream, "GET", path, headers, 400, "bad_request")


async def test_rate_limit_after_failed_authentications(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra="limits: {failed_auth_per_minute: 3}\n" + JWT)
    _, token = await mint(gw, ["full"])
    for value in (generate("st_"), "garbage", flip(token, 10)):
        await refused(gw, upstream, "GET", PATHS["public"], bearer(value), 401, "invalid_token")
    resp, _ = await refused(
        gw, upstream, "GET", PATHS["public"], bearer(generate("st_")), 429, "rate_limited"
    )
    assert int(resp.headers["Retry-After"]) > 0
    # Once blocked, even a good credential from this address waits.
    resp, _ = await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 429, "rate_limited")
    assert int(resp.headers["Retry-After"]) > 0
    resp, _ = await refused(gw, upstream, "GET", PATHS["jwt_only"], bearer(make_jwt()), 429, "rate_limited")
    # Anonymous routes need no authentication and are not limited.
    resp = await gw.client.get("/v1/health")
    assert resp.status == 200


async def test_successes_do_not_count_towards_the_limit(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra="limits: {failed_auth_per_minute: 2}\n")
    _, token = await mint(gw, ["read"])
    for _ in range(5):
        await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))
    # Scope refusals are not failed authentications either.
    for _ in range(3):
        await refused(gw, upstream, "POST", PATHS["public"], bearer(token), 403, "insufficient_scope")
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))


async def test_rate_limit_window_is_per_minute(
    make_gateway: MakeGateway, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway(extra="limits: {failed_auth_per_minute: 3}\n")
    _, token = await mint(gw, ["read"])
    now = [1000.0]
    # The same limiter, on a clock the test moves (the real one reads time.monotonic).
    monkeypatch.setattr(gw.runtime.pipeline, "_limiter", FailedAuthLimiter(3, clock=lambda: now[0]))
    for at in (1000.0, 1050.0, 1100.0):
        now[0] = at
        await refused(gw, upstream, "GET", PATHS["public"], bearer(generate("st_")), 401, "invalid_token")
    # Failures at 0 s, 50 s and 100 s: never more than two within a minute.
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(token))


@pytest.mark.parametrize("limit", [None, 200], ids=["default-4096", "configured-200"])
async def test_over_long_authorization_is_401_and_not_echoed(
    make_gateway: MakeGateway, upstream: Upstream, limit: int | None
) -> None:
    extra = JWT + (f"limits: {{max_credential: {limit}}}\n" if limit else "")
    gw = await make_gateway(extra=extra)
    size = (limit or 4096) + 1
    marker = "Zq9" * (size // 3 + 1)
    value = ("Bearer " + marker)[:size]
    resp, body = await refused(
        gw, upstream, "GET", PATHS["public"], {"Authorization": value}, 401, "invalid_token"
    )
    text = json.dumps(body) + "".join(resp.headers.values())
    assert "Zq9Zq9" not in text


async def test_authorization_at_the_limit_is_judged_on_its_merits(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra="limits: {max_credential: 45}\n")
    _, token = await mint(gw, ["read"])
    assert len(f"Bearer {token}") == 48
    await refused(gw, upstream, "GET", PATHS["public"], bearer(token), 401, "invalid_token")
    gw2 = await make_gateway(extra="limits: {max_credential: 48}\n")
    _, token2 = await mint(gw2, ["read"])
    await allowed(gw2, upstream, "GET", PATHS["public"], bearer(token2))


JWT_ATTACKS = [
    pytest.param(lambda: unsigned_jwt("none"), id="alg-none"),
    pytest.param(lambda: unsigned_jwt("None"), id="alg-None"),
    pytest.param(lambda: unsigned_jwt("NONE"), id="alg-NONE"),
    pytest.param(lambda: make_jwt(key=OTHER_SECRET, scope="full"), id="other-secret"),
    pytest.param(lambda: make_jwt(exp_in=-120, scope="full"), id="expired"),
    pytest.param(lambda: make_jwt(exp_in=None, scope="full"), id="no-exp"),
    pytest.param(lambda: make_jwt(aud="other-api", scope="full"), id="wrong-aud"),
    pytest.param(lambda: make_jwt(aud="scopegate-api-x", scope="full"), id="aud-superstring"),
    pytest.param(lambda: make_jwt(aud=None, scope="full"), id="no-aud"),
    pytest.param(lambda: make_jwt(iss="https://evil.example/", scope="full"), id="wrong-iss"),
    pytest.param(lambda: make_jwt(iss="https://idp.example", scope="full"), id="iss-substring"),
    pytest.param(lambda: make_jwt(nbf=int(time.time()) + 600, scope="full"), id="future-nbf"),
    pytest.param(lambda: make_jwt(alg="HS384", scope="full"), id="alg-outside-allowlist"),
    pytest.param(lambda: make_jwt(headers={"jku": "https://evil.example/jwks"}, scope="full"), id="jku"),
    pytest.param(lambda: make_jwt(headers={"crit": ["exp"]}, scope="full"), id="crit"),
    pytest.param(lambda: make_jwt(sub=None, scope="full"), id="no-subject"),
    pytest.param(lambda: make_jwt(scope="full")[:-3] + "AAA", id="tampered-signature"),
]


@pytest.mark.parametrize("forge", JWT_ATTACKS)
@pytest.mark.parametrize("route", ["public", "jwt_only"])
async def test_jwt_attacks_are_401(
    make_gateway: MakeGateway, upstream: Upstream, forge: object, route: str
) -> None:
    gw = await make_gateway(extra=JWT)
    assert callable(forge)
    token = forge()
    await refused(gw, upstream, "GET", PATHS[route], bearer(token), 401, "invalid_token")
    # The genuine article passes, so the refusal above is the attack's doing.
    await allowed(gw, upstream, "GET", PATHS[route], bearer(make_jwt(scope="full")))


async def test_expired_jwt_within_leeway_is_accepted(make_gateway: MakeGateway, upstream: Upstream) -> None:
    gw = await make_gateway(extra=JWT)
    await allowed(gw, upstream, "GET", PATHS["public"], bearer(make_jwt(exp_in=-5, scope="read")))


@pytest.mark.parametrize("route", ["public", "jwt_only"])
async def test_jwt_when_no_jwt_is_configured_is_401(
    make_gateway: MakeGateway, upstream: Upstream, route: str
) -> None:
    gw = await make_gateway()
    await refused(gw, upstream, "GET", PATHS[route], bearer(make_jwt(scope="full")), 401, "invalid_token")
