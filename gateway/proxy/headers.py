"""Header hygiene in both directions: what the client may not say, and what we say instead."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from multidict import CIMultiDict, CIMultiDictProxy, istr

from ..auth.principal import Principal

# RFC 9110 section 7.6.1, plus the de-facto ones proxies must not forward.
HOP_BY_HOP: Final = frozenset(
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
IDENTITY: Final = (
    "X-Auth-Type",
    "X-Auth-Subject",
    "X-Auth-Workspace",
    "X-Auth-Project",
    "X-Auth-Scopes",
    "X-Auth-Token-Id",
    "X-Auth-Role",
)
# SECURITY: clients must never steer the method the gate sees, or the path an upstream routes on.
METHOD_OVERRIDE: Final = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
REWRITE: Final = frozenset({"x-original-url", "x-rewrite-url"})
# SECURITY: forward-auth's question (the original method, URI and prefix) and its answer
# (X-Auth-Authorization): an upstream that also sits behind a forward-auth proxy may trust them.
FORWARD_AUTH: Final = frozenset(
    {
        "x-auth-authorization",
        "x-forwarded-uri",
        "x-forwarded-method",
        "x-original-uri",
        "x-original-method",
        "x-forwarded-prefix",
    }
)
FORWARDED: Final = frozenset(
    {"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip"}
)
_REQUEST_ID_RE: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
X_REQUEST_ID: Final = istr("X-Request-Id")  # istr: looked up without lower-casing it per request

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# What happens to a client header on its way upstream (decided per name, remembered).
KEEP, DROP, FORWARDED_ONLY = 0, 1, 2
VERDICT_MEMO: Final = 4096  # distinct names (or principals) remembered before the memo starts over


# A request id is 32 hex digits like a uuid4's, without a syscall per request: 80 random bits
# drawn once per process, then a 48-bit counter (small enough for mypyc to add without a heap
# integer). Ids are for correlation, never secrets.
_ID_SPAN: Final = 1 << 48  # hex() of n + 2**48 is "0x1" and n's 12 digits: no format spec to parse


class _RequestIds:
    def __init__(self) -> None:
        self.prefix = os.urandom(10).hex()
        self.count = 0

    def new(self) -> str:
        self.count = (self.count + 1) % _ID_SPAN
        return self.prefix + hex(self.count + _ID_SPAN)[3:]


_IDS: Final = _RequestIds()


def new_request_id() -> str:
    return _IDS.new()


def request_id(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str:
    given = headers.get(X_REQUEST_ID)
    return given if given is not None and _REQUEST_ID_RE.match(given) else new_request_id()


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
        self._verdicts: dict[str, int] = {}
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

    def _verdict(self, name: str) -> int:
        """KEEP, DROP, or FORWARDED (kept only from a trusted peer), for a header name as sent.
        Decided once per distinct name from the lists above, then remembered."""
        lname = name.lower()
        norm = lname.replace("_", "-")
        verdict = KEEP
        if self._drops(lname):
            verdict = DROP
        elif norm in FORWARDED:
            # SECURITY: an underscore twin of a forwarding header is never believed.
            verdict = DROP if norm != lname else FORWARDED_ONLY
        if len(self._verdicts) >= VERDICT_MEMO:
            self._verdicts.clear()
        self._verdicts[name] = verdict
        return verdict

    def upstream_pairs(
        self,
        incoming: CIMultiDictProxy[str],
        principal: Principal,
        *,
        peer: str | None,
        scheme: str,
        host: str | None,
        rid: str,
        keep_authorization: bool,
        identity: bool = True,
    ) -> list[tuple[str, str]]:
        """The headers the upstream is sent, in order: the client's that survive, then ours
        (aiohttp's door and WebSockets take them as a CIMultiDict). Without `identity` the
        identity headers are left for the caller to add (the fast door's rendered block)."""
        named = connection_named(incoming) if "Connection" in incoming else None
        trusted_peer = is_trusted(peer, self.trusted)
        verdicts = self._verdicts
        out: list[tuple[str, str]] = []
        forwarded_at = -1  # where a trusted proxy's X-Forwarded-For stood: ours goes there
        for item in incoming.items():  # one pass over the client's headers
            name = item[0]
            verdict = verdicts.get(name)
            if verdict is None:
                verdict = self._verdict(name)
            if verdict and (verdict == DROP or not trusted_peer):
                # SECURITY: X-Forwarded-*/Forwarded are believed only from trusted_proxies.
                continue
            if named and name.lower() in named:
                continue
            if verdict and name.lower() == "x-forwarded-for":
                if forwarded_at < 0:
                    forwarded_at = len(out)
                continue
            out.append(item)
        if keep_authorization and not (named and "authorization" in named):
            auth = incoming.get("Authorization")
            if auth is not None:
                out.append(("Authorization", auth))
        prior = ", ".join(incoming.getall("X-Forwarded-For", [])) if trusted_peer else None
        chain = ("X-Forwarded-For", f"{prior}, {peer}" if prior and peer else (peer or prior or ""))
        if forwarded_at >= 0:
            out.insert(forwarded_at, chain)
        else:
            out.append(chain)
        if not (trusted_peer and "X-Forwarded-Proto" in incoming):
            out.append(("X-Forwarded-Proto", scheme))
        if not (trusted_peer and "X-Forwarded-Host" in incoming) and host:
            out.append(("X-Forwarded-Host", host))
        out.append(("X-Request-Id", rid))
        if identity:
            out += identity_headers(principal, self.workspace_header).items()
        return out


class PerPrincipal(Generic[T]):
    """What `make` gives for a principal and the workspace header's name, remembered: a cached
    token's principal is one object, asked about on every request. Kept by the principal
    object's id, the principal beside the value: while it is kept there, no other object can
    have its id. (A key of the principal itself hashed all its fields each time.) Callers must
    not change a value returned."""

    __slots__ = ("_made", "_memo")

    def __init__(self, make: Callable[[Principal, str], T]) -> None:
        self._made = make
        self._memo: dict[tuple[int, str], tuple[Principal, T]] = {}

    def get(self, principal: Principal, workspace_header: str) -> T:
        key = (id(principal), workspace_header)
        memo = self._memo.get(key)
        if memo is not None and memo[0] is principal:
            return memo[1]
        if len(self._memo) >= VERDICT_MEMO:
            self._memo.clear()
        value = self._made(principal, workspace_header)
        self._memo[key] = (principal, value)
        return value


def identity_headers(principal: Principal, workspace_header: str) -> dict[str, str]:
    """The identity headers for a principal (remembered, see PerPrincipal)."""
    return _IDENTITY.get(principal, workspace_header)


def _identity_headers(principal: Principal, workspace_header: str) -> dict[str, str]:
    out: dict[str, str] = {"X-Auth-Type": principal.kind}
    if principal.kind == "anonymous":
        return out
    out["X-Auth-Subject"] = principal.subject
    if principal.workspace:
        out["X-Auth-Workspace"] = principal.workspace
        out[workspace_header] = principal.workspace
    if principal.project:
        out["X-Auth-Project"] = principal.project
    out["X-Auth-Scopes"] = _scopes_value(principal.scopes)
    if principal.token_id:
        out["X-Auth-Token-Id"] = principal.token_id
    role = principal.role
    if principal.kind == "token":
        # SECURITY: a token never carries a platform role above `user`.
        role = "user"
    if role:
        out["X-Auth-Role"] = role
    return {k: _header_safe(v) for k, v in out.items()}


_CONTROL: Final = dict.fromkeys([*range(32), 0x7F])
MAX_VALUE: Final = 1024  # characters of one identity header


def _header_safe(value: str) -> str:
    # Claims come from signed JWTs but are still client-chosen text: no CR/LF/NUL into headers.
    return value.translate(_CONTROL)[:MAX_VALUE]


_IDENTITY: Final = PerPrincipal(_identity_headers)


def _scopes_value(scopes: frozenset[str]) -> str:
    """The scopes, space separated, cut between scopes when longer than MAX_VALUE."""
    value = " ".join(sorted(scopes))
    if len(value) > MAX_VALUE:
        # SECURITY: never inside a scope: `writer` cut to `write` names a scope not held. The
        # scopes that do not fit are left out (the upstream is told less, never more).
        value = value[: max(0, value.rfind(" ", 0, MAX_VALUE + 1))]
    return value


_HOP_BY_HOP_RAW: Final = frozenset(h.encode() for h in HOP_BY_HOP) | {b"content-length"}
SERVER: Final = "scopegate"  # what responses the gateway makes itself say; never a version


def downstream_pairs(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An upstream's response headers as parsed (bytes), minus hop-by-hop and Connection-named
    ones and Content-Length, in one pass: the framing is the gateway's own."""
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    for name, value in raw:
        lname = name.lower()
        if lname in _HOP_BY_HOP_RAW:
            if lname == b"connection":
                named = named or set()
                named.update(tok.strip() for tok in value.lower().split(b","))
            continue
        out.append((name, value))
    if named:
        out = [(name, value) for name, value in out if name.lower() not in named]
    return out


def downstream_raw(raw: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """`downstream_pairs` as text, for aiohttp's door."""
    return CIMultiDict(
        (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        for name, value in downstream_pairs(raw)
    )
