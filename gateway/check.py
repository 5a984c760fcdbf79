"""`scopegate check`: config and surface validation, fit for a CI step in a policy repository."""

from __future__ import annotations

import json
import sys

from .auth.jwt import authenticator_for
from .config import Config, load_config
from .errors import ConfigError, Problem
from .surface.lint import weaker_prefix_warnings
from .surface.loader import load_surface
from .tokens.url import weak_tls


def run_check(config_path: str, fmt: str = "text", openapi: str | None = None) -> int:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    routes = 0
    try:
        cfg = load_config(config_path)
        authenticator_for(cfg)  # loads the JWT key material, as serve would
        warnings += jwt_warnings(cfg)
        if (weak := weak_tls(cfg.store)) is not None:
            # SECURITY: token hashes and revocations cross this link; an attacker on the path
            # could answer for the store.
            warnings.append(Problem(cfg.path, cfg.store_line, weak))
        surface = load_surface(cfg.surface_files, cfg.upstreams.keys(), cfg.management_mount)
        routes = len(surface.routes)
        warnings += weaker_prefix_warnings(surface)
        if openapi is not None:
            from .openapi import coverage

            problems += coverage(openapi, surface)
    except ConfigError as exc:
        problems = list(exc.problems)
    if fmt == "json":
        print(
            json.dumps(
                {
                    "ok": not problems,
                    "routes": routes,
                    "problems": [{"file": p.file, "line": p.line, "message": p.message} for p in problems],
                    "warnings": [{"file": w.file, "line": w.line, "message": w.message} for w in warnings],
                },
                indent=2,
            )
        )
        return 1 if problems else 0
    # Warnings never fail the check: they name settings that are legal but risky.
    for w in warnings:
        print(f"{w.file}:{w.line}: warning: {w.message}", file=sys.stderr)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
    else:
        print(f"ok: {config_path} and {len(cfg.surface_files)} surface file(s), {routes} routes")
    return 1 if problems else 0


def jwt_warnings(cfg: Config) -> list[Problem]:
    """Legal `jwt:` settings that make a JWT worth more than an operator may think."""
    jwt = cfg.jwt
    if jwt is None:
        return []
    out = []
    if jwt.issuer is None:
        # SECURITY: without `iss`, any issuer trusted with the same keys is trusted here too.
        out.append(
            Problem(cfg.path, cfg.jwt_line, "jwt.issuer is not set: a JWT from any issuer is accepted")
        )
    if jwt.audience is None:
        # SECURITY: without `aud`, a JWT minted without an audience for any API on the IdP works here.
        message = "jwt.audience is not set: a JWT without an `aud` claim is accepted, whatever API it was for"
        out.append(Problem(cfg.path, cfg.jwt_line, message))
    if jwt.roles is None and jwt.claims.scopes is None:
        out.append(
            Problem(
                cfg.path,
                cfg.jwt_line,
                "neither jwt.roles nor jwt.claims.scopes is set: every valid JWT holds `full`",
            )
        )
    return out
