"""The JWKS key source at its edges: which published keys count, exact boundaries, the fetch itself.

Written against the survivors of a mutation run of gateway/auth/jwks.py (issue 14): each test
pins a behaviour at the point where a one-character change would flip it. A real key-set server
on a loopback socket and real signed JWTs throughout; the source is driven directly where the
authenticator above it would hide the boundary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from yarl import URL

import gateway.auth.jwks as jwks_module
from gateway.auth.jwks import MAX_JWKS_BYTES, JwksKeySource, parse_jwks, usable_algorithms
from gateway.auth.jwt import JwtAuthenticator
from gateway.config import JwtConfig
from gateway.errors import InvalidToken, JwksUnavailable

from .conftest import Keys
from .jwtkit import AUD, ISS, Clock, JwksServer, jwk_of, sign

CACHE = 300.0
REFETCH = 10.0
MAX_STALE = 3600.0
NO_KEY = "no key matches the token's kid and algorithm"

MakeSource = Callable[..., Awaitable[JwksKeySource]]


@pytest.fixture
async def make_source(jwks: JwksServer, clock: Clock) -> AsyncIterator[MakeSource]:
    """make_source(url=None, cache=CACHE, algs=RS256, ...): a started source on the loopback server."""
    made: list[JwksKeySource] = []

    async def make(
        url: URL | None = None, cache: float = CACHE, algs: tuple[str, ...] = ("RS256",), **kwargs: Any
    ) -> JwksKeySource:
        kwargs.setdefault("max_stale", MAX_STALE)
        source = JwksKeySource(url or jwks.url, algs, cache, REFETCH, clock, **kwargs)
        await source.start()
        made.append(source)
        return source

    yield make
    for source in made:
        await source.close()


# --- which published keys count ------------------------------------------------------------------


def test_a_key_published_for_signatures_is_used(keys: Keys) -> None:
    jwk = jwk_of(keys.rsa, "k1", "RS256", use="sig")
    assert usable_algorithms(jwk, frozenset({"RS256"})) == {"RS256"}
    assert set(parse_jwks({"keys": [jwk]}, frozenset({"RS256"}))) == {"k1"}


@pytest.mark.parametrize(
    ("crv", "allowed", "usable"),
    [
        ("P-256", {"ES256", "ES384", "ES512"}, {"ES256"}),
        ("P-384", {"ES256", "ES384", "ES512"}, {"ES384"}),
        ("P-521", {"ES256", "ES384", "ES512"}, {"ES512"}),
        ("P-384", {"ES256", "RS256"}, set()),
        ("secp256k1", {"ES256", "ES384", "ES512"}, set()),
    ],
)
def test_an_ec_key_verifies_only_the_algorithm_of_its_curve(
    crv: str, allowed: set[str], usable: set[str]
) -> None:
    assert usable_algorithms({"kty": "EC", "crv": crv}, frozenset(allowed)) == usable


@pytest.mark.parametrize(
    ("jwk", "usable"),
    [
        pytest.param({"kty": "OKP", "crv": "Ed25519"}, {"EdDSA"}, id="ed25519"),
        pytest.param({"kty": "OKP", "crv": "Ed448"}, {"EdDSA"}, id="ed448"),
        pytest.param({"kty": "OKP", "crv": "X25519"}, set(), id="x25519-is-for-key-agreement"),
        pytest.param({"kty": "RSA", "alg": ["RS256"]}, set(), id="alg-not-a-string"),
        pytest.param({"kty": "RSA", "alg": "PS256"}, {"PS256"}, id="alg-binds-the-key"),
        pytest.param({"kty": "RSA"}, {"RS256", "PS256"}, id="no-alg-all-allowed-of-its-family"),
        pytest.param({"kty": "RSA", "use": "enc"}, set(), id="use-enc"),
        pytest.param({"kty": "oct", "alg": "RS256"}, set(), id="symmetric"),
    ],
)
def test_usable_algorithms_of_a_published_key(jwk: dict[str, Any], usable: set[str]) -> None:
    assert usable_algorithms(jwk, frozenset({"RS256", "PS256", "EdDSA", "ES256"})) == usable


async def test_an_ed25519_key_set_verifies_eddsa_tokens(jwks: JwksServer, keys: Keys, clock: Clock) -> None:
    jwks.publish(keys.ed, "ed1", None)
    cfg = JwtConfig(algorithms=("EdDSA",), jwks_url=jwks.url, issuer=ISS, audience=AUD)
    token = sign(
        "EdDSA",
        keys.ed,
        {"alg": "EdDSA", "kid": "ed1"},
        {"sub": "ed", "iss": ISS, "aud": AUD, "exp": clock.now + 60},
    )
    async with JwtAuthenticator(cfg, clock=clock) as auth:
        principal = await auth.authenticate(token, None)
    assert principal is not None and principal.subject == "ed"


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param("not a key", id="not-an-object"),
        pytest.param({"kty": "RSA", "kid": 7, "n": "AQAB", "e": "AQAB"}, id="kid-not-a-string"),
        pytest.param({"kty": "RSA", "kid": "broken", "n": "AQAB"}, id="unloadable"),
    ],
)
def test_a_skipped_entry_does_not_hide_the_keys_after_it(keys: Keys, junk: Any) -> None:
    good = jwk_of(keys.rsa, "k1", "RS256")
    table = parse_jwks({"keys": [junk, good]}, frozenset({"RS256"}))
    assert list(table) == ["k1"] and list(table["k1"]) == ["RS256"]


def test_a_key_without_a_kid_is_kept_under_none(keys: Keys) -> None:
    table = parse_jwks({"keys": [jwk_of(keys.rsa, None, None)]}, frozenset({"RS256", "PS256"}))
    assert list(table) == [None] and list(table[None]) == ["PS256", "RS256"]


def test_the_first_of_two_keys_under_one_kid_and_algorithm_wins(keys: Keys) -> None:
    first, second = jwk_of(keys.rsa, "k1", "RS256"), jwk_of(keys.rsa_other, "k1", "RS256")
    table = parse_jwks({"keys": [first, second]}, frozenset({"RS256"}))
    assert table["k1"]["RS256"].key.public_numbers() == keys.rsa.public_key().public_numbers()


@pytest.mark.parametrize("document", [[], {"keys": {}}, {"key": []}, "keys"])
def test_a_document_that_is_not_a_key_set_is_refused(document: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_jwks(document, frozenset({"RS256"}))
    assert str(info.value) == "not a JWK set: expected an object with a `keys` list"


# --- the fetch -------------------------------------------------------------------------------------


async def test_the_fetch_asks_for_json(make_source: MakeSource, jwks: JwksServer, keys: Keys) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    source = await make_source()
    await source.key_for("k1", "RS256")
    # (media types are case-insensitive)
    assert [a.lower() if a else a for a in jwks.accept] == ["application/json"]


async def test_a_key_set_endpoint_slower_than_the_fetch_timeout_is_unavailable(
    make_source: MakeSource, jwks: JwksServer, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jwks_module, "FETCH_TIMEOUT", 0.2)
    jwks.publish(keys.rsa, "k1", "RS256")
    jwks.delay = 1.0
    source = await make_source()
    with pytest.raises(JwksUnavailable) as info:
        await source.key_for("k1", "RS256")
    assert info.value.detail == "the key set cannot be fetched"


async def test_a_closed_source_can_be_started_again(
    make_source: MakeSource, jwks: JwksServer, keys: Keys
) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    source = await make_source()
    await source.close()
    await source.close()  # twice is harmless
    await source.start()
    assert (await source.key_for("k1", "RS256")).key_id == "k1"
    assert jwks.requests == 1


async def test_a_key_set_of_exactly_the_size_cap_is_read(
    make_source: MakeSource, jwks: JwksServer, keys: Keys
) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    body = json.dumps({"keys": jwks.keys, "pad": ""}).encode()
    jwks.raw = json.dumps({"keys": jwks.keys, "pad": "x" * (MAX_JWKS_BYTES - len(body))}).encode()
    jwks.chunked = True
    assert len(jwks.raw) == MAX_JWKS_BYTES
    source = await make_source()
    assert (await source.key_for("k1", "RS256")).key_id == "k1"
    # One byte more is refused.
    jwks.raw += b" "
    source = await make_source()
    with pytest.raises(JwksUnavailable):
        await source.key_for("k1", "RS256")


async def test_a_key_set_read_in_many_chunks_is_joined_exactly(
    make_source: MakeSource, jwks: JwksServer, keys: Keys
) -> None:
    # About 160 KiB of distinct kids over the same key: every byte of the body is key material or
    # JSON structure, so the chunks must be joined exactly for every kid to come back intact.
    for i in range(360):
        jwks.publish(keys.rsa, f"k{i:03}", "RS256")
    jwks.raw = json.dumps({"keys": jwks.keys}).encode()
    jwks.chunked = True
    assert len(jwks.raw) > 2 * 64 * 1024
    source = await make_source()
    await source.key_for("k000", "RS256")
    numbers = keys.rsa.public_key().public_numbers()
    for i in range(360):
        key = source.find(f"k{i:03}", "RS256")
        assert key is not None and key.key.public_numbers() == numbers


async def test_fetching_before_start_names_the_mistake(jwks: JwksServer, clock: Clock) -> None:
    source = JwksKeySource(jwks.url, ("RS256",), CACHE, REFETCH, clock)
    with pytest.raises(RuntimeError) as info:
        await source.key_for("k1", "RS256")
    assert str(info.value) == "JwksKeySource.start() was not awaited"
    assert jwks.requests == 0


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("status", "HTTP 500"),
        ("duplicate", "duplicate key in JWK set"),
        ("not-a-set", "not a JWK set: expected an object with a `keys` list"),
        ("too-large", "key set too large"),
        ("timeout", "TimeoutError"),  # an exception without a message: its type
    ],
)
async def test_a_failed_fetch_is_logged_without_the_urls_credentials(
    make_source: MakeSource,
    jwks: JwksServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    reason: str,
) -> None:
    if how == "status":
        jwks.status = 500
    elif how == "duplicate":
        jwks.raw = b'{"keys": [], "keys": []}'
    elif how == "not-a-set":
        jwks.raw = b"[]"
    elif how == "too-large":
        jwks.raw = b" " * (MAX_JWKS_BYTES + 1)
    else:
        monkeypatch.setattr(jwks_module, "FETCH_TIMEOUT", 0.1)
        jwks.delay = 0.5
    url = jwks.url.with_user("idp-user").with_password("idp-secret")
    source = await make_source(url=url)
    with caplog.at_level(logging.WARNING, logger="gateway.auth.jwks"), pytest.raises(JwksUnavailable):
        await source.key_for("k1", "RS256")
    assert [r.getMessage() for r in caplog.records] == [f"jwks fetch from {jwks.url} failed: {reason}"]
    assert "idp-secret" not in caplog.text and "idp-user" not in caplog.text


async def test_a_successful_fetch_is_reported_each_time(
    make_source: MakeSource, jwks: JwksServer, keys: Keys, clock: Clock
) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    seen: list[float] = []
    source = await make_source(on_refresh=lambda s: seen.append(s.age()))
    await source.key_for("k1", "RS256")
    jwks.status = 500
    clock.advance(CACHE)
    await source.key_for("k1", "RS256")  # a failed refetch: the last good set, not reported
    jwks.status = 200
    clock.advance(REFETCH)
    await source.key_for("k1", "RS256")
    assert seen == [0.0, 0.0] and jwks.requests == 3


# --- the clock: freshness, the last good set, the refetch budget ------------------------------


async def test_the_set_is_refetched_at_exactly_its_cache_lifetime(
    make_source: MakeSource, jwks: JwksServer, keys: Keys, clock: Clock
) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    source = await make_source()
    await source.key_for("k1", "RS256")
    clock.advance(CACHE - 0.5)
    await source.key_for("k1", "RS256")
    assert jwks.requests == 1 and source.trusted_until() == clock.now + 0.5
    clock.advance(0.5)
    assert source.trusted_until() == clock.now - CACHE + MAX_STALE  # stale: max_stale now bounds it
    await source.key_for("k1", "RS256")
    assert jwks.requests == 2 and source.age() == 0.0


async def test_the_last_good_set_serves_until_exactly_max_stale(
    make_source: MakeSource, jwks: JwksServer, keys: Keys, clock: Clock
) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    source = await make_source(cache=50.0, max_stale=100.0)
    fetched = clock.now
    await source.key_for("k1", "RS256")
    assert source.trusted_until() == fetched + 50.0
    jwks.status = 503
    clock.advance(100.0 - REFETCH)
    assert (await source.key_for("k1", "RS256")).key_id == "k1"
    assert source.trusted_until() == fetched + 100.0
    clock.advance(REFETCH)
    with pytest.raises(JwksUnavailable) as info:
        await source.key_for("k1", "RS256")
    assert info.value.detail == "the key set cannot be refetched and is older than jwt.jwks_max_stale"
    assert jwks.requests == 3


async def test_nothing_is_trusted_before_the_first_fetch(make_source: MakeSource) -> None:
    source = await make_source()
    assert source.trusted_until() == -math.inf and source.age() == math.inf
    assert source.find("k1", "RS256") is None


async def test_a_clock_stepped_back_makes_the_set_stale_and_allows_a_refetch(
    make_source: MakeSource, jwks: JwksServer, keys: Keys, clock: Clock
) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    source = await make_source()
    await source.key_for("k1", "RS256")
    clock.advance(-1.0)
    # Fetched "in the future": not fresh, age 0 (never negative), and the refetch budget is open.
    assert source.age() == 0.0 and source.trusted_until() == clock.now + 1.0 + MAX_STALE
    await source.key_for("k1", "RS256")
    assert jwks.requests == 2


async def test_after_a_failed_fetch_a_clock_stepped_back_allows_a_retry(
    make_source: MakeSource, jwks: JwksServer, keys: Keys, clock: Clock
) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    jwks.status = 500
    source = await make_source()
    with pytest.raises(JwksUnavailable):
        await source.key_for("k1", "RS256")
    jwks.status = 200
    clock.advance(-0.5)
    assert (await source.key_for("k1", "RS256")).key_id == "k1"
    assert jwks.requests == 2


async def test_a_last_good_set_fetched_in_the_future_is_not_served(
    make_source: MakeSource, jwks: JwksServer, keys: Keys, clock: Clock
) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    source = await make_source()
    await source.key_for("k1", "RS256")
    jwks.status = 500
    clock.advance(-1.0)
    # SECURITY: a set whose age cannot be told is neither fresh nor within max_stale.
    with pytest.raises(JwksUnavailable):
        await source.key_for("k1", "RS256")
    assert jwks.requests == 2


async def test_a_token_without_kid_picks_the_one_key_of_its_algorithm(
    make_source: MakeSource, jwks: JwksServer, keys: Keys
) -> None:
    # Two keys, but only one serves RS256: unambiguous for RS256.
    jwks.publish(keys.rsa, "k1", "RS256")
    jwks.publish(keys.rsa_other, "k2", "PS256")
    source = await make_source(algs=("RS256", "PS256"))
    assert (await source.key_for(None, "RS256")).key_id == "k1"
    assert (await source.key_for(None, "PS256")).key_id == "k2"
    assert source.find(None, "RS256") is source.find("k1", "RS256")


async def test_a_known_key_is_served_while_a_refetch_is_in_flight(
    make_source: MakeSource, jwks: JwksServer, keys: Keys, clock: Clock
) -> None:
    # An unknown kid makes a slow refetch; a token with a known kid does not wait behind it.
    jwks.publish(keys.rsa, "k1", "RS256")
    source = await make_source()
    await source.key_for("k1", "RS256")
    clock.advance(REFETCH)
    jwks.delay = 0.3
    unknown = asyncio.ensure_future(source.key_for("nope", "RS256"))
    while jwks.requests < 2:
        await asyncio.sleep(0.01)
    assert (await source.key_for("k1", "RS256")).key_id == "k1"
    assert not unknown.done()  # still fetching: the known key did not take the lock
    with pytest.raises(InvalidToken):
        await unknown


async def test_a_sub_second_cache_serves_the_last_good_set_between_refetches(
    make_source: MakeSource, jwks: JwksServer, keys: Keys, clock: Clock
) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    source = await make_source(cache=0.5)
    await source.key_for("k1", "RS256")
    clock.advance(0.7)  # stale, and the refetch budget (10 s) is spent: the last good set serves
    assert (await source.key_for("k1", "RS256")).key_id == "k1"
    assert jwks.requests == 1
