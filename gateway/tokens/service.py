"""Token lifecycle rules shared by `scopegate token ...` and `POST/GET/DELETE /auth/tokens`.

Who may do what (contract sections 6 and 8):

    actor None (operator CLI)   any workspace; body names it; may set `owner`; no minter bounds
    JWT                         its own workspace (or one from its `workspaces` list); scopes
                                within its mint scopes; the JWT's `exp` does not bound the child
    token                       holds tokens:manage and is workspace-level; mints project-level
                                tokens of its own workspace only, never agency, never outliving it

A body `workspace` outside the caller's is 403 `target_denied` for both kinds of caller. Refusals
that would reveal whether a token exists (revoke of an invisible id) are 404, never 403.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .. import scopes as sc
from ..auth.principal import Principal
from ..config import TokensConfig, parse_duration
from ..errors import InsufficientScope, InvalidRequest, NotFound, TargetDenied
from .secret import display_prefix, generate, hash_token, new_id
from .store import Status, TokenRecord, TokenStore
from .validator import TokenValidator

audit = logging.getLogger("scopegate.audit")

NAME_RE = re.compile(r"[A-Za-z0-9 _.-]{1,100}")
# Workspace, project and target ids end up in upstream headers: no spaces, no control characters.
ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
KIND_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
OWNER_RE = re.compile(r"[\x21-\x7e]{1,200}")
MAX_TARGETS = 1000
BODY_FIELDS = frozenset({"name", "scopes", "project", "workspace", "expires_in", "targets"})
CLI_FIELDS = BODY_FIELDS | {"owner"}
STATUSES: tuple[Status, ...] = ("active", "revoked", "all")
DEFAULT_SCOPES = ("read",)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def record_json(record: TokenRecord, secret: str | None = None) -> dict[str, Any]:
    """The contract's token object; `token` (the secret) only at creation."""
    out: dict[str, Any] = {"id": record.id, "name": record.name, "display_prefix": record.display_prefix}
    if secret is not None:
        out["token"] = secret
    out.update(
        scopes=list(record.scopes),
        workspace=record.workspace,
        project=record.project,
        targets=[{"kind": kind, "id": target} for kind, target in record.targets],
        created_at=iso(record.created_at),
        expires_at=iso(record.expires_at),
        last_used_at=iso(record.last_used_at),
        revoked_at=iso(record.revoked_at),
    )
    return out


class TokenService:
    def __init__(
        self,
        store: TokenStore,
        validator: TokenValidator,
        tokens_cfg: TokensConfig,
        catalogue_provider: Callable[[], sc.Catalogue],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.validator = validator
        self.cfg = tokens_cfg
        self.catalogue_provider = catalogue_provider
        self.clock = clock

    async def create(self, actor: Principal | None, body: Mapping[str, Any]) -> tuple[TokenRecord, str]:
        if not isinstance(body, Mapping):
            raise InvalidRequest("body: must be a JSON object")
        if actor is not None:
            require_manager(actor)
        unknown = sorted(set(body) - (CLI_FIELDS if actor is None else BODY_FIELDS))
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: unknown field")
        name = _name(body.get("name"))
        workspace = self._workspace(actor, body.get("workspace"))
        project = _optional_id("project", body.get("project"))
        if actor is not None and actor.kind == "token" and project is None:
            raise InsufficientScope("project: a workspace-level token may only create project-level tokens")
        scopes = self._scopes(body.get("scopes"))
        targets = _targets(body.get("targets"))
        if sc.AGENCY in scopes:
            if len(scopes) != 1:
                raise InvalidRequest("scopes: agency must be the only scope")
            if not targets:
                raise InvalidRequest("targets: an agency token needs at least one target")
        elif targets:
            raise InvalidRequest("targets: only an agency token may have targets")
        if actor is not None:
            _within_minter(actor, scopes)
        now = self.clock()
        expires_at = now + self._ttl(body.get("expires_in"), actor, now)
        secret = generate(self.validator.prefix)
        record = TokenRecord(
            id=new_id(),
            name=name,
            display_prefix=display_prefix(secret),
            owner=_owner(actor, body.get("owner")),
            workspace=workspace,
            project=project,
            scopes=scopes,
            targets=targets,
            created_at=now,
            expires_at=expires_at,
            created_by=_actor_label(actor),
        )
        # SECURITY: only the SHA-256 is stored; the secret is returned to the caller once.
        await self.store.insert(record, hash_token(secret))
        _audit("token.create", actor, record)
        return record, secret

    async def list(
        self, actor: Principal | None, status: str = "active", *, workspace: str | None = None
    ) -> builtins.list[TokenRecord]:
        """Tokens visible to `actor`; `workspace` filters the operator's (actor None) listing only."""
        state = _status(status)
        if actor is None:
            return await self.store.list(workspace, status=state)
        require_manager(actor)
        return await self.store.list(
            _home_workspace(actor), project_level_only=actor.kind == "token", status=state
        )

    async def revoke(self, actor: Principal | None, token_id: str) -> None:
        if actor is not None:
            require_manager(actor)
        record = await self.store.by_id(token_id) if len(token_id) <= 200 else None
        # SECURITY: unknown, invisible and already revoked all answer alike, so a 404 confirms nothing.
        if record is None or record.revoked_at is not None or not _visible(actor, record):
            raise NotFound("no such token")
        token_hash = await self.store.revoke(record.id, self.clock())
        if token_hash is None:
            raise NotFound("no such token")
        # SECURITY: refused here at once, cached or not, even if the store goes away before the
        # next poll of the revocation feed.
        self.validator.revoked_locally(token_hash, record.expires_at)
        _audit("token.revoke", actor, record)

    def _workspace(self, actor: Principal | None, requested: object) -> str:
        if actor is None:
            workspace = _optional_id("workspace", requested)
            if workspace is None:
                raise InvalidRequest("workspace: required")
            return workspace
        if requested is None:
            return _home_workspace(actor)
        if not isinstance(requested, str):
            raise InvalidRequest("workspace: must be a string")
        if requested == actor.workspace:
            return requested
        # SECURITY: a JWT may pick only among its own workspaces; a token only its own.
        if actor.kind == "jwt" and actor.workspaces is not None and requested in actor.workspaces:
            return _optional_id("workspace", requested) or requested
        raise TargetDenied(f"workspace: {requested!r} is not the caller's workspace")

    def _scopes(self, raw: object) -> tuple[str, ...]:
        if raw is None:
            return DEFAULT_SCOPES
        if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
            raise InvalidRequest("scopes: must be a list of strings")
        if not raw:
            raise InvalidRequest("scopes: must not be empty")
        catalogue = self.catalogue_provider()
        for scope in raw:
            if scope not in catalogue:
                raise InvalidRequest(f"scopes: unknown scope {scope!r}")
        return catalogue.canonical(raw)

    def _ttl(self, raw: object, actor: Principal | None, now: float) -> float:
        bound = actor.expires_at if actor is not None and actor.kind == "token" else None
        if raw is None:
            default = min(self.cfg.default_ttl, self.cfg.max_ttl)
            # An omitted expires_in is clamped to the minting token's own expiry.
            return default if bound is None else min(default, bound - now)
        ttl = parse_duration(raw) if isinstance(raw, int | float | str) else None
        if ttl is None or not math.isfinite(ttl):
            raise InvalidRequest("expires_in: must be seconds or a duration such as 30d or 12h")
        if ttl <= 0:
            raise InvalidRequest("expires_in: must be positive")
        if ttl > self.cfg.max_ttl:
            raise InvalidRequest(f"expires_in: at most {int(self.cfg.max_ttl)} seconds")
        # SECURITY: a token's child never outlives it (a JWT's short exp does not bound, by contract).
        if bound is not None and now + ttl > bound:
            raise InsufficientScope("expires_in: a token may not mint a token that outlives it")
        return ttl


def require_manager(actor: Principal) -> None:
    if actor.kind == "jwt":
        if not actor.workspace and not actor.workspaces:
            raise InsufficientScope("the credential is bound to no workspace")
        return
    # SECURITY: only a workspace-level token holding tokens:manage reaches the management API.
    if actor.kind != "token" or sc.MANAGE not in actor.scopes:
        raise InsufficientScope("this credential may not manage tokens", scope=sc.MANAGE)
    if actor.project is not None:
        raise InsufficientScope("a project-level token may not manage tokens", scope=sc.MANAGE)
    _home_workspace(actor)


def _home_workspace(actor: Principal) -> str:
    if not actor.workspace:
        raise InsufficientScope("the credential is bound to no workspace")
    return actor.workspace


def _within_minter(actor: Principal, scopes: tuple[str, ...]) -> None:
    # SECURITY: only a JWT may mint agency; a token could never hold both agency and tokens:manage.
    if sc.AGENCY in scopes and actor.kind != "jwt":
        raise InsufficientScope("only a JWT may mint an agency token", scope=sc.AGENCY)
    # SECURITY: minting never escalates: every scope must be covered by the minter's.
    missing = sc.within(scopes, actor.mint_scopes)
    if missing:
        raise InsufficientScope(
            f"scopes: beyond what the caller may mint: {' '.join(missing)}", scope=missing[0]
        )


def _visible(actor: Principal | None, record: TokenRecord) -> bool:
    if actor is None:
        return True
    if record.workspace != actor.workspace:
        return False
    # SECURITY: a token sees only project-level tokens; it can never revoke a workspace-level one.
    return actor.kind == "jwt" or record.project is not None


def _name(raw: object) -> str:
    if raw is None:
        raise InvalidRequest("name: required")
    if not isinstance(raw, str) or not NAME_RE.fullmatch(raw):
        raise InvalidRequest("name: 1-100 characters of letters, digits, space, '-', '_' and '.'")
    return raw


def _optional_id(field: str, raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not ID_RE.fullmatch(raw):
        raise InvalidRequest(f"{field}: 1-128 characters of letters, digits, '.', '_', ':', '@' and '-'")
    return raw


def _targets(raw: object) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest("targets: must be a list of {kind, id} objects")
    if len(raw) > MAX_TARGETS:
        raise InvalidRequest(f"targets: at most {MAX_TARGETS}")
    out: dict[tuple[str, str], None] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or set(item) != {"kind", "id"}:
            raise InvalidRequest(f"targets[{i}]: must be an object with exactly kind and id")
        kind, target = item["kind"], item["id"]
        if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
            raise InvalidRequest(f"targets[{i}].kind: lowercase letters, digits, '_' and '-'")
        if isinstance(target, int) and not isinstance(target, bool):
            target = str(target)
        if not isinstance(target, str) or not ID_RE.fullmatch(target):
            raise InvalidRequest(
                f"targets[{i}].id: 1-128 characters of letters, digits, '.', '_', ':', '@', '-'"
            )
        out[(kind, target)] = None
    return tuple(out)


def _owner(actor: Principal | None, raw: object) -> str:
    if actor is not None:
        # SECURITY: an HTTP caller's child acts as the caller; it may not name another subject.
        return actor.subject
    if raw is None:
        return "cli"
    if not isinstance(raw, str) or not OWNER_RE.fullmatch(raw):
        raise InvalidRequest("owner: 1-200 printable ASCII characters without spaces")
    return raw


def _status(raw: str) -> Status:
    for status in STATUSES:
        if raw == status:
            return status
    raise InvalidRequest("status: must be one of active, revoked, all")


def _actor_label(actor: Principal | None) -> str:
    if actor is None:
        return "cli"
    if actor.kind == "token":
        return f"token:{actor.token_id}"
    return f"{actor.kind}:{actor.subject}"


def _audit(event: str, actor: Principal | None, record: TokenRecord) -> None:
    # SECURITY: ids, names and scopes only: never the secret or its hash. json.dumps escapes control chars.
    line = {
        "event": event,
        "actor_kind": "cli" if actor is None else actor.kind,
        "actor_subject": "cli" if actor is None else actor.subject,
        "actor_token_id": None if actor is None else actor.token_id,
        "token_id": record.id,
        "name": record.name,
        "owner": record.owner,
        "scopes": list(record.scopes),
        "workspace": record.workspace,
        "project": record.project,
        "targets": [f"{kind}:{target}" for kind, target in record.targets],
        "expires_at": iso(record.expires_at),
    }
    audit.info(json.dumps(line, sort_keys=True))
