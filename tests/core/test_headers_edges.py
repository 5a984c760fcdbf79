"""gateway.proxy.headers at its edges: what each direction keeps, drops and sets.

End to end through a real gateway on a real socket: in front of the recording upstream for what
the upstream is told, in front of a raw-socket upstream (canned response bytes) for what the
client is told. The client address behind proxies (client_ip) and a request with no peer and no
Host, which a TCP test client cannot make, are asked of the functions directly.
"""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth.principal import ANONYMOUS, Principal
from gateway.proxy.headers import (
    HeaderPolicy,
    Network,
    client_ip,
    connection_named,
    identity_headers,
    request_id,
)
from tests.conftest import MakeGateway, Upstream
from tests.core.test_proxy import port_of, raw_get, raw_request
from tests.core.test_upstream_client import fixed, raw_upstream
from tests.gates.conftest import PATHS, bearer, jwt_extra, make_jwt

TRUSTED = "trusted_proxies: [127.0.0.0/8]\n"

# ---------------------------------------------------------------------------------------------
# what the client is told: an upstream's raw response headers


def answer(*headers: bytes, body: bytes = b"ok") -> bytes:
    lines = [b"HTTP/1.1 200 OK", *headers, b"Content-Length: %d" % len(body), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def test_every_header_a_response_connection_names_is_removed(make_gateway: MakeGateway) -> None:
    """Connection lists split at commas with or without spaces, across several Connection
    headers; a name listed but absent (like `close`) is no error."""
    response = answer(
        b"Connection: X-A,X-B",
        b"X-A: 1",
        b"X-B: 2",
        b"Connection: x-absent, X-C",
        b"X-C: 3",
        b"X-Kept: yes",
    )
    async with raw_upstream(fixed(response)) as up:
        gw = await make_gateway(upstream_url=f"http://127.0.0.1:{up.port}")
        resp = await raw_request(port_of(gw), raw_get("/open/x"))
    assert resp.status == 200
    assert resp.body == b"ok"
    assert resp.headers.getall("X-Kept") == ["yes"]
    for name in ("X-A", "X-B", "X-C", "X-Absent"):
        assert name not in resp.headers, name
    assert resp.headers["Connection"] == "close"  # the gateway's own, for this client


async def test_a_response_header_that_is_not_utf8_still_answers(make_gateway: MakeGateway) -> None:
    """An upstream's header bytes that are no UTF-8 do not turn its answer into an error."""
    async with raw_upstream(fixed(answer(b"X-Latin: caf\xe9", b"X-Utf: caf\xc3\xa9"))) as up:
        gw = await make_gateway(upstream_url=f"http://127.0.0.1:{up.port}")
        resp = await raw_request(port_of(gw), raw_get("/open/x"))
    assert resp.status == 200
    assert resp.body == b"ok"
    assert resp.headers["X-Utf"].encode("latin-1") == b"caf\xc3\xa9"  # byte for byte
    assert "X-Latin" in resp.headers


# ---------------------------------------------------------------------------------------------
# what the upstream is told


async def test_trusted_proxy_cannot_pass_underscore_twins_of_forwarding_headers(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """SECURITY: `X_Forwarded_For` is HTTP_X_FORWARDED_FOR to a CGI/WSGI upstream, the same as
    the real header: even from a trusted proxy, only the real spelling is believed."""
    gw = await make_gateway(extra=TRUSTED)
    twins = ["X_Forwarded_For: 6.6.6.6", "X_Forwarded_Host: evil.example", "X_Forwarded_Proto: https"]
    twins += ["X_Forwarded_Port: 1", "X_Real_IP: 6.6.6.6"]
    resp = await raw_request(port_of(gw), raw_get("/open/f", *twins))
    assert resp.status == 200
    seen = upstream.last
    assert [k for k, _ in seen.headers if "_" in k] == []
    assert seen.all("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.all("X-Forwarded-Host") == ["gateway.test"]
    assert seen.all("X-Forwarded-Proto") == ["http"]


async def test_trusted_proxy_that_sends_no_forwarding_headers_gets_the_gateways(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway(extra=TRUSTED)
    resp = await raw_request(port_of(gw), raw_get("/open/f"))
    assert resp.status == 200
    seen = upstream.last
    assert seen.all("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.all("X-Forwarded-Proto") == ["http"]
    assert seen.all("X-Forwarded-Host") == ["gateway.test"]


async def test_underscore_twin_of_the_request_id_is_dropped(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    gw = await make_gateway()
    resp = await raw_request(port_of(gw), raw_get("/open/r", "X_Request_Id: spoofed-id"))
    assert resp.status == 200
    seen = upstream.last
    assert seen.header("X_Request_Id") is None
    assert seen.all("X-Request-Id") == [resp.headers["X-Request-Id"]]
    assert resp.headers["X-Request-Id"] != "spoofed-id"


@pytest.mark.parametrize("connection", ["Authorization", "keep-alive, authorization"])
async def test_a_jwt_named_hop_by_hop_by_the_client_is_not_forwarded(
    make_gateway: MakeGateway, upstream: Upstream, connection: str
) -> None:
    """A JWT goes upstream (the upstream may verify it) unless the client's Connection header
    names Authorization: then it is the client's hop-by-hop header, ending at the gateway."""
    gw = await make_gateway(extra=jwt_extra())
    token = make_jwt(scope="read", workspace_id="w1")
    resp = await gw.client.get(PATHS["public"], headers={**bearer(token), "Connection": connection})
    assert resp.status == 200, await resp.text()
    assert upstream.last.header("X-Auth-Type") == "jwt"
    assert upstream.last.all("Authorization") == []
    resp = await gw.client.get(PATHS["public"], headers=bearer(token))
    assert upstream.last.all("Authorization") == [f"Bearer {token}"]


def fresh_header() -> str:
    """A workspace header name never asked about before: identity_headers remembers its answers
    per (principal, header), process-wide, and these tests must see them computed."""
    return f"X-Ws-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("principal", "want"),
    [
        (
            Principal(kind="anonymous", subject="", scopes=frozenset()),
            {"X-Auth-Type": "anonymous"},
        ),
        (
            # SECURITY: a token never carries a platform role above `user`.
            Principal(
                kind="token",
                subject="cli",
                scopes=frozenset({"write", "read"}),
                workspace="w1",
                project="p1",
                role="admin",
                token_id="tok_1",
            ),
            {
                "X-Auth-Type": "token",
                "X-Auth-Subject": "cli",
                "X-Auth-Workspace": "w1",
                "WS": "w1",
                "X-Auth-Project": "p1",
                "X-Auth-Scopes": "read write",
                "X-Auth-Token-Id": "tok_1",
                "X-Auth-Role": "user",
            },
        ),
        (
            # Control characters never reach a header; a value is cut at 1024 characters.
            Principal(kind="jwt", subject="a\r\nX-Evil: 1\x00" + "s" * 2000, scopes=frozenset(), role="ops"),
            {
                "X-Auth-Type": "jwt",
                "X-Auth-Subject": ("aX-Evil: 1" + "s" * 2000)[:1024],
                "X-Auth-Scopes": "",
                "X-Auth-Role": "ops",
            },
        ),
        (
            Principal(kind="jwt", subject="bob", scopes=frozenset({"read"})),
            {"X-Auth-Type": "jwt", "X-Auth-Subject": "bob", "X-Auth-Scopes": "read"},
        ),
    ],
    ids=["anonymous", "token", "jwt-cleaned", "jwt-bare"],
)
def test_identity_headers_for_each_kind_of_principal(principal: Principal, want: dict[str, str]) -> None:
    header = fresh_header()
    got = CIMultiDict(identity_headers(principal, header))  # header names in any letter case
    assert got == CIMultiDict({(header if k == "WS" else k): v for k, v in want.items()})


# Ten 99-character scopes, 999 characters joined: what comes after starts at index 1000.
FILLER = [f"a{i}" + "x" * 97 for i in range(10)]


def scopes_line(b: int, *after: str) -> list[str]:
    """FILLER, then a scope of `b` letters b at index 1000 (ending at 1000 + b), then `after`."""
    return [*FILLER, "b" * b, *after]


@pytest.mark.parametrize(
    ("scopes", "kept"),
    [
        # 1024 characters: all of it.
        (scopes_line(17, "writer"), scopes_line(17, "writer")),
        # 1025: `writer` would be cut to `write`, a scope not held: it is left out whole.
        (scopes_line(18, "writer"), scopes_line(18)),
        # the 1025th character is a space: the first 1024 are whole scopes.
        (scopes_line(17, "writer", "zz"), scopes_line(17, "writer")),
        # a scope ending at 1025 does not fit, even though a space follows it.
        (scopes_line(25, "writer"), FILLER),
        (["read", "write"], ["read", "write"]),
    ],
    ids=["fits", "one-over", "space-at-the-cut", "ends-past-the-cut", "short"],
)
def test_scopes_header_is_cut_between_scopes_never_inside_one(scopes: list[str], kept: list[str]) -> None:
    principal = Principal(kind="jwt", subject="alice", scopes=frozenset(scopes))
    value = identity_headers(principal, fresh_header())["X-Auth-Scopes"]
    assert value == " ".join(sorted(kept))
    assert len(value) <= 1024


async def test_a_jwt_never_reaches_the_upstream_with_a_scope_cut_short(
    make_gateway: MakeGateway, upstream: Upstream
) -> None:
    """SECURITY: a JWT holding `writer` among scopes over 1024 characters was forwarded with
    `X-Auth-Scopes: ... read write`: a scope it does not hold (mutation testing found it)."""
    gw = await make_gateway(extra=jwt_extra(claims={"scopes": "scope"}))
    scopes = [*FILLER, "b" * 13, "read", "writer"]  # `writer` from index 1019 to 1025
    resp = await gw.client.get(PATHS["public"], headers=bearer(make_jwt(scope=scopes)))
    assert resp.status == 200, await resp.text()
    assert upstream.last.all("X-Auth-Scopes") == [" ".join([*FILLER, "b" * 13, "read"])]


# ---------------------------------------------------------------------------------------------
# the client address a request is held to (rate limits)

NETS: tuple[Network, ...] = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def xff(*values: str) -> CIMultiDict[str]:
    return CIMultiDict(("X-Forwarded-For", v) for v in values)


@pytest.mark.parametrize(
    ("peer", "values", "client"),
    [
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # an untrusted peer is the client
        ("10.0.0.1", [], "10.0.0.1"),  # a trusted peer that forwards nothing
        ("10.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", ["198.51.100.1, 10.0.0.2"], "198.51.100.1"),  # trusted hops skipped
        ("10.0.0.1", ["198.51.100.1,198.51.100.2"], "198.51.100.2"),  # the nearest untrusted
        ("10.0.0.1", ["198.51.100.1", "198.51.100.2"], "198.51.100.2"),  # across headers
        ("10.0.0.1", ["198.51.100.7", "10.0.0.3"], "198.51.100.7"),
        ("10.0.0.1", ["10.0.0.4, 10.0.0.3"], "10.0.0.4"),  # all trusted: the farthest
        ("10.0.0.1", [" , 198.51.100.1 ,, "], "198.51.100.1"),  # empty hops ignored
        ("10.0.0.1", ["198.51.100.1, unknown"], "unknown"),  # not an address: never trusted
        ("fd00::1", ["2001:db8::5"], "2001:db8::5"),
        ("not-an-ip", ["198.51.100.1"], "not-an-ip"),
        (None, ["198.51.100.1"], None),
    ],
)
def test_client_ip(peer: str | None, values: list[str], client: str | None) -> None:
    assert client_ip(peer, xff(*values), NETS) == client


def test_client_ip_believes_no_header_without_trusted_proxies() -> None:
    assert client_ip("10.0.0.1", xff("198.51.100.1"), ()) == "10.0.0.1"


# ---------------------------------------------------------------------------------------------
# a request with no peer address (a Unix socket) and no Host (HTTP/1.0)


def test_no_peer_and_no_host_forward_no_address_and_no_host() -> None:
    policy = HeaderPolicy("X-Workspace-Id", NETS)
    incoming = CIMultiDictProxy(CIMultiDict({"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil"}))
    out = CIMultiDict(
        policy.upstream_pairs(
            incoming, ANONYMOUS, peer=None, scheme="http", host=None, rid="rid-1", keep_authorization=False
        )
    )
    assert out.getall("X-Forwarded-For") == [""]
    assert "X-Forwarded-Host" not in out
    assert out.getall("X-Forwarded-Proto") == ["http"]
    assert out.getall("X-Request-Id") == ["rid-1"]
    assert out.getall("X-Auth-Type") == ["anonymous"]


@pytest.mark.parametrize(
    "values",
    [["X-A,x-b"], ["X-A, x-b"], ["x-b ,X-A,"], ["X-A", "x-b"], ["X-A,,x-b, keep-alive"]],
)
def test_every_name_a_connection_header_lists_is_read_however_it_is_spaced(values: list[str]) -> None:
    """Tokens are comma-separated with optional spaces (RFC 9110 5.6.1), over every Connection
    line: a list without spaces names each header too."""
    headers = CIMultiDict([("Connection", v) for v in values])
    assert connection_named(headers) - {"keep-alive"} == {"x-a", "x-b"}


@pytest.mark.parametrize(
    ("given", "kept"),
    [("req-1.a:b_c", True), ("x" * 128, True), ("x" * 129, False), ("req-1\n", False), ("a b", False)],
    ids=["kept", "longest", "too-long", "final-newline", "space"],
)
def test_a_client_request_id_is_kept_only_when_nothing_in_it_can_break_a_line(given: str, kept: bool) -> None:
    # The fast door writes the id back without checking it again (fastserve._verified): the
    # pattern must anchor at the very end, where `$` also matches before a final newline.
    rid = request_id(CIMultiDict({"X-Request-Id": given}))
    assert (rid == given) is kept
    assert "\n" not in rid and " " not in rid and 1 <= len(rid) <= 128
