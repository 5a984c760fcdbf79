"""The `jwt` section: algorithms, key sources, claims and roles."""

from __future__ import annotations

import os
from typing import Any

from ..yamlsrc import LList, LMap, line_of
from .model import JwtClaims, JwtConfig
from .reader import Reader, http_url, nonempty_str, nonneg_duration, pos_duration

_JWT_ALGS = {
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
}


def read_jwt(r: Reader, node: Any, base_dir: str) -> JwtConfig:
    w = "jwt"
    keys = {
        "algorithms",
        "jwks_url",
        "secret",
        "public_key_file",
        "issuer",
        "audience",
        "leeway",
        "claims",
        "roles",
        "jwks_cache",
        "jwks_refetch_interval",
        "max_lifetime",
        "jwks_max_stale",
    }
    m = r.mapping(node, w, keys)
    algs_node = m.get("algorithms", LList(["RS256"]))
    algs: list[str] = []
    if not isinstance(algs_node, list) or not algs_node:
        r.error(line_of(m, "algorithms"), "jwt.algorithms: expected a non-empty list")
    else:
        for i, a in enumerate(algs_node):
            if not isinstance(a, str) or a not in _JWT_ALGS:
                # SECURITY: "none" (in any case) is never accepted, whatever the config says.
                r.error(line_of(algs_node, i, m.line), f"jwt.algorithms[{i}]: unsupported algorithm {a!r}")
            else:
                algs.append(a)
    hs = [a for a in algs if a.startswith("HS")]
    if hs and len(hs) != len(algs):
        # SECURITY: mixing HMAC and public-key algorithms invites key confusion (CVE-2015-9235 kin).
        r.error(line_of(m, "algorithms"), "jwt.algorithms: HS* cannot be mixed with public-key algorithms")
    secret = (
        r.get(m, "secret", w, nonempty_str, None, "a string")
        or os.environ.get("SCOPEGATE_JWT_SECRET")
        or None
    )
    jwks_url = None
    if "jwks_url" in m:
        jwks_url = r.get(m, "jwks_url", w, http_url, None, "an http(s) URL")
        if (
            jwks_url is not None
            and jwks_url.scheme == "http"
            and jwks_url.host not in ("127.0.0.1", "localhost", "::1")
        ):
            r.error(line_of(m, "jwks_url"), "jwt.jwks_url: must be https (plain http only on loopback)")
    key_file = r.get(m, "public_key_file", w, nonempty_str, None, "a file path")
    if key_file is not None and not os.path.isabs(key_file):
        key_file = os.path.join(base_dir, key_file)
    if key_file is not None and not os.path.isfile(key_file):
        r.error(line_of(m, "public_key_file"), f"jwt.public_key_file: no such file {key_file!r}")
    sources = [s for s in (jwks_url, key_file) if s is not None]
    if hs:
        if sources:
            r.error(m.line, "jwt: HS* algorithms take `secret`, not jwks_url or public_key_file")
        if not secret:
            r.error(m.line, "jwt: HS* algorithms need `secret` or $SCOPEGATE_JWT_SECRET")
        elif len(secret.encode()) < 32:
            r.error(line_of(m, "secret", m.line), "jwt.secret: must be at least 32 bytes")
    elif algs:
        if len(sources) != 1:
            r.error(m.line, "jwt: public-key algorithms need exactly one of jwks_url or public_key_file")
        secret = None
    claims_node = r.mapping(
        m.get("claims", LMap()), "jwt.claims", {"subject", "workspace", "workspaces", "role", "scopes"}
    )
    dc = JwtClaims()
    claims = JwtClaims(
        r.get(claims_node, "subject", "jwt.claims", nonempty_str, dc.subject, "a claim name"),
        r.get(claims_node, "workspace", "jwt.claims", nonempty_str, dc.workspace, "a claim name"),
        r.get(claims_node, "workspaces", "jwt.claims", nonempty_str, dc.workspaces, "a claim name"),
        r.get(claims_node, "role", "jwt.claims", nonempty_str, dc.role, "a claim name"),
        r.get(claims_node, "scopes", "jwt.claims", nonempty_str, dc.scopes, "a claim name"),
    )
    roles: dict[str, frozenset[str]] | None = None
    if m.get("roles") is not None:
        rm = r.mapping(m["roles"], "jwt.roles", set(m["roles"]) if isinstance(m["roles"], dict) else set())
        roles = {}
        for role, scopes in rm.items():
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                r.error(line_of(rm, role), f"jwt.roles.{role}: expected a list of scopes")
                continue
            roles[role] = frozenset(scopes)
    return JwtConfig(
        tuple(algs),
        jwks_url,
        secret,
        key_file,
        r.get(m, "issuer", w, nonempty_str, None, "a string"),
        r.get(m, "audience", w, nonempty_str, None, "a string"),
        r.get(m, "leeway", w, nonneg_duration, 30.0, "seconds >= 0"),
        claims,
        roles,
        r.get(m, "jwks_cache", w, pos_duration, 300.0, "a positive duration"),
        r.get(m, "jwks_refetch_interval", w, pos_duration, 10.0, "a positive duration"),
        _max_lifetime(r, m),
        r.get(m, "jwks_max_stale", w, pos_duration, 24 * 3600.0, "a positive duration such as 24h"),
    )


def _max_lifetime(r: Reader, m: LMap) -> float | None:
    """`jwt.max_lifetime`: a positive duration, or null/`off` (the default) for no bound."""
    value = m.get("max_lifetime")
    if value is None or value is False or value == "off":
        return None
    return r.get(m, "max_lifetime", "jwt", pos_duration, None, "a positive duration such as 30d, or null")
