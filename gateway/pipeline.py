"""The one request pipeline behind both doors (the proxy and /auth/verify).

    vet method -> clean path -> match route -> authenticate -> authorize

Every stage either continues or raises a GatewayError; only this module knows their order.
Header mutation and forwarding happen in the proxy door, which is handed the Decision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp.hdrs import AUTHORIZATION, UPGRADE
from multidict import CIMultiDictProxy

from .auth.bearer import Authenticate, authenticate, credential_of
from .auth.principal import ANONYMOUS, Principal
from .auth.ratelimit import FailedAuthLimiter
from .authz import authorize, network_gate
from .config import Config
from .errors import (
    BadRequest,
    GatewayError,
    InsufficientScope,
    InvalidToken,
    MethodNotAllowed,
    NoRoute,
    RateLimited,
    TargetDenied,
)
from .proxy.formscan import query_names_method
from .surface.matcher import Matcher, Verdict
from .surface.model import Route, RouteClass
from .surface.paths import CleanPath, clean

# Refusals a shadow route forwards anyway (decided, logged and counted, not enforced).
SHADOWABLE: Final = (InvalidToken, InsufficientScope, TargetDenied)
# A class's name for the decision line: a dict lookup, not the enum's `value` descriptor.
CLASS_NAMES: Final = {cls: cls.value for cls in RouteClass}


@dataclass(slots=True, init=False)
class Decision:
    """Never changed once made (not frozen, and `__init__` written out, for the reasons
    CleanPath gives)."""

    path: CleanPath
    route: Route
    principal: Principal
    shadow_denied: GatewayError | None

    def __init__(
        self, path: CleanPath, route: Route, principal: Principal, shadow_denied: GatewayError | None = None
    ) -> None:
        self.path = path
        self.route = route
        self.principal = principal
        self.shadow_denied = shadow_denied

    def log_into(self, fields: dict[str, Any]) -> None:
        """What the decision line says about this decision (never a secret), set in its fields:
        no dict of its own to build and merge, a request."""
        _log_route_and_principal(fields, self.route, self.principal)
        fields["upstream"] = self.route.upstream


def _log_route_and_principal(fields: dict[str, Any], route: Route, principal: Principal) -> None:
    """The decision line's route and credential fields, allowed or refused alike."""
    fields["route"] = route.id
    fields["class"] = CLASS_NAMES[route.cls]
    fields["credential"] = principal.kind if principal.kind != "anonymous" else "none"
    fields["token_id"] = principal.token_id


class RouteRefused(GatewayError):
    """A refusal raised after a route matched: carries the route, and the principal when the
    credential was identified (a valid token lacking the scope), for logs and metrics."""

    def __init__(self, cause: GatewayError, route: Route, principal: Principal = ANONYMOUS) -> None:
        super().__init__(cause.detail)
        self.cause, self.route, self.principal = cause, route, principal
        self.status, self.code = cause.status, cause.code

    def log_into(self, fields: dict[str, Any]) -> None:
        _log_route_and_principal(fields, self.route, self.principal)

    def headers(self) -> dict[str, str]:
        return self.cause.headers()


class Pipeline:
    def __init__(
        self,
        cfg: Config,
        matcher: Callable[[], Matcher],
        authenticators: Sequence[Authenticate],
        limiter: FailedAuthLimiter,
    ) -> None:
        self.cfg = cfg
        self._matcher = matcher
        self._authenticators = tuple(authenticators)
        self._limiter = limiter
        self._allow_all = tuple(sorted(cfg.methods))

    def vet(self, method: str, target: str, headers: CIMultiDictProxy[str]) -> CleanPath:
        """The stages before routing: the method, path hygiene and the request's shape."""
        if method not in self.cfg.methods:
            raise MethodNotAllowed(f"method {method} is not allowed", allow=self._allow_all)
        path = clean(target)
        check_request_shape(path, headers)
        return path

    async def decide(
        self, method: str, path: CleanPath, headers: CIMultiDictProxy[str], peer: str | None
    ) -> Decision:
        found = self._matcher().match(method, path.segments, path.trailing_slash)
        if found.verdict is Verdict.NONE:
            raise NoRoute(found.why or "no route matches this path")
        if found.verdict is Verdict.METHOD:
            raise MethodNotAllowed(f"method {method} is not allowed on this path", allow=found.allow)
        route = found.route
        assert route is not None
        principal = ANONYMOUS
        try:
            principal = await self.authenticate(route.cls, headers, peer)
            network_gate(principal, peer)
            authorize(route, method, found.params, principal)
        except SHADOWABLE as exc:
            if not route.shadow:
                raise RouteRefused(exc, route, principal) from None
            # Forwarded as far as it got: authenticated identity if any, never more.
            return Decision(path, route, principal, shadow_denied=exc)
        except GatewayError as exc:
            raise RouteRefused(exc, route, principal) from None
        return Decision(path, route, principal)

    async def authenticate(
        self, cls: RouteClass, headers: CIMultiDictProxy[str], peer: str | None
    ) -> Principal:
        """The credential stage: ANONYMOUS on anonymous routes, else a verified Principal."""
        if len(headers.getall(AUTHORIZATION, ())) > 1:
            raise BadRequest("more than one Authorization header")
        if cls is RouteClass.ANONYMOUS:
            return ANONYMOUS
        ip = peer or ""
        if self._limiter.blocked(ip):
            raise RateLimited("too many failed authentications from this address")
        try:
            credential = credential_of(headers, self.cfg.limits.max_credential)
            return await authenticate(
                credential, headers.get(self.cfg.workspace_header), self._authenticators
            )
        except InvalidToken:
            self._limiter.failed(ip)
            raise


def check_request_shape(path: CleanPath, headers: CIMultiDictProxy[str]) -> None:
    """Refusals that do not depend on the route: method overrides in the query, odd upgrades."""
    if path.query and query_names_method(path.query):
        # SECURITY: frameworks that honour `_method` would run a POST as a DELETE behind our back;
        # names are read as PHP reads them (`.method`, ` _method`, `_method%00x`, `_method[]`).
        raise BadRequest("the _method parameter is not accepted")
    upgrade = headers.get(UPGRADE)
    if upgrade is not None:
        if upgrade.strip().lower() != "websocket":
            raise BadRequest("only websocket upgrades are accepted")
        has_body = (
            headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in headers
        )
        if has_body:
            # SECURITY: an upgrade with a body can smuggle a pipelined request past the gate.
            raise BadRequest("an upgrade request cannot carry a body")
