"""The config sections other than `jwt`: listeners, upstreams, limits, tokens, the page, the store."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from typing import Any

from ..tokens.url import check_store_url
from ..web.tls import read_tls
from ..yamlsrc import LList, LMap, line_of
from .model import DEFAULT_METHODS, ExpiryWebhook, Limits, Listen, TokensConfig, UiConfig, Upstream
from .reader import (
    Reader,
    http_url,
    nonempty_str,
    nonneg_duration,
    nonneg_int,
    port_number,
    pos_duration,
    pos_size,
)

_METHOD_RE = re.compile(r"^[A-Z]{1,20}\Z")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_]{1,16}\Z")
# RFC 6265 cookie-name characters (a token), e.g. `session` or `__Host-jwt`.
_COOKIE_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}\Z")


def read_listen(
    r: Reader, node: Any, where: str, default: Listen, line: int = 0, tls_base: str | None = None
) -> Listen:
    m = r.mapping(node, where, {"host", "port"} | ({"tls"} if tls_base is not None else set()), line)
    tls = None
    if tls_base is not None and m.get("tls") is not None:
        tls = read_tls(m["tls"], tls_base, line_of(m, "tls", line), r.error)
    return Listen(
        r.get(m, "host", where, nonempty_str, default.host, "a host name or address"),
        r.get(m, "port", where, port_number, default.port, "a port number 0-65535"),
        tls,
    )


def read_upstreams(r: Reader, node: Any, line: int = 0, base_dir: str = ".") -> dict[str, Upstream]:
    out: dict[str, Upstream] = {}
    m = r.mapping(node, "upstreams", set(node) if isinstance(node, LMap) else set(), line)
    for name, value in m.items():
        where = f"upstreams.{name}"
        line = line_of(m, name)
        if isinstance(value, str):
            url = http_url(value)
            if url is None:
                r.error(line, f"{where}: expected an http(s) URL, got {value!r}")
                continue
            out[name] = Upstream(name, url)
            continue
        um = r.mapping(value, where, {"url", "connect_timeout", "timeout", "ca_file"}, line)
        url = r.get(um, "url", where, http_url, None, "an http(s) URL")
        if "url" not in um:
            r.error(um.line or line, f"{where}: missing key 'url'")
        if url is None:
            continue
        out[name] = Upstream(
            name,
            url,
            r.get(um, "connect_timeout", where, pos_duration, 5.0, "a positive number of seconds"),
            r.get(um, "timeout", where, pos_duration, 30.0, "a positive number of seconds"),
            _ca_file(r, um, where, base_dir),
        )
    return out


def _ca_file(r: Reader, um: LMap, where: str, base_dir: str) -> str | None:
    ca_file = r.get(um, "ca_file", where, nonempty_str, None, "a file path")
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


def read_methods(r: Reader, node: LMap) -> frozenset[str]:
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


def read_trusted(r: Reader, node: LMap) -> tuple[Any, ...]:
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


def read_limits(r: Reader, node: Any, line: int = 0) -> Limits:
    w = "limits"
    keys = {"max_body", "max_credential", "header_timeout", "failed_auth_per_minute", "form_inspect"}
    m = r.mapping(node, w, keys, line)
    d = Limits()
    return Limits(
        r.get(m, "max_body", w, pos_size, d.max_body, "a size such as 10MiB"),
        r.get(m, "max_credential", w, pos_size, d.max_credential, "a positive number of bytes"),
        r.get(m, "header_timeout", w, pos_duration, d.header_timeout, "a positive number of seconds"),
        r.get(m, "failed_auth_per_minute", w, nonneg_int, d.failed_auth_per_minute, "an integer >= 0"),
        r.get(m, "form_inspect", w, pos_size, d.form_inspect, "a size such as 64KiB"),
    )


def read_tokens(r: Reader, node: Any, line: int = 0) -> TokensConfig:
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
        r.get(m, "cache_ttl", w, pos_duration, d.cache_ttl, dur),
        r.get(m, "default_ttl", w, pos_duration, d.default_ttl, dur),
        r.get(m, "max_ttl", w, pos_duration, d.max_ttl, dur),
        r.get(m, "revocation_poll", w, pos_duration, d.revocation_poll, dur),
        r.get(m, "last_used_flush", w, pos_duration, d.last_used_flush, dur),
        r.get(m, "max_rotation_overlap", w, nonneg_duration, d.max_rotation_overlap, dur),
        r.get(m, "idle_ttl", w, pos_duration, None, dur),
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
    url = r.get(m, "url", w, http_url, None, "an http(s) URL")
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
            d = pos_duration(item)
            if d is None or d < 1:
                r.error(line_of(before, i, line), f"{w}.before[{i}]: expected a duration of 1s or more")
            else:
                out.add(int(d))
    return ExpiryWebhook(url, tuple(sorted(out, reverse=True))) if url is not None else None


def read_ui(r: Reader, management: LMap) -> UiConfig:
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


def read_store(r: Reader, node: LMap) -> str:
    value = node.get("store", "sqlite:///scopegate.db")
    problem = check_store_url(value) if isinstance(value, str) else f"expected a URL, got {value!r}"
    if problem is not None:
        r.error(line_of(node, "store"), f"store: {problem}")
        return "sqlite:///scopegate.db"
    return str(value)
