"""JWT bearer credentials: verify a compact JWS against the configured keys, map claims to a Principal.

authenticate(credential, requested_workspace)
  not three base64url segments            -> None ("not mine"; the front door answers 401)
  five segments (JWE), over 16 KiB        -> InvalidToken
  header: duplicate keys, alg outside the allowlist (`none` never), crit/jku/x5u/jwk/x5c/zip
                                          -> InvalidToken, before any key lookup
  key: secret (HS*), public_key_file (PEM) or the JWKS (gateway.auth.jwks)
  signature, iss, aud (exact), exp (required, within `max_lifetime` when set), nbf, iat with
  leeway                                  -> InvalidToken
  claims -> Principal(kind="jwt"); a workspace outside `workspaces` -> TargetDenied

A verified signature is cached by the credential's digest for at most min(60 s, jwks_cache)
from the verification (a hit never extends it), never past the time the key set it was checked
against may be trusted, and is dropped as soon as a refetched key set no longer holds its key.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .. import scopes as scope_rules
from ..config import Config, JwtConfig
from ..errors import ConfigError, InvalidToken, Problem
from .claims import claim_list, claim_str, json_segment, numeric_date, scope_claim, workspace_of
from .jwks import EC_CURVES, RSA_ALGS, JwksKeySource, fingerprint
from .principal import Principal

MAX_JWT_BYTES: Final = 16 * 1024
MAX_KID_CHARS: Final = 256
HMAC_ALGS: Final = frozenset({"HS256", "HS384", "HS512"})

_B64URL: Final = r"[A-Za-z0-9_-]"
# Header and payload are never empty; the signature of an `alg: none` token is, and such a
# token is still ours to refuse rather than someone else's to claim.
_JWS_RE: Final = re.compile(rf"{_B64URL}+\.{_B64URL}+\.{_B64URL}*")
_JWE_RE: Final = re.compile(rf"{_B64URL}+\.{_B64URL}*\.{_B64URL}*\.{_B64URL}+\.{_B64URL}*")
# SECURITY: header parameters that fetch or embed keys (jku, x5u, jwk, x5c), that we would have
# to understand (crit, b64), or that mean something other than a plain signed JWT (zip, enc).
_REFUSED_HEADER_PARAMS: Final = ("crit", "jku", "x5u", "jwk", "x5c", "zip", "enc", "b64")
VERIFIED_CACHE_SIZE: Final = 10_000
VERIFIED_CACHE_SECONDS: Final = 60.0
# Verified credentials whose SHA-256 is remembered (cleared when full): a pure function memoised,
# as the token validator does, so a busy JWT skips the hash (OpenSSL 3 looks the digest up by
# name on every hashlib.sha256: about 9,400 of a cached JWT's 275,000 instructions a request).
DIGEST_MEMO = 1_000
PRINCIPALS_PER_TOKEN: Final = 4  # principals kept per verified JWT, one per workspace asked for


@dataclass(frozen=True)
class _Verified:
    """A signature checked at `verified_at`, trusted until `deadline` (never extended)."""

    verified_at: float
    deadline: float
    kid: str | None
    alg: str
    key_print: bytes | None  # the JWKS key it was checked against; None for a fixed key
    payload: dict[str, Any]
    times: tuple[float, float | None, float | None]  # exp, nbf, iat, read once from the payload
    # The principal for each workspace header value seen (None: no header); a pure function of
    # the payload, the config and that value, so kept. Refusals are never kept.
    principals: dict[str | None, Principal] = field(default_factory=dict, compare=False)


class JwtAuthenticator:
    """Verifies JWT bearer credentials under one `jwt:` configuration.

    Use as `async with JwtAuthenticator(cfg) as auth:` or pair `await start()` with
    `await close()`; the JWKS client session exists only between the two.
    """

    def __init__(self, cfg: JwtConfig, clock: Callable[[], float] = time.time) -> None:
        algorithms = frozenset(cfg.algorithms)
        if not algorithms:
            raise ValueError("jwt.algorithms: empty")
        if any(a.lower() == "none" for a in algorithms):
            # SECURITY: "none" is never accepted, whatever the config object says.
            raise ValueError("jwt.algorithms: 'none' is never accepted")
        unknown = algorithms - frozenset(jwt.algorithms.get_default_algorithms())
        if unknown:
            raise ValueError(f"jwt.algorithms: unsupported {sorted(unknown)}")
        if algorithms & HMAC_ALGS and algorithms - HMAC_ALGS:
            # SECURITY: HS* beside public-key algorithms is the classic key-confusion setup.
            raise ValueError("jwt.algorithms: HS* cannot be mixed with public-key algorithms")
        self._cfg = cfg
        self._clock = clock
        self._algorithms = algorithms
        self._decoder = jwt.PyJWT()
        # Signatures already verified, by SHA-256 of the credential: the same bytes verify the
        # same way. SECURITY: each entry has an absolute deadline set when it was verified, so a
        # key withdrawn from the JWKS stops working within it however often the token is used.
        # Oldest entries go first when it is full.
        self._verified: dict[bytes, _Verified] = {}
        self._verified_for = min(VERIFIED_CACHE_SECONDS, cfg.jwks_cache)
        self._digests: dict[str, bytes] = {}  # only credentials that verified: never garbage
        self._jwks: JwksKeySource | None = None
        self._static_key: Any = None
        self._static_algs: frozenset[str] = frozenset()
        if algorithms <= HMAC_ALGS:
            if not cfg.secret or len(cfg.secret.encode()) < 32:
                raise ValueError("jwt.secret: HS* algorithms need a secret of at least 32 bytes")
            if cfg.jwks_url is not None or cfg.public_key_file is not None:
                raise ValueError("jwt: HS* algorithms take `secret`, not jwks_url or public_key_file")
            self._static_key, self._static_algs = cfg.secret.encode(), algorithms
        elif (cfg.jwks_url is None) == (cfg.public_key_file is None):
            raise ValueError("jwt: public-key algorithms need exactly one of jwks_url or public_key_file")
        elif cfg.public_key_file is not None:
            self._static_key = _load_public_key(cfg.public_key_file)
            self._static_algs = algorithms & _algorithms_for(self._static_key)
            if not self._static_algs:
                raise ValueError("jwt.public_key_file: the key fits none of jwt.algorithms")
        elif cfg.jwks_url is not None:
            self._jwks = JwksKeySource(
                cfg.jwks_url,
                algorithms,
                cfg.jwks_cache,
                cfg.jwks_refetch_interval,
                clock,
                max_stale=cfg.jwks_max_stale,
                on_refresh=self._keys_refreshed,
            )

    @property
    def jwks(self) -> JwksKeySource | None:
        return self._jwks

    async def start(self) -> None:
        if self._jwks is not None:
            await self._jwks.start()

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()

    async def __aenter__(self) -> JwtAuthenticator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def authenticate(self, credential: str, requested_workspace: str | None) -> Principal | None:
        """A Principal for a good JWT; None for a credential that is not JWT-shaped; raises for a
        JWT-shaped one that fails (never echoing it)."""
        if len(credential) > MAX_JWT_BYTES:
            # SECURITY: cap before decoding anything (the front door caps too).
            if credential.count(".") in (2, 4):
                raise InvalidToken("token too large")
            return None
        digest = self._digests.get(credential)
        if digest is None:
            digest = hashlib.sha256(credential.encode()).digest()
        cached = self._cached(digest)
        if cached is not None:
            # Times and claims are checked on every request, cached signature or not.
            exp = self._check_window(cached.times)
            principal = cached.principals.get(requested_workspace)
            if principal is None:
                principal = self._principal(cached.payload, exp, requested_workspace)
                if len(cached.principals) < PRINCIPALS_PER_TOKEN:
                    cached.principals[requested_workspace] = principal
            return principal
        if _JWE_RE.fullmatch(credential):
            # SECURITY: encrypted tokens (JWE) are not accepted.
            raise InvalidToken("encrypted tokens (JWE) are not accepted")
        if not _JWS_RE.fullmatch(credential):
            return None
        header_segment, payload_segment, _ = credential.split(".")
        header = json_segment(header_segment, "header")
        alg, kid = self._check_header(header)
        payload = json_segment(payload_segment, "payload")
        verified_at = self._clock()
        key = await self._key_for(kid, alg)
        self._verify(credential, key)
        times = _times(payload)
        exp = self._check_window(times)
        principal = self._principal(payload, exp, requested_workspace)
        deadline = verified_at + self._verified_for
        key_print = None
        if self._jwks is not None:
            # SECURITY: never trusted past the key set it was checked against.
            deadline = min(deadline, self._jwks.trusted_until())
            key_print = fingerprint(key)
        verified = self._verified
        if len(verified) >= VERIFIED_CACHE_SIZE:
            del verified[next(iter(verified))]
        verified[digest] = _Verified(verified_at, deadline, kid, alg, key_print, payload, times)
        if len(self._digests) >= DIGEST_MEMO:
            self._digests.clear()
        self._digests[credential] = digest
        return principal

    def _cached(self, digest: bytes) -> _Verified | None:
        entry = self._verified.get(digest)
        if entry is None:
            return None
        now = self._clock()
        if not entry.verified_at <= now < entry.deadline:
            # SECURITY: an absolute age, from the verification; a clock stepping back counts too.
            self._verified.pop(digest, None)
            return None
        return entry

    def _keys_refreshed(self, source: JwksKeySource) -> None:
        """SECURITY: drop verifications whose key the refetched set no longer holds (or holds
        with other material), so a withdrawn key stops working at the next fetch."""
        prints: dict[tuple[str | None, str], bytes | None] = {}
        for digest, entry in list(self._verified.items()):
            slot = (entry.kid, entry.alg)
            if slot not in prints:
                key = source.find(entry.kid, entry.alg)
                prints[slot] = fingerprint(key) if key is not None else None
            if prints[slot] is None or prints[slot] != entry.key_print:
                self._verified.pop(digest, None)

    def _check_header(self, header: dict[str, Any]) -> tuple[str, str | None]:
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise InvalidToken("token header has no algorithm")
        if alg.lower() == "none":
            # SECURITY: unsigned tokens, in any spelling, are never accepted.
            raise InvalidToken("alg none is never accepted")
        if alg not in self._algorithms:
            # SECURITY: the allowlist is checked before any key lookup, so a foreign algorithm
            # can neither pick a key (HS256 with the RSA public key) nor trigger a JWKS fetch.
            raise InvalidToken("token algorithm not allowed")
        for param in _REFUSED_HEADER_PARAMS:
            if param in header:
                raise InvalidToken(f"token header parameter {param!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS):
            raise InvalidToken("token kid must be a short string")
        return alg, kid

    async def _key_for(self, kid: str | None, alg: str) -> Any:
        if self._jwks is not None:
            return await self._jwks.key_for(kid, alg)
        if alg not in self._static_algs:
            raise InvalidToken("no key matches the token's algorithm")
        # SECURITY: with a secret or a key file the key is fixed; the kid chooses nothing.
        return self._static_key

    def _verify(self, credential: str, key: Any) -> None:
        try:
            self._decoder.decode(
                credential,
                key=key,
                # SECURITY: the allowlist goes to PyJWT too, never derived from the token.
                algorithms=sorted(self._algorithms),
                audience=self._cfg.audience,
                issuer=self._cfg.issuer,
                options={
                    # Times are checked in _check_times against the injected clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    # The subject claim (which need not be `sub`) is checked in _principal.
                    "verify_sub": False,
                    # SECURITY: short RSA keys and HMAC secrets are refused, not warned about.
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise InvalidToken("signature verification failed") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("audience mismatch") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("issuer mismatch") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken("token algorithm not allowed") from None
        except jwt.InvalidKeyError:
            raise InvalidToken("the key does not fit the token") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidToken("malformed token") from None

    def _check_window(self, times: tuple[float, float | None, float | None]) -> float:
        """SECURITY: exp, nbf and iat (see `_times`) against the clock, on every request."""
        exp, nbf, iat = times
        now, leeway = self._clock(), self._cfg.leeway
        if exp <= now - leeway:
            raise InvalidToken("token expired")
        max_lifetime = self._cfg.max_lifetime
        if max_lifetime is not None and exp > now + max_lifetime + leeway:
            # SECURITY: an operator may bound how long-lived a JWT the gateway honours.
            raise InvalidToken("token 'exp' lies further ahead than jwt.max_lifetime")
        for claim, at in (("nbf", nbf), ("iat", iat)):
            if at is not None and at > now + leeway:
                # SECURITY: not yet valid (nbf), or minted in the future (iat).
                raise InvalidToken(f"token {claim!r} is in the future")
        return exp

    def _principal(
        self, payload: Mapping[str, Any], exp: float, requested_workspace: str | None
    ) -> Principal:
        names = self._cfg.claims
        subject = claim_str(payload, names.subject)
        if subject is None:
            raise InvalidToken(f"token lacks the {names.subject!r} claim")
        role = claim_str(payload, names.role) if names.role else None
        single = claim_str(payload, names.workspace) if names.workspace else None
        members = claim_list(payload, names.workspaces) if names.workspaces else None
        workspace = workspace_of(single, members, requested_workspace)
        held = self._scopes(payload, role)
        return Principal(
            kind="jwt",
            subject=subject,
            scopes=held,
            workspace=workspace,
            role=role,
            expires_at=exp,
            mint_scopes=held,
            workspaces=frozenset(members) if members is not None else None,
        )

    def _scopes(self, payload: Mapping[str, Any], role: str | None) -> frozenset[str]:
        """The role bounds; the scope claim narrows where it is present (contract, section 6).

        roles      scope claim configured   claim in the JWT   holds
        no         no                       -                  full (the upstream decides)
        no         yes                      present            the claim's scopes
        no         yes                      absent             nothing
        yes        no                       -                  the role's cap
        yes        yes                      present            the claim's scopes within the cap
        yes        yes                      absent             the role's cap
        """
        claimed: frozenset[str] | None = None
        if self._cfg.claims.scopes:
            claimed = scope_claim(payload, self._cfg.claims.scopes)
            if claimed is not None:
                # SECURITY: `*` is role-cap syntax in our config, not a scope an issuer can
                # grant: a claimed `*` is ignored rather than read as "everything".
                claimed -= {"*"}
        if self._cfg.roles is None:
            if claimed is not None:
                return claimed
            # SECURITY: `full` only when no scope claim is configured at all; a JWT that lacks
            # the configured claim holds nothing.
            return frozenset() if self._cfg.claims.scopes else frozenset({"full"})
        # SECURITY: a role the config does not name holds nothing.
        cap = self._cfg.roles.get(role, frozenset()) if role is not None else frozenset()
        if claimed is None:
            # A user session carries a role and no scope claim: the role's cap.
            return frozenset(cap)
        # SECURITY: the role bounds what the token's scope claim may grant.
        return frozenset(s for s in claimed if "*" in cap or scope_rules.covers(cap, s))


def authenticator_for(cfg: Config, clock: Callable[[], float] = time.time) -> JwtAuthenticator | None:
    """The configured JWT authenticator; a key that cannot be used is a ConfigError at load time."""
    if cfg.jwt is None:
        return None
    try:
        return JwtAuthenticator(cfg.jwt, clock)
    except ValueError as exc:
        raise ConfigError([Problem(cfg.path, cfg.jwt_line, str(exc))]) from None


def _load_public_key(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"jwt.public_key_file: cannot read {path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"jwt.public_key_file: not a PEM public key or certificate: {path}") from exc


def _algorithms_for(key: object) -> frozenset[str]:
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGS
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name)
        return frozenset(alg for alg, name in EC_CURVES.items() if name == curve)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def _times(payload: Mapping[str, Any]) -> tuple[float, float | None, float | None]:
    """The payload's exp, nbf and iat as numbers (None when absent), each checked for type."""
    if "exp" not in payload:
        # SECURITY: a token without exp would be valid forever.
        raise InvalidToken("token lacks the 'exp' claim")
    exp = numeric_date(payload, "exp")
    nbf = numeric_date(payload, "nbf") if "nbf" in payload else None
    iat = numeric_date(payload, "iat") if "iat" in payload else None
    return exp, nbf, iat
