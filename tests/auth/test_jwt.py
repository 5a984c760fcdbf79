"""JwtAuthenticator: verification, hostile tokens and the claims -> Principal mapping.

Refusal tests pin the detail string, so each one fails if the check it targets is removed, even
where a later layer (PyJWT) would also refuse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth.jwt import JwtAuthenticator
from gateway.config import JwtConfig
from gateway.errors import InvalidToken, TargetDenied

from .conftest import Keys, MakeEnv
from .jwtkit import AUD, DROP, ISS, SECRET, Clock, b64url, jwk_of, public_pem, sign

BAD_HEADER = "malformed token header"
ALL_KINDS = [
    "jwks-rs256",
    "jwks-es256",
    "pem-rs256",
    "pem-ps256",
    "pem-es256",
    "pem-eddsa",
    "cert-rs256",
    "secret-hs256",
]


async def refused(auth: JwtAuthenticator, token: str, detail: str | None = None) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        await auth.authenticate(token, None)
    # SECURITY: a refusal never echoes the token or any of its segments.
    for part in [token, *token.split(".")]:
        if len(part) > 8:
            assert part not in info.value.detail
    if detail is not None:
        assert info.value.detail == detail
    return info.value


# --- accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_valid_token_is_accepted(make_env: MakeEnv, clock: Clock, kind: str) -> None:
    env = await make_env(kind)
    principal = await env.auth.authenticate(env.signer.token(), None)
    assert principal is not None
    assert principal.kind == "jwt"
    assert principal.subject == "alice"
    assert principal.expires_at == int(clock.now) + 300
    assert principal.scopes == principal.mint_scopes == frozenset({"full"})
    assert principal.workspace is None and principal.workspaces is None
    assert principal.token_id is None and principal.project is None


async def test_async_context_manager_opens_and_closes(jwks: Any, keys: Keys, clock: Clock) -> None:
    jwks.publish(keys.rsa, "k1", "RS256")
    cfg = JwtConfig(algorithms=("RS256",), jwks_url=jwks.url, issuer=ISS, audience=AUD)
    token = sign(
        "RS256",
        keys.rsa,
        {"alg": "RS256", "kid": "k1"},
        {"sub": "bob", "iss": ISS, "aud": AUD, "exp": clock.now + 60},
    )
    async with JwtAuthenticator(cfg, clock=clock) as auth:
        principal = await auth.authenticate(token, None)
    assert principal is not None and principal.subject == "bob"


async def test_kid_is_ignored_with_a_fixed_key(make_env: MakeEnv) -> None:
    env = await make_env("pem-rs256")
    # SECURITY: with a key file the kid picks nothing; a path in it is just an unused string.
    token = env.signer.token(header={"kid": "../../../../dev/null"})
    principal = await env.auth.authenticate(token, None)
    assert principal is not None


async def test_token_just_under_the_size_cap_is_accepted(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    token = env.signer.token(pad="x" * 11_000)
    assert 14_000 < len(token) < 16 * 1024
    assert await env.auth.authenticate(token, None) is not None


# --- not mine ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param("st_" + "a" * 38, id="api-token"),
        pytest.param("abc.def", id="two-segments"),
        pytest.param("a.b.c.d", id="four-segments"),
        pytest.param("a.b.c.d.e.f", id="six-segments"),
        pytest.param("eyJh.eyJi.c2ln=", id="padding"),
        pytest.param("eyJh+.eyJi.c2ln", id="plus-sign"),
        pytest.param(".eyJi.c2ln", id="empty-header"),
        pytest.param("eyJh..c2ln", id="empty-payload"),
        pytest.param("", id="empty"),
    ],
)
async def test_non_jwt_credentials_are_not_mine(make_env: MakeEnv, credential: str) -> None:
    env = await make_env("jwks-rs256")
    assert await env.auth.authenticate(credential, None) is None
    assert env.jwks.requests == 0


@pytest.mark.parametrize(
    "segments",
    [
        pytest.param(["eyJhbGciOiJSU0EtT0FFUCJ9", "a2V5", "aXY", "Y2lwaGVy", "dGFn"], id="rsa-oaep"),
        pytest.param(["eyJhbGciOiJkaXIifQ", "", "aXY", "Y2lwaGVy", "dGFn"], id="dir-empty-key"),
    ],
)
async def test_jwe_is_refused(make_env: MakeEnv, segments: list[str]) -> None:
    env = await make_env("jwks-rs256")
    await refused(env.auth, ".".join(segments), "encrypted tokens (JWE) are not accepted")


async def test_oversized_token_is_refused(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    token = env.signer.token(pad="x" * 13_000)  # validly signed: only the cap refuses it
    assert len(token) > 16 * 1024
    await refused(env.auth, token, "token too large")


# --- algorithms -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2ln"], ids=["empty-sig", "junk-sig"])
async def test_alg_none_is_refused(make_env: MakeEnv, alg: str, signature: str) -> None:
    env = await make_env("jwks-rs256")
    header, payload = env.signer.header(alg=alg), env.signer.claims()
    token = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}.{signature}"
    await refused(env.auth, token, "alg none is never accepted")
    assert env.jwks.requests == 0


@pytest.mark.parametrize(
    ("alg", "key_of"),
    [
        pytest.param("HS256", "public-pem", id="hs256-signed-with-rsa-public-pem"),
        pytest.param("HS512", "public-pem", id="hs512-signed-with-rsa-public-pem"),
        pytest.param("RS512", "rsa", id="rs512-outside-allowlist"),
        pytest.param("PS256", "rsa", id="ps256-outside-allowlist"),
        pytest.param("rs256", "rsa-as-RS256", id="lowercase-rs256"),
        pytest.param("ES256", "ec", id="es256-outside-allowlist"),
    ],
)
async def test_alg_outside_allowlist_is_refused_before_key_lookup(
    make_env: MakeEnv, keys: Keys, alg: str, key_of: str
) -> None:
    env = await make_env("jwks-rs256")
    key: Any = {"public-pem": public_pem(keys.rsa), "rsa": keys.rsa, "ec": keys.ec, "rsa-as-RS256": keys.rsa}[
        key_of
    ]
    sign_alg = "RS256" if key_of == "rsa-as-RS256" else alg
    token = sign(sign_alg, key, env.signer.header(alg=alg), env.signer.claims())
    await refused(env.auth, token, "token algorithm not allowed")
    # SECURITY: refused before the key lookup, so no JWKS fetch either.
    assert env.jwks.requests == 0


async def test_hs256_with_public_key_file_as_secret_is_refused(make_env: MakeEnv) -> None:
    env = await make_env("pem-rs256")
    assert env.pem is not None
    token = sign("HS256", env.pem, env.signer.header(alg="HS256"), env.signer.claims())
    await refused(env.auth, token, "token algorithm not allowed")


def test_pyjwt_itself_refuses_a_pem_as_hmac_secret(keys: Keys) -> None:
    pem = public_pem(keys.rsa)
    token = sign("HS256", pem, {"alg": "HS256"}, {"sub": "x"})
    with pytest.raises(jwt.InvalidKeyError):
        jwt.decode(token, pem, algorithms=["HS256"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"algorithms": ("none",), "secret": SECRET}, "'none'", id="none"),
        pytest.param({"algorithms": ("HS256", "RS256"), "secret": SECRET}, "mixed", id="hs-rs-mixed"),
        pytest.param({"algorithms": ("HS256",), "secret": "short"}, "32 bytes", id="short-secret"),
        pytest.param({"algorithms": ("RS256",)}, "exactly one", id="no-key-source"),
        pytest.param({"algorithms": ("XS256",), "secret": SECRET}, "unsupported", id="unknown-alg"),
    ],
)
def test_unsafe_config_objects_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JwtAuthenticator(JwtConfig(**overrides))


def test_key_file_that_fits_no_algorithm_is_refused(keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(public_pem(keys.ec))
    with pytest.raises(ValueError, match="fits none"):
        JwtAuthenticator(JwtConfig(algorithms=("RS256",), public_key_file=str(path)))


async def test_algorithm_that_does_not_fit_the_key_file_is_refused(make_env: MakeEnv, keys: Keys) -> None:
    env = await make_env("pem-rs256", algorithms=("RS256", "ES256"))
    token = sign("ES256", keys.ec, env.signer.header(alg="ES256"), env.signer.claims())
    await refused(env.auth, token, "no key matches the token's algorithm")


@pytest.mark.parametrize("kind", ["pem-es256", "jwks-es256"])
async def test_es256_zero_signature_is_refused(make_env: MakeEnv, kind: str) -> None:
    env = await make_env(kind)
    good = env.signer.token()
    signing_input = good.rsplit(".", 1)[0]
    await refused(env.auth, f"{signing_input}.{b64url(bytes(64))}", "signature verification failed")


@pytest.mark.parametrize("kind", ["jwks-rs256", "pem-rs256", "secret-hs256"])
async def test_signature_from_another_key_is_refused(make_env: MakeEnv, keys: Keys, kind: str) -> None:
    env = await make_env(kind)
    other: Any = b"another-secret-of-at-least-32-bytes!!" if kind == "secret-hs256" else keys.rsa_other
    token = sign(env.signer.alg, other, env.signer.header(), env.signer.claims())
    await refused(env.auth, token, "signature verification failed")


async def test_tampered_payload_is_refused(make_env: MakeEnv) -> None:
    env = await make_env("pem-rs256")
    header, _, signature = env.signer.token().split(".")
    forged = b64url(json.dumps(env.signer.claims(sub="admin")).encode())
    await refused(env.auth, f"{header}.{forged}.{signature}", "signature verification failed")


async def test_short_rsa_key_is_refused(make_env: MakeEnv, tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    path = tmp_path / "weak.pem"
    path.write_bytes(public_pem(weak))
    env = await make_env("pem-rs256", public_key_file=str(path))
    token = sign("RS256", weak, env.signer.header(), env.signer.claims())
    await refused(env.auth, token, "the key does not fit the token")


# --- header parameters and JSON -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value"),
    [
        pytest.param("crit", ["b64"], id="crit-b64"),
        pytest.param("crit", ["exp"], id="crit-unknown"),
        pytest.param("jku", "https://evil.example/jwks.json", id="jku"),
        pytest.param("x5u", "https://evil.example/cert.pem", id="x5u"),
        pytest.param("jwk", "EMBEDDED", id="jwk-embedded"),
        pytest.param("x5c", ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"], id="x5c"),
        pytest.param("zip", "DEF", id="zip"),
        pytest.param("enc", "A256GCM", id="enc"),
        pytest.param("b64", False, id="b64-false"),
    ],
)
async def test_refused_header_parameters(make_env: MakeEnv, keys: Keys, param: str, value: Any) -> None:
    env = await make_env("jwks-rs256")
    if value == "EMBEDDED":
        # The attacker embeds their own key and signs with it.
        value = jwk_of(keys.rsa_other, None, "RS256")
    extra = {param: value, **({"b64": True} if value == ["b64"] else {})}
    key = keys.rsa_other if param == "jwk" else keys.rsa
    token = sign("RS256", key, env.signer.header(**extra), env.signer.claims())
    await refused(env.auth, token, f"token header parameter {param!r} is not accepted")
    assert env.jwks.requests == 0


@pytest.mark.parametrize(
    ("header", "payload", "detail"),
    [
        pytest.param(b'{"alg":"RS256","kid":"k1","kid":"k2"}', None, BAD_HEADER, id="header-kid"),
        pytest.param(b'{"alg":"RS256","kid":"k1","alg":"RS256"}', None, BAD_HEADER, id="header-alg"),
        pytest.param(
            None,
            b'{"sub":"alice","exp":EXP,"iss":"ISS","aud":"AUD","sub":"admin"}',
            "malformed token payload",
            id="payload-sub",
        ),
        pytest.param(
            None,
            b'{"sub":"alice","exp":EXP,"iss":"ISS","aud":"AUD","x":{"a":1,"a":2}}',
            "malformed token payload",
            id="payload-nested",
        ),
        pytest.param(
            None,
            b'{"sub":"alice","exp":NaN,"iss":"ISS","aud":"AUD"}',
            "malformed token payload",
            id="payload-nan",
        ),
        pytest.param(
            None,
            b'{"sub":"alice","exp":1e999,"iss":"ISS","aud":"AUD"}',
            "malformed token payload",
            id="payload-overflow",
        ),
        pytest.param(None, b'["sub"]', "malformed token payload", id="payload-array"),
        pytest.param(b'["RS256"]', None, BAD_HEADER, id="header-array"),
        pytest.param(b'\xef\xbb\xbf{"alg":"RS256","kid":"k1"}', None, BAD_HEADER, id="header-bom"),
        pytest.param(b'{"alg":"RS256","kid":"k\xff"}', None, BAD_HEADER, id="header-bad-utf8"),
    ],
)
async def test_malformed_json_is_refused(
    make_env: MakeEnv, keys: Keys, clock: Clock, header: bytes | None, payload: bytes | None, detail: str
) -> None:
    env = await make_env("jwks-rs256")
    raw_header = header or b'{"alg":"RS256","kid":"k1"}'
    raw_payload = payload or b'{"sub":"alice","exp":EXP,"iss":"ISS","aud":"AUD"}'
    raw_payload = raw_payload.replace(b"EXP", str(int(clock.now) + 60).encode())
    raw_payload = raw_payload.replace(b'"ISS"', json.dumps(ISS).encode()).replace(b'"AUD"', b'"my-api"')
    token = sign("RS256", keys.rsa, raw_header, raw_payload)
    await refused(env.auth, token, detail)


async def test_non_canonical_base64_is_refused(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    header, payload, signature = env.signer.token().split(".")
    # "e30" is "{}"; "e31" decodes to the same bytes with non-zero trailing bits.
    assert b64url(b"{}") == "e30"
    await refused(env.auth, f"e31.{payload}.{signature}", "malformed token header")
    assert header != "e31"


@pytest.mark.parametrize(
    ("kid", "detail"),
    [
        pytest.param("../../../../etc/passwd", "no key matches the token's kid and algorithm", id="path"),
        pytest.param("k1' OR '1'='1", "no key matches the token's kid and algorithm", id="sql"),
        pytest.param("https://evil.example/k1", "no key matches the token's kid and algorithm", id="url"),
        pytest.param(7, "token kid must be a short string", id="number"),
        pytest.param("", "token kid must be a short string", id="empty"),
        pytest.param("k" * 300, "token kid must be a short string", id="long"),
    ],
)
async def test_hostile_kid_is_refused(make_env: MakeEnv, kid: Any, detail: str) -> None:
    env = await make_env("jwks-rs256")
    await refused(env.auth, env.signer.token(header={"kid": kid}), detail)


# --- issuer, audience, times ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iss", "detail"),
    [
        pytest.param("https://idp.example", "issuer mismatch", id="prefix"),
        pytest.param("https://idp.example/evil", "issuer mismatch", id="extended"),
        pytest.param("https://idp.example.evil/", "issuer mismatch", id="lookalike-host"),
        pytest.param("idp.example", "issuer mismatch", id="substring"),
        pytest.param("HTTPS://IDP.EXAMPLE/", "issuer mismatch", id="case"),
        pytest.param([ISS], "issuer mismatch", id="list"),
        pytest.param(DROP, "token lacks the 'iss' claim", id="missing"),
    ],
)
async def test_issuer_is_compared_exactly(make_env: MakeEnv, iss: Any, detail: str) -> None:
    env = await make_env("pem-rs256")
    await refused(env.auth, env.signer.token(iss=iss), detail)


@pytest.mark.parametrize(
    ("aud", "detail"),
    [
        pytest.param("my-ap", "audience mismatch", id="prefix"),
        pytest.param("my-api-evil", "audience mismatch", id="extended"),
        pytest.param("xmy-apix", "audience mismatch", id="superstring"),
        pytest.param("MY-API", "audience mismatch", id="case"),
        pytest.param(["other", "my-api2"], "audience mismatch", id="list-without"),
        pytest.param(["my-api", 7], "audience mismatch", id="list-with-number"),
        pytest.param({"my-api": 1}, "audience mismatch", id="object"),
        pytest.param(DROP, "token lacks the 'aud' claim", id="missing"),
    ],
)
async def test_audience_is_compared_exactly(make_env: MakeEnv, aud: Any, detail: str) -> None:
    env = await make_env("pem-rs256")
    await refused(env.auth, env.signer.token(aud=aud), detail)


async def test_audience_list_holding_ours_is_accepted(make_env: MakeEnv) -> None:
    env = await make_env("pem-rs256")
    assert await env.auth.authenticate(env.signer.token(aud=["other", AUD]), None) is not None


async def test_token_audience_without_configured_audience_is_refused(make_env: MakeEnv) -> None:
    # RFC 7519 4.1.3: a recipient that is not named in `aud` must refuse.
    env = await make_env("pem-rs256", audience=None)
    await refused(env.auth, env.signer.token(), "audience mismatch")
    assert await env.auth.authenticate(env.signer.token(aud=DROP), None) is not None


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        pytest.param({"exp": DROP}, "token lacks the 'exp' claim", id="missing-exp"),
        pytest.param({"exp": None}, "token 'exp' must be a number", id="null-exp"),
        pytest.param({"exp": "9999999999"}, "token 'exp' must be a number", id="string-exp"),
        pytest.param({"exp": True}, "token 'exp' must be a number", id="bool-exp"),
        pytest.param({"exp": -300}, "token expired", id="expired"),
        pytest.param({"exp": -31}, "token expired", id="expired-just-beyond-leeway"),
        pytest.param({"exp": 10**400}, "token 'exp' is out of range", id="huge-int-exp"),
        pytest.param({"nbf": 31}, "token 'nbf' is in the future", id="nbf-future"),
        pytest.param({"nbf": -(10**400)}, "token 'nbf' is out of range", id="huge-negative-nbf"),
        pytest.param({"nbf": "0"}, "token 'nbf' must be a number", id="string-nbf"),
        pytest.param({"iat": 3600}, "token 'iat' is in the future", id="iat-future"),
    ],
)
async def test_time_claims_are_enforced(
    make_env: MakeEnv, clock: Clock, claims: dict[str, Any], detail: str
) -> None:
    env = await make_env("pem-rs256")
    now = int(clock.now)
    shifted: dict[str, Any] = {
        k: now + v if isinstance(v, int) and not isinstance(v, bool) else v for k, v in claims.items()
    }
    await refused(env.auth, env.signer.token(**shifted), detail)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"exp": -29}, id="exp-within-leeway"),
        pytest.param({"nbf": 29}, id="nbf-within-leeway"),
        pytest.param({"iat": 29}, id="iat-within-leeway"),
        pytest.param({"exp": 300.5, "nbf": -10.5}, id="fractional-times"),
    ],
)
async def test_leeway_is_honoured(make_env: MakeEnv, clock: Clock, claims: dict[str, Any]) -> None:
    env = await make_env("pem-rs256")
    now = int(clock.now)
    shifted: dict[str, Any] = {k: now + v for k, v in claims.items()}
    token = env.signer.token(**shifted)
    assert await env.auth.authenticate(token, None) is not None


async def test_expiry_follows_the_injected_clock(make_env: MakeEnv, clock: Clock) -> None:
    env = await make_env("secret-hs256")
    token = env.signer.token()
    assert await env.auth.authenticate(token, None) is not None
    clock.advance(300 + 30)
    await refused(env.auth, token, "token expired")


# --- claims -> Principal ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "detail"),
    [
        pytest.param(DROP, "token lacks the 'sub' claim", id="missing"),
        pytest.param(None, "token lacks the 'sub' claim", id="null"),
        pytest.param("", "token claim 'sub' must be a non-empty string", id="empty"),
        pytest.param(
            "alice\r\nX-Auth-Subject: root",
            "token claim 'sub' must be a non-empty string",
            id="header-injection",
        ),
        pytest.param("a" * 2000, "token claim 'sub' must be a non-empty string", id="too-long"),
    ],
)
async def test_subject_claim_is_validated(make_env: MakeEnv, sub: Any, detail: str) -> None:
    env = await make_env("secret-hs256")
    await refused(env.auth, env.signer.token(sub=sub), detail)


@pytest.mark.parametrize("sub", [7, ["alice"], {"id": "alice"}], ids=["number", "list", "object"])
async def test_non_string_subject_is_refused(make_env: MakeEnv, sub: Any) -> None:
    env = await make_env("secret-hs256", claims={"subject": "user_id"})
    err = await refused(env.auth, env.signer.token(user_id=sub))
    assert err.detail == "token claim 'user_id' must be a non-empty string"


async def test_long_lived_jwt_is_honoured_without_max_lifetime(make_env: MakeEnv, clock: Clock) -> None:
    # No setting bounds a JWT's lifetime by default: a ten-year service key works.
    env = await make_env("pem-rs256")
    token = env.signer.token(exp=int(clock.now) + 10 * 366 * 86400)
    assert await env.auth.authenticate(token, None) is not None


@pytest.mark.parametrize(
    ("ahead", "ok"),
    [
        pytest.param(3600, True, id="well-inside"),
        pytest.param(86400 + 30, True, id="at-the-bound-with-leeway"),
        pytest.param(86400 + 31, False, id="just-beyond"),
        pytest.param(10 * 366 * 86400, False, id="ten-years"),
    ],
)
async def test_max_lifetime_refuses_exp_further_ahead(
    make_env: MakeEnv, clock: Clock, ahead: int, ok: bool
) -> None:
    env = await make_env("pem-rs256", max_lifetime=86400.0)
    token = env.signer.token(exp=int(clock.now) + ahead)
    if ok:
        assert await env.auth.authenticate(token, None) is not None
    else:
        await refused(env.auth, token, "token 'exp' lies further ahead than jwt.max_lifetime")


async def test_max_lifetime_is_checked_on_every_use(make_env: MakeEnv, clock: Clock) -> None:
    # A token verified once is judged again on every use: the cache holds signatures, not verdicts.
    env = await make_env("pem-rs256", max_lifetime=3600.0)
    token = env.signer.token(exp=int(clock.now) + 3000)
    assert await env.auth.authenticate(token, None) is not None
    clock.advance(-1000)  # now the exp lies 4000 s ahead
    await refused(env.auth, token)


async def test_custom_subject_claim(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256", claims={"subject": "email"})
    principal = await env.auth.authenticate(env.signer.token(email="a@example.org"), None)
    assert principal is not None and principal.subject == "a@example.org"


MEMBER_ROLES = {
    "viewer": frozenset({"read"}),
    "member": frozenset({"read", "write"}),
    "admin": frozenset({"*"}),
    "ops": frozenset({"playlists:*"}),
}


@pytest.mark.parametrize(
    ("scope_claim", "roles", "claims", "expected"),
    [
        pytest.param(None, None, {}, {"full"}, id="neither-full"),
        pytest.param("scope", None, {"scope": "read write"}, {"read", "write"}, id="scope-string"),
        pytest.param(
            "scope",
            None,
            {"scope": "  read   playlists:read "},
            {"read", "playlists:read"},
            id="scope-string-extra-spaces",
        ),
        pytest.param("scp", None, {"scp": ["read", "nodes:create"]}, {"read", "nodes:create"}, id="scp-list"),
        pytest.param("scope", None, {}, set(), id="scope-claim-absent"),
        pytest.param("scope", None, {"scope": ""}, set(), id="scope-claim-empty"),
        pytest.param(None, MEMBER_ROLES, {"role": "viewer"}, {"read"}, id="role-only"),
        pytest.param(None, MEMBER_ROLES, {"role": "admin"}, {"*"}, id="role-star"),
        pytest.param(None, MEMBER_ROLES, {"role": "root"}, set(), id="role-unknown"),
        pytest.param(None, MEMBER_ROLES, {}, set(), id="role-claim-absent"),
        pytest.param(
            "scope",
            MEMBER_ROLES,
            {"role": "member", "scope": "read write full playlists:read"},
            {"read", "write"},
            id="intersect-ladder",
        ),
        pytest.param(
            "scope", MEMBER_ROLES, {"role": "viewer", "scope": "write"}, set(), id="intersect-above-role"
        ),
        pytest.param(
            "scope", MEMBER_ROLES, {"role": "member", "scope": "read"}, {"read"}, id="intersect-below-role"
        ),
        pytest.param(
            "scp",
            MEMBER_ROLES,
            {"role": "ops", "scp": ["playlists:read", "nodes:create"]},
            {"playlists:read"},
            id="intersect-fine-grained",
        ),
        pytest.param(
            "scope",
            MEMBER_ROLES,
            {"role": "admin", "scope": "read agency tokens:manage"},
            {"read", "agency", "tokens:manage"},
            id="intersect-star",
        ),
        pytest.param(
            "scope", MEMBER_ROLES, {"role": "root", "scope": "read"}, set(), id="intersect-unknown-role"
        ),
        pytest.param("scope", MEMBER_ROLES, {"scope": "read"}, set(), id="intersect-no-role"),
        pytest.param(
            "scope", MEMBER_ROLES, {"role": "member"}, {"read", "write"}, id="claim-absent-role-cap"
        ),
        pytest.param(
            "scope",
            MEMBER_ROLES,
            {"role": "member", "scope": None},
            {"read", "write"},
            id="claim-null-role-cap",
        ),
        pytest.param("scope", MEMBER_ROLES, {"role": "member", "scope": ""}, set(), id="claim-empty-narrows"),
        pytest.param("scope", MEMBER_ROLES, {}, set(), id="claim-and-role-absent"),
    ],
)
async def test_scopes_from_claims_and_roles(
    make_env: MakeEnv,
    scope_claim: str | None,
    roles: dict[str, frozenset[str]] | None,
    claims: dict[str, Any],
    expected: set[str],
) -> None:
    env = await make_env("secret-hs256", claims={"scopes": scope_claim}, roles=roles)
    principal = await env.auth.authenticate(env.signer.token(**claims), None)
    assert principal is not None
    assert principal.scopes == frozenset(expected)
    assert principal.mint_scopes == principal.scopes
    assert principal.role == claims.get("role")


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        pytest.param("scope", 7, id="number"),
        pytest.param("scope", {"read": True}, id="object"),
        pytest.param("scope", ["read", 7], id="list-with-number"),
        pytest.param("scope", 'read "write"', id="quote"),
        pytest.param("scope", "read\twrite", id="tab"),
        pytest.param("scope", ["read write"], id="list-item-with-space"),
        pytest.param("scope", "read\\write", id="backslash"),
    ],
)
async def test_malformed_scope_claim_is_refused(make_env: MakeEnv, claim: str, value: Any) -> None:
    env = await make_env("secret-hs256", claims={"scopes": claim})
    err = await refused(env.auth, env.signer.token(**{claim: value}))
    assert err.detail.startswith(f"token claim {claim!r}")


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        pytest.param({"role": 5}, "token claim 'role' must be a non-empty string", id="role-number"),
        pytest.param({"role": ["admin"]}, "token claim 'role' must be a non-empty string", id="role-list"),
        pytest.param({"role": ""}, "token claim 'role' must be a non-empty string", id="role-empty"),
        pytest.param(
            {"workspace_id": 42},
            "token claim 'workspace_id' must be a non-empty string",
            id="workspace-number",
        ),
        pytest.param(
            {"workspaces": "ws1"},
            "token claim 'workspaces' must be a list of strings",
            id="workspaces-string",
        ),
        pytest.param(
            {"workspaces": ["ws1", 2]},
            "token claim 'workspaces' must be a list of strings",
            id="workspaces-with-number",
        ),
        pytest.param(
            {"workspaces": ["ws1\n"]},
            "token claim 'workspaces' must be a list of strings",
            id="workspaces-control-char",
        ),
    ],
)
async def test_malformed_identity_claims_are_refused(
    make_env: MakeEnv, claims: dict[str, Any], detail: str
) -> None:
    env = await make_env("secret-hs256", roles=MEMBER_ROLES)
    await refused(env.auth, env.signer.token(**claims), detail)


# The exact 403 details of a workspace the token is not vouched for.
NOT_MEMBER = "workspace not among the token's workspaces"
DIFFERS = "workspace differs from the token's workspace"


@pytest.mark.parametrize(
    ("claims", "requested", "expected"),
    [
        pytest.param({"workspaces": ["ws1", "ws2"]}, "ws2", "ws2", id="list-header-inside"),
        pytest.param({"workspaces": ["ws1", "ws2"]}, "ws3", NOT_MEMBER, id="list-header-outside"),
        pytest.param({"workspaces": ["ws1", "ws2"]}, "ws", NOT_MEMBER, id="list-header-prefix"),
        pytest.param({"workspaces": []}, "ws1", NOT_MEMBER, id="empty-list-header"),
        pytest.param({"workspace_id": "ws1"}, "ws1", "ws1", id="single-header-same"),
        pytest.param({"workspace_id": "ws1"}, "ws2", DIFFERS, id="single-header-differs"),
        pytest.param(
            {"workspace_id": "ws1", "workspaces": ["ws1", "ws2"]}, "ws2", "ws2", id="both-header-in-list"
        ),
        pytest.param(
            {"workspace_id": "ws1", "workspaces": ["ws1"]}, "ws2", NOT_MEMBER, id="both-header-outside"
        ),
        pytest.param({}, "ws1", None, id="no-claims-header-not-vouched"),
        pytest.param({"workspace_id": "ws1"}, None, "ws1", id="single-no-header"),
        pytest.param({"workspaces": ["ws1"]}, None, "ws1", id="list-of-one-no-header"),
        pytest.param({"workspaces": ["ws1", "ws2"]}, None, None, id="list-of-two-no-header"),
        pytest.param({"workspace_id": "ws2", "workspaces": ["ws1", "ws2"]}, None, "ws2", id="both-no-header"),
        pytest.param({}, None, None, id="nothing"),
    ],
)
async def test_workspace_binding(
    make_env: MakeEnv, claims: dict[str, Any], requested: str | None, expected: Any
) -> None:
    env = await make_env("secret-hs256")
    token = env.signer.token(**claims)
    if expected in (NOT_MEMBER, DIFFERS):
        with pytest.raises(TargetDenied) as info:
            await env.auth.authenticate(token, requested)
        assert info.value.detail == expected  # the 403's detail names which binding refused
        return
    principal = await env.auth.authenticate(token, requested)
    assert principal is not None
    assert principal.workspace == expected
    members = claims.get("workspaces")
    assert principal.workspaces == (frozenset(members) if members is not None else None)


# --- the verified-signature cache -------------------------------------------------------------


async def test_cached_signature_still_checks_workspace_per_request(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256")
    token = env.signer.token(workspaces=["ws1", "ws2"])
    first = await env.auth.authenticate(token, "ws1")
    second = await env.auth.authenticate(token, "ws2")
    assert first is not None and first.workspace == "ws1"
    assert second is not None and second.workspace == "ws2"
    with pytest.raises(TargetDenied):
        await env.auth.authenticate(token, "ws3")


async def test_cached_signature_answers_every_workspace_asked_for_however_many(make_env: MakeEnv) -> None:
    """A verified JWT keeps its principal per workspace header value (a few of them): past that
    bound, and for a workspace it does not hold, each request is still judged afresh."""
    env = await make_env("secret-hs256")
    members = [f"ws{i}" for i in range(7)]
    token = env.signer.token(workspaces=members)
    for _ in range(2):
        for ws in members:
            principal = await env.auth.authenticate(token, ws)
            assert principal is not None and principal.workspace == ws
            assert principal.workspaces == frozenset(members)
        for _ in range(2):  # a refusal is never kept as an answer
            with pytest.raises(TargetDenied):
                await env.auth.authenticate(token, "ws-not-held")
    kept = await env.auth.authenticate(token, "ws1")
    assert kept is await env.auth.authenticate(token, "ws1")  # one principal per kept workspace


async def test_cached_signature_is_forgotten_after_its_ttl(
    make_env: MakeEnv, clock: Clock, jwks: Any
) -> None:
    env = await make_env("jwks-rs256", jwks_cache=30.0, jwks_refetch_interval=1.0)
    token = env.signer.token(exp=int(clock.now) + 3600)
    assert await env.auth.authenticate(token, None) is not None
    jwks.keys.clear()  # the identity provider withdraws the key
    clock.advance(31)
    with pytest.raises(InvalidToken):
        await env.auth.authenticate(token, None)


async def test_a_claimed_wildcard_scope_grants_nothing(make_env: MakeEnv) -> None:
    env = await make_env("secret-hs256", claims={"scopes": "scope"})
    principal = await env.auth.authenticate(env.signer.token(scope="* read"), None)
    assert principal is not None
    assert principal.scopes == frozenset({"read"}) and principal.mint_scopes == frozenset({"read"})
