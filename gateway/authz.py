"""The gates after authentication: the scope gate and the agency gate."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from .auth.principal import Principal
from .errors import InsufficientScope, JwtRequired, TargetDenied
from .scopes import AGENCY, covers
from .surface.model import Route, RouteClass, required_rung


def authorize(route: Route, method: str, params: Mapping[str, str], principal: Principal) -> None:
    """Return when the principal may make this request; raise the refusal otherwise."""
    if route.cls is RouteClass.ANONYMOUS:
        return
    if route.cls is RouteClass.JWT_ONLY:
        if principal.kind != "jwt":
            raise JwtRequired("this route accepts JWTs only")
        _scope_gate(route, method, principal)
    elif route.cls is RouteClass.PUBLIC:
        _scope_gate(route, method, principal)
    else:
        _agency_gate(route, params, principal)


def _scope_gate(route: Route, method: str, principal: Principal) -> None:
    held = principal.scopes
    if AGENCY in held and principal.kind == "token":
        # SECURITY: agency is off the ladder; an agency token satisfies nothing on public routes.
        raise InsufficientScope(
            "an agency token is confined to agency routes", scope=route.requirement(method)
        )
    if route.scopes:
        if any(covers(held, s) for s in route.scopes):
            return
        raise InsufficientScope("requires one of: " + " ".join(route.scopes), scope=" ".join(route.scopes))
    rung = required_rung(method, route.scope)
    if not covers(held, rung):
        raise InsufficientScope(f"requires {rung}", scope=rung)


def _agency_gate(route: Route, params: Mapping[str, str], principal: Principal) -> None:
    # SECURITY: only a token holding exactly `agency` passes; a JWT or a `full` token does not.
    if principal.kind != "token" or principal.scopes != frozenset({AGENCY}):
        raise InsufficientScope("requires an agency token", scope=AGENCY)
    assert route.target is not None  # the loader guarantees it for agency routes
    if route.workspace_param is not None and params.get(route.workspace_param) != principal.workspace:
        raise TargetDenied("target is in another workspace")
    wanted = (route.target.kind, params.get(route.target.param, ""))
    if wanted not in principal.targets:
        raise TargetDenied(f"{route.target.kind} is not on this token's allowlist")


def network_gate(principal: Principal, client: str | None) -> None:
    """Refuse a token bound to networks (`allowed_cidrs`) when the client is outside them.

    `client` is the address computed as everywhere else: the peer, or behind trusted proxies the
    nearest untrusted X-Forwarded-For hop.
    """
    if not principal.allowed_cidrs:
        return
    try:
        ip = ipaddress.ip_address((client or "").split("%", 1)[0])
    except ValueError:
        # SECURITY: an address we cannot read is outside every network (fail closed).
        raise TargetDenied("this token may not be used from this address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 (a dual-stack listener's view)
    if not any(ip in net for net in principal.allowed_cidrs):
        raise TargetDenied("this token may not be used from this address")
