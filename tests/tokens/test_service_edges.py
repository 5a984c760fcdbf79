"""TokenService.create, list and revoke at their edges: exact refusals, whole seconds, the
workspace a caller may name, the lifetime a minter may give, and the audit line."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import pytest

from gateway.config import TokensConfig
from gateway.errors import InsufficientScope, InvalidRequest, NotFound, TargetDenied
from gateway.tokens.service import TokenService
from gateway.tokens.store import TokenStore
from gateway.tokens.validator import TokenValidator

from .conftest import T0, Clock
from .test_service import CATALOGUE, DAY, jwt, token_actor


@pytest.fixture
def service(
    store: TokenStore, validator: TokenValidator, tokens_cfg: TokensConfig, clock: Clock
) -> TokenService:
    return TokenService(store, validator, tokens_cfg, lambda: CATALOGUE, clock)


async def refusal(
    service: TokenService, actor: Any, body: Any, error: type[Exception] = InvalidRequest
) -> str:
    with pytest.raises(error) as caught:
        await service.create(actor, body)
    detail: str = caught.value.detail  # type: ignore[attr-defined]
    return detail


# -- create: the body -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(["name"], "body: must be a JSON object", id="a-list"),
        pytest.param("name=ci", "body: must be a JSON object", id="a-string"),
        pytest.param(
            {"name": "ci", "workspace": "ws1", "zeta": 1, "alpha": 2}, "alpha: unknown field", id="two"
        ),
        pytest.param(
            {"name": "ci", "workspace": "w s"},
            "workspace: 1-128 characters of letters, digits, '.', '_', ':', '@' and '-'",
            id="bad-workspace",
        ),
        pytest.param(
            {"name": "ci", "workspace": "ws1", "scopes": ["read", 1]},
            "scopes: must be a list of strings",
            id="one-scope-not-a-string",
        ),
        pytest.param(
            {"name": "ci", "workspace": "ws1", "scopes": ["admn"]},
            "scopes: unknown scope 'admn'",
            id="unknown-scope",
        ),
        pytest.param(
            {"name": "ci", "workspace": "ws1", "expires_in": 365 * DAY + 1},
            "expires_in: at most 31536000 seconds",
            id="over-max",
        ),
        pytest.param(
            {"name": "ci", "workspace": "ws1", "expires_in": 0}, "expires_in: must be positive", id="0"
        ),
        # Instants are whole seconds: half a second would mint a token expired at birth.
        pytest.param(
            {"name": "ci", "workspace": "ws1", "expires_in": 0.5},
            "expires_in: at least 1 second",
            id="half-a-second",
        ),
        pytest.param(
            {"name": "ci", "workspace": "ws1", "expires_in": 0.999},
            "expires_in: at least 1 second",
            id="just-under-a-second",
        ),
        pytest.param(
            {"name": "ci", "workspace": "ws1", "scopes": ["agency"]},
            "targets: an agency token needs at least one target",
            id="agency-alone",
        ),
        pytest.param(
            {
                "name": "ci",
                "workspace": "ws1",
                "scopes": ["agency", "read"],
                "targets": [{"kind": "p", "id": "1"}],
            },
            "scopes: agency must be the only scope",
            id="agency-with-read",
        ),
        pytest.param(
            {"name": "ci", "workspace": "ws1", "targets": [{"kind": "p", "id": "1"}]},
            "targets: only an agency token may have targets",
            id="targets-on-read",
        ),
        pytest.param(
            {"name": "ci", "workspace": "ws1", "expires_in": 100, "not_before": T0 + 100},
            "not_before: must lie before the token expires",
            id="start-at-the-end",
        ),
        pytest.param(
            {"name": "ci", "workspace": "ws1", "not_before": "tomorrow"},
            "not_before: must be an RFC 3339 time such as 2026-01-01T00:00:00Z",
            id="start-not-a-time",
        ),
    ],
)
async def test_cli_refusals(service: TokenService, body: Any, detail: str) -> None:
    assert await refusal(service, None, body) == detail


async def test_a_jwt_may_send_every_body_field(service: TokenService, clock: Clock) -> None:
    clock.advance(0.9)
    body = {
        "name": "ci",
        "scopes": ["write", "nodes:create"],
        "project": "p1",
        "workspace": "ws2",
        "expires_in": 3600,
        "allowed_cidrs": ["10.1.2.3/8", "2001:db8::1/32"],
        "not_before": T0 + 3599,
    }
    record, _ = await service.create(jwt(clock), body)
    assert (record.workspace, record.project, record.scopes) == ("ws2", "p1", ("write", "nodes:create"))
    assert (record.created_at, record.expires_at, record.not_before) == (T0, T0 + 3600, T0 + 3599)
    assert record.allowed_cidrs == ("10.0.0.0/8", "2001:db8::/32")
    assert (record.owner, record.created_by, record.revoked_at) == ("alice", "jwt:alice", None)


async def test_whole_seconds_rounded_down(service: TokenService, clock: Clock) -> None:
    clock.advance(0.99)
    record, _ = await service.create(None, {"name": "ci", "workspace": "ws1", "expires_in": 10.5})
    assert (record.created_at, record.expires_at) == (T0, T0 + 11)


@pytest.mark.parametrize(("expires_in", "lifetime"), [(1, 1), ("1s", 1), (1.5, 1), (2, 2)])
async def test_the_shortest_lifetimes(service: TokenService, expires_in: object, lifetime: float) -> None:
    record, _ = await service.create(None, {"name": "ci", "workspace": "ws1", "expires_in": expires_in})
    assert record.expires_at == T0 + lifetime


async def test_the_default_lifetime_never_passes_the_maximum(
    store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    cfg = TokensConfig(prefix="st_", default_ttl=400 * DAY, max_ttl=30 * DAY)
    service = TokenService(store, validator, cfg, lambda: CATALOGUE, clock)
    record, _ = await service.create(None, {"name": "ci", "workspace": "ws1"})
    assert record.expires_at == T0 + 30 * DAY


# -- create: who may name which workspace -----------------------------------------------------


async def test_a_jwt_listing_workspaces_but_naming_none_mints_only_in_one_it_names(
    service: TokenService, clock: Clock
) -> None:
    actor = jwt(clock, workspace=None, workspaces=frozenset({"ws2", "ws3"}))
    record, _ = await service.create(actor, {"name": "ci", "workspace": "ws3"})
    assert record.workspace == "ws3"
    detail = await refusal(service, actor, {"name": "ci2"}, InsufficientScope)
    assert detail == "the credential is bound to no workspace"


@pytest.mark.parametrize(
    ("actor", "workspace", "error", "detail"),
    [
        pytest.param({}, 5, InvalidRequest, "workspace: must be a string", id="not-a-string"),
        pytest.param({}, ["ws2"], InvalidRequest, "workspace: must be a string", id="a-list"),
        pytest.param(
            {}, "ws3", TargetDenied, "workspace: 'ws3' is not the caller's workspace", id="unlisted"
        ),
        pytest.param(
            {"workspaces": frozenset({"ws1", "w s"})},
            "w s",
            InvalidRequest,
            "workspace: 1-128 characters of letters, digits, '.', '_', ':', '@' and '-'",
            id="listed-but-malformed",
        ),
        pytest.param(
            {"mint_scopes": frozenset()},
            "ws1",
            InsufficientScope,
            "the credential holds no scope it could grant",
            id="holds-nothing",
        ),
    ],
)
async def test_jwt_workspace_refusals(
    service: TokenService,
    clock: Clock,
    actor: dict[str, Any],
    workspace: object,
    error: type[Exception],
    detail: str,
) -> None:
    assert (
        await refusal(service, jwt(clock, **actor), {"name": "ci", "workspace": workspace}, error) == detail
    )
    assert await service.list(None, "all") == []


async def test_a_token_never_picks_from_a_workspace_list(service: TokenService) -> None:
    manager = await token_actor(service)
    listed = replace(manager, workspaces=frozenset({"ws2"}))
    body = {"name": "child", "project": "p1", "workspace": "ws2"}
    assert (
        await refusal(service, listed, body, TargetDenied) == "workspace: 'ws2' is not the caller's workspace"
    )
    record, _ = await service.create(listed, {**body, "workspace": "ws1"})
    assert record.workspace == "ws1"


async def test_a_token_without_a_workspace_may_not_mint(service: TokenService) -> None:
    manager = await token_actor(service)
    homeless = replace(manager, workspace=None)
    body = {"name": "child", "project": "p1", "workspace": "ws1"}
    assert (
        await refusal(service, homeless, body, InsufficientScope) == "the credential is bound to no workspace"
    )


# -- create: what a token may give its child --------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "body", "detail"),
    [
        pytest.param(
            {}, {}, "project: a workspace-level token may only create project-level tokens", id="no-project"
        ),
        pytest.param(
            {"expires_in": 3600},
            {"project": "p1", "expires_in": 3601},
            "expires_in: a token may not mint a token that outlives it",
            id="outlives",
        ),
        pytest.param(
            {"scopes": ["read", "tokens:manage"]},
            {"project": "p1", "scopes": ["write"]},
            "scopes: beyond what the caller may mint: write",
            id="beyond",
        ),
    ],
)
async def test_token_minter_refusal_details(
    service: TokenService, actor: dict[str, Any], body: dict[str, Any], detail: str
) -> None:
    manager = await token_actor(service, **actor)
    assert await refusal(service, manager, {"name": "child", **body}, InsufficientScope) == detail


async def test_a_token_child_defaults_to_its_minters_remaining_life(
    service: TokenService, clock: Clock
) -> None:
    manager = await token_actor(service, expires_in=3600)
    clock.advance(1000.4)
    record, _ = await service.create(manager, {"name": "child", "project": "p1"})
    assert record.expires_at == T0 + 3600
    exact, _ = await service.create(manager, {"name": "exact", "project": "p1", "expires_in": 2599})
    assert exact.expires_at == T0 + 3599
    with pytest.raises(InsufficientScope):
        await service.create(manager, {"name": "over", "project": "p1", "expires_in": 2600})


# -- list and revoke --------------------------------------------------------------------------


async def test_listing_shows_only_what_the_caller_could_mint(service: TokenService, clock: Clock) -> None:
    for name, project, scopes in [
        ("ws", None, ["read"]),
        ("full", "p1", ["full"]),
        ("mine", "p1", ["write"]),
    ]:
        await service.create(None, {"name": name, "workspace": "ws1", "project": project, "scopes": scopes})
    manager = await token_actor(service)
    assert [r.name for r in await service.list(manager)] == ["mine"]
    assert sorted(r.name for r in await service.list(jwt(clock, mint_scopes=frozenset({"write"})))) == [
        "mine",
        "ws",
    ]
    with pytest.raises(InsufficientScope) as caught:
        await service.list(jwt(clock, mint_scopes=frozenset()))
    assert caught.value.detail == "the credential holds no scope it could grant"


async def test_revoke_is_whole_seconds_and_guarded(
    service: TokenService, store: TokenStore, clock: Clock
) -> None:
    record, _ = await service.create(None, {"name": "ci", "workspace": "ws1", "project": "p1"})
    for actor in (jwt(clock, mint_scopes=frozenset()), await token_actor(service, project="p1", name="pm")):
        with pytest.raises(InsufficientScope):
            await service.revoke(actor, record.id)
    with pytest.raises(NotFound):
        await service.revoke(jwt(clock), "x" * 201)
    clock.advance(7.8)
    await service.revoke(jwt(clock), record.id)
    ended = await store.by_id(record.id)
    assert ended is not None and ended.revoked_at == T0 + 7


# -- audit ------------------------------------------------------------------------------------


async def test_audit_line_of_a_token_minter(
    service: TokenService, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = await token_actor(service)
    caplog.set_level(logging.INFO, logger="scopegate.audit")
    record, _ = await service.create(manager, {"name": "child", "project": "p1", "expires_in": "1d"})
    await service.revoke(None, record.id)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "scopegate.audit"]
    assert all(list(line) == sorted(line) for line in lines)  # one stable key order, line to line
    expected = {
        "event": "token.create",
        "actor_kind": "token",
        "actor_subject": "robot",
        "actor_token_id": manager.token_id,
        "token_id": record.id,
        "name": "child",
        "owner": "robot",
        "scopes": ["read"],
        "workspace": "ws1",
        "project": "p1",
        "targets": [],
        "expires_at": "2023-11-15T22:13:20Z",
    }
    assert lines == [
        expected,
        {
            **expected,
            "event": "token.revoke",
            "actor_kind": "cli",
            "actor_subject": "cli",
            "actor_token_id": None,
        },
    ]


async def test_audit_line_names_agency_targets(
    service: TokenService, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scopegate.audit")
    body = {
        "name": "agent",
        "scopes": ["agency"],
        "targets": [{"kind": "playlist", "id": "7"}, {"kind": "node", "id": 9}],
    }
    await service.create(jwt(clock), body)
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "scopegate.audit"]
    assert line["targets"] == ["playlist:7", "node:9"]
