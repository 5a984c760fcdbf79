"""`scopegate routes` and `scopegate explain`: the surface as a table, and one request's decision."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from .config import Config
from .errors import GatewayError
from .pipeline import RouteRefused
from .surface.loader import load_surface
from .web.runtime import Runtime


def print_routes(cfg: Config) -> int:
    surface = load_surface(cfg.surface_files, cfg.upstreams.keys(), cfg.management_mount)
    rows = [("ID", "MATCH", "METHODS", "CLASS", "REQUIRES", "UPSTREAM")]
    for r in surface.routes:
        methods = ",".join(sorted(r.methods)) if r.methods else "*"
        match = f"path {r.path}" if r.path is not None else f"prefix {r.prefix}"
        if r.scopes:
            need = " | ".join(r.scopes)
        elif r.cls.value in ("public", "jwt_only"):
            need = (r.scope or "read/write by method") + (" (JWT only)" if r.cls.value == "jwt_only" else "")
        else:
            need = r.requirement("GET")
        mode = " (shadow)" if r.shadow else ""
        rows.append((r.id, match, methods, r.cls.value + mode, need, r.upstream))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def explain(cfg: Config, method: str, target: str, headers: CIMultiDict[str]) -> int:
    """Print the route, class, requirement, credential and decision `serve` would reach."""
    rt = Runtime(cfg)
    try:
        await rt.start()
        try:
            path = rt.pipeline.vet(method, target, CIMultiDictProxy(headers))
            d = await rt.pipeline.decide(method, path, CIMultiDictProxy(headers), "127.0.0.1")
        except RouteRefused as exc:
            r = exc.route
            print(f"route:       {r.id} ({r.where})")
            print(f"class:       {r.cls.value}")
            print(f"requires:    {r.requirement(method)}")
            print(f"credential:  {_cred(headers)}")
            print(f"decision:    deny {exc.status} {exc.code} ({exc.detail})")
            return 1
        except GatewayError as exc:
            print("route:       none")
            if exc.code == "no_route":  # vet passed: say which stronger rule a variant shadows
                shadowed = rt.matcher.match(method, path.segments, path.trailing_slash).shadowed
                if shadowed is not None:
                    print(f"shadows:     {shadowed.id} ({shadowed.where}), class {shadowed.cls.value}")
            print(f"decision:    deny {exc.status} {exc.code} ({exc.detail})")
            return 1
    finally:
        await rt.close()
    r = d.route
    print(f"route:       {r.id} ({r.where})")
    print(f"class:       {r.cls.value}")
    print(f"requires:    {r.requirement(method)}")
    who = d.principal
    cred = (
        "none"
        if who.kind == "anonymous"
        else (f"{who.kind} {who.token_id or who.subject} scopes={' '.join(sorted(who.scopes)) or '-'}")
    )
    print(f"credential:  {cred}")
    if d.shadow_denied is not None:
        print(f"decision:    shadow (would deny {d.shadow_denied.status} {d.shadow_denied.code}; forwarded)")
        return 1
    print(f"decision:    allow ok -> upstream {r.upstream}")
    return 0


def _cred(headers: CIMultiDict[str]) -> str:
    return "bearer credential given" if "Authorization" in headers else "none"
