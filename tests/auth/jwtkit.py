"""Test kit for JWTs: a token forge that checks nothing, a controllable clock, a counting JWKS server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from yarl import URL

from gateway.auth.jwt import JwtAuthenticator

ISS = "https://idp.example/"
AUD = "my-api"
START = 1_700_000_000.0
SECRET = "an-hmac-secret-of-more-than-32-bytes!"
DROP: Any = object()  # a claim or header parameter to leave out

_HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(alg: str, key: Any, header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes) -> str:
    """A compact JWS over the exact bytes given (dicts are dumped as JSON), with no checks at all."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64url(h)}.{b64url(p)}".encode()
    if alg in _HMAC_HASHES:
        # Plain HMAC, so that a PEM public key can be (mis)used as the secret.
        sig = hmac.new(key, signing_input, _HMAC_HASHES[alg]).digest()
    else:
        sig = jwt.algorithms.get_default_algorithms()[alg].sign(signing_input, key)
    return f"{signing_input.decode()}.{b64url(sig)}"


def public_pem(private_key: Any) -> bytes:
    data: bytes = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def jwk_of(private_key: Any, kid: str | None, alg: str | None, **extra: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    out = dict(jwk)
    if kid is not None:
        out["kid"] = kid
    if alg is not None:
        out["alg"] = alg
    out.update(extra)
    return out


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class JwksServer:
    """A JWKS endpoint on loopback that counts its requests and can be told to fail."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    status: int = 200
    raw: bytes | None = None  # served instead of the key set when set
    chunked: bool = False  # serve `raw` chunked, without a Content-Length
    delay: float = 0.0
    server: TestServer | None = None
    accept: list[str | None] = field(default_factory=list)  # each request's Accept header

    @property
    def url(self) -> URL:
        assert self.server is not None
        return self.server.make_url("/jwks.json")

    def publish(self, private_key: Any, kid: str | None, alg: str | None = None, **extra: Any) -> None:
        self.keys.append(jwk_of(private_key, kid, alg, **extra))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.accept.append(request.headers.get("Accept"))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            # A well-formed key set under an error status: only the status says "do not trust me".
            return web.json_response({"keys": self.keys}, status=self.status)
        if self.raw is not None and self.chunked:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for start in range(0, len(self.raw), 64 * 1024):
                await resp.write(self.raw[start : start + 64 * 1024])
            await resp.write_eof()
            return resp
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        return web.json_response({"keys": self.keys})

    async def stop(self) -> None:
        """Close the listening socket: later fetches meet a refused connection."""
        assert self.server is not None
        await self.server.close()


@dataclass
class Signer:
    """Mints tokens for one key; every claim and header parameter can be overridden or DROPped."""

    alg: str
    key: Any
    kid: str | None
    clock: Clock

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock.now)
        out: dict[str, Any] = {"sub": "alice", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 300}
        out.update(overrides)
        return {k: v for k, v in out.items() if v is not DROP}

    def header(self, **overrides: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"alg": self.alg, "typ": "JWT"}
        if self.kid is not None:
            out["kid"] = self.kid
        out.update(overrides)
        return {k: v for k, v in out.items() if v is not DROP}

    def token(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        return sign(self.alg, self.key, self.header(**(header or {})), self.claims(**claims))


@dataclass
class Env:
    auth: JwtAuthenticator
    signer: Signer
    jwks: JwksServer
    pem: bytes | None = None
