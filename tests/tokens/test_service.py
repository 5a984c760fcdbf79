from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.principal import Principal
from gateway.config import TokensConfig
from gateway.errors import Conflict, InsufficientScope, InvalidRequest, InvalidToken, NotFound, TargetDenied
from gateway.scopes import Catalogue
from gateway.tokens.secret import hash_token, well_formed
from gateway.tokens.service import TokenService, record_json
from gateway.tokens.store import TokenStore
from gateway.tokens.validator import TokenValidator

from .conftest import PREFIX, T0, Clock, stored_bytes

DAY = 86400.0
CATALOGUE = Catalogue.build({"playlists:read": "read playlists", "nodes:create": "register nodes"})


@pytest.fixture
def service(
    store: TokenStore, validator: TokenValidator, tokens_cfg: TokensConfig, clock: Clock
) -> TokenService:
    return TokenService(store, validator, tokens_cfg, lambda: CATALOGUE, clock)


def jwt(clock: Clock, **overrides: Any) -> Principal:
    fields: dict[str, Any] = {
        "kind": "jwt",
        "subject": "alice",
        "scopes": frozenset({"full"}),
        "mint_scopes": frozenset({"*"}),
        "workspace": "ws1",
        "workspaces": frozenset({"ws1", "ws2"}),
        "role": "admin",
        "expires_at": clock() + 300,
    }
    fields.update(overrides)
    return Principal(**fields)


async def token_actor(service: TokenService, **body: Any) -> Principal:
    """A real token principal: minted by the operator, then authenticated like any request."""
    fields: dict[str, Any] = {
        "name": "manager",
        "workspace": "ws1",
        "scopes": ["write", "tokens:manage"],
        "owner": "robot",
    }
    fields.update(body)
    _, secret = await service.create(None, fields)
    principal = await service.validator.authenticate(secret)
    assert principal is not None
    return principal


# -- creation by the operator CLI -------------------------------------------------------------


async def test_cli_create_returns_a_working_secret(service: TokenService, validator: TokenValidator) -> None:
    record, secret = await service.create(None, {"name": "ci", "workspace": "ws1"})
    assert well_formed(secret, PREFIX)
    assert record.display_prefix == secret[:7]
    assert (record.scopes, record.owner, record.project, record.created_by) == (("read",), "cli", None, "cli")
    assert record.expires_at == T0 + 90 * DAY
    principal = await validator.authenticate(secret)
    assert principal is not None and principal.token_id == record.id


async def test_record_json_is_the_contract_object(service: TokenService) -> None:
    record, secret = await service.create(
        None,
        {
            "name": "agent",
            "workspace": "ws1",
            "project": "p1",
            "scopes": ["agency"],
            "targets": [{"kind": "playlist", "id": "7"}, {"kind": "playlist", "id": 8}],
            "expires_in": "1d",
            "owner": "svc",
        },
    )
    assert record_json(record, secret) == {
        "id": record.id,
        "name": "agent",
        "display_prefix": secret[:7],
        "token": secret,
        "scopes": ["agency"],
        "workspace": "ws1",
        "project": "p1",
        "targets": [{"kind": "playlist", "id": "7"}, {"kind": "playlist", "id": "8"}],
        "created_at": "2023-11-14T22:13:20Z",
        "expires_at": "2023-11-15T22:13:20Z",
        "last_used_at": None,
        "revoked_at": None,
        "not_before": None,
        "allowed_cidrs": [],
        "rotated_from": None,
    }
    assert "token" not in record_json(record)
    assert record.owner == "svc"


async def test_cli_create_needs_a_workspace(service: TokenService) -> None:
    with pytest.raises(InvalidRequest, match=r"^workspace"):
        await service.create(None, {"name": "ci"})


async def test_secret_never_reaches_the_database_files(
    tmp_path: Path, store_url: str, store: TokenStore, service: TokenService, clock: Clock
) -> None:
    secrets = [(await service.create(None, {"name": f"n{i}", "workspace": "ws1"}))[1] for i in range(5)]
    blob = await stored_bytes(store_url, tmp_path)
    await store.close()
    blob += await stored_bytes(store_url, tmp_path)
    assert all(hash_token(s) in blob for s in secrets)
    for s in secrets:
        assert s.encode() not in blob
        assert s[len(PREFIX) : len(PREFIX) + 32].encode() not in blob


# -- field rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("x" * 101, id="101-chars"),
        pytest.param("a/b", id="slash"),
        pytest.param("line\nbreak", id="newline"),
        pytest.param("trailing\n", id="trailing-newline"),
        pytest.param("caf\u00e9", id="non-ascii"),
        pytest.param(5, id="not-a-string"),
    ],
)
async def test_bad_names(service: TokenService, name: object) -> None:
    body: dict[str, Any] = {"workspace": "ws1"}
    if name is not None:
        body["name"] = name
    with pytest.raises(InvalidRequest, match=r"^name"):
        await service.create(None, body)


@pytest.mark.parametrize(
    "name", [pytest.param("x" * 100, id="100-chars"), pytest.param("a b.c-d_E9", id="all-kinds")]
)
async def test_good_names(service: TokenService, name: str) -> None:
    record, _ = await service.create(None, {"name": name, "workspace": "ws1"})
    assert record.name == name


async def test_duplicate_active_name_conflicts_until_revoked(service: TokenService) -> None:
    first, _ = await service.create(None, {"name": "ci", "workspace": "ws1", "project": "p1"})
    with pytest.raises(Conflict):
        await service.create(None, {"name": "ci", "workspace": "ws1", "project": "p1"})
    await service.create(None, {"name": "ci", "workspace": "ws1"})  # another project level: fine
    await service.revoke(None, first.id)
    await service.create(None, {"name": "ci", "workspace": "ws1", "project": "p1"})


@pytest.mark.parametrize(
    "expires_in",
    [
        pytest.param(0, id="zero"),
        pytest.param(-5, id="negative"),
        pytest.param("0d", id="zero-duration"),
        pytest.param(365 * DAY + 1, id="over-max"),
        pytest.param("366d", id="over-max-duration"),
        pytest.param("soon", id="not-a-duration"),
        pytest.param("-1d", id="negative-duration"),
        pytest.param(True, id="bool"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinite"),
        pytest.param([30], id="list"),
    ],
)
async def test_bad_expires_in(service: TokenService, expires_in: object) -> None:
    with pytest.raises(InvalidRequest, match=r"^expires_in"):
        await service.create(None, {"name": "ci", "workspace": "ws1", "expires_in": expires_in})


@pytest.mark.parametrize(
    ("expires_in", "seconds"),
    [
        pytest.param(3600, 3600.0, id="seconds"),
        pytest.param("12h", 12 * 3600.0, id="hours"),
        pytest.param("30d", 30 * DAY, id="days"),
        pytest.param("365d", 365 * DAY, id="exactly-max"),
    ],
)
async def test_good_expires_in(service: TokenService, expires_in: object, seconds: float) -> None:
    record, _ = await service.create(None, {"name": "ci", "workspace": "ws1", "expires_in": expires_in})
    assert record.expires_at == T0 + seconds


@pytest.mark.parametrize(
    ("scopes", "match"),
    [
        pytest.param([], "^scopes: must not be empty", id="empty"),
        pytest.param(["admn"], "'admn'", id="unknown-named"),
        pytest.param(["read", "playlists:delete"], "'playlists:delete'", id="unknown-fine-grained"),
        pytest.param(["*"], "'\\*'", id="star"),
        pytest.param("read", "^scopes", id="string-not-list"),
        pytest.param([1], "^scopes", id="not-strings"),
        pytest.param(["agency", "read"], "agency must be the only scope", id="agency-not-alone"),
    ],
)
async def test_bad_scopes(service: TokenService, scopes: object, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        await service.create(
            None, {"name": "ci", "workspace": "ws1", "scopes": scopes, "targets": [{"kind": "p", "id": "1"}]}
        )


async def test_scopes_are_deduplicated_in_canonical_order(service: TokenService) -> None:
    record, _ = await service.create(
        None,
        {
            "name": "ci",
            "workspace": "ws1",
            "scopes": ["playlists:read", "write", "read", "write", "tokens:manage"],
        },
    )
    assert record.scopes == ("read", "write", "tokens:manage", "playlists:read")


@pytest.mark.parametrize(
    ("scopes", "targets", "match"),
    [
        pytest.param(["agency"], None, "^targets: an agency token needs", id="agency-without-targets"),
        pytest.param(["agency"], [], "^targets: an agency token needs", id="agency-empty-targets"),
        pytest.param(
            ["read"], [{"kind": "playlist", "id": "1"}], "^targets: only an agency", id="targets-on-read"
        ),
        pytest.param(["agency"], [{"kind": "playlist"}], r"^targets\[0\]", id="target-missing-id"),
        pytest.param(["agency"], [{"kind": "p", "id": "1", "x": 1}], r"^targets\[0\]", id="target-extra-key"),
        pytest.param(
            ["agency"], [{"kind": "Bad Kind", "id": "1"}], r"^targets\[0\]\.kind", id="target-bad-kind"
        ),
        pytest.param(["agency"], [{"kind": "p", "id": "a\r\nb"}], r"^targets\[0\]\.id", id="target-crlf-id"),
        pytest.param(["agency"], "playlist:1", "^targets", id="targets-not-list"),
    ],
)
async def test_agency_and_target_rules(
    service: TokenService, scopes: object, targets: object, match: str
) -> None:
    body: dict[str, Any] = {"name": "ci", "workspace": "ws1", "scopes": scopes}
    if targets is not None:
        body["targets"] = targets
    with pytest.raises(InvalidRequest, match=match):
        await service.create(None, body)


async def test_targets_are_deduplicated(service: TokenService) -> None:
    t = {"kind": "playlist", "id": "7"}
    record, _ = await service.create(
        None, {"name": "a", "workspace": "ws1", "scopes": ["agency"], "targets": [t, t]}
    )
    assert record.targets == (("playlist", "7"),)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("project", "p 1", id="project-space"),
        pytest.param("project", "p\n1", id="project-newline"),
        pytest.param("project", 7, id="project-not-string"),
        pytest.param("workspace", "", id="workspace-empty"),
        pytest.param("owner", "two words", id="owner-space"),
        pytest.param("colour", "blue", id="unknown-field"),
    ],
)
async def test_bad_identifiers(service: TokenService, field: str, value: object) -> None:
    body: dict[str, Any] = {"name": "ci", "workspace": "ws1", field: value}
    with pytest.raises(InvalidRequest, match=f"^{field}"):
        await service.create(None, body)


# -- JWT minters ------------------------------------------------------------------------------


async def test_jwt_mints_in_its_workspace_as_itself(service: TokenService, clock: Clock) -> None:
    record, _ = await service.create(jwt(clock), {"name": "ci", "scopes": ["write"]})
    assert (record.workspace, record.owner, record.created_by) == ("ws1", "alice", "jwt:alice")


async def test_jwt_exp_does_not_bound_the_child(service: TokenService, clock: Clock) -> None:
    record, _ = await service.create(jwt(clock, expires_at=clock() + 60), {"name": "ci"})
    assert record.expires_at == T0 + 90 * DAY


async def test_jwt_may_pick_a_workspace_from_its_list(service: TokenService, clock: Clock) -> None:
    record, _ = await service.create(jwt(clock), {"name": "ci", "workspace": "ws2"})
    assert record.workspace == "ws2"


@pytest.mark.parametrize(
    ("actor", "body", "error"),
    [
        pytest.param({}, {"workspace": "ws3"}, TargetDenied, id="workspace-outside-list"),
        pytest.param({"workspaces": None}, {"workspace": "ws2"}, TargetDenied, id="no-list-other-workspace"),
        pytest.param(
            {"workspace": None, "workspaces": None}, {}, InsufficientScope, id="no-workspace-at-all"
        ),
        pytest.param(
            {"workspace": None, "workspaces": None},
            {"workspace": "ws1"},
            InsufficientScope,
            id="no-workspace-names-one",
        ),
        pytest.param(
            {"mint_scopes": frozenset({"write"})}, {"scopes": ["full"]}, InsufficientScope, id="above-cap"
        ),
        pytest.param(
            {"mint_scopes": frozenset({"write"})},
            {"scopes": ["nodes:create"]},
            InsufficientScope,
            id="fine-not-in-cap",
        ),
        pytest.param(
            {"mint_scopes": frozenset({"full"})},
            {"scopes": ["agency"], "targets": [{"kind": "p", "id": "1"}]},
            InsufficientScope,
            id="agency-not-in-cap",
        ),
        pytest.param({}, {"owner": "bob"}, InvalidRequest, id="may-not-set-owner"),
    ],
)
async def test_jwt_refusals(
    service: TokenService, clock: Clock, actor: dict[str, Any], body: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await service.create(jwt(clock, **actor), {"name": "ci", **body})
    assert await service.list(None, "all") == []


async def test_jwt_ladder_minting_within_cap(service: TokenService, clock: Clock) -> None:
    actor = jwt(clock, mint_scopes=frozenset({"write"}))
    record, _ = await service.create(actor, {"name": "ci", "scopes": ["read", "write"]})
    assert record.scopes == ("read", "write")


async def test_jwt_may_mint_agency(service: TokenService, clock: Clock) -> None:
    body = {"name": "agent", "scopes": ["agency"], "targets": [{"kind": "playlist", "id": "7"}]}
    record, _ = await service.create(jwt(clock), body)
    assert (record.scopes, record.targets) == (("agency",), (("playlist", "7"),))


# -- token minters ----------------------------------------------------------------------------


async def test_manager_token_mints_project_tokens_as_itself(service: TokenService, clock: Clock) -> None:
    manager = await token_actor(service)
    record, _ = await service.create(manager, {"name": "child", "project": "p1", "scopes": ["read"]})
    assert (record.workspace, record.project, record.owner) == ("ws1", "p1", "robot")
    assert record.created_by == f"token:{manager.token_id}"


@pytest.mark.parametrize(
    ("actor", "body", "error", "match"),
    [
        pytest.param({}, {}, InsufficientScope, "^project", id="no-project"),
        pytest.param(
            {}, {"project": "p1", "workspace": "ws2"}, TargetDenied, "^workspace", id="other-workspace"
        ),
        pytest.param(
            {}, {"project": "p1", "scopes": ["full"]}, InsufficientScope, "^scopes", id="above-own-scopes"
        ),
        pytest.param(
            {"scopes": ["full", "tokens:manage"]},
            {"project": "p1", "scopes": ["agency"], "targets": [{"kind": "p", "id": "1"}]},
            InsufficientScope,
            "only a JWT",
            id="agency",
        ),
        pytest.param(
            {"scopes": ["write"]}, {"project": "p1"}, InsufficientScope, "may not manage", id="no-manage"
        ),
        pytest.param(
            {"project": "p0"}, {"project": "p1"}, InsufficientScope, "project-level", id="project-level"
        ),
        pytest.param(
            {"expires_in": 3600},
            {"project": "p1", "expires_in": 3601},
            InsufficientScope,
            "outlives",
            id="outlive",
        ),
        pytest.param({}, {"project": "p1", "owner": "x"}, InvalidRequest, "^owner", id="may-not-set-owner"),
    ],
)
async def test_token_minter_refusals(
    service: TokenService, actor: dict[str, Any], body: dict[str, Any], error: type[Exception], match: str
) -> None:
    manager = await token_actor(service, **actor)
    with pytest.raises(error, match=match):
        await service.create(manager, {"name": "child", **body})
    assert [r.name for r in await service.list(None, "all")] == ["manager"]


async def test_token_minter_child_expiry_is_clamped(service: TokenService) -> None:
    manager = await token_actor(service, expires_in=3600)
    record, _ = await service.create(manager, {"name": "child", "project": "p1"})
    assert record.expires_at == manager.expires_at == T0 + 3600
    exact, _ = await service.create(manager, {"name": "exact", "project": "p1", "expires_in": 3600})
    assert exact.expires_at == T0 + 3600


async def test_token_minter_may_mint_below_its_ladder_rung(service: TokenService) -> None:
    manager = await token_actor(service)
    record, _ = await service.create(
        manager, {"name": "child", "project": "p1", "scopes": ["read", "tokens:manage"]}
    )
    assert record.scopes == ("read", "tokens:manage")


# -- listing ----------------------------------------------------------------------------------


async def seed(service: TokenService, clock: Clock) -> dict[str, str]:
    ids = {}
    for name, ws, project in [
        ("ws-level", "ws1", None),
        ("proj", "ws1", "p1"),
        ("gone", "ws1", "p2"),
        ("other", "ws2", "p1"),
    ]:
        clock.advance(1)
        record, _ = await service.create(None, {"name": name, "workspace": ws, "project": project})
        ids[name] = record.id
    await service.revoke(None, ids["gone"])
    return ids


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param("active", ["ws-level", "proj"], id="active"),
        pytest.param("revoked", ["gone"], id="revoked"),
        pytest.param("all", ["ws-level", "proj", "gone"], id="all"),
    ],
)
async def test_jwt_lists_its_workspace(
    service: TokenService, clock: Clock, status: str, expected: list[str]
) -> None:
    await seed(service, clock)
    assert [r.name for r in await service.list(jwt(clock), status)] == expected


async def test_manager_lists_only_project_tokens(service: TokenService, clock: Clock) -> None:
    await seed(service, clock)
    manager = await token_actor(service)
    assert [r.name for r in await service.list(manager, "all")] == ["proj", "gone"]


async def test_cli_lists_everything_or_one_workspace(service: TokenService, clock: Clock) -> None:
    await seed(service, clock)
    assert [r.name for r in await service.list(None)] == ["ws-level", "proj", "other"]
    assert [r.name for r in await service.list(None, workspace="ws2")] == ["other"]


@pytest.mark.parametrize(
    ("actor", "error"),
    [
        pytest.param({"scopes": ["write"]}, InsufficientScope, id="no-manage"),
        pytest.param({"project": "p1"}, InsufficientScope, id="project-level"),
    ],
)
async def test_list_refusals_for_tokens(
    service: TokenService, actor: dict[str, Any], error: type[Exception]
) -> None:
    principal = await token_actor(service, **actor)
    with pytest.raises(error):
        await service.list(principal)


async def test_bad_status(service: TokenService, clock: Clock) -> None:
    with pytest.raises(InvalidRequest, match=r"^status"):
        await service.list(jwt(clock), "expired")


# -- revocation -------------------------------------------------------------------------------


async def test_jwt_revokes_and_the_token_is_refused_at_once(
    store: TokenStore, service: TokenService, validator: TokenValidator, clock: Clock
) -> None:
    record, secret = await service.create(None, {"name": "ci", "workspace": "ws1"})
    assert await validator.authenticate(secret) is not None  # now cached
    await service.revoke(jwt(clock), record.id)
    await store.close()
    with pytest.raises(InvalidToken, match="revoked"):
        await validator.authenticate(secret)


async def test_manager_revokes_a_project_token(service: TokenService, clock: Clock) -> None:
    ids = await seed(service, clock)
    manager = await token_actor(service)
    await service.revoke(manager, ids["proj"])
    assert [r.name for r in await service.list(None, "revoked")] == ["proj", "gone"]


@pytest.mark.parametrize(
    ("who", "target"),
    [
        pytest.param("jwt", "unknown", id="unknown-id"),
        pytest.param("jwt", "gone", id="already-revoked"),
        pytest.param("jwt", "other", id="other-workspace"),
        pytest.param("jwt-ws2-only", "proj", id="jwt-of-another-workspace"),
        pytest.param("manager", "ws-level", id="manager-on-workspace-level"),
        pytest.param("manager", "manager", id="manager-on-itself"),
        pytest.param("manager", "other", id="manager-on-other-workspace"),
    ],
)
async def test_revoke_of_invisible_is_404(service: TokenService, clock: Clock, who: str, target: str) -> None:
    ids = await seed(service, clock)
    manager = await token_actor(service)
    ids["manager"] = manager.token_id or ""
    ids["unknown"] = "tok_doesnotexist0000"
    actor = {
        "jwt": jwt(clock),
        "jwt-ws2-only": jwt(clock, workspace="ws2", workspaces=frozenset({"ws2"})),
        "manager": manager,
    }[who]
    before = await service.list(None, "all")
    with pytest.raises(NotFound) as caught:
        await service.revoke(actor, ids[target])
    assert caught.value.detail == "no such token"
    assert await service.list(None, "all") == before


async def test_project_token_may_not_revoke(service: TokenService, clock: Clock) -> None:
    ids = await seed(service, clock)
    project_manager = await token_actor(service, project="p1", name="pm")
    with pytest.raises(InsufficientScope):
        await service.revoke(project_manager, ids["proj"])


# -- audit ------------------------------------------------------------------------------------


async def test_audit_lines_for_create_and_revoke(
    service: TokenService, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scopegate.audit")
    record, secret = await service.create(jwt(clock), {"name": "ci", "scopes": ["write"], "project": "p1"})
    await service.revoke(jwt(clock), record.id)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "scopegate.audit"]
    assert [line["event"] for line in lines] == ["token.create", "token.revoke"]
    for line in lines:
        assert line["actor_kind"] == "jwt" and line["actor_subject"] == "alice"
        assert (line["token_id"], line["scopes"], line["workspace"], line["project"]) == (
            record.id,
            ["write"],
            "ws1",
            "p1",
        )
    assert secret not in caplog.text
    assert secret[len(PREFIX) : len(PREFIX) + 32] not in caplog.text
