"""config.yaml -> frozen, validated objects. Every problem names `file:line` and the key.

The sections are read in their own modules (sections.py, jwtconf.py) with reader.py's Reader;
the objects they build are in model.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection

from ..errors import ConfigError
from ..yamlsrc import LMap, line_of, load_yaml
from .jwtconf import read_jwt
from .model import (
    DEFAULT_METHODS,
    Config,
    ExpiryWebhook,
    JwtClaims,
    JwtConfig,
    Limits,
    Listen,
    LogConfig,
    TokensConfig,
    UiConfig,
    Upstream,
)
from .reader import Reader, parse_duration, parse_size, pos_duration
from .sections import (
    read_limits,
    read_listen,
    read_methods,
    read_store,
    read_tokens,
    read_trusted,
    read_ui,
    read_upstreams,
)

__all__ = [
    "DEFAULT_METHODS",
    "MINT_SECTIONS",
    "STORE_SECTIONS",
    "Config",
    "ExpiryWebhook",
    "JwtClaims",
    "JwtConfig",
    "Limits",
    "Listen",
    "LogConfig",
    "Reader",
    "TokensConfig",
    "UiConfig",
    "Upstream",
    "default_config_path",
    "load_config",
    "parse_duration",
    "parse_size",
]

_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}\Z")

TOP_KEYS = {
    "listen",
    "methods",
    "admin",
    "surface",
    "upstreams",
    "store",
    "trusted_proxies",
    "limits",
    "tokens",
    "jwt",
    "headers",
    "management",
    "log",
    "drain_timeout",
}


# What the token commands read: `token list` and `token revoke` touch only the store; `token
# create` also checks scopes against the catalogue, which the surface files name.
STORE_SECTIONS = frozenset({"store", "tokens"})
MINT_SECTIONS = STORE_SECTIONS | {"surface", "upstreams", "management"}


def load_config(path: str, sections: Collection[str] | None = None) -> Config:
    """Read and validate config.yaml. Raises ConfigError listing every problem found.

    With `sections`, only those top-level sections are read and validated (the others keep
    their defaults, `jwt` none): a command that needs the store never fails on a JWT secret it
    does not use. Unknown top-level keys are errors either way. `serve` and `check` read all.
    """
    raw = load_yaml(path)
    r = Reader(path)
    if raw is None:
        raw = LMap()
    top = r.mapping(raw, "config", TOP_KEYS, 1)
    if sections is not None:
        kept = LMap((k, v) for k, v in top.items() if k in sections)
        kept.line, kept.lines = top.line, top.lines
        top = kept
    base_dir = os.path.dirname(os.path.abspath(path))

    surface = top.get("surface")
    files: list[str] = []
    if surface is None:
        if sections is None or "surface" in sections:
            r.error(top.line or 1, "surface: missing; name a surface file or a list of them")
    elif isinstance(surface, str):
        files = [surface]
    elif isinstance(surface, list) and surface and all(isinstance(s, str) for s in surface):
        files = list(surface)
    else:
        r.error(line_of(top, "surface"), "surface: expected a file path or a non-empty list of them")
    files = [f if os.path.isabs(f) else os.path.join(base_dir, f) for f in files]

    upstreams = read_upstreams(r, top.get("upstreams", LMap()), line_of(top, "upstreams"), base_dir)
    headers = r.mapping(top.get("headers", LMap()), "headers", {"workspace"}, line_of(top, "headers"))
    ws_header = r.get(
        headers,
        "workspace",
        "headers",
        lambda v: v if isinstance(v, str) and _HEADER_RE.match(v) else None,
        "X-Workspace-Id",
        "a header name",
    )
    management = r.mapping(
        top.get("management", LMap()), "management", {"mount", "ui"}, line_of(top, "management")
    )
    mount = r.get(
        management,
        "mount",
        "management",
        lambda v: (
            v.rstrip("/")
            if isinstance(v, str)
            and re.match(r"^(/[A-Za-z0-9._~-]+)+/?$", v)
            and not {".", ".."} & set(v.split("/"))
            else None
        ),
        "/auth",
        "an absolute path such as /auth",
    )
    log = r.mapping(top.get("log", LMap()), "log", {"level", "format"}, line_of(top, "log"))
    log_cfg = LogConfig(
        r.get(
            log,
            "level",
            "log",
            lambda v: v if v in ("debug", "info", "warning", "error") else None,
            "info",
            "debug, info, warning or error",
        ),
        r.get(log, "format", "log", lambda v: v if v in ("json", "text") else None, "json", "json or text"),
    )
    admin: Listen | None = Listen("127.0.0.1", 9090)
    if "admin" in top and top["admin"] is False:
        admin = None
    elif "admin" in top:
        admin = read_listen(r, top["admin"], "admin", Listen("127.0.0.1", 9090), line_of(top, "admin"))
    cfg = Config(
        path=path,
        listen=read_listen(
            r, top.get("listen", LMap()), "listen", Listen("0.0.0.0", 8080), line_of(top, "listen"), base_dir
        ),
        admin=admin,
        methods=read_methods(r, top),
        surface_files=tuple(files),
        upstreams=upstreams,
        store=read_store(r, top),
        trusted_proxies=read_trusted(r, top),
        limits=read_limits(r, top.get("limits", LMap()), line_of(top, "limits")),
        tokens=read_tokens(r, top.get("tokens", LMap()), line_of(top, "tokens")),
        jwt=read_jwt(r, top["jwt"], base_dir) if top.get("jwt") is not None else None,
        workspace_header=ws_header,
        management_mount=mount,
        ui=read_ui(r, management),
        log=log_cfg,
        drain_timeout=r.get(top, "drain_timeout", "config", pos_duration, 30.0, "a positive duration"),
        jwt_line=line_of(top, "jwt") if "jwt" in top else 0,
        store_line=line_of(top, "store") if "store" in top else 0,
    )
    if r.problems:
        raise ConfigError(r.problems)
    return cfg


def default_config_path(explicit: str | None) -> str:
    return explicit or os.environ.get("SCOPEGATE_CONFIG") or "config.yaml"
