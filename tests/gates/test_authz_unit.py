"""authorize(), branch by branch: which refusal, with which detail and RFC 6750 scope.

The gate tests in this folder prove the decisions end to end through a gateway; these pin the
refusal each branch raises (class, detail, `scope=`), written to kill the survivors of
tools/mutation.py over gateway/authz.py.
"""

from __future__ import annotations

import ipaddress

import pytest

from gateway.auth.principal import Principal
from gateway.authz import authorize, network_gate
from gateway.errors import GatewayError, InsufficientScope, JwtRequired, TargetDenied
from gateway.surface.model import Route, RouteClass, Target

PUBLIC = Route("pub", "r.yaml", 1, RouteClass.PUBLIC, prefix="/v1")
FULL = Route("reboot", "r.yaml", 2, RouteClass.PUBLIC, path="/r/{id}", scope="full")
FINE = Route("fine", "r.yaml", 3, RouteClass.PUBLIC, path="/f", scopes=("nodes:create", "nodes:delete"))
JWT_ONLY = Route("admin", "r.yaml", 4, RouteClass.JWT_ONLY, prefix="/admin")
AGENCY = Route(
    "ag",
    "r.yaml",
    5,
    RouteClass.AGENCY,
    path="/w/{ws}/p/{pid}",
    target=Target("pid", "playlist"),
    workspace_param="ws",
)
ANON = Route("open", "r.yaml", 6, RouteClass.ANONYMOUS, prefix="/open")


def token(
    *scopes: str, targets: frozenset[tuple[str, str]] = frozenset(), workspace: str = "w1"
) -> Principal:
    return Principal("token", "svc", frozenset(scopes), workspace=workspace, targets=targets)


def jwt(*scopes: str) -> Principal:
    return Principal("jwt", "alice", frozenset(scopes), workspace="w1")


AGENT = token("agency", targets=frozenset({("playlist", "7")}))
OK_PARAMS = {"ws": "w1", "pid": "7"}


@pytest.mark.parametrize(
    ("route", "method", "params", "who"),
    [
        (ANON, "DELETE", {}, Principal("anonymous", "", frozenset())),
        (PUBLIC, "GET", {}, token("read")),
        (PUBLIC, "POST", {}, token("write")),
        (FULL, "POST", {}, token("full")),
        (FINE, "POST", {}, token("nodes:delete")),
        (FINE, "POST", {}, token("nodes:*")),
        (JWT_ONLY, "GET", {}, jwt("read")),
        (AGENCY, "GET", OK_PARAMS, AGENT),
    ],
    ids=["anonymous", "read", "write", "full", "fine-any-one", "fine-wildcard", "jwt-only", "agency"],
)
def test_allowed(route: Route, method: str, params: dict[str, str], who: Principal) -> None:
    authorize(route, method, params, who)


@pytest.mark.parametrize(
    ("route", "method", "params", "who", "error", "detail", "scope"),
    [
        (PUBLIC, "POST", {}, token("read"), InsufficientScope, "requires write", "write"),
        (FULL, "POST", {}, token("write"), InsufficientScope, "requires full", "full"),
        (
            FINE,
            "POST",
            {},
            token("write", "nodes:list"),
            InsufficientScope,
            "requires one of: nodes:create nodes:delete",
            "nodes:create nodes:delete",
        ),
        (PUBLIC, "GET", {}, AGENT, InsufficientScope, "an agency token is confined to agency routes", "read"),
        # A JWT that somehow holds `agency` is not an agency token: the ladder refuses it.
        (PUBLIC, "GET", {}, jwt("agency"), InsufficientScope, "requires read", "read"),
        (JWT_ONLY, "GET", {}, token("full"), JwtRequired, "this route accepts JWTs only", None),
        (JWT_ONLY, "POST", {}, jwt("read"), InsufficientScope, "requires write", "write"),
        (AGENCY, "GET", OK_PARAMS, token("full"), InsufficientScope, "requires an agency token", "agency"),
        (AGENCY, "GET", OK_PARAMS, jwt("agency"), InsufficientScope, "requires an agency token", "agency"),
        (
            AGENCY,
            "GET",
            OK_PARAMS,
            token("agency", "read", targets=frozenset({("playlist", "7")})),
            InsufficientScope,
            "requires an agency token",
            "agency",
        ),
        (
            AGENCY,
            "GET",
            {"ws": "w2", "pid": "7"},
            AGENT,
            TargetDenied,
            "target is in another workspace",
            None,
        ),
        (
            AGENCY,
            "GET",
            {"ws": "w1", "pid": "8"},
            AGENT,
            TargetDenied,
            "playlist is not on this token's allowlist",
            None,
        ),
    ],
    ids=[
        "read-on-write",
        "write-on-full",
        "fine-needs-its-scope",
        "agency-token-on-public",
        "jwt-holding-agency",
        "token-on-jwt-only",
        "jwt-only-still-scoped",
        "full-token-on-agency",
        "jwt-on-agency",
        "agency-plus-more",
        "other-workspace",
        "target-not-allowed",
    ],
)
def test_refused(
    route: Route,
    method: str,
    params: dict[str, str],
    who: Principal,
    error: type[GatewayError],
    detail: str,
    scope: str | None,
) -> None:
    with pytest.raises(GatewayError) as info:
        authorize(route, method, params, who)
    assert type(info.value) is error
    assert info.value.detail == detail
    if scope is not None:
        assert isinstance(info.value, InsufficientScope)
        assert info.value.scope == scope
        assert info.value.headers()["WWW-Authenticate"].endswith(f'scope="{scope}"')


def bound(*cidrs: str) -> Principal:
    nets = tuple(ipaddress.ip_network(c) for c in cidrs)
    return Principal("token", "svc", frozenset({"read"}), workspace="w1", allowed_cidrs=nets)


@pytest.mark.parametrize(
    ("cidrs", "client"),
    [
        ((), None),  # unbound: no address needed
        ((), "not an address"),
        (("10.0.0.0/8",), "10.1.2.3"),
        (("192.0.2.0/24", "10.0.0.0/8"), "10.1.2.3"),  # any one network admits
        (("10.0.0.0/8",), "::ffff:10.1.2.3"),  # a dual-stack listener's view of an IPv4 client
        (("fe80::/10",), "fe80::1%eth0"),  # a link-local peer with its zone
        (("2001:db8::/32",), "2001:db8::7"),
    ],
    ids=["unbound-none", "unbound-garbage", "inside", "second-network", "v4-mapped", "zone-id", "ipv6"],
)
def test_network_gate_admits(cidrs: tuple[str, ...], client: str | None) -> None:
    network_gate(bound(*cidrs), client)


@pytest.mark.parametrize(
    ("cidrs", "client"),
    [
        (("10.0.0.0/8",), "11.0.0.1"),
        (("10.0.0.0/8",), "::ffff:11.0.0.1"),
        (("10.0.0.0/8",), "fe80::1%eth0"),
        (("10.0.0.0/8",), None),  # an unknown client is outside every network
        (("10.0.0.0/8",), ""),
        (("10.0.0.0/8",), "10.1.2.3.4"),
        (("2001:db8::/32",), "10.1.2.3"),
    ],
    ids=["outside", "v4-mapped-outside", "v6-on-v4", "none", "empty", "garbage", "v4-on-v6"],
)
def test_network_gate_refuses(cidrs: tuple[str, ...], client: str | None) -> None:
    with pytest.raises(TargetDenied) as info:
        network_gate(bound(*cidrs), client)
    assert info.value.detail == "this token may not be used from this address"
