"""Who may manage which tokens (contract section 8).

    actor None (operator CLI)   everything
    JWT                         its workspace; tokens whose scopes lie within its mint scopes
                                (its role's bound, narrowed by its scope claim)
    token                       holds tokens:manage and is workspace-level: the project-level
                                tokens of its workspace whose scopes lie within its own

A caller manages (lists, revokes, rotates) only tokens it could have minted. A caller whose
bound is empty manages nothing and is told so (403); a token it may not manage is invisible: it
is absent from listings and a 404 on revoke or rotate, exactly like an unknown id.
"""

from __future__ import annotations

from .. import scopes as sc
from ..auth.principal import Principal
from ..errors import InsufficientScope
from .store import TokenRecord


def require_manager(actor: Principal) -> None:
    """Raise 403 unless `actor` may use the token management endpoints at all."""
    if actor.kind == "jwt":
        if not actor.workspace and not actor.workspaces:
            raise InsufficientScope("the credential is bound to no workspace")
        # SECURITY: a JWT whose role is missing from jwt.roles (or whose scope claim is empty)
        # holds nothing, so it could mint nothing and manages nothing (issue 8, item 3).
        if not actor.mint_scopes:
            raise InsufficientScope("the credential holds no scope it could grant")
        return
    # SECURITY: only a workspace-level token holding tokens:manage reaches the management API.
    if actor.kind != "token" or sc.MANAGE not in actor.scopes:
        raise InsufficientScope("this credential may not manage tokens", scope=sc.MANAGE)
    if actor.project is not None:
        raise InsufficientScope("a project-level token may not manage tokens", scope=sc.MANAGE)
    home_workspace(actor)


def home_workspace(actor: Principal) -> str:
    if not actor.workspace:
        raise InsufficientScope("the credential is bound to no workspace")
    return actor.workspace


def within_minter(actor: Principal, scopes: tuple[str, ...]) -> None:
    """Raise 403 unless `actor` may put every one of `scopes` on a token it mints."""
    # SECURITY: only a JWT may mint agency; a token could never hold both agency and tokens:manage.
    if sc.AGENCY in scopes and actor.kind != "jwt":
        raise InsufficientScope("only a JWT may mint an agency token", scope=sc.AGENCY)
    # SECURITY: minting never escalates: every scope must be covered by the minter's.
    missing = sc.within(scopes, actor.mint_scopes)
    if missing:
        raise InsufficientScope(
            f"scopes: beyond what the caller may mint: {' '.join(missing)}", scope=missing[0]
        )


def can_manage(actor: Principal | None, record: TokenRecord) -> bool:
    """Whether `actor` could have minted `record`: the test for listing, revoking and rotating."""
    if actor is None:
        return True
    if record.workspace != actor.workspace:
        return False
    # SECURITY: a token manages only project-level tokens; never a workspace-level one.
    if actor.kind != "jwt" and record.project is None:
        return False
    if sc.AGENCY in record.scopes and actor.kind != "jwt":
        return False
    # SECURITY: a `read` + tokens:manage token cannot touch a `full` token it could never mint.
    return not sc.within(record.scopes, actor.mint_scopes)
