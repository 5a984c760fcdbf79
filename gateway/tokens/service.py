"""Token lifecycle rules shared by `scopegate token ...` and the management API.

Who may do what (contract sections 6 and 8; the management rule is in policy.py):

    actor None (operator CLI)   any workspace; body names it; may set `owner`; no minter bounds
    JWT                         its own workspace (or one from its `workspaces` list); scopes
                                within its mint scopes; the JWT's `exp` does not bound the child
    token                       holds tokens:manage and is workspace-level; mints project-level
                                tokens of its own workspace only, never agency, never outliving it

A body `workspace` outside the caller's is 403 `target_denied` for both kinds of caller. Refusals
that would reveal whether a token exists (revoke of an invisible id) are 404, never 403.

Every instant the service stores is whole seconds (issue 9, item 5): what the API and `token
list` show as `expires_at` is exactly the instant from which the token is refused.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import scopes as sc
from ..auth.principal import Principal
from ..config import TokensConfig
from ..errors import Conflict, InsufficientScope, InvalidRequest, NotFound, TargetDenied
from . import fields
from .fields import iso, record_json
from .policy import can_manage, home_workspace, require_manager, within_minter
from .secret import display_prefix, generate, hash_token, new_id, well_formed
from .store import TokenRecord, TokenStore
from .validator import TokenValidator

__all__ = ["TokenService", "iso", "record_json", "require_manager"]

audit = logging.getLogger("scopegate.audit")

BODY_FIELDS = frozenset(
    {"name", "scopes", "project", "workspace", "expires_in", "targets", "allowed_cidrs", "not_before"}
)
CLI_FIELDS = BODY_FIELDS | {"owner"}
DEFAULT_SCOPES = ("read",)
MAX_BY_VALUE = 100


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
        name = fields.name(body.get("name"))
        workspace = self._workspace(actor, body.get("workspace"))
        project = fields.optional_id("project", body.get("project"))
        if actor is not None and actor.kind == "token" and project is None:
            raise InsufficientScope("project: a workspace-level token may only create project-level tokens")
        scopes = self._scopes(body.get("scopes"))
        targets = fields.targets(body.get("targets"))
        if sc.AGENCY in scopes:
            if len(scopes) != 1:
                raise InvalidRequest("scopes: agency must be the only scope")
            if not targets:
                raise InvalidRequest("targets: an agency token needs at least one target")
        elif targets:
            raise InvalidRequest("targets: only an agency token may have targets")
        if actor is not None:
            within_minter(actor, scopes)
        cidrs = fields.cidrs(body.get("allowed_cidrs"))
        now = self.clock()
        # SECURITY: whole seconds, rounded down: refused from the very second the API shows.
        expires_at = float(math.floor(now + self._ttl(body.get("expires_in"), actor, now)))
        not_before = None
        if body.get("not_before") is not None:
            not_before = fields.instant("not_before", body["not_before"])
            if not_before >= expires_at:
                raise InvalidRequest("not_before: must lie before the token expires")
        secret = generate(self.validator.prefix)
        record = TokenRecord(
            id=new_id(),
            name=name,
            display_prefix=display_prefix(secret),
            owner=actor.subject if actor is not None else fields.owner(body.get("owner")),
            workspace=workspace,
            project=project,
            scopes=scopes,
            targets=targets,
            created_at=float(math.floor(now)),
            expires_at=expires_at,
            created_by=_actor_label(actor),
            not_before=not_before,
            allowed_cidrs=cidrs,
        )
        # SECURITY: only the SHA-256 is stored; the secret is returned to the caller once.
        await self.store.insert(record, hash_token(secret))
        _audit("token.create", actor, record)
        return record, secret

    async def list(
        self, actor: Principal | None, status: str = "active", *, workspace: str | None = None
    ) -> builtins.list[TokenRecord]:
        """Tokens `actor` may manage; `workspace` filters the operator's (actor None) listing only."""
        state = fields.status(status)
        if actor is None:
            return await self.store.list(workspace, status=state)
        require_manager(actor)
        records = await self.store.list(
            home_workspace(actor), project_level_only=actor.kind == "token", status=state
        )
        # SECURITY: a token the caller could not have minted is not even listed (issue 8, item 3).
        return [r for r in records if can_manage(actor, r)]

    async def revoke(self, actor: Principal | None, token_id: str) -> None:
        if actor is not None:
            require_manager(actor)
        record = await self._managed(actor, token_id)
        token_hash = await self.store.revoke(record.id, float(math.floor(self.clock())))
        if token_hash is None:
            raise NotFound("no such token")
        # SECURITY: refused here at once, cached or not, even if the store goes away before the
        # next poll of the revocation feed.
        self.validator.revoked_locally(token_hash, record.expires_at)
        _audit("token.revoke", actor, record)

    async def rotate(
        self, actor: Principal | None, token_id: str | None, body: Mapping[str, Any]
    ) -> tuple[TokenRecord, str]:
        """Mint a successor of a token and end the old one after `overlap` (default 0).

        `token_id` None is self-rotation: the actor is the token being rotated. Otherwise the
        actor must be able to revoke the token (policy.can_manage).
        """
        if not isinstance(body, Mapping):
            raise InvalidRequest("body: must be a JSON object")
        unknown = sorted(set(body) - {"overlap"})
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: unknown field")
        overlap = 0.0 if body.get("overlap") is None else fields.duration("overlap", body["overlap"])
        if overlap > self.cfg.max_rotation_overlap:
            raise InvalidRequest(f"overlap: at most {int(self.cfg.max_rotation_overlap)} seconds")
        if token_id is None:
            if actor is None or actor.kind != "token" or actor.token_id is None:
                raise InsufficientScope("only an API token may rotate itself")
            record = await self.store.by_id(actor.token_id)
            if record is None or record.revoked_at is not None:
                raise NotFound("no such token")
        else:
            if actor is not None:
                require_manager(actor)
            record = await self._managed(actor, token_id)
        now = float(math.floor(self.clock()))
        if record.revoke_at is not None:
            raise Conflict("this token was already rotated; rotate its successor")
        if record.expires_at <= now:
            raise Conflict("this token has expired; create a new one")
        # SECURITY: the successor never outlives the old token, nor a minting token's own expiry.
        expires_at = record.expires_at
        if actor is not None and actor.kind == "token" and actor.expires_at is not None:
            expires_at = min(expires_at, float(math.floor(actor.expires_at)))
        secret = generate(self.validator.prefix)
        successor = TokenRecord(
            id=new_id(),
            name=record.name,
            display_prefix=display_prefix(secret),
            owner=record.owner,
            workspace=record.workspace,
            project=record.project,
            scopes=record.scopes,
            targets=record.targets,
            created_at=now,
            expires_at=expires_at,
            created_by=_actor_label(actor),
            not_before=record.not_before if (record.not_before or 0) > now else None,
            allowed_cidrs=record.allowed_cidrs,
            rotated_from=record.id,
        )
        revoke_at = None if overlap < 1 else min(float(math.floor(now + overlap)), record.expires_at)
        old_hash = await self.store.rotate(record.id, successor, hash_token(secret), revoke_at)
        if old_hash is None:
            raise NotFound("no such token")
        if revoke_at is None:
            self.validator.revoked_locally(old_hash, record.expires_at)
        else:
            self.validator.expires_early(old_hash, revoke_at)
        _audit("token.rotate", actor, successor, rotated_from=record.id, old_revoke_at=iso(revoke_at or now))
        return successor, secret

    async def revoke_by_value(self, secrets: object, client: str | None) -> None:
        """Revoke every live token among `secrets`; says nothing about which existed."""
        if not isinstance(secrets, list) or not secrets or not all(isinstance(s, str) for s in secrets):
            raise InvalidRequest("tokens: must be a non-empty list of token strings")
        if len(secrets) > MAX_BY_VALUE:
            raise InvalidRequest(f"tokens: at most {MAX_BY_VALUE}")
        now = float(math.floor(self.clock()))
        for secret in dict.fromkeys(s.strip() for s in secrets):
            # SECURITY: a malformed string costs no store lookup and is simply not a token.
            if not well_formed(secret, self.validator.prefix):
                continue
            token_hash = hash_token(secret)
            record = await self.store.by_hash(token_hash)
            if record is None or record.revoked_at is not None:
                continue
            if await self.store.revoke(record.id, now) is None:
                continue
            self.validator.revoked_locally(token_hash, record.expires_at)
            anonymous = {"actor_kind": "anonymous", "actor_subject": ""}
            _audit("token.revoke", None, record, by="value", client=client, **anonymous)

    async def _managed(self, actor: Principal | None, token_id: str) -> TokenRecord:
        record = await self.store.by_id(token_id) if len(token_id) <= 200 else None
        # SECURITY: unknown, unmanageable and already revoked all answer alike, so a 404 confirms
        # nothing (issue 8, item 3).
        if record is None or record.revoked_at is not None or not can_manage(actor, record):
            raise NotFound("no such token")
        return record

    def _workspace(self, actor: Principal | None, requested: object) -> str:
        if actor is None:
            workspace = fields.optional_id("workspace", requested)
            if workspace is None:
                raise InvalidRequest("workspace: required")
            return workspace
        if requested is None:
            return home_workspace(actor)
        if not isinstance(requested, str):
            raise InvalidRequest("workspace: must be a string")
        if requested == actor.workspace:
            return requested
        # SECURITY: a JWT may pick only among its own workspaces; a token only its own.
        if actor.kind == "jwt" and actor.workspaces is not None and requested in actor.workspaces:
            return fields.optional_id("workspace", requested) or requested
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
        ttl = fields.duration("expires_in", raw)
        if ttl <= 0:
            raise InvalidRequest("expires_in: must be positive")
        if ttl < 1:  # instants are whole seconds: less would mint a token expired at birth
            raise InvalidRequest("expires_in: at least 1 second")
        if ttl > self.cfg.max_ttl:
            raise InvalidRequest(f"expires_in: at most {int(self.cfg.max_ttl)} seconds")
        # SECURITY: a token's child never outlives it (a JWT's short exp does not bound, by contract).
        if bound is not None and now + ttl > bound:
            raise InsufficientScope("expires_in: a token may not mint a token that outlives it")
        return ttl


def _actor_label(actor: Principal | None) -> str:
    if actor is None:
        return "cli"
    if actor.kind == "token":
        return f"token:{actor.token_id}"
    return f"{actor.kind}:{actor.subject}"


def _audit(event: str, actor: Principal | None, record: TokenRecord, **extra: Any) -> None:
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
        **extra,
    }
    audit.info(json.dumps(line, sort_keys=True))
