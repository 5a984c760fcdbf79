"""The scope vocabulary: the ladder, fine-grained `resource:action`, and the catalogue.

One table of names serves both validation (at mint time) and the gate (at request time), so
nothing accepted at creation can fail at use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

LADDER: Final = ("read", "write", "full")
AGENCY: Final = "agency"
MANAGE: Final = "tokens:manage"
_RANK: Final = {name: i for i, name in enumerate(LADDER)}
FINE_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,39}:(?:[a-z][a-z0-9_-]{0,39}|\*)\Z")

BUILTIN_DESCRIPTIONS: Final = {
    "read": "GET, HEAD and OPTIONS on public routes",
    "write": "every method on public routes, and read",
    "full": "every public route, including those that demand full",
    AGENCY: "only agency routes, only for the token's allowlisted targets",
    MANAGE: "create, list and revoke project-level tokens of the token's workspace",
}


def covers(held: Iterable[str], required: str) -> bool:
    """Whether a set of held scopes satisfies one required scope.

    Ladder rungs grant the rungs below; `full` covers every ladder rung and every fine-grained
    scope (as does a role cap of `*`); `resource:*` covers `resource:<any action>`; `agency`
    covers only itself.
    """
    held = held if isinstance(held, frozenset | set) else frozenset(held)
    if required in held:
        return True
    if required == AGENCY:
        return False
    if "full" in held or "*" in held:
        return True
    if required in _RANK:
        rank = _RANK[required]
        return any(_RANK.get(h, -1) >= rank for h in held)
    if ":" in required:
        resource = required.split(":", 1)[0]
        return f"{resource}:*" in held
    return False


def within(requested: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The requested scopes that `allowed` does not cover (empty: all fine).

    `*` in allowed (a role cap of ["*"]) covers everything, agency included.
    """
    allowed_set = frozenset(allowed)
    if "*" in allowed_set:
        return []
    return [s for s in requested if not covers(allowed_set, s)]


@dataclass(frozen=True)
class Catalogue:
    """Every scope a token may hold: the ladder, agency, tokens:manage and the surface's."""

    descriptions: Mapping[str, str]

    @classmethod
    def build(cls, surface_scopes: Mapping[str, str]) -> Catalogue:
        out = dict(BUILTIN_DESCRIPTIONS)
        for name, description in surface_scopes.items():
            out.setdefault(name, description)
        return cls(out)

    def __contains__(self, name: object) -> bool:
        return name in self.descriptions

    def canonical(self, scopes: Iterable[str]) -> tuple[str, ...]:
        """De-duplicated, in canonical order: the ladder, agency, manage, then by name."""
        order = {name: i for i, name in enumerate((*LADDER, AGENCY, MANAGE))}
        return tuple(sorted(set(scopes), key=lambda s: (order.get(s, len(order)), s)))

    def as_json(self) -> list[dict[str, str]]:
        return [{"name": n, "description": self.descriptions[n]} for n in self.canonical(self.descriptions)]
