"""The JWKS key source, against a real key-set server on loopback that counts its requests."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest

from gateway.auth.jwt import JwtAuthenticator
from gateway.config import JwtConfig
from gateway.errors import InvalidToken, JwksUnavailable

from .conftest import Keys, MakeEnv
from .jwtkit import AUD, ISS, Clock, JwksServer, sign

CACHE = 300.0  # JwtConfig.jwks_cache default
REFETCH = 10.0  # JwtConfig.jwks_refetch_interval default
NO_KEY = "no key matches the token's kid and algorithm"


async def break_jwks(jwks: JwksServer, how: str) -> None:
    if how == "http-500":
        jwks.status = 500
    elif how == "http-404":
        jwks.status = 404
    elif how == "not-json":
        jwks.raw = b"<html>maintenance</html>"
    elif how == "not-a-key-set":
        jwks.raw = b'{"keys": "none"}'
    elif how == "duplicate-keys":
        jwks.raw = b'{"keys": [], "keys": []}'
    elif how in ("too-large", "too-large-chunked"):
        # Holds the key, so only the size cap refuses it.
        document = {"keys": jwks.keys, "pad": "x" * (600 * 1024)}
        jwks.raw, jwks.chunked = json.dumps(document).encode(), how == "too-large-chunked"
    elif how == "connection-refused":
        await jwks.stop()
    else:
        raise AssertionError(how)


BREAKAGES = [
    "http-500",
    "http-404",
    "not-json",
    "not-a-key-set",
    "duplicate-keys",
    "too-large",
    "too-large-chunked",
    "connection-refused",
]


async def test_key_set_is_fetched_once_and_cached(make_env: MakeEnv, clock: Clock) -> None:
    env = await make_env("jwks-rs256")
    for _ in range(5):
        assert await env.auth.authenticate(env.signer.token(), None) is not None
        clock.advance(CACHE / 10)
    assert env.jwks.requests == 1


async def test_key_set_is_refetched_when_the_cache_expires(make_env: MakeEnv, clock: Clock) -> None:
    env = await make_env("jwks-rs256")
    assert await env.auth.authenticate(env.signer.token(), None) is not None
    clock.advance(CACHE + 1)
    assert await env.auth.authenticate(env.signer.token(), None) is not None
    assert env.jwks.requests == 2


async def test_unknown_kid_flood_is_bounded_by_the_refetch_interval(make_env: MakeEnv, clock: Clock) -> None:
    env = await make_env("jwks-rs256")
    assert await env.auth.authenticate(env.signer.token(), None) is not None
    for round_ in range(3):
        for _ in range(100):
            token = env.signer.token(header={"kid": secrets.token_urlsafe(12)})
            with pytest.raises(InvalidToken) as info:
                await env.auth.authenticate(token, None)
            assert info.value.detail == NO_KEY
        # SECURITY: at most one refetch per interval, however many random kids arrive.
        assert env.jwks.requests == 1 + round_
        clock.advance(REFETCH)
    # Known keys are still served from the cache throughout.
    assert await env.auth.authenticate(env.signer.token(), None) is not None


async def test_concurrent_unknown_kids_share_one_fetch(make_env: MakeEnv) -> None:
    env = await make_env("jwks-rs256")
    env.jwks.delay = 0.05
    tokens = [env.signer.token(header={"kid": secrets.token_urlsafe(12)}) for _ in range(50)]
    results = await asyncio.gather(*(env.auth.authenticate(t, None) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, InvalidToken) for r in results)
    assert env.jwks.requests == 1


async def test_cold_start_stampede_makes_one_fetch(make_env: MakeEnv) -> None:
    env = await make_env("jwks-rs256")
    env.jwks.delay = 0.05
    results = await asyncio.gather(*(env.auth.authenticate(env.signer.token(), None) for _ in range(50)))
    assert all(r is not None and r.subject == "alice" for r in results)
    assert env.jwks.requests == 1


async def test_key_rotation_new_kid_is_fetched_once(make_env: MakeEnv, keys: Keys, clock: Clock) -> None:
    env = await make_env("jwks-rs256")
    assert await env.auth.authenticate(env.signer.token(), None) is not None
    env.jwks.publish(keys.rsa_other, "k2", "RS256")
    rotated = sign("RS256", keys.rsa_other, env.signer.header(kid="k2"), env.signer.claims())
    clock.advance(REFETCH)
    principal = await env.auth.authenticate(rotated, None)
    assert principal is not None and env.jwks.requests == 2
    for _ in range(3):
        assert await env.auth.authenticate(rotated, None) is not None
        assert await env.auth.authenticate(env.signer.token(), None) is not None
    assert env.jwks.requests == 2


async def test_rotated_in_key_waits_for_the_refetch_interval(
    make_env: MakeEnv, keys: Keys, clock: Clock
) -> None:
    env = await make_env("jwks-rs256")
    assert await env.auth.authenticate(env.signer.token(), None) is not None
    env.jwks.publish(keys.rsa_other, "k2", "RS256")
    rotated = sign("RS256", keys.rsa_other, env.signer.header(kid="k2"), env.signer.claims())
    with pytest.raises(InvalidToken):
        await env.auth.authenticate(rotated, None)
    assert env.jwks.requests == 1
    clock.advance(REFETCH)
    assert await env.auth.authenticate(rotated, None) is not None
    assert env.jwks.requests == 2


async def test_removed_key_is_refused_after_refetch(make_env: MakeEnv, keys: Keys, clock: Clock) -> None:
    env = await make_env("jwks-rs256")
    token = env.signer.token()
    assert await env.auth.authenticate(token, None) is not None
    env.jwks.keys.clear()
    env.jwks.publish(keys.rsa_other, "k2", "RS256")
    clock.advance(CACHE + 1)
    with pytest.raises(InvalidToken) as info:
        await env.auth.authenticate(token, None)
    assert info.value.detail == NO_KEY
    assert env.jwks.requests == 2


@pytest.mark.parametrize("how", BREAKAGES)
async def test_jwks_down_with_cached_key_uses_it(make_env: MakeEnv, clock: Clock, how: str) -> None:
    env = await make_env("jwks-rs256")
    assert await env.auth.authenticate(env.signer.token(), None) is not None
    await break_jwks(env.jwks, how)
    clock.advance(CACHE + 1)
    principal = await env.auth.authenticate(env.signer.token(), None)
    assert principal is not None
    if how != "connection-refused":
        assert env.jwks.requests == 2  # it did try


@pytest.mark.parametrize("how", BREAKAGES)
async def test_jwks_down_without_cached_key_is_unavailable(make_env: MakeEnv, how: str) -> None:
    env = await make_env("jwks-rs256")
    await break_jwks(env.jwks, how)
    with pytest.raises(JwksUnavailable) as info:
        await env.auth.authenticate(env.signer.token(), None)
    assert info.value.status == 503 and info.value.code == "jwks_unavailable"


async def test_jwks_down_and_unknown_kid_is_unavailable(make_env: MakeEnv, keys: Keys, clock: Clock) -> None:
    env = await make_env("jwks-rs256")
    assert await env.auth.authenticate(env.signer.token(), None) is not None
    env.jwks.status = 500
    clock.advance(REFETCH)
    rotated = sign("RS256", keys.rsa_other, env.signer.header(kid="k2"), env.signer.claims())
    with pytest.raises(JwksUnavailable):
        await env.auth.authenticate(rotated, None)
    # Known keys keep working from the last good set.
    assert await env.auth.authenticate(env.signer.token(), None) is not None


async def test_failed_fetch_is_not_retried_within_the_interval(make_env: MakeEnv, clock: Clock) -> None:
    env = await make_env("jwks-rs256")
    env.jwks.status = 500
    for _ in range(20):
        with pytest.raises(JwksUnavailable):
            await env.auth.authenticate(env.signer.token(), None)
    assert env.jwks.requests == 1
    env.jwks.status = 200
    clock.advance(REFETCH)
    assert await env.auth.authenticate(env.signer.token(), None) is not None
    assert env.jwks.requests == 2


async def test_redirects_are_not_followed(jwks: JwksServer, keys: Keys, clock: Clock) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    cfg = JwtConfig(algorithms=("RS256",), jwks_url=jwks.url.with_path("/moved"), issuer=ISS, audience=AUD)
    token = sign(
        "RS256",
        keys.rsa,
        {"alg": "RS256", "kid": "k1"},
        {"sub": "x", "iss": ISS, "aud": AUD, "exp": clock.now + 60},
    )
    async with JwtAuthenticator(cfg, clock=clock) as auth:
        with pytest.raises(JwksUnavailable):
            await auth.authenticate(token, None)
    assert jwks.requests == 1  # the redirect itself, never its target


@pytest.mark.parametrize(
    ("publish", "alg"),
    [
        pytest.param({"key": "rsa", "alg": "RS512"}, "RS256", id="declared-alg-outside-allowlist"),
        pytest.param({"key": "rsa", "alg": "RS256", "use": "enc"}, "RS256", id="use-enc"),
        pytest.param({"key": "ec", "alg": None}, "RS256", id="ec-key-under-rs256"),
        pytest.param({"key": "ec384", "alg": None}, "ES256", id="p384-key-under-es256"),
        pytest.param({"key": "ec384", "alg": "ES256"}, "ES256", id="p384-key-declared-es256"),
        pytest.param({"key": "rsa", "alg": "HS256"}, "RS256", id="rsa-key-declared-hs256"),
    ],
)
async def test_keys_that_do_not_fit_the_allowlist_are_ignored(
    jwks: JwksServer, keys: Keys, clock: Clock, publish: dict[str, Any], alg: str
) -> None:
    # The parameter dict is shared by every run of the test (mutmut runs it more than once).
    extra = {k: v for k, v in publish.items() if k != "key"}
    private = getattr(keys, publish["key"])
    jwks.publish(private, "k1", **extra)
    cfg = JwtConfig(algorithms=(alg,), jwks_url=jwks.url, issuer=ISS, audience=AUD)
    signing_key = keys.rsa if alg.startswith("RS") else private
    token = sign(
        alg,
        signing_key,
        {"alg": alg, "kid": "k1"},
        {"sub": "x", "iss": ISS, "aud": AUD, "exp": clock.now + 60},
    )
    async with JwtAuthenticator(cfg, clock=clock) as auth:
        with pytest.raises(InvalidToken) as info:
            await auth.authenticate(token, None)
    assert info.value.detail == NO_KEY


async def test_key_without_alg_serves_every_allowed_algorithm_of_its_type(
    jwks: JwksServer, keys: Keys, clock: Clock
) -> None:
    jwks.publish(keys.rsa, "k1", None)
    jwks.keys.append({"kty": "oct", "kid": "junk", "k": "c2VjcmV0"})
    jwks.keys.append({"kty": "RSA", "kid": "broken", "n": "AQAB"})
    jwks.keys.append("not a key")  # type: ignore[arg-type]
    cfg = JwtConfig(algorithms=("RS256", "PS256"), jwks_url=jwks.url, issuer=ISS, audience=AUD)
    async with JwtAuthenticator(cfg, clock=clock) as auth:
        for alg in ("RS256", "PS256"):
            token = sign(
                alg,
                keys.rsa,
                {"alg": alg, "kid": "k1"},
                {"sub": "x", "iss": ISS, "aud": AUD, "exp": clock.now + 60},
            )
            assert await auth.authenticate(token, None) is not None


@pytest.mark.parametrize(("published", "accepted"), [(1, True), (2, False)], ids=["one-key", "two-keys"])
async def test_token_without_kid_needs_an_unambiguous_key_set(
    jwks: JwksServer, keys: Keys, clock: Clock, published: int, accepted: bool
) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    if published == 2:
        jwks.publish(keys.rsa_other, "k2", "RS256")
    cfg = JwtConfig(algorithms=("RS256",), jwks_url=jwks.url, issuer=ISS, audience=AUD)
    token = sign(
        "RS256", keys.rsa, {"alg": "RS256"}, {"sub": "x", "iss": ISS, "aud": AUD, "exp": clock.now + 60}
    )
    async with JwtAuthenticator(cfg, clock=clock) as auth:
        if accepted:
            assert await auth.authenticate(token, None) is not None
        else:
            with pytest.raises(InvalidToken):
                await auth.authenticate(token, None)


async def test_authenticate_before_start_is_a_programming_error(jwks: JwksServer, keys: Keys) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    auth = JwtAuthenticator(JwtConfig(algorithms=("RS256",), jwks_url=jwks.url))
    token = sign("RS256", keys.rsa, {"alg": "RS256", "kid": "k1"}, {"sub": "x", "exp": 9e9})
    with pytest.raises(RuntimeError, match="start"):
        await auth.authenticate(token, None)
    await auth.close()
    assert jwks.requests == 0


# --- the verified-signature cache and a withdrawn key (issue 8, item 2) ----------------------


async def first_refusal(env: Any, token: str, clock: Clock, *, step: float, limit: float) -> float:
    """Use `token` every `step` seconds of the controlled clock; the time of its first refusal."""
    start = clock.now
    while clock.now - start <= limit:
        try:
            await env.auth.authenticate(token, None)
        except InvalidToken:
            return clock.now - start
        clock.advance(step)
    raise AssertionError(f"still accepted {limit} s after the key was withdrawn")


@pytest.mark.parametrize("cache", [5.0, 30.0, 120.0])
async def test_withdrawn_key_is_refused_within_the_bound_however_often_used(
    make_env: MakeEnv, keys: Keys, clock: Clock, cache: float
) -> None:
    env = await make_env("jwks-rs256", jwks_cache=cache, jwks_refetch_interval=1.0)
    token = env.signer.token(exp=int(clock.now) + 3600)
    assert await env.auth.authenticate(token, None) is not None
    # Rotate: the set now holds only key B.
    env.jwks.keys.clear()
    env.jwks.publish(keys.rsa_other, "k2", "RS256")
    # A use every second must not keep the cached verification alive.
    took = await first_refusal(env, token, clock, step=1.0, limit=10 * cache)
    assert took <= cache


async def test_refetched_set_drops_cached_verifications_at_once(
    make_env: MakeEnv, keys: Keys, clock: Clock
) -> None:
    env = await make_env("jwks-rs256", jwks_cache=300.0)
    token = env.signer.token(exp=int(clock.now) + 3600)
    assert await env.auth.authenticate(token, None) is not None
    env.jwks.keys.clear()
    env.jwks.publish(keys.rsa_other, "k2", "RS256")
    clock.advance(REFETCH)
    # A token signed with the new key makes the gateway refetch; the set no longer holds k1.
    rotated = sign("RS256", keys.rsa_other, env.signer.header(kid="k2"), env.signer.claims())
    assert await env.auth.authenticate(rotated, None) is not None
    assert env.jwks.requests == 2
    with pytest.raises(InvalidToken) as info:
        await env.auth.authenticate(token, None)
    assert info.value.detail == NO_KEY


async def test_kid_reused_for_another_key_drops_cached_verifications(
    make_env: MakeEnv, keys: Keys, clock: Clock
) -> None:
    env = await make_env("jwks-rs256", jwks_cache=300.0)
    token = env.signer.token(exp=int(clock.now) + 3600)
    assert await env.auth.authenticate(token, None) is not None
    # The same kid now names another key; the old signature no longer verifies.
    env.jwks.keys.clear()
    env.jwks.publish(keys.rsa_other, "k1", "RS256")
    clock.advance(REFETCH)
    unknown = sign("RS256", keys.rsa_other, env.signer.header(kid="nope"), env.signer.claims())
    with pytest.raises(InvalidToken):
        await env.auth.authenticate(unknown, None)  # triggers the refetch
    assert env.jwks.requests == 2
    with pytest.raises(InvalidToken) as info:
        await env.auth.authenticate(token, None)
    assert info.value.detail == "signature verification failed"


@pytest.mark.parametrize(("cache", "age"), [(300.0, 60.0), (20.0, 20.0)])
async def test_cached_verification_has_an_absolute_age(
    make_env: MakeEnv, clock: Clock, cache: float, age: float
) -> None:
    # Observed through PyJWT's decode (a third-party call): a hit never restarts the age.
    env = await make_env("jwks-rs256", jwks_cache=cache)
    decodes = 0
    real = env.auth._decoder.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal decodes
        decodes += 1
        return real(*args, **kwargs)

    env.auth._decoder.decode = counting  # type: ignore[method-assign]
    token = env.signer.token(exp=int(clock.now) + 3600)
    start = clock.now
    assert await env.auth.authenticate(token, None) is not None
    while clock.now - start < age - 1:
        clock.advance(1.0)
        assert await env.auth.authenticate(token, None) is not None
    assert decodes == 1
    clock.advance(1.0)
    assert await env.auth.authenticate(token, None) is not None
    assert decodes == 2


async def test_clock_stepping_back_does_not_extend_a_cached_verification(
    make_env: MakeEnv, keys: Keys, clock: Clock
) -> None:
    env = await make_env("jwks-rs256", jwks_cache=5.0, jwks_refetch_interval=1.0)
    token = env.signer.token(exp=int(clock.now) + 3600)
    assert await env.auth.authenticate(token, None) is not None
    env.jwks.keys.clear()
    env.jwks.publish(keys.rsa_other, "k2", "RS256")
    clock.advance(-100)
    clock.advance(5.0)  # the set's fetch time now lies ahead: not fresh, refetched
    with pytest.raises(InvalidToken):
        await env.auth.authenticate(token, None)


# --- jwt.jwks_max_stale (issue 9, item 3) ------------------------------------------------------


async def test_outage_is_bounded_by_jwks_max_stale(make_env: MakeEnv, clock: Clock) -> None:
    env = await make_env("jwks-rs256", jwks_cache=CACHE, jwks_max_stale=600.0)
    token = env.signer.token(exp=int(clock.now) + 7200)
    start = clock.now
    assert await env.auth.authenticate(token, None) is not None
    env.jwks.status = 503
    # Used every 30 s: the last good set serves while younger than jwks_max_stale...
    while clock.now - start < 600 - 30:
        clock.advance(30)
        assert await env.auth.authenticate(token, None) is not None
        assert env.auth.jwks is not None and env.auth.jwks.age() == clock.now - start
    # ...and not a moment longer, cached verification or not.
    clock.advance(30)
    with pytest.raises(JwksUnavailable) as info:
        await env.auth.authenticate(token, None)
    assert info.value.status == 503 and "jwks_max_stale" in info.value.detail
    # Back by itself once the endpoint answers again.
    env.jwks.status = 200
    clock.advance(REFETCH)
    assert await env.auth.authenticate(token, None) is not None
    assert env.auth.jwks is not None and env.auth.jwks.age() == 0


async def test_age_is_infinite_before_the_first_fetch(make_env: MakeEnv) -> None:
    env = await make_env("jwks-rs256")
    assert env.auth.jwks is not None and env.auth.jwks.age() == float("inf")
    assert await env.auth.authenticate(env.signer.token(), None) is not None
    assert env.auth.jwks.age() == 0
