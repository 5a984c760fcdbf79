"""`scopegate check`: config and surface validation, fit for a CI step in a policy repository."""

from __future__ import annotations

import json
import sys

from .auth.jwt import authenticator_for
from .config import load_config
from .errors import ConfigError, Problem
from .surface.lint import weaker_prefix_warnings
from .surface.loader import load_surface


def run_check(config_path: str, fmt: str = "text", openapi: str | None = None) -> int:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    routes = 0
    try:
        cfg = load_config(config_path)
        authenticator_for(cfg)  # loads the JWT key material, as serve would
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
    for w in warnings:
        print(w, file=sys.stderr)  # warnings never fail the check
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
    else:
        print(f"ok: {config_path} and {len(cfg.surface_files)} surface file(s), {routes} routes")
    return 1 if problems else 0
