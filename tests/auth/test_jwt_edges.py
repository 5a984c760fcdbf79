"""JwtAuthenticator at its edges: exact config messages, boundaries, the verified-signature cache.

Written against the survivors of a mutation run of gateway/auth/jwt.py (issue 14): each test
pins a behaviour a user relies on at the exact point where a one-character change would flip it.
Real keys, real signed JWTs and a real JWKS on a loopback socket throughout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.auth import jwt as jwt_module
from gateway.auth.jwt import MAX_JWT_BYTES, MAX_KID_CHARS, JwtAuthenticator, authenticator_for
from gateway.config import JwtConfig, load_config
from gateway.errors import ConfigError, InvalidToken

from .conftest import Keys, MakeEnv
from .jwtkit import AUD, ISS, SECRET, Clock, public_pem, sign

# --- config objects built in code: the exact refusal -------------------------------------------
# The YAML loader refuses these shapes first (with its own file:line messages); these are the
# messages a caller building a JwtConfig itself gets, pinned whole.


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"algorithms": ()}, "jwt.algorithms: empty", id="empty"),
        pytest.param({"algorithms": ("none",)}, "jwt.algorithms: 'none' is never accepted", id="none"),
        pytest.param(
            {"algorithms": ("HS256", "RS256"), "secret": SECRET},
            "jwt.algorithms: HS* cannot be mixed with public-key algorithms",
            id="mixed",
        ),
        pytest.param(
            {"algorithms": ("HS256",), "secret": "x" * 31},
            "jwt.secret: HS* algorithms need a secret of at least 32 bytes",
            id="secret-31-bytes",
        ),
        pytest.param(
            # 16 characters, 32 bytes: the bound is in bytes, so this one passes it (see below).
            {"algorithms": ("HS256",), "secret": "é" * 15},
            "jwt.secret: HS* algorithms need a secret of at least 32 bytes",
            id="secret-30-bytes-utf8",
        ),
        pytest.param(
            {"algorithms": ("HS256",), "secret": SECRET, "jwks_url": "https://idp.example/jwks"},
            "jwt: HS* algorithms take `secret`, not jwks_url or public_key_file",
            id="hs-with-jwks-url",
        ),
        pytest.param(
            {"algorithms": ("HS256",), "secret": SECRET, "public_key_file": "/nonexistent.pem"},
            "jwt: HS* algorithms take `secret`, not jwks_url or public_key_file",
            id="hs-with-key-file",
        ),
        pytest.param(
            {"algorithms": ("RS256",)},
            "jwt: public-key algorithms need exactly one of jwks_url or public_key_file",
            id="no-key-source",
        ),
    ],
)
def test_config_object_refusals_are_exact(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        JwtAuthenticator(JwtConfig(**overrides))
    assert str(info.value) == message


@pytest.mark.parametrize("secret", ["x" * 32, "é" * 16], ids=["32-ascii", "32-bytes-utf8"])
async def test_secret_of_exactly_32_bytes_is_accepted(secret: str, clock: Clock) -> None:
    auth = JwtAuthenticator(JwtConfig(algorithms=("HS256",), secret=secret, issuer=ISS, audience=AUD), clock)
    claims = {"sub": "alice", "iss": ISS, "aud": AUD, "exp": clock.now + 60}
    principal = await auth.authenticate(sign("HS256", secret.encode(), {"alg": "HS256"}, claims), None)
    assert principal is not None and principal.subject == "alice"


async def test_every_hmac_algorithm_at_once_is_a_valid_config(clock: Clock) -> None:
    secret = "s" * 64  # PyJWT wants as many bytes as HS512's digest
    cfg = JwtConfig(algorithms=("HS256", "HS384", "HS512"), secret=secret, issuer=ISS, audience=AUD)
    auth = JwtAuthenticator(cfg, clock)
    for alg in ("HS256", "HS384", "HS512"):
        claims = {"sub": alg, "iss": ISS, "aud": AUD, "exp": clock.now + 60}
        principal = await auth.authenticate(sign(alg, secret.encode(), {"alg": alg}, claims), None)
        assert principal is not None and principal.subject == alg


# --- key files: what `scopegate check` / `serve` print, file:line ------------------------------


def _config(tmp_path: Path, jwt_lines: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(f"surface: routes.yaml\n\njwt:\n{jwt_lines}")
    return str(path)


def _problem(path: str) -> str:
    with pytest.raises(ConfigError) as info:
        authenticator_for(load_config(path))
    assert len(info.value.problems) == 1
    return str(info.value.problems[0])


def test_unreadable_key_file_names_the_os_reason(tmp_path: Path) -> None:
    # The YAML loader already refuses a path that is not a regular file ("no such file"); a
    # JwtConfig built in code reaches the open() itself, and gets the OS's reason, not errno noise.
    folder = tmp_path / "keys"
    folder.mkdir()
    with pytest.raises(ValueError) as info:
        JwtAuthenticator(JwtConfig(algorithms=("RS256",), public_key_file=str(folder)))
    assert str(info.value) == f"jwt.public_key_file: cannot read {folder}: Is a directory"


def test_key_file_that_is_not_pem_is_a_config_problem(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n")
    path = _config(tmp_path, f"  algorithms: [RS256]\n  public_key_file: {junk}\n")
    assert _problem(path) == f"{path}:3: jwt.public_key_file: not a PEM public key or certificate: {junk}"


def test_key_file_that_fits_no_algorithm_is_a_config_problem(tmp_path: Path, keys: Keys) -> None:
    pem = tmp_path / "ec.pem"
    pem.write_bytes(public_pem(keys.ec))
    path = _config(tmp_path, f"  algorithms: [RS256]\n  public_key_file: {pem}\n")
    assert _problem(path) == f"{path}:3: jwt.public_key_file: the key fits none of jwt.algorithms"


def test_no_jwt_section_means_no_authenticator(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("surface: routes.yaml\n")
    assert authenticator_for(load_config(str(path))) is None


async def test_authenticator_for_keeps_the_injected_clock(tmp_path: Path, clock: Clock) -> None:
    path = _config(
        tmp_path, f"  algorithms: [HS256]\n  secret: {SECRET}\n  issuer: {ISS}\n  audience: {AUD}\n"
    )
    auth = authenticator_for(load_config(path), clock)
    assert auth is not None
    # Valid under the injected clock (2023), long expired under the wall clock.
    claims = {"sub": "alice", "iss": ISS, "aud": AUD, "exp": clock.now + 60}
    principal = await auth.authenticate(sign("HS256", SECRET.encode(), {"alg": "HS256"}, claims), None)
    assert principal is not None and principal.expires_at == clock.now + 60


@pytest.mark.parametrize(
    ("curve", "alg"), [(ec.SECP384R1(), "ES384"), (ec.SECP521R1(), "ES512")], ids=["P-384", "P-521"]
)
async def test_ec_key_file_serves_the_algorithm_of_its_curve(
    tmp_path: Path, clock: Clock, curve: ec.EllipticCurve, alg: str
) -> None:
    private = ec.generate_private_key(curve)
    pem = tmp_path / "key.pem"
    pem.write_bytes(public_pem(private))
    auth = JwtAuthenticator(
        JwtConfig(algorithms=(alg,), public_key_file=str(pem), issuer=ISS, audience=AUD), clock
    )
    claims = {"sub": "alice", "iss": ISS, "aud": AUD, "exp": clock.now + 60}
    principal = await auth.authenticate(sign(alg, private, {"alg": alg}, claims), None)
    assert principal is not None and principal.subject == "alice"


# --- size, header and time boundaries ----------------------------------------------------------


async def test_token_of_exactly_the_size_cap_is_accepted(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    base = len(env.signer.token(pad=""))
    # Each pad character adds 4/3 base64 characters; find the pad that lands exactly on the cap.
    for extra in range((MAX_JWT_BYTES - base) * 3 // 4 - 4, (MAX_JWT_BYTES - base) * 3 // 4 + 4):
        token = env.signer.token(pad="x" * extra)
        if len(token) == MAX_JWT_BYTES:
            break
    assert len(token) == MAX_JWT_BYTES
    assert await env.auth.authenticate(token, None) is not None
    with pytest.raises(InvalidToken) as info:
        await env.auth.authenticate(token + "A", None)
    assert info.value.detail == "token too large"


async def test_oversized_jwe_shape_is_refused_not_passed_on(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    jwe = ".".join(["eyJh", "", "", "A" * MAX_JWT_BYTES, "tag"])
    with pytest.raises(InvalidToken) as info:
        await env.auth.authenticate(jwe, None)
    assert info.value.detail == "token too large"


async def test_header_without_alg_is_refused(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    token = sign("HS256", SECRET.encode(), {"typ": "JWT"}, env.signer.claims())
    with pytest.raises(InvalidToken) as info:
        await env.auth.authenticate(token, None)
    assert info.value.detail == "token header has no algorithm"


@pytest.mark.parametrize("length", [1, MAX_KID_CHARS])
async def test_kid_at_its_length_bounds_is_accepted(make_env: MakeEnv, length: int) -> None:
    env = await make_env("pem-rs256")
    assert await env.auth.authenticate(env.signer.token(header={"kid": "k" * length}), None) is not None


async def test_undecodable_signature_is_malformed(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    head, body, _ = env.signer.token().split(".")
    with pytest.raises(InvalidToken) as info:
        await env.auth.authenticate(f"{head}.{body}.AAAAA", None)  # 5 base64url chars: no bytes
    assert info.value.detail == "malformed token"


async def test_times_follow_the_injected_clock_not_the_wall_clock(keys: Keys, tmp_path: Path) -> None:
    # A clock ten days ahead of the wall clock: iat and nbf "now" are in the wall clock's future.
    clock = Clock(float(int(time.time()) + 10 * 86400))
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(public_pem(keys.rsa))
    auth = JwtAuthenticator(
        JwtConfig(algorithms=("RS256",), public_key_file=str(pem), issuer=ISS, audience=AUD), clock
    )
    now = int(clock.now)
    claims = {"sub": "alice", "iss": ISS, "aud": AUD, "iat": now, "nbf": now, "exp": now + 60}
    assert await auth.authenticate(sign("RS256", keys.rsa, {"alg": "RS256"}, claims), None) is not None


@pytest.mark.parametrize("claim", ["iat", "nbf"])
async def test_iat_and_nbf_exactly_at_now_plus_leeway_are_accepted(
    make_env: MakeEnv, clock: Clock, claim: str
) -> None:
    env = await make_env("secret-hs256", leeway=30.0)
    at = int(clock.now) + 30
    assert await env.auth.authenticate(env.signer.token(**{claim: at}), None) is not None
    with pytest.raises(InvalidToken) as info:
        await env.auth.authenticate(env.signer.token(**{claim: at + 1}), None)
    assert info.value.detail == f"token {claim!r} is in the future"


# --- the verified-signature cache --------------------------------------------------------------


def count_decodes(auth: JwtAuthenticator) -> list[int]:
    """Counts signature verifications by wrapping PyJWT's decode (a third-party call)."""
    calls = [0]
    real = auth._decoder.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    auth._decoder.decode = counting  # type: ignore[method-assign]
    return calls


async def test_cache_is_keyed_by_the_credential(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    alice = await env.auth.authenticate(env.signer.token(sub="alice"), None)
    bob = await env.auth.authenticate(env.signer.token(sub="bob"), None)
    assert alice is not None and alice.subject == "alice"
    assert bob is not None and bob.subject == "bob"


async def test_a_second_use_at_the_same_instant_hits_the_cache(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    decodes = count_decodes(env.auth)
    token = env.signer.token()
    for _ in range(3):
        assert await env.auth.authenticate(token, None) is not None
    assert decodes[0] == 1


async def test_the_digest_memo_holds_only_verified_credentials_and_stays_bounded(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jwt_module, "DIGEST_MEMO", 3)
    env = await make_env("secret-hs256")
    decodes = count_decodes(env.auth)
    forged = env.signer.token(sub="mallory")[:-4] + "AAAA"
    with pytest.raises(InvalidToken):
        await env.auth.authenticate(forged, None)
    assert env.auth._digests == {}  # a credential that failed is never remembered
    tokens = [env.signer.token(sub=f"user{i}") for i in range(7)]
    for token in tokens:
        assert await env.auth.authenticate(token, None) is not None
        assert len(env.auth._digests) <= 3
    # Remembered or not, each is still its own verified entry: no further signature checks.
    for i, token in enumerate(tokens):
        principal = await env.auth.authenticate(token, None)
        assert principal is not None and principal.subject == f"user{i}"
    assert decodes[0] == 8


async def test_cached_signature_still_checks_expiry(make_env: MakeEnv, clock: Clock) -> None:
    env = await make_env("secret-hs256", leeway=0.0)
    token = env.signer.token(exp=int(clock.now) + 10)
    decodes = count_decodes(env.auth)
    first = await env.auth.authenticate(token, None)
    assert first is not None and first.expires_at == int(clock.now) + 10
    clock.advance(5)
    again = await env.auth.authenticate(token, None)
    assert again is not None and again.expires_at == int(clock.now) + 5
    clock.advance(5)  # expired, while the cached signature (60 s) is still fresh
    with pytest.raises(InvalidToken) as info:
        await env.auth.authenticate(token, None)
    assert info.value.detail == "token expired"
    assert decodes[0] == 1


async def test_refetch_that_keeps_the_keys_keeps_cached_verifications(
    make_env: MakeEnv, keys: Keys, clock: Clock
) -> None:
    # Two keys of one algorithm: a cached verification is found again by its kid and alg.
    env = await make_env("jwks-rs256", jwks_cache=300.0)
    env.jwks.publish(keys.rsa_other, "k2", "RS256")
    token = env.signer.token(exp=int(clock.now) + 3600)
    decodes = count_decodes(env.auth)
    assert await env.auth.authenticate(token, None) is not None
    clock.advance(10.0)
    unknown = sign("RS256", keys.rsa_other, env.signer.header(kid="nope"), env.signer.claims())
    with pytest.raises(InvalidToken):
        await env.auth.authenticate(unknown, None)  # makes the gateway refetch the same set
    assert env.jwks.requests == 2
    assert await env.auth.authenticate(token, None) is not None
    assert decodes[0] == 1  # the first verification still stands


async def test_refetch_drops_only_the_withdrawn_keys_verifications(
    make_env: MakeEnv, keys: Keys, clock: Clock
) -> None:
    env = await make_env("jwks-rs256", jwks_cache=300.0)
    env.jwks.publish(keys.rsa_other, "k2", "RS256")
    exp = int(clock.now) + 3600
    withdrawn = sign("RS256", keys.rsa_other, env.signer.header(kid="k2"), env.signer.claims(exp=exp))
    kept = env.signer.token(exp=exp)
    decodes = count_decodes(env.auth)
    assert await env.auth.authenticate(withdrawn, None) is not None  # cached first
    assert await env.auth.authenticate(kept, None) is not None
    del env.jwks.keys[1]  # the identity provider withdraws k2
    clock.advance(10.0)
    unknown = sign("RS256", keys.rsa_other, env.signer.header(kid="nope"), env.signer.claims())
    with pytest.raises(InvalidToken):
        await env.auth.authenticate(unknown, None)
    assert env.jwks.requests == 2
    assert await env.auth.authenticate(kept, None) is not None
    assert decodes[0] == 2
    with pytest.raises(InvalidToken):
        await env.auth.authenticate(withdrawn, None)
