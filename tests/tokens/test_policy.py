"""The minting ceiling and the management rule (gateway/tokens/policy.py), on hand-built callers.

These hold for any principal, including ones no authenticator builds today (a token whose scopes
reach `*` or `agency` through an edited store row, a JWT listing workspaces but naming none), so
the rule does not lean on what the store or the authenticators happen to refuse first.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import scopes as sc
from gateway.auth.principal import Principal
from gateway.errors import InsufficientScope
from gateway.tokens.policy import can_manage, home_workspace, require_manager, within_minter
from gateway.tokens.store import TokenRecord

FINE = ("nodes:create", "nodes:delete", "nodes:*", "playlists:read", "playlists:*")
SCOPES = (*sc.LADDER, sc.AGENCY, sc.MANAGE, *FINE)


def principal(kind: str = "token", **overrides: Any) -> Principal:
    fields: dict[str, Any] = {
        "kind": kind,
        "subject": "alice" if kind == "jwt" else "robot",
        "scopes": frozenset({"write", sc.MANAGE}),
        "mint_scopes": frozenset({"write", sc.MANAGE}),
        "workspace": "ws1",
        "token_id": "tok_manager" if kind == "token" else None,
    }
    fields.update(overrides)
    return Principal(**fields)


def record(**overrides: Any) -> TokenRecord:
    fields: dict[str, Any] = {
        "id": "tok_child",
        "name": "child",
        "display_prefix": "st_abcd",
        "owner": "robot",
        "workspace": "ws1",
        "project": "p1",
        "scopes": ("read",),
        "targets": (),
        "created_at": 0.0,
        "expires_at": 3600.0,
    }
    fields.update(overrides)
    return TokenRecord(**fields)


def refusal(call: Any, *args: Any) -> tuple[str, str]:
    with pytest.raises(InsufficientScope) as caught:
        call(*args)
    return caught.value.detail, caught.value.scope


# -- require_manager --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "actor",
    [
        pytest.param(principal(), id="token-with-manage"),
        pytest.param(principal("jwt", workspace="ws1", workspaces=None), id="jwt-with-workspace"),
        pytest.param(
            principal("jwt", workspace=None, workspaces=frozenset({"ws2"})), id="jwt-with-list-only"
        ),
        pytest.param(
            principal("jwt", scopes=frozenset(), mint_scopes=frozenset({"read"})), id="jwt-mints-read"
        ),
    ],
)
def test_managers(actor: Principal) -> None:
    assert require_manager(actor) is None


@pytest.mark.parametrize(
    ("actor", "detail", "scope"),
    [
        pytest.param(
            principal("jwt", workspace=None, workspaces=None),
            "the credential is bound to no workspace",
            "",
            id="jwt-no-workspace",
        ),
        pytest.param(
            principal("jwt", workspace="", workspaces=frozenset()),
            "the credential is bound to no workspace",
            "",
            id="jwt-empty-workspace-and-list",
        ),
        pytest.param(
            principal("jwt", mint_scopes=frozenset()),
            "the credential holds no scope it could grant",
            "",
            id="jwt-holds-nothing",
        ),
        pytest.param(
            principal("jwt", workspace=None, workspaces=frozenset({"ws2"}), mint_scopes=frozenset()),
            "the credential holds no scope it could grant",
            "",
            id="jwt-list-only-holds-nothing",
        ),
        pytest.param(
            principal(scopes=frozenset({"full"}), mint_scopes=frozenset({"full"})),
            "this credential may not manage tokens",
            sc.MANAGE,
            id="token-without-manage",
        ),
        pytest.param(
            principal(scopes=frozenset(), mint_scopes=frozenset({sc.MANAGE})),
            "this credential may not manage tokens",
            sc.MANAGE,
            id="token-minting-manage-but-not-holding-it",
        ),
        pytest.param(
            principal("anonymous", scopes=frozenset({sc.MANAGE}), mint_scopes=frozenset({"*"})),
            "this credential may not manage tokens",
            sc.MANAGE,
            id="anonymous-claiming-manage",
        ),
        pytest.param(
            principal(project="p1"),
            "a project-level token may not manage tokens",
            sc.MANAGE,
            id="project-level-token",
        ),
        pytest.param(
            principal(project=""),
            "a project-level token may not manage tokens",
            sc.MANAGE,
            id="project-level-token-empty-project",
        ),
        pytest.param(
            principal(workspace=None), "the credential is bound to no workspace", "", id="token-no-workspace"
        ),
        pytest.param(
            principal(workspace=""), "the credential is bound to no workspace", "", id="token-empty-workspace"
        ),
    ],
)
def test_non_managers(actor: Principal, detail: str, scope: str) -> None:
    assert refusal(require_manager, actor) == (detail, scope)


def test_home_workspace() -> None:
    assert home_workspace(principal(workspace="ws9")) == "ws9"
    assert refusal(home_workspace, principal("jwt", workspace=None, workspaces=frozenset({"ws2"}))) == (
        "the credential is bound to no workspace",
        "",
    )


# -- within_minter: the minting ceiling --------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "scopes", "detail", "scope"),
    [
        pytest.param(
            principal(scopes=frozenset({"full", sc.MANAGE}), mint_scopes=frozenset({"full", sc.MANAGE})),
            (sc.AGENCY,),
            "only a JWT may mint an agency token",
            sc.AGENCY,
            id="token-full-agency",
        ),
        pytest.param(
            principal(mint_scopes=frozenset({"*", sc.AGENCY, sc.MANAGE})),
            (sc.AGENCY,),
            "only a JWT may mint an agency token",
            sc.AGENCY,
            id="token-holding-star-and-agency",
        ),
        pytest.param(
            principal("anonymous", mint_scopes=frozenset({"*"})),
            ("read", sc.AGENCY),
            "only a JWT may mint an agency token",
            sc.AGENCY,
            id="anonymous-agency-among-others",
        ),
        pytest.param(
            principal(mint_scopes=frozenset({"read", sc.MANAGE})),
            ("write",),
            "scopes: beyond what the caller may mint: write",
            "write",
            id="token-read-to-write",
        ),
        pytest.param(
            principal(mint_scopes=frozenset({"read", sc.MANAGE})),
            ("read", "full", "nodes:create"),
            "scopes: beyond what the caller may mint: full nodes:create",
            "full",
            id="token-read-several-beyond",
        ),
        pytest.param(
            principal("jwt", mint_scopes=frozenset({"write"})),
            ("nodes:create", "write", "playlists:read"),
            "scopes: beyond what the caller may mint: nodes:create playlists:read",
            "nodes:create",
            id="jwt-write-to-fine",
        ),
        pytest.param(
            principal("jwt", mint_scopes=frozenset({"full"})),
            (sc.AGENCY,),
            "scopes: beyond what the caller may mint: agency",
            sc.AGENCY,
            id="jwt-full-to-agency",
        ),
        pytest.param(
            principal("jwt", mint_scopes=frozenset({"nodes:create"})),
            ("nodes:*",),
            "scopes: beyond what the caller may mint: nodes:*",
            "nodes:*",
            id="jwt-fine-to-resource-star",
        ),
        pytest.param(
            principal("jwt", mint_scopes=frozenset({"read"})),
            (sc.MANAGE,),
            "scopes: beyond what the caller may mint: tokens:manage",
            sc.MANAGE,
            id="jwt-read-to-manage",
        ),
    ],
)
def test_minting_beyond_the_ceiling(
    actor: Principal, scopes: tuple[str, ...], detail: str, scope: str
) -> None:
    assert refusal(within_minter, actor, scopes) == (detail, scope)


@pytest.mark.parametrize(
    ("actor", "scopes"),
    [
        pytest.param(principal("jwt", mint_scopes=frozenset({"*"})), (sc.AGENCY,), id="jwt-star-agency"),
        pytest.param(principal("jwt", mint_scopes=frozenset({sc.AGENCY})), (sc.AGENCY,), id="jwt-agency"),
        pytest.param(principal(mint_scopes=frozenset({"full"})), ("read", "nodes:create"), id="full-covers"),
        pytest.param(principal(mint_scopes=frozenset({"nodes:*"})), ("nodes:delete",), id="resource-star"),
        pytest.param(principal(), (), id="nothing-asked"),
    ],
)
def test_minting_within_the_ceiling(actor: Principal, scopes: tuple[str, ...]) -> None:
    assert within_minter(actor, scopes) is None


kinds = st.sampled_from(["token", "jwt", "anonymous"])
held = st.frozensets(st.sampled_from((*SCOPES, "*")), max_size=5)
asked = st.lists(st.sampled_from(SCOPES), max_size=4).map(tuple)


@settings(max_examples=300, deadline=None)
@given(kind=kinds, mint=held, scopes=asked)
def test_a_mint_never_exceeds_its_minter(kind: str, mint: frozenset[str], scopes: tuple[str, ...]) -> None:
    """Whatever it asks, an accepted mint opens no gate its minter could not open itself."""
    actor = principal(kind, scopes=mint, mint_scopes=mint)
    try:
        within_minter(actor, scopes)
    except InsufficientScope as refused:
        beyond = [s for s in scopes if not (sc.covers(mint, s) or "*" in mint)]
        if sc.AGENCY in scopes and kind != "jwt":
            assert (refused.detail, refused.scope) == ("only a JWT may mint an agency token", sc.AGENCY)
        else:
            assert beyond, "refused a mint within the ceiling"
            assert refused.scope == beyond[0]
            assert refused.detail == f"scopes: beyond what the caller may mint: {' '.join(beyond)}"
        return
    assert kind == "jwt" or sc.AGENCY not in scopes
    for required in SCOPES:
        if sc.covers(scopes, required):
            assert "*" in mint or sc.covers(mint, required), (scopes, required)


# -- can_manage: only what the caller could have minted ----------------------------------------


def test_the_operator_manages_everything() -> None:
    for r in (record(), record(project=None, scopes=(sc.AGENCY,), workspace="other")):
        assert can_manage(None, r) is True


@pytest.mark.parametrize(
    ("actor", "target", "expected"),
    [
        pytest.param(principal(), record(), True, id="token-project-read"),
        pytest.param(principal(), record(scopes=("write", sc.MANAGE)), True, id="token-its-own-level"),
        pytest.param(principal(), record(workspace="ws2"), False, id="token-other-workspace"),
        pytest.param(principal(), record(project=None), False, id="token-workspace-level"),
        pytest.param(principal(), record(scopes=("full",)), False, id="token-above-itself"),
        pytest.param(principal(), record(scopes=("read", "nodes:create")), False, id="token-fine-beyond"),
        pytest.param(
            principal(mint_scopes=frozenset({"*", sc.AGENCY, sc.MANAGE})),
            record(scopes=(sc.AGENCY,), targets=(("playlist", "7"),)),
            False,
            id="token-holding-star-and-agency-on-agency",
        ),
        pytest.param(
            principal(mint_scopes=frozenset({"*", sc.MANAGE}), project="p1"),
            record(project=None, scopes=("read",)),
            False,
            id="star-token-on-workspace-level",
        ),
        pytest.param(principal("jwt"), record(project=None), True, id="jwt-workspace-level"),
        pytest.param(principal("jwt"), record(workspace="ws2"), False, id="jwt-other-workspace"),
        pytest.param(
            principal("jwt", workspace="ws1", workspaces=frozenset({"ws1", "ws2"})),
            record(workspace="ws2"),
            False,
            id="jwt-listed-workspace-is-not-its-home",
        ),
        pytest.param(
            principal("jwt", mint_scopes=frozenset({"*"})),
            record(scopes=(sc.AGENCY,), project=None),
            True,
            id="jwt-star-on-agency",
        ),
        pytest.param(
            principal("jwt", mint_scopes=frozenset({"full"})),
            record(scopes=(sc.AGENCY,)),
            False,
            id="jwt-full-on-agency",
        ),
        pytest.param(
            principal("jwt", mint_scopes=frozenset({"read"})),
            record(scopes=("write",)),
            False,
            id="jwt-read-on-write",
        ),
        pytest.param(
            principal("anonymous", mint_scopes=frozenset({"*"})),
            record(project=None),
            False,
            id="anonymous-on-workspace-level",
        ),
        pytest.param(
            principal("anonymous", mint_scopes=frozenset({"*"})),
            record(scopes=(sc.AGENCY,)),
            False,
            id="anonymous-on-agency",
        ),
    ],
)
def test_can_manage(actor: Principal, target: TokenRecord, expected: bool) -> None:
    assert can_manage(actor, target) is expected


@settings(max_examples=300, deadline=None)
@given(
    kind=kinds,
    mint=held,
    scopes=asked,
    same_workspace=st.booleans(),
    project=st.sampled_from([None, "p1"]),
)
def test_managing_is_minting(
    kind: str, mint: frozenset[str], scopes: tuple[str, ...], same_workspace: bool, project: str | None
) -> None:
    """A caller manages a token exactly when it could have minted it: same workspace, never a
    workspace-level one unless a JWT, never agency unless a JWT, and no scope beyond its own."""
    actor = principal(kind, scopes=mint, mint_scopes=mint)
    target = record(scopes=scopes, project=project, workspace="ws1" if same_workspace else "ws2")
    could_mint = True
    try:
        within_minter(actor, scopes)
    except InsufficientScope:
        could_mint = False
    expected = same_workspace and (kind == "jwt" or project is not None) and could_mint
    assert can_manage(actor, target) is expected
    assert can_manage(replace(actor, workspace=None), target) is False
