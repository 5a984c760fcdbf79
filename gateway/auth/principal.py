"""Who is calling: the one value every gate after authentication reads."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final, Literal

CredentialKind = Literal["token", "jwt", "anonymous"]


@dataclass(frozen=True)
class Principal:
    kind: CredentialKind
    subject: str
    scopes: frozenset[str]
    workspace: str | None = None
    project: str | None = None
    role: str | None = None
    token_id: str | None = None
    expires_at: float | None = None
    targets: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    # What this principal may put on a token it mints. For API tokens it equals `scopes`;
    # for a JWT it is the scope claim and/or the role cap (contract section 6).
    mint_scopes: frozenset[str] = field(default_factory=frozenset)
    # A JWT's workspace membership list (the `workspaces` claim), when it has one.
    workspaces: frozenset[str] | None = None
    # An API token bound to networks is refused from any other client address (empty: anywhere).
    allowed_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


ANONYMOUS: Final = Principal(kind="anonymous", subject="", scopes=frozenset())
