"""The validated configuration: frozen objects built by `load_config` (see __init__.py)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from yarl import URL

from ..web.tls import TlsFiles

DEFAULT_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    tls: TlsFiles | None = None


@dataclass(frozen=True)
class Upstream:
    name: str
    url: URL
    connect_timeout: float = 5.0
    timeout: float = 30.0
    ca_file: str | None = None  # extra CA bundle for an https upstream (system CAs otherwise)


@dataclass(frozen=True)
class Limits:
    max_body: int = 10 * 2**20
    max_credential: int = 4096
    header_timeout: float = 10.0
    failed_auth_per_minute: int = 0
    form_inspect: int = 64 * 2**10  # urlencoded bodies are read whole up to this to find `_method`


@dataclass(frozen=True)
class TokensConfig:
    prefix: str = "st_"
    cache_ttl: float = 60.0
    default_ttl: float = 90 * 86400.0
    max_ttl: float = 365 * 86400.0
    revocation_poll: float = 1.0
    last_used_flush: float = 5.0
    max_rotation_overlap: float = 7 * 86400.0
    idle_ttl: float | None = None  # off by default
    expiry_webhook: ExpiryWebhook | None = None


@dataclass(frozen=True)
class ExpiryWebhook:
    url: URL
    before: tuple[int, ...]  # seconds before expiry, largest first


@dataclass(frozen=True)
class JwtClaims:
    subject: str = "sub"
    workspace: str | None = "workspace_id"
    workspaces: str | None = "workspaces"
    role: str | None = "role"
    scopes: str | None = None


@dataclass(frozen=True)
class JwtConfig:
    algorithms: tuple[str, ...] = ("RS256",)
    jwks_url: URL | None = None
    secret: str | None = None
    public_key_file: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway: float = 30.0
    claims: JwtClaims = field(default_factory=JwtClaims)
    roles: Mapping[str, frozenset[str]] | None = None
    jwks_cache: float = 300.0
    jwks_refetch_interval: float = 10.0
    max_lifetime: float | None = None
    jwks_max_stale: float = 24 * 3600.0


@dataclass(frozen=True)
class UiConfig:
    """`management.ui`: the self-service token page at `<mount>/ui/` (false turns it off)."""

    enabled: bool = True
    cookie: str | None = None  # the cookie holding the signed-in user's JWT, if any


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True)
class Config:
    path: str
    listen: Listen = Listen("0.0.0.0", 8080)
    admin: Listen | None = Listen("127.0.0.1", 9090)
    methods: frozenset[str] = frozenset(DEFAULT_METHODS)
    surface_files: tuple[str, ...] = ()
    upstreams: Mapping[str, Upstream] = field(default_factory=dict)
    store: str = "sqlite:///scopegate.db"
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    limits: Limits = Limits()
    tokens: TokensConfig = TokensConfig()
    jwt: JwtConfig | None = None
    workspace_header: str = "X-Workspace-Id"
    management_mount: str = "/auth"
    ui: UiConfig = UiConfig()
    log: LogConfig = LogConfig()
    drain_timeout: float = 30.0
    jwt_line: int = 0  # where `jwt:` stands, for problems found when its keys are loaded
    store_line: int = 0  # where `store:` stands, for `check`'s warnings

    @property
    def base_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def sqlite_path(self) -> str | None:
        """The SQLite file the `store` URL names, resolved against the config file."""
        if not self.store.startswith("sqlite:///"):
            return None
        rest = self.store[len("sqlite:///") :]
        return rest if rest.startswith("/") else os.path.join(self.base_dir, rest)
