"""Header hygiene in both directions: what the client may not say, and what we say instead."""

from __future__ import annotations

import ipaddress
import re
import uuid

from multidict import CIMultiDict, CIMultiDictProxy

from ..auth.principal import Principal

# RFC 9110 section 7.6.1, plus the de-facto ones proxies must not forward.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
IDENTITY = (
    "X-Auth-Type",
    "X-Auth-Subject",
    "X-Auth-Workspace",
    "X-Auth-Project",
    "X-Auth-Scopes",
    "X-Auth-Token-Id",
    "X-Auth-Role",
)
# SECURITY: clients must never steer the method the gate sees, or the path an upstream routes on.
METHOD_OVERRIDE = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
REWRITE = frozenset({"x-original-url", "x-rewrite-url"})
# SECURITY: forward-auth's question (the original method, URI and prefix) and its answer
# (X-Auth-Authorization): an upstream that also sits behind a forward-auth proxy may trust them.
FORWARD_AUTH = frozenset(
    {
        "x-auth-authorization",
        "x-forwarded-uri",
        "x-forwarded-method",
        "x-original-uri",
        "x-original-method",
        "x-forwarded-prefix",
    }
)
FORWARDED = frozenset(
    {"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip"}
)
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def request_id(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str:
    given = headers.get("X-Request-Id", "")
    return given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex


def connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    names: set[str] = set()
    for value in headers.getall("Connection", []):
        names.update(tok.strip().lower() for tok in value.split(",") if tok.strip())
    return names


def is_trusted(peer: str | None, trusted: tuple[Network, ...]) -> bool:
    if not peer or not trusted:
        return False
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(addr in net for net in trusted)


def client_ip(
    peer: str | None, headers: CIMultiDictProxy[str] | CIMultiDict[str], trusted: tuple[Network, ...]
) -> str | None:
    """The address a request is held to (rate limits): the peer, or behind trusted proxies the
    nearest X-Forwarded-For hop that is not itself a trusted proxy."""
    nets = trusted
    if not is_trusted(peer, nets):
        return peer
    hops = [h.strip() for v in headers.getall("X-Forwarded-For", []) for h in v.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, nets):
            return hop
    return hops[0] if hops else peer


class HeaderPolicy:
    """Decides, once per config load, which client headers die at the gateway."""

    def __init__(self, workspace_header: str, trusted: tuple[Network, ...]) -> None:
        self.trusted = trusted
        self.workspace_header = workspace_header
        protected = {h.lower() for h in (*IDENTITY, workspace_header)}
        self._protected = frozenset(protected)
        self._strip = frozenset(
            HOP_BY_HOP
            | METHOD_OVERRIDE
            | REWRITE
            | FORWARD_AUTH
            | protected
            | {
                "host",
                "content-length",
                "x-request-id",
                "authorization",
            }
        )

    def _drops(self, lname: str) -> bool:
        # SECURITY: `X_Auth_Subject` becomes `HTTP_X_AUTH_SUBJECT` in CGI/WSGI upstreams, the same
        # variable as `X-Auth-Subject`: underscore twins of every stripped name die too.
        return lname.replace("_", "-") in self._strip

    def upstream_request(
        self,
        incoming: CIMultiDictProxy[str],
        principal: Principal,
        *,
        peer: str | None,
        scheme: str,
        host: str | None,
        rid: str,
        keep_authorization: bool,
    ) -> CIMultiDict[str]:
        named = connection_named(incoming)
        trusted_peer = is_trusted(peer, self.trusted)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in incoming.items():
            lname = name.lower()
            if self._drops(lname) or lname in named:
                continue
            norm = lname.replace("_", "-")
            if norm in FORWARDED and (norm != lname or not trusted_peer):
                # SECURITY: X-Forwarded-*/Forwarded are believed only from trusted_proxies.
                continue
            out.add(name, value)
        if keep_authorization and "authorization" not in named:
            auth = incoming.get("Authorization")
            if auth is not None:
                out["Authorization"] = auth
        prior = ", ".join(incoming.getall("X-Forwarded-For", [])) if trusted_peer else None
        out["X-Forwarded-For"] = f"{prior}, {peer}" if prior and peer else (peer or prior or "")
        if not (trusted_peer and "X-Forwarded-Proto" in incoming):
            out["X-Forwarded-Proto"] = scheme
        if not (trusted_peer and "X-Forwarded-Host" in incoming) and host:
            out["X-Forwarded-Host"] = host
        out["X-Request-Id"] = rid
        for name, value in identity_headers(principal, self.workspace_header).items():
            out[name] = value
        return out


def identity_headers(principal: Principal, workspace_header: str) -> dict[str, str]:
    out: dict[str, str] = {"X-Auth-Type": principal.kind}
    if principal.kind == "anonymous":
        return out
    out["X-Auth-Subject"] = principal.subject
    if principal.workspace:
        out["X-Auth-Workspace"] = principal.workspace
        out[workspace_header] = principal.workspace
    if principal.project:
        out["X-Auth-Project"] = principal.project
    out["X-Auth-Scopes"] = " ".join(sorted(principal.scopes))
    if principal.token_id:
        out["X-Auth-Token-Id"] = principal.token_id
    role = principal.role
    if principal.kind == "token":
        # SECURITY: a token never carries a platform role above `user`.
        role = "user"
    if role:
        out["X-Auth-Role"] = role
    return {k: _header_safe(v) for k, v in out.items()}


def _header_safe(value: str) -> str:
    # Claims come from signed JWTs but are still client-chosen text: no CR/LF/NUL into headers.
    return "".join(ch for ch in value if ch >= " " and ch != "\x7f")[:1024]


def downstream_response(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    named = connection_named(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in named or lname == "content-length":
            continue
        out.add(name, value)
    return out
