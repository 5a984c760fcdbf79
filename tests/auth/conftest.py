"""Fixtures: real keys, a real JWKS server on loopback, a controllable clock, started authenticators."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.x509.oid import NameOID
from pytest_aiohttp import AiohttpServer

from gateway.auth.jwt import JwtAuthenticator
from gateway.config import JwtClaims, JwtConfig

from .jwtkit import AUD, ISS, SECRET, Clock, Env, JwksServer, Signer, public_pem

MakeEnv = Callable[..., Awaitable[Env]]


@dataclass(frozen=True)
class Keys:
    rsa: RSAPrivateKey
    rsa_other: RSAPrivateKey
    ec: EllipticCurvePrivateKey
    ec384: EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_other=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        ec384=ec.generate_private_key(ec.SECP384R1()),
        ed=ed25519.Ed25519PrivateKey.generate(),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def jwks(aiohttp_server: AiohttpServer) -> JwksServer:
    state = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks.json", state.handle)

    async def moved(_: web.Request) -> web.StreamResponse:
        state.requests += 1
        raise web.HTTPFound("/jwks.json")

    app.router.add_get("/moved", moved)
    state.server = await aiohttp_server(app)
    return state


def _self_signed_cert(private_key: RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
async def make_env(keys: Keys, clock: Clock, jwks: JwksServer, tmp_path: Path) -> AsyncIterator[MakeEnv]:
    """make_env(kind, **JwtConfig overrides): a started authenticator and a signer that fits it.

    kinds: jwks-rs256, jwks-es256, pem-rs256, pem-ps256, pem-es256, pem-eddsa, cert-rs256,
    secret-hs256. `claims` may be given as a dict of JwtClaims fields.
    """
    made: list[JwtAuthenticator] = []

    async def make(kind: str, **overrides: Any) -> Env:
        source, alg_name = kind.split("-")
        alg = {"eddsa": "EdDSA"}.get(alg_name, alg_name.upper())
        private: Any = {"RS256": keys.rsa, "PS256": keys.rsa, "ES256": keys.ec, "EdDSA": keys.ed}.get(alg)
        cfg: dict[str, Any] = {"algorithms": (alg,), "issuer": ISS, "audience": AUD}
        pem = None
        kid: str | None = None
        if source == "jwks":
            kid = "k1"
            jwks.publish(private, kid, alg)
            cfg["jwks_url"] = jwks.url
        elif source in ("pem", "cert"):
            pem = public_pem(private) if source == "pem" else _self_signed_cert(private)
            path = tmp_path / f"{kind}.pem"
            path.write_bytes(pem)
            cfg["public_key_file"] = str(path)
        else:
            private = SECRET.encode()
            cfg["secret"] = SECRET
        cfg.update(overrides)
        if isinstance(cfg.get("claims"), dict):
            cfg["claims"] = JwtClaims(**cfg["claims"])
        auth = JwtAuthenticator(JwtConfig(**cfg), clock=clock)
        await auth.start()
        made.append(auth)
        return Env(auth, Signer(alg, private, kid, clock), jwks, pem)

    yield make
    for auth in made:
        await auth.close()
