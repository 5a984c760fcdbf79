"""The route surface, as loaded: frozen values, validated once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

PARAM_RE: Final = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]{0,63})\}\Z")


class RouteClass(StrEnum):
    ANONYMOUS = "anonymous"
    PUBLIC = "public"
    JWT_ONLY = "jwt_only"
    AGENCY = "agency"


@dataclass(frozen=True, slots=True)
class Target:
    param: str
    kind: str


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    file: str
    line: int
    cls: RouteClass
    path: str | None = None  # exact path pattern, with {param} segments
    prefix: str | None = None
    methods: frozenset[str] | None = None  # None: any method
    scope: str | None = None  # a ladder rung the route demands (e.g. full)
    scopes: tuple[str, ...] = ()  # fine-grained: any one suffices
    target: Target | None = None
    workspace_param: str | None = None
    upstream: str = "default"
    shadow: bool = False
    description: str = ""

    @property
    def pattern(self) -> str:
        return self.path if self.path is not None else f"{self.prefix}/**"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def requirement(self, method: str) -> str:
        """What a credential must hold for this route and method, in words for humans."""
        if self.cls is RouteClass.ANONYMOUS:
            return "none"
        if self.cls is RouteClass.AGENCY:
            return f"agency, target {self.target.kind if self.target else '?'}"
        if self.scopes:
            return " or ".join(self.scopes)
        return required_rung(method, self.scope)


SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_RUNGS: Final = ("read", "write", "full")


def required_rung(method: str, route_scope: str | None) -> str:
    # SECURITY: any method outside GET/HEAD/OPTIONS needs write at least, whatever the route says.
    base = "read" if method in SAFE_METHODS else "write"
    if route_scope is None:
        return base
    return max(base, route_scope, key=_RUNGS.index)


@dataclass(frozen=True, slots=True)
class Surface:
    routes: tuple[Route, ...]
    files: tuple[str, ...]

    def scope_names(self) -> dict[str, str]:
        """Every scope the surface names, with a description for the catalogue."""
        out: dict[str, str] = {}
        for route in self.routes:
            for scope in route.scopes:
                resource = scope.split(":", 1)[0]
                out.setdefault(scope, route.description or f"used by route {route.id}")
                out.setdefault(f"{resource}:*", f"every {resource} action")
        return out
