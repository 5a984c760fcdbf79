"""The JWKS key source: fetch the identity provider's key set, cache it, pick a key by `kid`.

key_for(kid, alg)
  cached and fresh, key known      -> the key
  otherwise, under one lock        -> fetch, at most once per `refetch_interval`
  fetch failed, a cached key fits  -> the cached key (last known good), until `max_stale` past
                                      the last successful fetch; then JwksUnavailable (503)
  fetch failed, nothing fits       -> JwksUnavailable (503)
  fetch fine, nothing fits         -> InvalidToken (401)

Every successful fetch is reported to `on_refresh`, so verifications cached against keys the new
set no longer holds can be dropped at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from yarl import URL

from ..errors import InvalidToken, JwksUnavailable

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 512 * 1024
FETCH_TIMEOUT = 5.0

RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
OKP_CURVES = frozenset({"Ed25519", "Ed448"})

DEFAULT_MAX_STALE = 24 * 3600.0

# kid (None for a key published without one) -> algorithm -> key
KeyTable = dict[str | None, dict[str, jwt.PyJWK]]


def fingerprint(key: jwt.PyJWK) -> bytes:
    """A digest of a published key's public material: a kid may come back holding another key."""
    raw: bytes = key.key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(raw).digest()


class _FetchFailed(Exception):
    pass


def usable_algorithms(jwk: Mapping[str, Any], allowed: frozenset[str]) -> frozenset[str]:
    """The allowed algorithms a published key may verify; empty when it must be ignored."""
    use = jwk.get("use")
    if use is not None and use != "sig":
        return frozenset()
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        family = RSA_ALGS
    elif kty == "EC":
        family = frozenset(alg for alg, curve in EC_CURVES.items() if curve == crv)
    elif kty == "OKP" and crv in OKP_CURVES:
        family = frozenset({"EdDSA"})
    else:
        # SECURITY: symmetric (`oct`) keys from a key set are never used: a published HMAC
        # secret is no secret, and HS* beside public-key algorithms invites key confusion.
        return frozenset()
    declared = jwk.get("alg")
    if declared is not None:
        # SECURITY: a key bound to an algorithm verifies that algorithm only.
        family = family & {declared} if isinstance(declared, str) else frozenset()
    return family & allowed


def parse_jwks(document: object, allowed: frozenset[str]) -> KeyTable:
    """A JWKS document -> the keys usable under `allowed`. Unusable keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set: expected an object with a `keys` list")
    table: KeyTable = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        for alg in sorted(usable_algorithms(entry, allowed)):
            try:
                key = jwt.PyJWK(entry, algorithm=alg)
            except (jwt.PyJWTError, ValueError, TypeError):
                continue
            table.setdefault(kid, {}).setdefault(alg, key)
    return table


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError("duplicate key in JWK set")
        out[name] = value
    return out


class JwksKeySource:
    """Verification keys from `url`, cached `cache_seconds`, refetched at most once per
    `refetch_interval` seconds whatever the traffic (an unknown-`kid` flood costs one fetch).
    While the endpoint is down the last good set serves until `max_stale` seconds past its fetch."""

    def __init__(
        self,
        url: URL,
        algorithms: Iterable[str],
        cache_seconds: float,
        refetch_interval: float,
        clock: Callable[[], float],
        *,
        max_stale: float = DEFAULT_MAX_STALE,
        on_refresh: Callable[[JwksKeySource], None] | None = None,
    ) -> None:
        self._url = url
        self._allowed = frozenset(algorithms)
        self._cache_seconds = cache_seconds
        self._refetch_interval = refetch_interval
        self._max_stale = max_stale
        self._on_refresh = on_refresh
        self._clock = clock
        self._keys: KeyTable = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._last_ok = False
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT),
                headers={"Accept": "application/json"},
            )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        key = self._find(kid, alg)
        if key is not None and self._fresh():
            return key
        # SECURITY: one fetch in flight; whoever waited re-checks before fetching again.
        async with self._lock:
            key = self._find(kid, alg)
            if key is not None and self._fresh():
                return key
            if self._may_fetch():
                await self._fetch()
                key = self._find(kid, alg)
            if key is not None:
                if self._usable():
                    # Either freshly fetched, or the last known good set while the IdP is down.
                    return key
                # SECURITY: an outage is not a licence to trust a key set for ever: past
                # jwks_max_stale a key withdrawn meanwhile could still be signing.
                raise JwksUnavailable("the key set cannot be refetched and is older than jwt.jwks_max_stale")
            if self._last_ok:
                raise InvalidToken("no key matches the token's kid and algorithm")
            raise JwksUnavailable("the key set cannot be fetched")

    def find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key of the current set for `kid` and `alg`, fresh or not; no fetch."""
        return self._find(kid, alg)

    def age(self) -> float:
        """Seconds since the last successful fetch; infinite before the first one."""
        if self._fetched_at is None:
            return math.inf
        return max(0.0, self._clock() - self._fetched_at)

    def trusted_until(self) -> float:
        """The instant until which the current set may be used: the end of its cache lifetime
        while fresh, else `max_stale` past the last successful fetch."""
        if self._fetched_at is None:
            return -math.inf
        if self._fresh():
            return self._fetched_at + self._cache_seconds
        return self._fetched_at + self._max_stale

    def _find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        if kid is not None:
            # SECURITY: `kid` is only ever a dictionary key, never a path, URL or query.
            return self._keys.get(kid, {}).get(alg)
        candidates = [by_alg[alg] for by_alg in self._keys.values() if alg in by_alg]
        # SECURITY: without a kid, only an unambiguous key set is trusted to pick the key.
        return candidates[0] if len(candidates) == 1 else None

    def _fresh(self) -> bool:
        if self._fetched_at is None:
            return False
        return 0 <= self._clock() - self._fetched_at < self._cache_seconds

    def _usable(self) -> bool:
        if self._fetched_at is None:
            return False
        return self._fresh() or 0 <= self._clock() - self._fetched_at < self._max_stale

    def _may_fetch(self) -> bool:
        if self._last_attempt is None:
            return True
        elapsed = self._clock() - self._last_attempt
        # SECURITY: the refetch budget bounds what random kids can make us fetch.
        return elapsed < 0 or elapsed >= self._refetch_interval

    async def _fetch(self) -> None:
        if self._session is None:
            raise RuntimeError("JwksKeySource.start() was not awaited")
        self._last_attempt = self._clock()
        try:
            # SECURITY: no redirects: the configured URL (https, or loopback http) is the only source.
            async with self._session.get(self._url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise _FetchFailed(f"HTTP {resp.status}")
                body = await _read_capped(resp)
            document = json.loads(body.decode("utf-8"), object_pairs_hook=_reject_duplicates)
            keys = parse_jwks(document, self._allowed)
        except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError, _FetchFailed) as exc:
            self._last_ok = False
            log.warning("jwks fetch from %s failed: %s", self._url.with_user(None), _describe(exc))
            return
        self._keys = keys
        self._fetched_at = self._last_attempt
        self._last_ok = True
        if self._on_refresh is not None:
            self._on_refresh(self)


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    # SECURITY: a key set is small; a huge or endless body is refused, not buffered.
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_JWKS_BYTES:
            raise _FetchFailed("key set too large")
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
