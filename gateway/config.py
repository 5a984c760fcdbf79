"""config.yaml -> frozen, validated objects. Every problem names `file:line` and the key."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from yarl import URL

from .errors import ConfigError, Problem
from .tokens.url import check_store_url
from .web.tls import TlsFiles, read_tls
from .yamlsrc import LList, LMap, line_of, load_yaml

DEFAULT_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
KNOWN_METHODS = frozenset(DEFAULT_METHODS) | {"TRACE", "CONNECT", "PROPFIND", "QUERY"}
_METHOD_RE = re.compile(r"^[A-Z]{1,20}$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_]{1,16}$")
# RFC 6265 cookie-name characters (a token), e.g. `session` or `__Host-jwt`.
_COOKIE_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")


def parse_duration(value: object) -> float | None:
    """`30d`, `12h`, `90`, 90 -> seconds; None when not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    return None


def parse_size(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    return None


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

    @property
    def base_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def sqlite_path(self) -> str | None:
        """The SQLite file the `store` URL names, resolved against the config file."""
        if not self.store.startswith("sqlite:///"):
            return None
        rest = self.store[len("sqlite:///") :]
        return rest if rest.startswith("/") else os.path.join(self.base_dir, rest)


T = TypeVar("T")


class Reader:
    """Pulls typed values out of a located YAML mapping, collecting every problem."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def error(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def mapping(self, node: Any, where: str, allowed: set[str], line: int = 0) -> LMap:
        if not isinstance(node, LMap):
            self.error(getattr(node, "line", line), f"{where}: expected a mapping")
            return LMap()
        for key in node:
            if key not in allowed:
                self.error(line_of(node, key), f"{where}: unknown key {key!r}")
        return node

    def get(
        self,
        node: LMap,
        key: str,
        where: str,
        convert: Callable[[Any], T | None],
        default: T,
        expect: str,
    ) -> T:
        if key not in node or node[key] is None:
            return default
        value = convert(node[key])
        if value is None:
            self.error(line_of(node, key), f"{where}.{key}: expected {expect}, got {node[key]!r}")
            return default
        return value


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _port(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535 else None


def _nonneg_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _pos_duration(v: Any) -> float | None:
    d = parse_duration(v)
    return d if d is not None and d > 0 else None


def _nonneg_duration(v: Any) -> float | None:
    d = parse_duration(v)
    return d if d is not None and d >= 0 else None


def _pos_size(v: Any) -> int | None:
    s = parse_size(v)
    return s if s is not None and s > 0 else None


def _listen(
    r: Reader, node: Any, where: str, default: Listen, line: int = 0, tls_base: str | None = None
) -> Listen:
    m = r.mapping(node, where, {"host", "port"} | ({"tls"} if tls_base is not None else set()), line)
    tls = None
    if tls_base is not None and m.get("tls") is not None:
        tls = read_tls(m["tls"], tls_base, line_of(m, "tls", line), r.error)
    return Listen(
        r.get(m, "host", where, _str, default.host, "a host name or address"),
        r.get(m, "port", where, _port, default.port, "a port number 0-65535"),
        tls,
    )


def _http_url(v: Any) -> URL | None:
    if not isinstance(v, str):
        return None
    try:
        url = URL(v)
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    return url


def _upstreams(r: Reader, node: Any, line: int = 0, base_dir: str = ".") -> dict[str, Upstream]:
    out: dict[str, Upstream] = {}
    m = r.mapping(node, "upstreams", set(node) if isinstance(node, LMap) else set(), line)
    for name, value in m.items():
        where = f"upstreams.{name}"
        line = line_of(m, name)
        if isinstance(value, str):
            url = _http_url(value)
            if url is None:
                r.error(line, f"{where}: expected an http(s) URL, got {value!r}")
                continue
            out[name] = Upstream(name, url)
            continue
        um = r.mapping(value, where, {"url", "connect_timeout", "timeout", "ca_file"}, line)
        url = r.get(um, "url", where, _http_url, None, "an http(s) URL")
        if "url" not in um:
            r.error(um.line or line, f"{where}: missing key 'url'")
        if url is None:
            continue
        out[name] = Upstream(
            name,
            url,
            r.get(um, "connect_timeout", where, _pos_duration, 5.0, "a positive number of seconds"),
            r.get(um, "timeout", where, _pos_duration, 30.0, "a positive number of seconds"),
            _ca_file(r, um, where, base_dir),
        )
    return out


def _ca_file(r: Reader, um: LMap, where: str, base_dir: str) -> str | None:
    ca_file = r.get(um, "ca_file", where, _str, None, "a file path")
    if ca_file is None:
        return None
    if not os.path.isabs(ca_file):
        ca_file = os.path.join(base_dir, ca_file)
    if not os.path.isfile(ca_file):
        r.error(line_of(um, "ca_file"), f"{where}.ca_file: no such file {ca_file!r}")
        return None
    try:
        ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        r.error(line_of(um, "ca_file"), f"{where}.ca_file: not a PEM CA bundle ({exc})")
        return None
    if not str(um.get("url", "")).startswith("https://"):
        r.error(line_of(um, "ca_file"), f"{where}.ca_file: only an https upstream takes a CA file")
    return ca_file


def _methods(r: Reader, node: LMap) -> frozenset[str]:
    value = node.get("methods")
    if value is None:
        return frozenset(DEFAULT_METHODS)
    if not isinstance(value, LList) or not value:
        r.error(line_of(node, "methods"), "methods: expected a non-empty list of HTTP methods")
        return frozenset(DEFAULT_METHODS)
    out = set()
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _METHOD_RE.match(item):
            r.error(line_of(value, i), f"methods[{i}]: {item!r} is not an upper-case HTTP method")
        else:
            out.add(item)
    return frozenset(out)


def _trusted(r: Reader, node: LMap) -> tuple[Any, ...]:
    value = node.get("trusted_proxies")
    if value is None:
        return ()
    if not isinstance(value, LList):
        r.error(line_of(node, "trusted_proxies"), "trusted_proxies: expected a list of CIDRs")
        return ()
    out = []
    for i, item in enumerate(value):
        try:
            out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            r.error(line_of(value, i), f"trusted_proxies[{i}]: {item!r} is not a CIDR")
    return tuple(out)


def _limits(r: Reader, node: Any, line: int = 0) -> Limits:
    w = "limits"
    keys = {"max_body", "max_credential", "header_timeout", "failed_auth_per_minute", "form_inspect"}
    m = r.mapping(node, w, keys, line)
    d = Limits()
    return Limits(
        r.get(m, "max_body", w, _pos_size, d.max_body, "a size such as 10MiB"),
        r.get(m, "max_credential", w, _pos_size, d.max_credential, "a positive number of bytes"),
        r.get(m, "header_timeout", w, _pos_duration, d.header_timeout, "a positive number of seconds"),
        r.get(m, "failed_auth_per_minute", w, _nonneg_int, d.failed_auth_per_minute, "an integer >= 0"),
        r.get(m, "form_inspect", w, _pos_size, d.form_inspect, "a size such as 64KiB"),
    )


def _tokens(r: Reader, node: Any, line: int = 0) -> TokensConfig:
    w = "tokens"
    keys = {"prefix", "cache_ttl", "default_ttl", "max_ttl", "revocation_poll", "last_used_flush"}
    keys |= {"max_rotation_overlap", "idle_ttl", "expiry_webhook"}
    m = r.mapping(node, w, keys, line)
    d = TokensConfig()
    prefix = r.get(
        m,
        "prefix",
        w,
        lambda v: v if isinstance(v, str) and _PREFIX_RE.match(v) else None,
        d.prefix,
        "1-16 letters, digits or _",
    )
    dur = "a positive duration such as 60, 30s or 90d"
    t = TokensConfig(
        prefix,
        r.get(m, "cache_ttl", w, _pos_duration, d.cache_ttl, dur),
        r.get(m, "default_ttl", w, _pos_duration, d.default_ttl, dur),
        r.get(m, "max_ttl", w, _pos_duration, d.max_ttl, dur),
        r.get(m, "revocation_poll", w, _pos_duration, d.revocation_poll, dur),
        r.get(m, "last_used_flush", w, _pos_duration, d.last_used_flush, dur),
        r.get(m, "max_rotation_overlap", w, _nonneg_duration, d.max_rotation_overlap, dur),
        r.get(m, "idle_ttl", w, _pos_duration, None, dur),
        _expiry_webhook(r, m.get("expiry_webhook"), line_of(m, "expiry_webhook", m.line)),
    )
    if t.default_ttl > t.max_ttl:
        r.error(line_of(m, "default_ttl", m.line), "tokens.default_ttl: longer than tokens.max_ttl")
    if t.idle_ttl is not None and t.idle_ttl <= 2 * t.last_used_flush:
        # Uses are written every last_used_flush: a shorter idle_ttl would refuse active tokens.
        r.error(line_of(m, "idle_ttl", m.line), "tokens.idle_ttl: must exceed 2 x tokens.last_used_flush")
    return t


def _expiry_webhook(r: Reader, node: Any, line: int) -> ExpiryWebhook | None:
    if node is None:
        return None
    w = "tokens.expiry_webhook"
    m = r.mapping(node, w, {"url", "before"}, line)
    url = r.get(m, "url", w, _http_url, None, "an http(s) URL")
    if url is None and "url" not in m:
        r.error(m.line or line, f"{w}: missing key 'url'")
    if url is not None and url.scheme == "http" and url.host not in ("127.0.0.1", "localhost", "::1"):
        r.error(line_of(m, "url", line), f"{w}.url: must be https (plain http only on loopback)")
    before = m.get("before", LList(["7d", "1d"]))
    out: set[int] = set()
    if not isinstance(before, list) or not before:
        r.error(line_of(m, "before", line), f"{w}.before: expected a non-empty list of durations")
    else:
        for i, item in enumerate(before):
            d = _pos_duration(item)
            if d is None or d < 1:
                r.error(line_of(before, i, line), f"{w}.before[{i}]: expected a duration of 1s or more")
            else:
                out.add(int(d))
    return ExpiryWebhook(url, tuple(sorted(out, reverse=True))) if url is not None else None


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


def _jwt(r: Reader, node: Any, base_dir: str) -> JwtConfig:
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
    secret = r.get(m, "secret", w, _str, None, "a string") or os.environ.get("SCOPEGATE_JWT_SECRET") or None
    jwks_url = None
    if "jwks_url" in m:
        jwks_url = r.get(m, "jwks_url", w, _http_url, None, "an http(s) URL")
        if (
            jwks_url is not None
            and jwks_url.scheme == "http"
            and jwks_url.host not in ("127.0.0.1", "localhost", "::1")
        ):
            r.error(line_of(m, "jwks_url"), "jwt.jwks_url: must be https (plain http only on loopback)")
    key_file = r.get(m, "public_key_file", w, _str, None, "a file path")
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
        r.get(claims_node, "subject", "jwt.claims", _str, dc.subject, "a claim name"),
        r.get(claims_node, "workspace", "jwt.claims", _str, dc.workspace, "a claim name"),
        r.get(claims_node, "workspaces", "jwt.claims", _str, dc.workspaces, "a claim name"),
        r.get(claims_node, "role", "jwt.claims", _str, dc.role, "a claim name"),
        r.get(claims_node, "scopes", "jwt.claims", _str, dc.scopes, "a claim name"),
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
        r.get(m, "issuer", w, _str, None, "a string"),
        r.get(m, "audience", w, _str, None, "a string"),
        r.get(m, "leeway", w, _nonneg_duration, 30.0, "seconds >= 0"),
        claims,
        roles,
        r.get(m, "jwks_cache", w, _pos_duration, 300.0, "a positive duration"),
        r.get(m, "jwks_refetch_interval", w, _pos_duration, 10.0, "a positive duration"),
        _max_lifetime(r, m),
        r.get(m, "jwks_max_stale", w, _pos_duration, 24 * 3600.0, "a positive duration such as 24h"),
    )


def _max_lifetime(r: Reader, m: LMap) -> float | None:
    """`jwt.max_lifetime`: a positive duration, or null/`off` (the default) for no bound."""
    value = m.get("max_lifetime")
    if value is None or value is False or value == "off":
        return None
    return r.get(m, "max_lifetime", "jwt", _pos_duration, None, "a positive duration such as 30d, or null")


def _ui(r: Reader, management: LMap) -> UiConfig:
    value = management.get("ui")
    if value is None or value is True:
        return UiConfig()
    if value is False:
        return UiConfig(enabled=False)
    line = line_of(management, "ui", management.line)
    if not isinstance(value, LMap):
        r.error(
            line,
            f"management.ui: expected true, false or a mapping such as {{cookie: session}}, got {value!r}",
        )
        return UiConfig()
    m = r.mapping(value, "management.ui", {"cookie"}, line)
    cookie = r.get(
        m,
        "cookie",
        "management.ui",
        lambda v: v if isinstance(v, str) and _COOKIE_RE.match(v) else None,
        None,
        "a cookie name (letters, digits and !#$%&'*+.^_`|~-)",
    )
    return UiConfig(cookie=cookie)


def _store(r: Reader, node: LMap) -> str:
    value = node.get("store", "sqlite:///scopegate.db")
    problem = check_store_url(value) if isinstance(value, str) else f"expected a URL, got {value!r}"
    if problem is not None:
        r.error(line_of(node, "store"), f"store: {problem}")
        return "sqlite:///scopegate.db"
    return str(value)


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

    upstreams = _upstreams(r, top.get("upstreams", LMap()), line_of(top, "upstreams"), base_dir)
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
        admin = _listen(r, top["admin"], "admin", Listen("127.0.0.1", 9090), line_of(top, "admin"))
    cfg = Config(
        path=path,
        listen=_listen(
            r, top.get("listen", LMap()), "listen", Listen("0.0.0.0", 8080), line_of(top, "listen"), base_dir
        ),
        admin=admin,
        methods=_methods(r, top),
        surface_files=tuple(files),
        upstreams=upstreams,
        store=_store(r, top),
        trusted_proxies=_trusted(r, top),
        limits=_limits(r, top.get("limits", LMap()), line_of(top, "limits")),
        tokens=_tokens(r, top.get("tokens", LMap()), line_of(top, "tokens")),
        jwt=_jwt(r, top["jwt"], base_dir) if top.get("jwt") is not None else None,
        workspace_header=ws_header,
        management_mount=mount,
        ui=_ui(r, management),
        log=log_cfg,
        drain_timeout=r.get(top, "drain_timeout", "config", _pos_duration, 30.0, "a positive duration"),
        jwt_line=line_of(top, "jwt") if "jwt" in top else 0,
    )
    if r.problems:
        raise ConfigError(r.problems)
    return cfg


def default_config_path(explicit: str | None) -> str:
    return explicit or os.environ.get("SCOPEGATE_CONFIG") or "config.yaml"
