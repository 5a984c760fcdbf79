"""TokenService.rotate and revoke_by_value in process: the successor's exact bounds, the old
secret's end (at once, or after the overlap), and revocation by value learning nothing."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from typing import Any

import pytest

from gateway.config import TokensConfig
from gateway.errors import Conflict, InsufficientScope, InvalidRequest, InvalidToken, NotFound
from gateway.tokens.secret import generate, hash_token
from gateway.tokens.service import TokenService
from gateway.tokens.store import TokenStore
from gateway.tokens.validator import TokenValidator

from .conftest import PREFIX, T0, Clock
from .test_service import CATALOGUE, DAY, jwt, token_actor


@pytest.fixture
def service(
    store: TokenStore, validator: TokenValidator, tokens_cfg: TokensConfig, clock: Clock
) -> TokenService:
    return TokenService(store, validator, tokens_cfg, lambda: CATALOGUE, clock)


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "scopegate.audit"]


async def refused(validator: TokenValidator, secret: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await validator.authenticate(secret)
    return caught.value.detail


PROJECT_TOKEN = {
    "name": "ci",
    "workspace": "ws1",
    "project": "p1",
    "scopes": ["write", "nodes:create"],
    "allowed_cidrs": ["10.1.2.3/8"],
    "owner": "svc",
    "expires_in": "30d",
}


# -- rotate -----------------------------------------------------------------------------------


async def test_successor_keeps_every_bound_and_the_old_secret_ends_at_once(
    service: TokenService, store: TokenStore, validator: TokenValidator, clock: Clock
) -> None:
    old, old_secret = await service.create(None, PROJECT_TOKEN)
    assert await validator.authenticate(old_secret) is not None  # cached
    clock.advance(10.6)
    new, secret = await service.rotate(jwt(clock), old.id, {})
    assert new.id != old.id and secret != old_secret and new.display_prefix == secret[:7]
    assert replace(new, id=old.id, display_prefix=old.display_prefix) == replace(
        old, created_at=T0 + 10, created_by="jwt:alice", rotated_from=old.id
    )
    assert (new.expires_at, new.allowed_cidrs, new.owner) == (T0 + 30 * DAY, ("10.0.0.0/8",), "svc")
    assert await refused(validator, old_secret) == "token revoked"
    gone = await store.by_id(old.id)
    assert gone is not None and gone.revoked_at == T0 + 10
    principal = await validator.authenticate(secret)
    assert principal is not None and principal.token_id == new.id


async def test_agency_successor_keeps_its_targets(service: TokenService, clock: Clock) -> None:
    body = {"name": "agent", "scopes": ["agency"], "targets": [{"kind": "playlist", "id": "7"}]}
    old, _ = await service.create(jwt(clock), body)
    new, _ = await service.rotate(None, old.id, {})
    assert (new.scopes, new.targets, new.created_by) == (("agency",), (("playlist", "7"),), "cli")


@pytest.mark.parametrize(
    ("overlap", "revoke_in"),
    [
        pytest.param(60, 60, id="a-minute"),
        pytest.param("1h", 3600, id="an-hour"),
        pytest.param(1, 1, id="one-second"),
        pytest.param(60.9, 60, id="fraction-rounded-down"),
    ],
)
async def test_overlap_keeps_the_old_secret_until_its_end(
    service: TokenService,
    store: TokenStore,
    validator: TokenValidator,
    clock: Clock,
    overlap: object,
    revoke_in: float,
) -> None:
    old, old_secret = await service.create(None, PROJECT_TOKEN)
    assert await validator.authenticate(old_secret) is not None  # cached with its own expiry
    clock.advance(0.5)
    await service.rotate(None, old.id, {"overlap": overlap})
    ended = await store.by_id(old.id)
    assert ended is not None
    assert (ended.revoked_at, ended.revoke_at, ended.expires_at) == (None, T0 + revoke_in, T0 + revoke_in)
    clock.now = T0 + revoke_in - 0.01
    assert await validator.authenticate(old_secret) is not None
    clock.now = T0 + revoke_in
    assert await refused(validator, old_secret) == "token expired"


@pytest.mark.parametrize("overlap", [0, 0.99, "0d", None])
async def test_an_overlap_under_a_second_is_none(
    service: TokenService, store: TokenStore, validator: TokenValidator, overlap: object
) -> None:
    old, old_secret = await service.create(None, PROJECT_TOKEN)
    assert await validator.authenticate(old_secret) is not None
    await service.rotate(None, old.id, {} if overlap is None else {"overlap": overlap})
    ended = await store.by_id(old.id)
    assert ended is not None and (ended.revoked_at, ended.revoke_at) == (T0, None)
    assert await refused(validator, old_secret) == "token revoked"


async def test_overlap_never_outlives_the_old_token(service: TokenService, store: TokenStore) -> None:
    old, _ = await service.create(None, {**PROJECT_TOKEN, "expires_in": 100})
    await service.rotate(None, old.id, {"overlap": "7d"})  # exactly the most allowed
    ended = await store.by_id(old.id)
    assert ended is not None and ended.revoke_at == T0 + 100


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param([], "body: must be a JSON object", id="not-an-object"),
        pytest.param({"zeta": 1, "alpha": 2, "overlap": 5}, "alpha: unknown field", id="unknown-fields"),
        pytest.param(
            {"overlap": "soon"}, "overlap: must be seconds or a duration such as 30d or 12h", id="bad"
        ),
        pytest.param({"overlap": -1}, "overlap: must not be negative", id="negative"),
        pytest.param({"overlap": 7 * DAY + 1}, "overlap: at most 604800 seconds", id="over-max"),
    ],
)
async def test_bad_rotation_bodies(service: TokenService, store: TokenStore, body: Any, detail: str) -> None:
    old, _ = await service.create(None, PROJECT_TOKEN)
    with pytest.raises(InvalidRequest) as caught:
        await service.rotate(None, old.id, body)
    assert caught.value.detail == detail
    assert await store.by_id(old.id) == old


async def test_self_rotation_needs_no_manage_scope(service: TokenService, clock: Clock) -> None:
    actor = await token_actor(service, project="p1", scopes=["read"])
    new, _ = await service.rotate(actor, None, {"overlap": 30})
    assert (new.rotated_from, new.created_by, new.project) == (
        actor.token_id,
        f"token:{actor.token_id}",
        "p1",
    )
    with pytest.raises(Conflict) as caught:
        await service.rotate(actor, None, {})
    assert caught.value.detail == "this token was already rotated; rotate its successor"


async def test_self_rotation_of_a_revoked_or_unknown_token_is_404(service: TokenService) -> None:
    actor = await token_actor(service)
    for ghost in (replace(actor, token_id="tok_doesnotexist0000"), actor):
        if ghost is actor:
            await service.revoke(None, actor.token_id or "")
        with pytest.raises(NotFound) as caught:
            await service.rotate(ghost, None, {})
        assert caught.value.detail == "no such token"


async def test_only_an_api_token_rotates_itself(service: TokenService, clock: Clock) -> None:
    token = await token_actor(service)
    for actor in (
        None,
        jwt(clock),
        replace(token, token_id=None),
        replace(jwt(clock), token_id=token.token_id),
    ):
        with pytest.raises(InsufficientScope) as caught:
            await service.rotate(actor, None, {})
        assert caught.value.detail == "only an API token may rotate itself"


async def test_rotating_another_token_is_management(service: TokenService, clock: Clock) -> None:
    ws_level, _ = await service.create(None, {"name": "ws", "workspace": "ws1"})
    child, _ = await service.create(None, {"name": "child", "workspace": "ws1", "project": "p1"})
    project_manager = await token_actor(service, project="p1", name="pm")
    with pytest.raises(InsufficientScope, match="project-level token may not manage"):
        await service.rotate(project_manager, child.id, {})
    manager = await token_actor(service)
    for invisible in (ws_level.id, "tok_doesnotexist0000", "x" * 201):
        with pytest.raises(NotFound):
            await service.rotate(manager, invisible, {})
    new, _ = await service.rotate(manager, child.id, {})
    assert new.rotated_from == child.id


async def test_an_expired_token_is_not_rotated(service: TokenService, clock: Clock) -> None:
    old, _ = await service.create(None, {**PROJECT_TOKEN, "expires_in": 100})
    clock.now = T0 + 100.5
    with pytest.raises(Conflict) as caught:
        await service.rotate(None, old.id, {})
    assert caught.value.detail == "this token has expired; create a new one"
    clock.now = T0 + 99.9
    new, _ = await service.rotate(None, old.id, {})
    assert (new.created_at, new.expires_at) == (T0 + 99, T0 + 100)


async def test_successor_never_outlives_a_rotating_token(service: TokenService, clock: Clock) -> None:
    manager = await token_actor(service)
    children = [
        (await service.create(None, {"name": f"child{i}", "workspace": "ws1", "project": "p1"}))[0]
        for i in range(3)
    ]
    new, _ = await service.rotate(replace(manager, expires_at=T0 + 1800.7), children[0].id, {})
    assert new.expires_at == T0 + 1800
    unbounded, _ = await service.rotate(replace(manager, expires_at=None), children[1].id, {})
    assert unbounded.expires_at == T0 + 90 * DAY
    # A JWT's own short expiry does not bound the successor.
    by_jwt, _ = await service.rotate(jwt(clock, expires_at=T0 + 60), children[2].id, {})
    assert by_jwt.expires_at == T0 + 90 * DAY


@pytest.mark.parametrize(("not_before", "kept"), [(T0 + 100, True), (T0 + 10, False), (T0 + 5, False)])
async def test_successor_keeps_only_a_start_still_ahead(
    service: TokenService, clock: Clock, not_before: float, kept: bool
) -> None:
    old, _ = await service.create(None, {**PROJECT_TOKEN, "not_before": not_before})
    clock.now = T0 + 10.5
    new, _ = await service.rotate(None, old.id, {})
    assert new.not_before == (not_before if kept else None)


async def test_rotation_audit_links_the_two(
    service: TokenService, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    old, _ = await service.create(None, PROJECT_TOKEN)
    caplog.set_level(logging.INFO, logger="scopegate.audit")
    clock.advance(2.5)
    new, _ = await service.rotate(jwt(clock), old.id, {"overlap": 60})
    newer, _ = await service.rotate(None, new.id, {})
    first, second = audit_lines(caplog)
    assert first == {
        "event": "token.rotate",
        "actor_kind": "jwt",
        "actor_subject": "alice",
        "actor_token_id": None,
        "token_id": new.id,
        "name": "ci",
        "owner": "svc",
        "scopes": ["write", "nodes:create"],
        "workspace": "ws1",
        "project": "p1",
        "targets": [],
        "expires_at": "2023-12-14T22:13:20Z",
        "rotated_from": old.id,
        "old_revoke_at": "2023-11-14T22:14:22Z",
    }
    assert (second["token_id"], second["rotated_from"], second["actor_kind"]) == (newer.id, new.id, "cli")
    assert second["old_revoke_at"] == "2023-11-14T22:13:22Z"  # at once: now


# -- revoke by value --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secrets",
    [
        pytest.param("st_x", id="a-string"),
        pytest.param([], id="empty"),
        pytest.param(["st_x", 5], id="not-all-strings"),
        pytest.param([5, "st_x"], id="first-not-a-string"),
        pytest.param({"st_x": 1}, id="an-object"),
    ],
)
async def test_revoke_by_value_refuses_bad_lists(service: TokenService, secrets: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await service.revoke_by_value(secrets, "192.0.2.1")
    assert caught.value.detail == "tokens: must be a non-empty list of token strings"


async def test_revoke_by_value_takes_at_most_100(service: TokenService) -> None:
    await service.revoke_by_value(["junk"] * 100, None)
    with pytest.raises(InvalidRequest) as caught:
        await service.revoke_by_value(["junk"] * 101, None)
    assert caught.value.detail == "tokens: at most 100"


async def test_revoke_by_value_skips_what_is_not_live_and_ends_the_rest(
    service: TokenService,
    store: TokenStore,
    validator: TokenValidator,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    live1, secret1 = await service.create(None, {"name": "one", "workspace": "ws1"})
    live2, secret2 = await service.create(None, {"name": "two", "workspace": "ws2", "project": "p1"})
    dead, dead_secret = await service.create(None, {"name": "dead", "workspace": "ws1", "project": "p9"})
    await service.revoke(None, dead.id)
    assert await validator.authenticate(secret1) is not None  # cached
    caplog.set_level(logging.INFO, logger="scopegate.audit")
    clock.advance(5.7)
    unknown = generate(PREFIX)
    await service.revoke_by_value(
        [
            "garbage",
            unknown,
            dead_secret,
            f"  {secret1}\n",
            "garbage",
            unknown,
            dead_secret,
            secret2,
            secret2,
        ],
        "192.0.2.1",
    )
    for record in (live1, live2):
        ended = await store.by_id(record.id)
        assert ended is not None and ended.revoked_at == T0 + 5
    assert await refused(validator, secret1) == "token revoked"
    assert await refused(validator, secret2) == "token revoked"
    lines = audit_lines(caplog)
    assert [line["token_id"] for line in lines] == [live1.id, live2.id]
    assert lines[0] == {
        "event": "token.revoke",
        "actor_kind": "anonymous",
        "actor_subject": "",
        "actor_token_id": None,
        "token_id": live1.id,
        "name": "one",
        "owner": "cli",
        "scopes": ["read"],
        "workspace": "ws1",
        "project": None,
        "targets": [],
        "expires_at": "2024-02-12T22:13:20Z",
        "by": "value",
        "client": "192.0.2.1",
    }
    assert await store.by_hash(hash_token(unknown)) is None


async def test_revoke_by_value_of_a_malformed_secret_costs_no_lookup(
    service: TokenService, store: TokenStore, validator: TokenValidator
) -> None:
    record, secret = await service.create(None, {"name": "one", "workspace": "ws1"})
    broken = secret[:-1] + ("A" if secret[-1] != "A" else "B")  # checksum no longer matches
    await store.close()  # any lookup would now fail
    await service.revoke_by_value([broken, "st_", "nothing"], None)
    await store.open()
    assert (await store.by_id(record.id)) == record


# -- races on one SQLite store: the store's write lock orders them, the loser learns nothing ----


@pytest.fixture
def sqlite_service(sqlite_store: TokenStore, tokens_cfg: TokensConfig, clock: Clock) -> TokenService:
    validator = TokenValidator(sqlite_store, tokens_cfg, PREFIX, clock)
    return TokenService(sqlite_store, validator, tokens_cfg, lambda: CATALOGUE, clock)


async def test_a_secret_revoked_by_another_caller_meanwhile_does_not_stop_the_rest(
    sqlite_service: TokenService, caplog: pytest.LogCaptureFixture
) -> None:
    service = sqlite_service
    first, first_secret = await service.create(None, {"name": "one", "workspace": "ws1"})
    second, second_secret = await service.create(None, {"name": "two", "workspace": "ws1"})
    caplog.set_level(logging.INFO, logger="scopegate.audit")
    # Both read `first` as live; the store revokes it for the one that takes its write lock first.
    await asyncio.gather(
        service.revoke_by_value([first_secret], None),
        service.revoke_by_value([first_secret, second_secret], None),
    )
    for record in (first, second):
        ended = await service.store.by_id(record.id)
        assert ended is not None and ended.revoked_at == T0
    assert [line["token_id"] for line in audit_lines(caplog)] == [first.id, second.id]


async def test_of_two_revokes_at_once_the_loser_gets_the_unknown_ids_404(
    sqlite_service: TokenService, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    service = sqlite_service
    record, _ = await service.create(None, {"name": "one", "workspace": "ws1", "project": "p1"})
    caplog.set_level(logging.INFO, logger="scopegate.audit")
    outcomes = await asyncio.gather(
        service.revoke(jwt(clock), record.id), service.revoke(None, record.id), return_exceptions=True
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], NotFound) and outcomes[1].detail == "no such token"
    assert [line["actor_kind"] for line in audit_lines(caplog)] == ["jwt"]


async def test_of_two_rotations_at_once_the_loser_gets_the_unknown_ids_404(
    sqlite_service: TokenService, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    service = sqlite_service
    record, _ = await service.create(None, {"name": "one", "workspace": "ws1", "project": "p1"})
    caplog.set_level(logging.INFO, logger="scopegate.audit")
    outcomes = await asyncio.gather(
        service.rotate(jwt(clock), record.id, {}), service.rotate(None, record.id, {}), return_exceptions=True
    )
    assert isinstance(outcomes[0], tuple) and outcomes[0][0].rotated_from == record.id
    assert isinstance(outcomes[1], NotFound) and outcomes[1].detail == "no such token"
    assert [line["actor_kind"] for line in audit_lines(caplog)] == ["jwt"]
    assert len(await service.list(None, "active")) == 1
